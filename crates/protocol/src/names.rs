//! Room name and username rules shared by the server (which enforces them) and the client
//! (which checks before it bothers the server).
//!
//! Two names that look the same must be the same name, and a name must not pass for something
//! else on screen. So names are compared by a key (NFKC, then lowercase, with the few case
//! foldings lowercase misses), and a name is refused when it holds characters that do not show
//! (zero-width, bidi controls, fillers), when it has nothing visible at all, when it mixes
//! Latin, Greek and Cyrillic letters (the classic look-alike trick), and, for usernames, when it
//! could pass for a server notice (`*`) or for the client's `(host)` marker. Ordinary names
//! (letters, digits, spaces, punctuation of one script) are untouched and travel as sent.

use thiserror::Error;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::limits::{MAX_ROOM_NAME, MAX_USERNAME};

/// The marker clients show after the host's name in member lists.
const HOST_MARKER: &str = "(host)";
/// The sender name of server notices; no member may start a name with it.
const NOTICE_PREFIX: char = '*';

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
    /// The name contains a character that does not show (zero-width, bidi control, filler,
    /// a space other than the plain one...), which would make look-alike names.
    #[error("the name contains an invisible or formatting character (U+{0:04X})")]
    InvisibleCharacter(u32),
    /// The name has no visible character at all (only combining marks, say).
    #[error("the name has no visible character")]
    NothingVisible,
    /// The name mixes letters of Latin, Greek and Cyrillic, the way look-alike names are made.
    #[error("the name mixes {0} and {1} letters")]
    MixedScripts(&'static str, &'static str),
    /// The username could pass for a server notice or a client's marker.
    #[error("names starting with \"*\" or containing \"(host)\" are reserved")]
    Reserved,
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
    if let Some(invisible) = name.chars().find(|&c| is_invisible(c)) {
        return Err(NameError::InvisibleCharacter(u32::from(invisible)));
    }
    if name.chars().all(|c| c == ' ' || is_combining_mark(c)) {
        return Err(NameError::NothingVisible);
    }
    // Checked on the key, so that compatibility forms (fullwidth letters, ligatures) count as
    // the letters they stand for.
    let mut first: Option<&'static str> = None;
    for script in fold(name).chars().filter_map(script_of) {
        match first {
            None => first = Some(script),
            Some(seen) if seen != script => return Err(NameError::MixedScripts(seen, script)),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks a room name: 1..=64 bytes, no control, invisible or formatting characters, no
/// surrounding whitespace, something visible, letters of at most one of Latin, Greek and
/// Cyrillic.
pub fn validate_room_name(name: &str) -> Result<(), NameError> {
    validate(name, MAX_ROOM_NAME)
}

/// Checks a username: the room name rules in 1..=32 bytes, and not reserved: it must not
/// start with `*` (the sender of server notices) or contain `(host)`, compared by key.
pub fn validate_username(name: &str) -> Result<(), NameError> {
    validate(name, MAX_USERNAME)?;
    let key = fold(name);
    if key.starts_with(NOTICE_PREFIX) || key.contains(HOST_MARKER) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// The form under which usernames are compared: unique per room, ignoring case and
/// compatibility forms (`Bob`, `BOB` and fullwidth `Ｂｏｂ` clash; so do NFC and NFD `josé`).
pub fn username_key(name: &str) -> String {
    fold(name)
}

/// The form under which room names are compared: `Lobby` and `LOBBY` are one room.
pub fn room_key(name: &str) -> String {
    fold(name)
}

/// NFKC, lowercase, the foldings lowercase leaves out (`ß` is `ss`, final `ς` is `σ`), and NFKC
/// again, since lowercasing can undo a normal form. An approximation of Unicode's
/// NFKC_Casefold that needs no further tables.
fn fold(name: &str) -> String {
    let lower = name.nfkc().collect::<String>().to_lowercase();
    let mut folded = String::with_capacity(lower.len() + 2);
    for c in lower.chars() {
        match c {
            'ß' | 'ẞ' => folded.push_str("ss"),
            'ς' => folded.push('σ'),
            _ => folded.push(c),
        }
    }
    folded.nfkc().collect()
}

/// Characters that take no room on screen or steer how others are drawn: Unicode's format
/// characters (Cf) that matter in text, fillers that render blank, variation selectors, and
/// every space other than U+0020 (NBSP, ideographic space... look like a plain space).
pub fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD            // soft hyphen
        | 0x034F          // combining grapheme joiner
        | 0x0600..=0x0605 // Arabic number signs (prepended format characters)
        | 0x061C          // Arabic letter mark
        | 0x06DD | 0x070F | 0x0890 | 0x0891 | 0x08E2
        | 0x115F | 0x1160 | 0x3164 | 0xFFA0 // Hangul fillers
        | 0x17B4 | 0x17B5 // Khmer inherent vowels
        | 0x180B..=0x180F // Mongolian selectors and vowel separator
        | 0x200B..=0x200F // zero-width space, joiners, LRM, RLM
        | 0x2028..=0x202E // line and paragraph separators, bidi embeddings and overrides
        | 0x2060..=0x206F // word joiner, invisible operators, bidi isolates
        | 0x2800          // braille blank
        | 0xFE00..=0xFE0F // variation selectors
        | 0xFEFF          // zero-width no-break space (BOM)
        | 0xFFF9..=0xFFFB // interlinear annotation
        | 0x110BD | 0x110CD
        | 0x13430..=0x1343F // Egyptian hieroglyph format controls
        | 0x1BCA0..=0x1BCA3 // shorthand format controls
        | 0x1D173..=0x1D17A // musical symbol format controls
        | 0xE0000..=0xE0FFF // tags and variation selectors supplement
    ) || (c.is_whitespace() && c != ' ')
}

/// The script of a letter, for the three scripts whose letters are mistaken for each other.
fn script_of(c: char) -> Option<&'static str> {
    if !c.is_alphabetic() {
        return None;
    }
    match u32::from(c) {
        0x0041..=0x005A
        | 0x0061..=0x007A
        | 0x00AA
        | 0x00BA
        | 0x00C0..=0x024F
        | 0x1D00..=0x1D7F
        | 0x1E00..=0x1EFF
        | 0x2C60..=0x2C7F
        | 0xA720..=0xA7FF
        | 0xAB30..=0xAB6F
        | 0xFF21..=0xFF3A
        | 0xFF41..=0xFF5A => Some("Latin"),
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Some("Greek"),
        0x0400..=0x052F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Some("Cyrillic"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert_eq!(validate_username("alice"), Ok(()));
        assert_eq!(validate_room_name("the lobby"), Ok(()));
        assert_eq!(validate_username("émilie"), Ok(()));
        assert_eq!(validate_username("Ωμέγα"), Ok(()));
        assert_eq!(validate_username("Дмитрий 2"), Ok(()));
        assert_eq!(validate_username("李小龍"), Ok(()));
        assert_eq!(validate_username("bob_42!"), Ok(()));
        assert_eq!(validate_room_name("*stars*"), Ok(()));
        // Cyrillic with ASCII digits and punctuation is one script.
        assert_eq!(validate_room_name("чат-1"), Ok(()));
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

    #[test]
    fn canonically_equal_names_are_one_name() {
        let nfc = "jos\u{e9}";
        let nfd = "jose\u{301}";
        assert_eq!(validate_username(nfd), Ok(()));
        assert_eq!(username_key(nfc), username_key(nfd));
        assert_eq!(username_key("Ｂｏｂ"), username_key("bob"));
        assert_eq!(username_key("STRASSE"), username_key("straße"));
        assert_eq!(username_key("ΟΔΟΣ"), username_key("οδος"));
        assert_eq!(room_key("Lobby"), room_key("LOBBY"));
        assert_ne!(room_key("lobby"), room_key("lobby 2"));
    }

    #[test]
    fn refuses_invisible_and_formatting_characters() {
        for name in [
            "bob\u{200B}",
            "lobby\u{200B}",
            "\u{200D}bob",
            "al\u{202E}ice",
            "a\u{2066}b",
            "bob\u{FEFF}",
            "a\u{00A0}b",
            "a\u{3000}b",
            "bo\u{AD}b",
            "\u{3164}",
            "x\u{FE0F}",
        ] {
            assert!(
                matches!(
                    validate_username(name),
                    Err(NameError::InvisibleCharacter(_))
                ),
                "{name:?}"
            );
            assert!(validate_room_name(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn refuses_names_with_nothing_visible() {
        assert_eq!(
            validate_username("\u{301}\u{302}"),
            Err(NameError::NothingVisible)
        );
        assert_eq!(
            validate_room_name("\u{301} \u{301}"),
            Err(NameError::NothingVisible)
        );
    }

    #[test]
    fn refuses_mixed_scripts() {
        // "аlice" with a Cyrillic а; "pаypal" likewise; "Αlpha" with a Greek Alpha.
        assert_eq!(
            validate_username("\u{430}lice"),
            Err(NameError::MixedScripts("Cyrillic", "Latin"))
        );
        assert!(validate_room_name("p\u{430}ypal").is_err());
        assert_eq!(
            validate_username("\u{391}lpha"),
            Err(NameError::MixedScripts("Greek", "Latin"))
        );
    }

    #[test]
    fn reserves_what_a_client_shows_as_a_notice_or_a_marker() {
        for name in [
            "*",
            "* server",
            "*bob",
            "＊bob",
            "alice (host)",
            "a (HOST), b",
        ] {
            assert_eq!(validate_username(name), Err(NameError::Reserved), "{name}");
        }
        assert_eq!(validate_username("bob*"), Ok(()));
        assert_eq!(validate_username("host"), Ok(()));
    }
}
