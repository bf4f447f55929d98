//! TCRP, the TCP control protocol: one request frame, two reply frames, then close.
//!
//! A frame is a 32-byte header (room name size, operation, state, 29-byte payload size) followed
//! by the room name and the payload. Decoding is incremental: `Ok(None)` means "feed me more
//! bytes", an `Err` means the peer sent something that can never become a valid frame.

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::{MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};

/// What a request asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Operation {
    /// Create a room and become its host.
    Create = 1,
    /// Join an existing room.
    Join = 2,
    /// Join the oldest waiting 1:1 room, or open a new one.
    Pair = 3,
    /// List public rooms; no token is issued.
    List = 4,
    /// Version 3, over TLS only: attach this connection to a membership the client holds
    /// (its token in the payload) as its tunnel, with fresh data-plane keys.
    Attach = 5,
}

impl Operation {
    /// Maps the wire byte to an operation, `None` for bytes the contract does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Create),
            2 => Some(Self::Join),
            3 => Some(Self::Pair),
            4 => Some(Self::List),
            5 => Some(Self::Attach),
            _ => None,
        }
    }
}

/// Which step of the exchange a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Client to server: the request.
    Request = 0,
    /// Server to client: accepted or refused.
    Compliance = 1,
    /// Server to client: the grant (token) or an empty token on failure.
    Complete = 2,
}

impl State {
    /// Maps the wire byte to a state, `None` for bytes the contract does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Request),
            1 => Some(Self::Compliance),
            2 => Some(Self::Complete),
            _ => None,
        }
    }
}

/// Ways a TCRP frame can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TcrpError {
    /// The declared payload is larger than the contract's limit; the body is never read.
    #[error("the declared payload size exceeds the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The state byte is not 0, 1 or 2.
    #[error("unknown frame state {0}")]
    UnknownState(u8),
    /// The room name is not valid UTF-8.
    #[error("the room name is not valid UTF-8")]
    RoomNameNotUtf8,
    /// A room name longer than 255 bytes cannot be described by the one-byte size field.
    #[error("a room name of {0} bytes does not fit in a frame")]
    RoomNameTooLong(usize),
}

/// The fixed 32-byte header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of room name that follow the header.
    pub room_name_len: u8,
    /// The raw operation byte, kept raw so that an unknown operation can still be echoed.
    pub operation: u8,
    /// Which step of the exchange this is.
    pub state: State,
    /// Bytes of payload after the room name; never more than [`MAX_TCRP_PAYLOAD`].
    pub payload_len: usize,
}

impl Header {
    /// Decodes a header from the start of `buf`. `Ok(None)` while fewer than 32 bytes arrived.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, TcrpError> {
        let Some(header) = buf.get(..TCRP_HEADER_LEN) else {
            return Ok(None);
        };
        // The size field is 29 bytes wide; anything that does not fit in the last 8 is far
        // beyond the limit, so it is refused without ever being turned into a number.
        let (high, low) = header[3..].split_at(29 - 8);
        if high.iter().any(|&b| b != 0) {
            return Err(TcrpError::PayloadTooLarge {
                limit: MAX_TCRP_PAYLOAD,
            });
        }
        let mut low_bytes = [0u8; 8];
        low_bytes.copy_from_slice(low);
        let declared = u64::from_be_bytes(low_bytes);
        if declared > MAX_TCRP_PAYLOAD as u64 {
            return Err(TcrpError::PayloadTooLarge {
                limit: MAX_TCRP_PAYLOAD,
            });
        }
        let state = State::from_byte(header[2]).ok_or(TcrpError::UnknownState(header[2]))?;
        Ok(Some(Self {
            room_name_len: header[0],
            operation: header[1],
            state,
            // Bounded by MAX_TCRP_PAYLOAD above, so the conversion cannot truncate.
            payload_len: declared as usize,
        }))
    }

    /// Encodes the header into its 32 wire bytes.
    pub fn encode(&self) -> [u8; TCRP_HEADER_LEN] {
        let mut out = [0u8; TCRP_HEADER_LEN];
        out[0] = self.room_name_len;
        out[1] = self.operation;
        out[2] = self.state as u8;
        out[TCRP_HEADER_LEN - 8..].copy_from_slice(&(self.payload_len as u64).to_be_bytes());
        out
    }

    /// Size of the whole frame this header announces.
    pub fn frame_len(&self) -> usize {
        TCRP_HEADER_LEN + usize::from(self.room_name_len) + self.payload_len
    }
}

/// A whole TCRP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The raw operation byte (see [`Operation::from_byte`]).
    pub operation: u8,
    /// Which step of the exchange this is.
    pub state: State,
    /// The room name, echoed by the server in both replies.
    pub room_name: String,
    /// The operation payload (a username form in requests, JSON in replies).
    pub payload: Vec<u8>,
}

impl Frame {
    /// Builds a frame.
    pub fn new(operation: u8, state: State, room_name: &str, payload: Vec<u8>) -> Self {
        Self {
            operation,
            state,
            room_name: room_name.to_owned(),
            payload,
        }
    }

    /// Decodes one frame from the start of `buf`, returning it with the bytes it used.
    /// `Ok(None)` means the frame is not complete yet.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, TcrpError> {
        let Some(header) = Header::decode(buf)? else {
            return Ok(None);
        };
        let total = header.frame_len();
        let Some(body) = buf.get(TCRP_HEADER_LEN..total) else {
            return Ok(None);
        };
        let (room, payload) = body.split_at(usize::from(header.room_name_len));
        let room_name = std::str::from_utf8(room).map_err(|_| TcrpError::RoomNameNotUtf8)?;
        Ok(Some((
            Self {
                operation: header.operation,
                state: header.state,
                room_name: room_name.to_owned(),
                payload: payload.to_vec(),
            },
            total,
        )))
    }

    /// Encodes the frame. Fails only for a room name longer than 255 bytes or a payload over
    /// the contract's limit, neither of which a validated request can produce.
    pub fn encode(&self) -> Result<Vec<u8>, TcrpError> {
        let room = self.room_name.as_bytes();
        let room_name_len =
            u8::try_from(room.len()).map_err(|_| TcrpError::RoomNameTooLong(room.len()))?;
        if self.payload.len() > MAX_TCRP_PAYLOAD {
            return Err(TcrpError::PayloadTooLarge {
                limit: MAX_TCRP_PAYLOAD,
            });
        }
        let header = Header {
            room_name_len,
            operation: self.operation,
            state: self.state,
            payload_len: self.payload.len(),
        };
        let mut out = Vec::with_capacity(header.frame_len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(room);
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Ways a request payload can fail to name a user.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// The payload is not valid UTF-8.
    #[error("the payload is not valid UTF-8")]
    NotUtf8,
    /// The payload is a JSON object or array that does not carry a string `username`.
    #[error("the JSON payload must be a string or an object with a string \"username\"")]
    MissingUsername,
    /// `password` is present but is not a string.
    #[error("\"password\" must be a string")]
    BadPassword,
    /// An attach payload is not a JSON object with a string `token`.
    #[error("an attach payload must be a JSON object with a string \"token\"")]
    MissingToken,
}

/// Who is asking, as carried by a request payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    /// The username, not yet validated against the naming rules.
    pub username: String,
    /// Password for a private room: sets it on create, must match on join.
    pub password: Option<String>,
}

impl UserRequest {
    /// Reads the three accepted forms: a JSON string (the reference client), a JSON object
    /// `{"username":..,"password":..}`, or bare UTF-8 text that is not JSON.
    pub fn parse(payload: &[u8]) -> Result<Self, PayloadError> {
        let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
        // Only a payload that is JSON throughout is read as JSON. Checking that first (which
        // keeps no strings) stops a JSON string followed by junk from being copied out as a
        // username and then again as bare text; the allocation test found that case.
        let json = match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => serde_json::from_str::<PayloadJson>(text).ok(),
            Err(_) => None,
        };
        match json {
            Some(PayloadJson::Name(username)) => Ok(Self {
                username,
                password: None,
            }),
            Some(PayloadJson::Object { username, password }) => {
                let Some(JsonField::Text(username)) = username else {
                    return Err(PayloadError::MissingUsername);
                };
                let password = match password {
                    None | Some(JsonField::Null) => None,
                    Some(JsonField::Text(password)) => Some(password),
                    Some(JsonField::Other) => return Err(PayloadError::BadPassword),
                };
                Ok(Self { username, password })
            }
            Some(PayloadJson::Array) => Err(PayloadError::MissingUsername),
            // Bare text, including text that happens to parse as a JSON number or literal
            // (a user called `42` or `true` typed at a netcat prompt).
            Some(PayloadJson::Scalar) | None => Ok(Self {
                username: text.trim_end_matches(['\r', '\n']).to_owned(),
                password: None,
            }),
        }
    }

    /// The JSON object form, which is what our client sends.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        map.insert("username".into(), self.username.clone().into());
        if let Some(password) = &self.password {
            map.insert("password".into(), password.clone().into());
        }
        serde_json::Value::Object(map).to_string().into_bytes()
    }
}

/// A request payload read as JSON in one pass. Going through `serde_json::Value` built a whole
/// tree first: a payload of `[0,0,0,...]` cost 16 to 32 bytes of heap per byte. Here only
/// the strings that are kept are stored; everything else is skipped.
enum PayloadJson {
    /// A JSON string: the reference client's form.
    Name(String),
    /// A JSON object; a repeated key counts with its last value, as in a JSON map.
    Object {
        username: Option<JsonField>,
        password: Option<JsonField>,
    },
    /// A JSON array, which cannot name a user.
    Array,
    /// A number, `true`, `false` or `null`.
    Scalar,
}

/// The value of `username` or `password` in the object form.
enum JsonField {
    Text(String),
    Null,
    Other,
}

/// The keys of the object form that matter; any other is skipped.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PayloadKey {
    Username,
    Password,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for PayloadJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;

        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = PayloadJson;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Scalar)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Scalar)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Scalar)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Scalar)
            }

            fn visit_unit<E: de::Error>(self) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Scalar)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Name(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<PayloadJson, E> {
                Ok(PayloadJson::Name(text))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PayloadJson, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PayloadJson::Array)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PayloadJson, A::Error> {
                let (mut username, mut password) = (None, None);
                while let Some(key) = map.next_key::<PayloadKey>()? {
                    match key {
                        PayloadKey::Username => username = Some(map.next_value()?),
                        PayloadKey::Password => password = Some(map.next_value()?),
                        PayloadKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(PayloadJson::Object { username, password })
            }
        }

        deserializer.deserialize_any(PayloadVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = JsonField;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON value")
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonField, E> {
                Ok(JsonField::Other)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<JsonField, E> {
                Ok(JsonField::Other)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<JsonField, E> {
                Ok(JsonField::Other)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<JsonField, E> {
                Ok(JsonField::Other)
            }

            fn visit_unit<E: de::Error>(self) -> Result<JsonField, E> {
                Ok(JsonField::Null)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonField, E> {
                Ok(JsonField::Text(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<JsonField, E> {
                Ok(JsonField::Text(text))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonField, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonField::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonField, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonField::Other)
            }
        }

        deserializer.deserialize_any(FieldVisitor)
    }
}

/// The refusal reasons the contract defines, sent in the compliance reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be parsed.
    InvalidRequest,
    /// The declared payload is over the limit.
    PayloadTooLarge,
    /// The room name breaks the naming rules.
    InvalidRoomName,
    /// The username breaks the naming rules.
    InvalidUsername,
    /// Create: a room with that name exists.
    RoomExists,
    /// Join: no room has that name.
    RoomNotFound,
    /// Join: someone in the room already uses that name (case-insensitively).
    NameTaken,
    /// Join: the private room's password does not match.
    BadPassword,
    /// Join: the room has reached its member limit.
    RoomFull,
    /// The operation byte is not one the server supports.
    UnsupportedOperation,
    /// The server cannot take the request now (overload, state file not writable).
    ServerBusy,
    /// Join: too many wrong passwords lately, for this room or from this address.
    TooManyAttempts,
    /// Create: the source address already holds its cap of rooms.
    TooManyRooms,
    /// Join: the room's host banned this address (version 2's `/ban`).
    Banned,
    /// The server takes only encrypted handshakes (`--require-encryption`), or the operation
    /// needs TLS (attach).
    EncryptionRequired,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidRoomName => "invalid_room_name",
            Self::InvalidUsername => "invalid_username",
            Self::RoomExists => "room_exists",
            Self::RoomNotFound => "room_not_found",
            Self::NameTaken => "name_taken",
            Self::BadPassword => "bad_password",
            Self::RoomFull => "room_full",
            Self::UnsupportedOperation => "unsupported_operation",
            Self::ServerBusy => "server_busy",
            Self::TooManyAttempts => "too_many_attempts",
            Self::TooManyRooms => "too_many_rooms",
            Self::Banned => "banned",
            Self::EncryptionRequired => "encryption_required",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The State 1 reply: accepted, or refused with a code and a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compliance {
    /// 1 when accepted, 0 when refused (an integer, as the reference implementation sends).
    pub success: u8,
    /// The refusal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// The refusal explained for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Compliance {
    /// An accepted request.
    pub fn accepted() -> Self {
        Self {
            success: 1,
            error: None,
            message: None,
        }
    }

    /// A refused request.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            success: 0,
            error: Some(code),
            message: Some(message.into()),
        }
    }

    /// Whether the request was accepted.
    pub fn is_accepted(&self) -> bool {
        self.success == 1
    }
}

/// The State 2 reply to create, join and pair. On failure only `token` is present, empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The member's secret: 64 hex characters, or empty on failure.
    pub token: String,
    /// The room joined (for pair, the generated name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The username as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether this member hosts the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<bool>,
    /// The UDP port of the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    /// Flood control's burst: messages a member may send at once after a quiet spell. Absent
    /// when the server has flood control off. Clients pace themselves to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_burst: Option<u32>,
    /// Flood control's steady pace after the burst, in milliseconds per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_interval_ms: Option<u64>,
    /// The port of the server's HTTP listener (shared files, the page), when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Version 3: the key id of this member's sealed datagrams. Present only in a grant sent
    /// over TLS; both ends export the keys from that TLS session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u32>,
}

impl Grant {
    /// The reply that goes with a refusal.
    pub fn failed() -> Self {
        Self {
            token: String::new(),
            room: None,
            username: None,
            host: None,
            udp_port: None,
            send_burst: None,
            send_interval_ms: None,
            http_port: None,
            key_id: None,
        }
    }
}

/// The payload of an attach (operation 5): the token of the membership to attach to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The member's token, 64 hex characters.
    pub token: String,
}

impl AttachRequest {
    /// Parses an attach payload: a JSON object with a string `token`.
    pub fn parse(payload: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(payload).map_err(|_| PayloadError::MissingToken)
    }
}

/// One public room, as listed by operation 4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room's name.
    pub name: String,
    /// How many members it has.
    pub members: usize,
    /// Whether joining needs a password.
    pub private: bool,
    /// The room's topic, when it has one (version-1 clients ignore the extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// The State 2 reply to operation 4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    /// The rooms, in name order.
    pub rooms: Vec<RoomSummary>,
}

/// Serializes a reply body. Serializing these plain structs cannot fail.
pub fn to_json_payload<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: u8, room: &str, payload: &[u8]) -> Vec<u8> {
        Frame::new(op, State::Request, room, payload.to_vec())
            .encode()
            .unwrap()
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let bytes = request(2, "lobby", b"\"bob\"");
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.room_name, "lobby");
        assert_eq!(frame.payload, b"\"bob\"");
    }

    #[test]
    fn absurd_sizes_are_refused_from_the_header_alone() {
        let mut header = [0u8; 32];
        header[1] = 1;
        header[3] = 0x01; // 2^224 bytes
        assert_eq!(
            Frame::decode(&header),
            Err(TcrpError::PayloadTooLarge { limit: 16384 })
        );
        let mut just_over = [0u8; 32];
        just_over[24..].copy_from_slice(&16385u64.to_be_bytes());
        assert!(Header::decode(&just_over).is_err());
        let mut at_limit = [0u8; 32];
        at_limit[24..].copy_from_slice(&16384u64.to_be_bytes());
        assert_eq!(
            Header::decode(&at_limit).unwrap().unwrap().payload_len,
            16384
        );
    }

    #[test]
    fn payload_forms() {
        let reference = UserRequest::parse(b"\"alice\"").unwrap();
        assert_eq!(reference.username, "alice");
        let object = UserRequest::parse(br#"{"username":"bob","password":"pw"}"#).unwrap();
        assert_eq!(object.password.as_deref(), Some("pw"));
        assert_eq!(UserRequest::parse(b"carol\n").unwrap().username, "carol");
        assert_eq!(UserRequest::parse(b"42").unwrap().username, "42");
        assert_eq!(UserRequest::parse(b"\xff"), Err(PayloadError::NotUtf8));
        assert_eq!(
            UserRequest::parse(br#"{"name":"x"}"#),
            Err(PayloadError::MissingUsername)
        );
        let round = UserRequest::parse(&object.to_payload()).unwrap();
        assert_eq!(round, object);
    }

    #[test]
    fn payload_json_is_read_without_building_a_tree() {
        // Found by the allocation test: `[0,0,...]` cost 16-32 bytes of heap per payload byte
        // through `serde_json::Value`. The answers stay what they were.
        let zeros = format!("[{}0]", "0,".repeat(8000));
        assert_eq!(
            UserRequest::parse(zeros.as_bytes()),
            Err(PayloadError::MissingUsername)
        );
        let padded = format!(r#"{{"x":[{}0],"username":"bob"}}"#, "0,".repeat(8000));
        assert_eq!(
            UserRequest::parse(padded.as_bytes()).unwrap().username,
            "bob"
        );
        let repeated = UserRequest::parse(br#"{"username":"a","username":"b"}"#).unwrap();
        assert_eq!(repeated.username, "b");
        assert_eq!(
            UserRequest::parse(br#"{"username":"a","password":5}"#),
            Err(PayloadError::BadPassword)
        );
        assert_eq!(
            UserRequest::parse(br#"{"username":"a","password":null}"#).unwrap(),
            UserRequest {
                username: "a".into(),
                password: None
            }
        );
        assert_eq!(
            UserRequest::parse(br#"{"username":["a"]}"#),
            Err(PayloadError::MissingUsername)
        );
        assert_eq!(UserRequest::parse(b"null").unwrap().username, "null");
        assert_eq!(
            UserRequest::parse(b"{\"username\"").unwrap().username,
            "{\"username\""
        );
    }

    #[test]
    fn replies_match_the_contract() {
        assert_eq!(
            to_json_payload(&Compliance::accepted()),
            br#"{"success":1}"#
        );
        assert_eq!(
            to_json_payload(&Compliance::refused(ErrorCode::NameTaken, "taken")),
            br#"{"success":0,"error":"name_taken","message":"taken"}"#
        );
        assert_eq!(to_json_payload(&Grant::failed()), br#"{"token":""}"#);
    }
}
