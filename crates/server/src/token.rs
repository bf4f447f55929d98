//! Member tokens: 32 bytes from the operating system's CSPRNG, written as 64 lowercase hex.
//!
//! A token is the only secret a member holds, so it is compared in constant time and never
//! printed in full: `Display` shows only a short prefix for logs.

use std::fmt;
use std::hash::{Hash, Hasher};

use rand::TryRng;
use rand::rngs::SysRng;

/// Length of a token in bytes.
pub const TOKEN_BYTES: usize = 32;

/// A member's secret.
#[derive(Clone, Copy)]
pub struct Token([u8; TOKEN_BYTES]);

/// The operating system could not supply random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed: {0}")]
pub struct RandomError(String);

impl RandomError {
    /// Wraps the generator's own error message.
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

impl Token {
    /// Draws a fresh token from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| RandomError(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Parses 64 lowercase hex characters, the only form the contract gives tokens; anything
    /// else is not a token.
    pub fn from_hex(hex: &[u8]) -> Option<Self> {
        if hex.len() != TOKEN_BYTES * 2 {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Self(bytes))
    }

    /// The 64-character lowercase hex form that members are given.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(TOKEN_BYTES * 2);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

impl PartialEq for Token {
    /// Constant time: how far two tokens agree must not show in how long the comparison takes.
    fn eq(&self, other: &Self) -> bool {
        let difference = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

impl Eq for Token {}

impl Hash for Token {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // HashMap's hasher is keyed randomly per process, so bucket placement leaks nothing an
        // attacker can aim at; the final comparison is the constant-time `eq` above.
        self.0.hash(state);
    }
}

impl fmt::Display for Token {
    /// Only the first 8 hex characters: enough to tell members apart in logs, useless to forge.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_shape() {
        let token = Token::generate().unwrap();
        let hex = token.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(Token::from_hex(hex.as_bytes()), Some(token));
    }

    #[test]
    fn tokens_are_distinct_and_never_displayed_in_full() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        let shown = a.to_string();
        assert!(shown.len() < 16);
        assert!(!shown.contains(&a.to_hex()[8..]));
    }

    #[test]
    fn rejects_malformed_hex() {
        assert_eq!(Token::from_hex(b"abc"), None);
        assert_eq!(Token::from_hex(&[b'g'; 64]), None);
        assert_eq!(Token::from_hex(&[0xff; 64]), None);
        let upper = Token::generate().unwrap().to_hex().to_uppercase();
        assert_eq!(
            Token::from_hex(upper.as_bytes()),
            None,
            "tokens are lowercase"
        );
    }
}
