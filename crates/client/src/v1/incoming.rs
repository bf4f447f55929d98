//! What a version-1 server sends a member, decoded, and the line each is shown as: `NAME:
//! TEXT` for chat, `* TEXT` for notices.

use chat_protocol::ucrp::{NOTICE_SENDER, ServerDatagram};

use crate::ui::format::sanitize;

/// Something the server told this member, decoded from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message from another member.
    Chat {
        /// Who wrote it.
        sender: String,
        /// What they wrote.
        text: String,
    },
    /// A sentence from the server itself (welcome, joins, leaves).
    Notice(String),
    /// The host left; the room and this member's token are gone.
    RoomClosed,
}

impl Incoming {
    /// Interprets a datagram from the server; `None` for anything a version-1 member does not
    /// understand, which is dropped.
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        match ServerDatagram::decode(datagram) {
            Ok(ServerDatagram::Chat { sender, text }) if sender == NOTICE_SENDER => {
                Some(Self::Notice(text.to_owned()))
            }
            Ok(ServerDatagram::Chat { sender, text }) => Some(Self::Chat {
                sender: sender.to_owned(),
                text: text.to_owned(),
            }),
            Ok(ServerDatagram::RoomClosed) => Some(Self::RoomClosed),
            Ok(ServerDatagram::V2(message)) => {
                tracing::debug!(?message, "ignoring a version-2 datagram");
                None
            }
            Err(error) => {
                tracing::debug!(%error, len = datagram.len(), "ignoring an undecodable datagram");
                None
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use chat_protocol::ucrp::{ROOM_CLOSED, encode_v1_chat};

    use super::*;

    fn notice(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_v1_chat(NOTICE_SENDER, text, &mut out).unwrap();
        out
    }

    #[test]
    fn notices_and_chat_are_told_apart() {
        assert_eq!(
            Incoming::decode(&notice("bob joined")),
            Some(Incoming::Notice("bob joined".into()))
        );
        assert_eq!(Incoming::decode(ROOM_CLOSED), Some(Incoming::RoomClosed));
        assert_eq!(Incoming::decode(b""), None);
        assert_eq!(Incoming::decode(b"\x09al"), None);
    }

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
}
