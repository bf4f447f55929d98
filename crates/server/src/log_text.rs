//! Names and text from the network, as they may appear in a log line.

/// Longest part of a value shown in a log: names are at most 64 bytes when valid, and a
/// refused one may be anything up to a whole frame.
const SHOWN_CHARS: usize = 80;

/// `text` with control characters and backslashes escaped (so that no one can forge a log
/// line or drive the reader's terminal), cut after [`SHOWN_CHARS`] characters.
pub fn for_log(text: &str) -> String {
    let mut shown = String::with_capacity(text.len().min(4 * SHOWN_CHARS));
    for (index, c) in text.chars().enumerate() {
        if index == SHOWN_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_long_text_cut() {
        assert_eq!(for_log("bob"), "bob");
        assert_eq!(for_log("eve\u{1b}[31m\nx\\"), "eve\\u{1b}[31m\\nx\\\\");
        let long = for_log(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), SHOWN_CHARS + 1);
    }
}
