//! UCRP, the UDP data plane: the client envelope `[room len][token len][room][token][message]`
//! and the version-1 frames the server sends back.
//!
//! Decoding borrows from the receive buffer: the relay path parses every datagram, so nothing
//! here allocates while reading.

use thiserror::Error;

use crate::limits::MAX_DATAGRAM;
use serde::Serialize;

use crate::v2::{ChatMessage, ClientV2, ServerV2};

/// The first byte of every version-2 message. It never starts valid UTF-8, so version-1 text
/// cannot be mistaken for it.
pub const V2_MARKER: u8 = 0xFF;
/// Version-1 text that binds the sender's address to its token.
pub const REGISTER: &[u8] = b"__REGISTER__";
/// Version-1 text that removes the sender from its room.
pub const LEAVE: &[u8] = b"__LEAVE__";
/// What a version-1 member receives when its room closes.
pub const ROOM_CLOSED: &[u8] = b"__ROOM_CLOSED__";
/// The sender name of server notices (joins, leaves) in version 1.
pub const NOTICE_SENDER: &str = "*";

/// Ways a datagram can be malformed.
#[derive(Debug, Error)]
pub enum UcrpError {
    /// Larger than the 4096 bytes the contract allows.
    #[error("datagram of {0} bytes exceeds the 4096-byte limit")]
    TooLarge(usize),
    /// Shorter than its own size fields say.
    #[error("datagram is shorter than its size fields declare")]
    Truncated,
    /// The room name is not UTF-8.
    #[error("the room name is not valid UTF-8")]
    RoomNotUtf8,
    /// Version-1 chat text is not UTF-8.
    #[error("the message text is not valid UTF-8")]
    TextNotUtf8,
    /// The message is empty.
    #[error("the message is empty")]
    EmptyMessage,
    /// A version-2 message that is not one of the contract's JSON objects.
    #[error("invalid version-2 message: {0}")]
    InvalidV2(#[source] serde_json::Error),
    /// A sender name of 255 bytes or more cannot be framed: its size byte would be 0xFF, which
    /// marks a version-2 message.
    #[error("sender name of {0} bytes does not fit in a version-1 frame")]
    SenderTooLong(usize),
}

/// A client datagram's envelope, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The room the sender claims to be in.
    pub room: &'a str,
    /// The sender's token as sent (64 hex characters when well-formed).
    pub token: &'a [u8],
    /// Everything after the token.
    pub message: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Splits a datagram into room, token and message.
    pub fn decode(buf: &'a [u8]) -> Result<Self, UcrpError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(UcrpError::TooLarge(buf.len()));
        }
        let [room_len, token_len, rest @ ..] = buf else {
            return Err(UcrpError::Truncated);
        };
        let room_len = usize::from(*room_len);
        let token_len = usize::from(*token_len);
        if rest.len() < room_len + token_len {
            return Err(UcrpError::Truncated);
        }
        let (room, rest) = rest.split_at(room_len);
        let (token, message) = rest.split_at(token_len);
        let room = std::str::from_utf8(room).map_err(|_| UcrpError::RoomNotUtf8)?;
        Ok(Self {
            room,
            token,
            message,
        })
    }

    /// Appends the encoded datagram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), UcrpError> {
        let room_len =
            u8::try_from(self.room.len()).map_err(|_| UcrpError::TooLarge(self.room.len()))?;
        let token_len =
            u8::try_from(self.token.len()).map_err(|_| UcrpError::TooLarge(self.token.len()))?;
        let total = 2 + self.room.len() + self.token.len() + self.message.len();
        if total > MAX_DATAGRAM {
            return Err(UcrpError::TooLarge(total));
        }
        out.reserve(total);
        out.push(room_len);
        out.push(token_len);
        out.extend_from_slice(self.room.as_bytes());
        out.extend_from_slice(self.token);
        out.extend_from_slice(self.message);
        Ok(())
    }

    /// The encoded datagram.
    pub fn encode(&self) -> Result<Vec<u8>, UcrpError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// How many bytes of message fit beside this room and token.
    pub fn message_capacity(room: &str, token: &[u8]) -> usize {
        MAX_DATAGRAM.saturating_sub(2 + room.len() + token.len())
    }
}

/// What a client asks for, once the envelope is stripped.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage<'a> {
    /// Version 1 `__REGISTER__`.
    Register,
    /// Version 1 `__LEAVE__`.
    Leave,
    /// Version 1 chat text.
    Chat(&'a str),
    /// A version-2 message.
    V2(ClientV2),
}

impl<'a> ClientMessage<'a> {
    /// Classifies a message body.
    pub fn decode(message: &'a [u8]) -> Result<Self, UcrpError> {
        match message {
            [] => Err(UcrpError::EmptyMessage),
            [V2_MARKER, json @ ..] => serde_json::from_slice(json)
                .map(Self::V2)
                .map_err(UcrpError::InvalidV2),
            REGISTER => Ok(Self::Register),
            LEAVE => Ok(Self::Leave),
            text => std::str::from_utf8(text)
                .map(Self::Chat)
                .map_err(|_| UcrpError::TextNotUtf8),
        }
    }
}

/// Appends a version-1 chat frame `[u8 sender len][sender][text]` to `out`.
pub fn encode_v1_chat(sender: &str, text: &str, out: &mut Vec<u8>) -> Result<(), UcrpError> {
    let sender_len = u8::try_from(sender.len())
        .ok()
        .filter(|&len| len != V2_MARKER)
        .ok_or(UcrpError::SenderTooLong(sender.len()))?;
    let total = 1 + sender.len() + text.len();
    if total > MAX_DATAGRAM {
        return Err(UcrpError::TooLarge(total));
    }
    out.reserve(total);
    out.push(sender_len);
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Appends a version-2 server message (`0xFF` + JSON) to `out`. The result may exceed the
/// datagram limit when the text needs heavy JSON escaping; callers check the length.
pub fn encode_v2(message: &ServerV2, out: &mut Vec<u8>) {
    out.push(V2_MARKER);
    // Writing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message);
}

/// Appends the version-2 `msg` event for `message`, byte for byte what [`encode_v2`] writes for
/// `ServerV2::Msg`, without first copying the message into a `ServerV2` (the relay does this
/// for every chat message).
pub fn encode_v2_msg(message: &ChatMessage, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct MsgEvent<'a> {
        t: &'static str,
        #[serde(flatten)]
        message: &'a ChatMessage,
    }
    out.push(V2_MARKER);
    // Writing a plain struct into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &MsgEvent { t: "msg", message });
}

/// How many bytes a `history` page holding one message takes beyond that message's `msg`
/// event: `{"t":"history","messages":[{` and `],"more":true}` instead of `{"t":"msg",`.
pub const HISTORY_PAGE_OVERHEAD: usize = 31;

/// The largest `msg` event the server stores: one that still fits a `history` page of its own
/// in a datagram, sealed or not, so that paging back through history always makes progress.
pub const MAX_STORED_MSG_FRAME: usize = crate::limits::MAX_SERVER_MESSAGE - HISTORY_PAGE_OVERHEAD;

/// How many bytes `text` takes inside a JSON string as serde_json writes it.
pub fn json_escaped_len(text: &str) -> usize {
    text.chars().map(json_escaped_char_len).sum()
}

fn json_escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{08}' | '\u{0C}' | '\n' | '\r' | '\t' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Splits `text` at character boundaries into parts whose JSON-escaped length is at most
/// `budget` bytes each (every part holds at least one character, whatever the budget).
pub fn split_escaped(text: &str, budget: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (at, c) in text.char_indices() {
        let len = json_escaped_char_len(c);
        if used + len > budget && at > start {
            parts.push(&text[start..at]);
            start = at;
            used = 0;
        }
        used += len;
    }
    if start < text.len() || parts.is_empty() {
        parts.push(&text[start..]);
    }
    parts
}

/// What a client receives from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerDatagram<'a> {
    /// A version-1 chat frame; sender `*` marks a server notice.
    Chat {
        /// Who sent it (`*` for the server).
        sender: &'a str,
        /// The text.
        text: &'a str,
    },
    /// The version-1 room-closed signal.
    RoomClosed,
    /// A version-2 message.
    V2(ServerV2),
}

impl<'a> ServerDatagram<'a> {
    /// Decodes a datagram received from the server.
    pub fn decode(buf: &'a [u8]) -> Result<Self, UcrpError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(UcrpError::TooLarge(buf.len()));
        }
        match buf {
            [] => Err(UcrpError::EmptyMessage),
            ROOM_CLOSED => Ok(Self::RoomClosed),
            [V2_MARKER, json @ ..] => serde_json::from_slice(json)
                .map(Self::V2)
                .map_err(UcrpError::InvalidV2),
            [sender_len, rest @ ..] => {
                let sender_len = usize::from(*sender_len);
                if rest.len() < sender_len {
                    return Err(UcrpError::Truncated);
                }
                let (sender, text) = rest.split_at(sender_len);
                Ok(Self::Chat {
                    sender: std::str::from_utf8(sender).map_err(|_| UcrpError::TextNotUtf8)?,
                    text: std::str::from_utf8(text).map_err(|_| UcrpError::TextNotUtf8)?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_page_overhead_is_exact() {
        let message = ChatMessage {
            id: 12,
            from: "ann".into(),
            text: "a \"quoted\" line".into(),
            ts: 1_700_000_000_000,
            me: false,
            to: None,
        };
        let mut msg = Vec::new();
        encode_v2_msg(&message, &mut msg);
        let mut page = Vec::new();
        encode_v2(
            &ServerV2::History {
                messages: vec![message],
                more: true,
            },
            &mut page,
        );
        assert_eq!(page.len() - msg.len(), HISTORY_PAGE_OVERHEAD);
    }

    #[test]
    fn escaped_lengths_match_serde_json_and_splits_respect_the_budget() {
        let text = "plain \"quotes\" back\\slash\n\u{1}ctl é 😀".repeat(40);
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json_escaped_len(&text), json.len() - 2);
        let parts = split_escaped(&text, 100);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|part| json_escaped_len(part) <= 100));
        assert_eq!(split_escaped("", 10), [""]);
        assert_eq!(
            split_escaped("😀😀", 1),
            ["😀", "😀"],
            "a part holds one char at least"
        );
    }

    #[test]
    fn envelope_round_trip() {
        let token = [b'a'; 64];
        let datagram = Datagram {
            room: "lobby",
            token: &token,
            message: b"hello",
        };
        let bytes = datagram.encode().unwrap();
        assert_eq!(bytes[0], 5);
        assert_eq!(bytes[1], 64);
        assert_eq!(Datagram::decode(&bytes).unwrap(), datagram);
    }

    #[test]
    fn short_and_oversized_datagrams_are_errors() {
        assert!(matches!(Datagram::decode(&[]), Err(UcrpError::Truncated)));
        assert!(matches!(
            Datagram::decode(&[5, 64, b'x']),
            Err(UcrpError::Truncated)
        ));
        assert!(matches!(
            Datagram::decode(&[0; 4097]),
            Err(UcrpError::TooLarge(4097))
        ));
    }

    #[test]
    fn classifies_messages() {
        assert_eq!(
            ClientMessage::decode(REGISTER).unwrap(),
            ClientMessage::Register
        );
        assert_eq!(ClientMessage::decode(LEAVE).unwrap(), ClientMessage::Leave);
        assert_eq!(
            ClientMessage::decode(b"hi").unwrap(),
            ClientMessage::Chat("hi")
        );
        assert!(ClientMessage::decode(b"\xc3").is_err());
        assert_eq!(
            ClientMessage::decode(b"\xff{\"t\":\"who\"}").unwrap(),
            ClientMessage::V2(ClientV2::Who)
        );
    }

    #[test]
    fn a_sender_name_of_255_bytes_is_refused_not_read_back_as_version_2() {
        // Found by the v1 round-trip property: a size byte of 255 is the version-2 marker, so
        // the frame decoded as malformed JSON instead of chat.
        let mut out = Vec::new();
        assert!(matches!(
            encode_v1_chat(&"s".repeat(255), "hi", &mut out),
            Err(UcrpError::SenderTooLong(255))
        ));
        assert!(out.is_empty());
        let longest = "s".repeat(254);
        encode_v1_chat(&longest, "hi", &mut out).unwrap();
        assert_eq!(
            ServerDatagram::decode(&out).unwrap(),
            ServerDatagram::Chat {
                sender: &longest,
                text: "hi"
            }
        );
    }

    #[test]
    fn the_borrowed_msg_encoder_writes_the_same_bytes() {
        let message = ChatMessage {
            id: 7,
            from: "zoë".into(),
            text: "a \"quoted\" line\n".into(),
            ts: 1_700_000_000_000,
            me: false,
            to: None,
        };
        let mut owned = Vec::new();
        encode_v2(&ServerV2::Msg(message.clone()), &mut owned);
        let mut borrowed = Vec::new();
        encode_v2_msg(&message, &mut borrowed);
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn v1_frames_are_byte_exact() {
        let mut out = Vec::new();
        encode_v1_chat("bob", "hi there", &mut out).unwrap();
        assert_eq!(out, b"\x03bobhi there");
        assert_eq!(
            ServerDatagram::decode(&out).unwrap(),
            ServerDatagram::Chat {
                sender: "bob",
                text: "hi there"
            }
        );
        assert_eq!(
            ServerDatagram::decode(ROOM_CLOSED).unwrap(),
            ServerDatagram::RoomClosed
        );
    }
}
