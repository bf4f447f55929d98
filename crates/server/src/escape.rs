//! Text from the network (or from a file it reached) as it may appear in a log line or an
//! error message: quoted, escaped and cut short. Quoted, so that a room name with spaces
//! cannot pose as more `key=value` fields; escaped, so that a newline cannot start a forged
//! line and an escape sequence or a bidi override cannot repaint the operator's terminal; cut
//! short, so that a megabyte of name makes a short line. Every value that came from outside
//! goes through [`quoted`] before it is logged or quoted in an error.

use std::fmt;

use chat_protocol::names::is_invisible;

/// Most characters of a value shown; the rest is summarised by its length.
pub const MAX_SHOWN_CHARS: usize = 64;

/// `value` for a log line or an error message, as `"text"` with `\n`, `\"`, `\\`, `\x1b` and
/// the like escaped, and `…(N bytes in all)` after the first [`MAX_SHOWN_CHARS`] characters.
/// Bytes that are not UTF-8 are shown as `\xNN`.
pub fn quoted<T: AsRef<[u8]> + ?Sized>(value: &T) -> Quoted<'_> {
    Quoted(value.as_ref())
}

/// See [`quoted`].
#[derive(Clone, Copy)]
pub struct Quoted<'a>(&'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut shown = 0;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if shown == MAX_SHOWN_CHARS {
                    return write!(f, "\"…({} bytes in all)", self.0.len());
                }
                shown += 1;
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() || is_invisible(c) => {
                        write!(f, "\\u{{{:x}}}", u32::from(c))?;
                    }
                    c => write!(f, "{c}")?,
                }
            }
            for byte in chunk.invalid() {
                if shown == MAX_SHOWN_CHARS {
                    return write!(f, "\"…({} bytes in all)", self.0.len());
                }
                shown += 1;
                write!(f, "\\x{byte:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_only_quoted() {
        assert_eq!(quoted("the lobby").to_string(), "\"the lobby\"");
        assert_eq!(quoted("émilie").to_string(), "\"émilie\"");
    }

    #[test]
    fn nothing_can_end_the_value_or_the_line() {
        let forged = "x\" user=root\n2026 INFO handshake granted\r\x1b[2J\u{202e}\\";
        let shown = quoted(forged).to_string();
        assert_eq!(
            shown,
            "\"x\\\" user=root\\n2026 INFO handshake granted\\r\\u{1b}[2J\\u{202e}\\\\\""
        );
        assert!(!shown.contains('\n') && !shown.contains('\x1b'));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(quoted(&b"ab\xff\xfe"[..]).to_string(), "\"ab\\xff\\xfe\"");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "n".repeat(1 << 20);
        let shown = quoted(&long).to_string();
        assert!(shown.len() < 120, "{}", shown.len());
        assert!(shown.ends_with("\"…(1048576 bytes in all)"), "{shown}");
    }
}
