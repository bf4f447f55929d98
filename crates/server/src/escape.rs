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

/// Most characters of a whole message shown by [`clipped`].
pub const MAX_CLIPPED_CHARS: usize = 400;

/// `value` for a log line or an error message, as `"text"` with `\n`, `\"`, `\\`, `\x1b` and
/// the like escaped, and `…(N bytes in all)` after the first [`MAX_SHOWN_CHARS`] characters.
/// Bytes that are not UTF-8 are shown as `\xNN`.
pub fn quoted<T: AsRef<[u8]> + ?Sized>(value: &T) -> Quoted<'_> {
    Quoted {
        bytes: value.as_ref(),
        quotes: true,
        max_chars: MAX_SHOWN_CHARS,
    }
}

/// A message that may quote outside text (a parser's error, say) for an error line: escaped
/// like [`quoted`] but without the quotes, and cut after [`MAX_CLIPPED_CHARS`] characters.
pub fn clipped<T: AsRef<[u8]> + ?Sized>(message: &T) -> Quoted<'_> {
    Quoted {
        bytes: message.as_ref(),
        quotes: false,
        max_chars: MAX_CLIPPED_CHARS,
    }
}

/// See [`quoted`] and [`clipped`].
#[derive(Clone, Copy)]
pub struct Quoted<'a> {
    bytes: &'a [u8],
    quotes: bool,
    max_chars: usize,
}

impl Quoted<'_> {
    fn cut(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.quotes { "\"" } else { "" };
        write!(f, "{quote}…({} bytes in all)", self.bytes.len())
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quotes {
            f.write_str("\"")?;
        }
        let mut shown = 0;
        for chunk in self.bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if shown == self.max_chars {
                    return self.cut(f);
                }
                shown += 1;
                match c {
                    '"' if self.quotes => f.write_str("\\\"")?,
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
                if shown == self.max_chars {
                    return self.cut(f);
                }
                shown += 1;
                write!(f, "\\x{byte:02x}")?;
            }
        }
        if self.quotes {
            f.write_str("\"")?;
        }
        Ok(())
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
    fn clipped_messages_keep_their_quotes_and_lose_their_tail() {
        let message = format!("invalid type: string \"{}\"\n", "x".repeat(1 << 20));
        let shown = clipped(&message).to_string();
        assert!(shown.starts_with("invalid type: string \"xx"), "{shown}");
        assert!(shown.len() < 500, "{}", shown.len());
        assert!(shown.ends_with("…(1048600 bytes in all)"), "{shown}");
        assert_eq!(clipped("line\nbreak").to_string(), "line\\nbreak");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "n".repeat(1 << 20);
        let shown = quoted(&long).to_string();
        assert!(shown.len() < 120, "{}", shown.len());
        assert!(shown.ends_with("\"…(1048576 bytes in all)"), "{shown}");
    }
}
