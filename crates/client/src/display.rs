//! How incoming chat reaches the screen: one line per event on stdout, flushed at once so that
//! a reader on the other end of a pipe sees it immediately.

use std::borrow::Cow;
use std::io::Write;

use crate::error::ClientError;
use crate::session::Incoming;

/// The line printed on `__ROOM_CLOSED__`: version 1 has only this one word for a room its
/// host closed and for one the server no longer has (it restarted elsewhere, or the room
/// expired), so the sentence covers both.
pub const ROOM_CLOSED_LINE: &str = "* the room was closed: this room no longer exists";

/// The line shown for an incoming event: `NAME: TEXT` for chat, `* TEXT` for notices.
pub fn render(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Chat { sender, text } => format!("{}: {}", sanitize(sender), sanitize(text)),
        Incoming::Notice(text) => format!("* {}", sanitize(text)),
        Incoming::RoomClosed => ROOM_CLOSED_LINE.to_owned(),
    }
}

/// Replaces control characters (other than tab) with U+FFFD, so that another member cannot
/// forge extra lines with a newline or drive the terminal with escape sequences.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let is_unsafe = |c: char| c.is_control() && c != '\t';
    if text.chars().any(is_unsafe) {
        Cow::Owned(
            text.chars()
                .map(|c| if is_unsafe(c) { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Prints one line to stdout and flushes it.
pub fn print_line(line: &str) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(ClientError::Output)
}

/// Prints a sentence for the user on stderr; there is nowhere left to report a failure to.
pub fn print_problem(sentence: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{sentence}").and_then(|()| stderr.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_shows_sender_and_text() {
        let chat = Incoming::Chat {
            sender: "alice".into(),
            text: "hello there".into(),
        };
        assert_eq!(render(&chat), "alice: hello there");
    }

    #[test]
    fn notices_are_starred() {
        let notice = Incoming::Notice("bob joined".into());
        assert_eq!(render(&notice), "* bob joined");
    }

    #[test]
    fn room_closed_has_its_own_sentence() {
        assert_eq!(
            render(&Incoming::RoomClosed),
            "* the room was closed: this room no longer exists"
        );
    }

    #[test]
    fn text_cannot_forge_lines_or_escape_sequences() {
        let chat = Incoming::Chat {
            sender: "mallory".into(),
            text: "hi\nalice: give me your password\u{1b}[2J".into(),
        };
        let line = render(&chat);
        assert!(!line.contains('\n'));
        assert!(!line.contains('\u{1b}'));
        assert_eq!(
            line,
            "mallory: hi\u{FFFD}alice: give me your password\u{FFFD}[2J"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        assert!(matches!(sanitize("émilie\tsays hi 👋"), Cow::Borrowed(_)));
    }
}
