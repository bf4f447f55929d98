//! Room name and username rules shared by the server (which enforces them) and the client
//! (which checks before it bothers the server).

use thiserror::Error;

use crate::limits::{MAX_ROOM_NAME, MAX_USERNAME};

/// Why a room name or username was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than the contract allows.
    #[error("the name is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Length that was given, in bytes.
        len: usize,
        /// Largest length allowed, in bytes.
        max: usize,
    },
    /// The name contains a control character (newline, tab, NUL...).
    #[error("the name contains a control character")]
    ControlCharacter,
    /// The name starts or ends with whitespace, which would make look-alike names.
    #[error("the name starts or ends with whitespace")]
    SurroundingWhitespace,
}

fn validate(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if name.trim() != name {
        return Err(NameError::SurroundingWhitespace);
    }
    Ok(())
}

/// Checks a room name: 1..=64 bytes, no control characters, no surrounding whitespace.
pub fn validate_room_name(name: &str) -> Result<(), NameError> {
    validate(name, MAX_ROOM_NAME)
}

/// Checks a username: 1..=32 bytes, no control characters, no surrounding whitespace.
pub fn validate_username(name: &str) -> Result<(), NameError> {
    validate(name, MAX_USERNAME)
}

/// The form under which usernames are compared: unique per room, case-insensitively.
pub fn username_key(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert_eq!(validate_username("alice"), Ok(()));
        assert_eq!(validate_room_name("the lobby"), Ok(()));
        assert_eq!(validate_username("émilie"), Ok(()));
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_username(""), Err(NameError::Empty));
        assert_eq!(
            validate_username(" bob"),
            Err(NameError::SurroundingWhitespace)
        );
        assert_eq!(validate_username("bo\nb"), Err(NameError::ControlCharacter));
        assert_eq!(
            validate_username(&"x".repeat(33)),
            Err(NameError::TooLong { len: 33, max: 32 })
        );
        assert_eq!(validate_room_name(&"r".repeat(64)), Ok(()));
        assert!(validate_room_name(&"r".repeat(65)).is_err());
    }

    #[test]
    fn usernames_compare_case_insensitively() {
        assert_eq!(username_key("Alice"), username_key("aLICE"));
    }
}
