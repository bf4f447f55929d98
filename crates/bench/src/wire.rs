//! Which version of the chat datagrams the load generator's members speak, and the version-2
//! messages they send: `0xFF` + one JSON object (chat_protocol::v2::ClientV2). Version 3 seals
//! the same messages (crate::tls, crate::member).

use std::io::Write;

use chat_protocol::ucrp::V2_MARKER;
use chat_protocol::v2::ClientV2;
use clap::ValueEnum;

/// The wire version of a load run's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// `__REGISTER__`, plain chat text, `[len][sender][text]` frames back.
    V1,
    /// Version-2 register, `msg` with a per-member `seq`, acks and `msg` events back.
    V2,
    /// Version 3: the handshake inside TLS 1.3, then the version-2 messages sealed with
    /// ChaCha20-Poly1305 under keys exported from that TLS session, over UDP (register with
    /// challenge and echo).
    V3,
    /// Version 3 with every datagram through the member's TLS connection (the tunnel)
    /// instead of UDP; register over the tunnel, no challenge. Chosen with `--transport`.
    #[value(skip)]
    V3Tunnel,
}

impl Protocol {
    /// Its name in report rows.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
            Self::V3Tunnel => "v3-tunnel",
        }
    }

    /// Whether its chat is version 2's `msg` with a `seq`, acked by the server.
    pub fn has_acks(self) -> bool {
        !matches!(self, Self::V1)
    }

    /// Whether its datagrams are sealed (version 3), over either path.
    pub fn is_sealed(self) -> bool {
        matches!(self, Self::V3 | Self::V3Tunnel)
    }

    /// Whether its datagrams go through the TLS tunnel.
    pub fn is_tunnel(self) -> bool {
        self == Self::V3Tunnel
    }
}

/// Appends a version-2 client message (marker and JSON) to `out`. For the rare messages
/// (register, ping); chat goes through [`append_v2_chat`].
pub fn append_v2(message: &ClientV2, out: &mut Vec<u8>) {
    out.push(V2_MARKER);
    // Serializing a plain enum into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message);
}

/// Appends `0xFF{"t":"msg","seq":SEQ,"text":"TEXT"}` to `out`. The load generator's payloads
/// are digits, colons and dots, which JSON carries as they are, so the message is written
/// directly instead of through an owned `ClientV2` (an allocation and a serializer per
/// message on the pacer thread, which must not be what limits the rate); any text that would
/// need escaping goes through serde instead.
pub fn append_v2_chat(seq: u64, text: &str, out: &mut Vec<u8>) {
    out.push(V2_MARKER);
    append_v2_chat_json(seq, text, out);
}

/// Appends `{"t":"msg","seq":SEQ,"text":"TEXT"}`, the JSON of [`append_v2_chat`] without the
/// datagram marker: what a WebSocket member sends as one text message.
pub fn append_v2_chat_json(seq: u64, text: &str, out: &mut Vec<u8>) {
    if text.bytes().any(needs_json_escape) {
        let message = ClientV2::Msg {
            seq,
            text: text.to_owned(),
        };
        // Serializing a plain enum into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &message);
        return;
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, r#"{{"t":"msg","seq":{seq},"text":""#);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Bytes JSON strings cannot hold as they are: the quote, the backslash and control
/// characters.
fn needs_json_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::ucrp::ClientMessage;

    use crate::payload::{MIN_PAYLOAD_LEN, Stamp, write_payload};

    fn decoded(bytes: &[u8]) -> ClientV2 {
        match ClientMessage::decode(bytes).unwrap() {
            ClientMessage::V2(message) => message,
            other => panic!("not a version-2 message: {other:?}"),
        }
    }

    #[test]
    fn a_payload_chat_message_is_what_the_server_decodes() {
        let mut payload = Vec::new();
        let stamp = Stamp {
            run: 3,
            seq: 12_345,
            sent_nanos: 987_654_321,
        };
        write_payload(stamp, MIN_PAYLOAD_LEN, &mut payload);
        let text = std::str::from_utf8(&payload).unwrap();
        let mut out = Vec::new();
        append_v2_chat(42, text, &mut out);
        assert_eq!(
            decoded(&out),
            ClientV2::Msg {
                seq: 42,
                text: text.to_owned()
            }
        );
        let mut via_serde = Vec::new();
        append_v2(
            &ClientV2::Msg {
                seq: 42,
                text: text.to_owned(),
            },
            &mut via_serde,
        );
        assert_eq!(out, via_serde, "same bytes as the serde encoding");
    }

    #[test]
    fn text_that_needs_escaping_still_round_trips() {
        let text = "a \"quoted\" line\\ with\ta tab";
        let mut out = Vec::new();
        append_v2_chat(7, text, &mut out);
        assert_eq!(
            decoded(&out),
            ClientV2::Msg {
                seq: 7,
                text: text.to_owned()
            }
        );
    }

    #[test]
    fn the_websocket_chat_message_is_the_datagram_without_its_marker() {
        for text in ["1:2:3:....", "a \"quoted\" line"] {
            let mut datagram = Vec::new();
            append_v2_chat(9, text, &mut datagram);
            let mut json = Vec::new();
            append_v2_chat_json(9, text, &mut json);
            assert_eq!(datagram[0], V2_MARKER);
            assert_eq!(&datagram[1..], &json[..]);
            let parsed: ClientV2 = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                parsed,
                ClientV2::Msg {
                    seq: 9,
                    text: text.to_owned()
                }
            );
        }
    }

    #[test]
    fn register_is_the_bare_v2_register() {
        let mut out = Vec::new();
        append_v2(&ClientV2::Register { last_id: None }, &mut out);
        assert_eq!(out, b"\xff{\"t\":\"register\"}");
    }
}
