//! A server certificate's fingerprint, by which clients pin a server (version 3):
//! `SHA256:` and the 64 lowercase hex digits of the SHA-256 of the certificate's DER bytes.

use std::fmt;
use std::str::FromStr;

use ring::digest::{SHA256, digest};

/// The SHA-256 of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest(&SHA256, der).as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A fingerprint that is not `SHA256:` and 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a fingerprint is SHA256: followed by 64 hex digits (as `chat-server fingerprint` prints it)"
)]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Reads `SHA256:` and 64 hex digits, in either case; colons between the digits, as some
    /// tools print them, are allowed.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .trim()
            .strip_prefix("SHA256:")
            .or_else(|| text.trim().strip_prefix("sha256:"))
            .ok_or(BadFingerprint)?;
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| BadFingerprint)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_back() {
        let print = Fingerprint::of_certificate(b"certificate").to_string();
        assert!(print.starts_with("SHA256:"));
        assert_eq!(print.len(), 7 + 64);
        let parsed: Fingerprint = print.parse().unwrap();
        assert_eq!(parsed.to_string(), print);
        let upper = format!("SHA256:{}", print["SHA256:".len()..].to_uppercase());
        assert_eq!(upper.parse::<Fingerprint>().ok(), Some(parsed));
        assert!("SHA256:abc".parse::<Fingerprint>().is_err());
        assert!("MD5:00".parse::<Fingerprint>().is_err());
    }
}
