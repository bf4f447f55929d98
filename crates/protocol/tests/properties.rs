//! Properties of the codecs over generated inputs: every value the encoders accept comes back
//! unchanged from the decoders, and no input at all makes a decoder panic or hand back more
//! than the contract allows.
//!
//! Case counts are small by default so that `cargo test` stays quick; set `PROPTEST_CASES` to
//! run many more (`scripts/fuzz.sh` does).

use chat_protocol::limits::{MAX_DATAGRAM, MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{Frame, Header, PayloadError, State, TcrpError, UserRequest};
use chat_protocol::ucrp::{
    ClientMessage, Datagram, ServerDatagram, UcrpError, V2_MARKER, encode_v1_chat, encode_v2,
};
use chat_protocol::v2::{ChatMessage, ClientV2, CloseReason, LeaveReason, ServerV2, V2ErrorCode};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde::Deserialize;

/// `cases` by default, or what `PROPTEST_CASES` asks for. `ProptestConfig::with_cases` alone
/// would override the environment variable.
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig {
        // Keep failure seeds beside this file (in the directory the tests own), not in a
        // `proptest-regressions` directory at the crate root.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_some() {
        base
    } else {
        ProptestConfig { cases, ..base }
    }
}

/// UTF-8 text of at most `max_bytes` bytes, mixing plain ASCII with any character at all
/// (controls, quotes, backslashes, astral planes) so that JSON escaping is exercised.
fn text(max_bytes: usize) -> impl Strategy<Value = String> {
    let character = prop_oneof![3 => proptest::char::range('a', 'z'), 1 => any::<char>()];
    proptest::collection::vec(character, 0..=max_bytes).prop_map(move |chars| {
        let mut out = String::new();
        for c in chars {
            if out.len() + c.len_utf8() > max_bytes {
                break;
            }
            out.push(c);
        }
        out
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Request),
        Just(State::Compliance),
        Just(State::Complete)
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u8>(), state(), text(255), bytes(MAX_TCRP_PAYLOAD))
        .prop_map(|(operation, state, room, payload)| Frame::new(operation, state, &room, payload))
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (
        any::<u64>(),
        text(32),
        text(200),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(text(32)),
    )
        .prop_map(|(id, from, text, ts, me, to)| ChatMessage {
            id,
            from,
            text,
            ts,
            me,
            to,
        })
}

fn client_v2() -> impl Strategy<Value = ClientV2> {
    prop_oneof![
        any::<Option<u64>>().prop_map(|last_id| ClientV2::Register { last_id }),
        (any::<u64>(), text(3000)).prop_map(|(seq, text)| ClientV2::Msg { seq, text }),
        any::<Option<u64>>().prop_map(|last_id| ClientV2::Ping { last_id }),
        Just(ClientV2::Typing),
        (any::<Option<u64>>(), any::<Option<u32>>())
            .prop_map(|(before, limit)| ClientV2::History { before, limit }),
        Just(ClientV2::Who),
        Just(ClientV2::Leave),
        text(40).prop_map(|nonce| ClientV2::Echo { nonce }),
        (any::<u64>(), text(3000)).prop_map(|(seq, text)| ClientV2::Me { seq, text }),
        text(200).prop_map(|text| ClientV2::Topic { text }),
        (any::<u64>(), text(32), text(3000)).prop_map(|(seq, to, text)| ClientV2::Dm {
            seq,
            to,
            text
        }),
        text(32).prop_map(|name| ClientV2::Kick { name }),
        text(100).prop_map(|text| ClientV2::Away { text }),
        Just(ClientV2::Back),
        (text(200), any::<Option<u64>>(), any::<Option<u32>>()).prop_map(
            |(words, before, limit)| ClientV2::Search {
                words,
                before,
                limit
            }
        ),
        text(32).prop_map(|name| ClientV2::Ban { name }),
        text(32).prop_map(|name| ClientV2::Host { name }),
    ]
}

fn server_v2() -> impl Strategy<Value = ServerV2> {
    let leave_reason = prop_oneof![
        Just(LeaveReason::Leave),
        Just(LeaveReason::Timeout),
        Just(LeaveReason::Kicked),
        Just(LeaveReason::Banned)
    ];
    let close_reason = prop_oneof![
        Just(CloseReason::HostLeft),
        Just(CloseReason::HostTimeout),
        Just(CloseReason::ServerShutdown)
    ];
    let error_code = prop_oneof![
        Just(V2ErrorCode::RateLimited),
        Just(V2ErrorCode::TooLarge),
        Just(V2ErrorCode::Invalid)
    ];
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(seq, id)| ServerV2::Ack { seq, id }),
        chat_message().prop_map(ServerV2::Msg),
        (
            proptest::collection::vec(chat_message(), 0..8),
            any::<bool>()
        )
            .prop_map(|(messages, more)| ServerV2::History { messages, more }),
        text(32).prop_map(|name| ServerV2::Joined { name }),
        (text(32), leave_reason).prop_map(|(name, reason)| ServerV2::Left { name, reason }),
        text(32).prop_map(|name| ServerV2::Typing { name }),
        (
            proptest::collection::vec(text(32), 0..16),
            text(32),
            any::<u64>(),
            proptest::option::of(text(200))
        )
            .prop_map(|(names, host, more, topic)| ServerV2::Members {
                names,
                host,
                more,
                topic,
                away: Default::default(),
            }),
        proptest::collection::btree_map(text(32), text(100), 0..4).prop_map(|away| {
            ServerV2::Members {
                names: away.keys().cloned().collect(),
                host: String::new(),
                more: 0,
                topic: None,
                away,
            }
        }),
        (text(32), proptest::option::of(text(100)))
            .prop_map(|(name, text)| ServerV2::Away { name, text }),
        (
            text(200),
            proptest::collection::vec(chat_message(), 0..8),
            any::<bool>()
        )
            .prop_map(|(words, messages, more)| ServerV2::Found {
                words,
                messages,
                more
            }),
        (text(32), text(200)).prop_map(|(name, text)| ServerV2::Topic { name, text }),
        any::<u64>().prop_map(|id| ServerV2::Skip { id }),
        (text(32), any::<bool>()).prop_map(|(by, ban)| ServerV2::Kicked { by, ban }),
        text(32).prop_map(|name| ServerV2::Host { name }),
        text(40).prop_map(|nonce| ServerV2::Challenge { nonce }),
        Just(ServerV2::Moved),
        any::<u64>().prop_map(|id| ServerV2::Pong { id }),
        close_reason.prop_map(|reason| ServerV2::RoomClosed { reason }),
        (error_code, any::<Option<u64>>(), text(200))
            .prop_map(|(code, seq, message)| ServerV2::Error { code, seq, message }),
    ]
}

/// Any JSON value, nested a few levels, with the strings and numbers decoders trip over.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(40).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(text(12), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The version-2 field names of both directions, so that generated objects hit them.
const V2_FIELDS: &[&str] = &[
    "last_id", "seq", "text", "before", "limit", "id", "from", "ts", "messages", "more", "name",
    "reason", "names", "host", "code", "message", "nonce",
];
const V2_TYPES: &[&str] = &[
    "echo",
    "challenge",
    "moved",
    "register",
    "msg",
    "ping",
    "typing",
    "history",
    "who",
    "leave",
    "ack",
    "joined",
    "left",
    "members",
    "pong",
    "room_closed",
    "error",
    "nonsense",
];

/// A well-typed value for a known version-2 field, or `None` for a field this crate ignores.
fn v2_field_value(field: &'static str) -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value, json};
    match field {
        "last_id" | "seq" | "before" | "id" | "ts" => any::<u64>().prop_map(Value::from).boxed(),
        "limit" => any::<u32>().prop_map(Value::from).boxed(),
        "more" => prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from)
        ]
        .boxed(),
        "messages" => proptest::collection::vec(chat_message(), 0..3)
            .prop_map(|messages| json!(messages))
            .boxed(),
        "names" => proptest::collection::vec(text(8), 0..3)
            .prop_map(|names| json!(names))
            .boxed(),
        "reason" => proptest::sample::select(vec![
            "leave",
            "timeout",
            "host_left",
            "host_timeout",
            "server_shutdown",
        ])
        .prop_map(Value::from)
        .boxed(),
        "code" => proptest::sample::select(vec!["rate_limited", "too_large", "invalid"])
            .prop_map(Value::from)
            .boxed(),
        _ => text(16).prop_map(Value::String).boxed(),
    }
}

/// A version-2-looking object: a `t`, some known fields (each at most once, well typed) and
/// unknown fields holding anything, in any order.
fn v2_object() -> impl Strategy<Value = String> {
    let known =
        proptest::sample::subsequence(V2_FIELDS, 0..=V2_FIELDS.len()).prop_flat_map(|fields| {
            fields
                .into_iter()
                .map(|field| v2_field_value(field).prop_map(move |value| (field.to_owned(), value)))
                .collect::<Vec<_>>()
        });
    let unknown = proptest::collection::vec(("x[a-z]{0,3}", json_value()), 0..3);
    (
        proptest::sample::select(V2_TYPES),
        known,
        unknown,
        any::<usize>(),
    )
        .prop_map(|(kind, known, unknown, tag_position)| {
            let mut fields: Vec<(String, serde_json::Value)> = known;
            fields.extend(unknown);
            let at = tag_position % (fields.len() + 1);
            fields.insert(at, ("t".to_owned(), kind.into()));
            // Written by hand: a JSON map would sort the keys and hide the tag's position.
            let body: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("{}:{value}", serde_json::Value::from(key.as_str())))
                .collect();
            format!("{{{}}}", body.join(","))
        })
}

/// Bytes built to look like a TCRP frame: a real header layout whose size field may be
/// anything from small to absurd, followed by a body that may be short, exact or long.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let size_field = prop_oneof![
        (0u64..=MAX_TCRP_PAYLOAD as u64 + 2).prop_map(|size| {
            let mut field = [0u8; 29];
            field[21..].copy_from_slice(&size.to_be_bytes());
            field
        }),
        any::<u64>().prop_map(|size| {
            let mut field = [0u8; 29];
            field[21..].copy_from_slice(&size.to_be_bytes());
            field
        }),
        (0usize..21, 1u8..=255).prop_map(|(at, byte)| {
            let mut field = [0u8; 29];
            field[at] = byte;
            field
        }),
    ];
    (
        any::<u8>(),
        any::<u8>(),
        0u8..4,
        size_field,
        bytes(MAX_TCRP_PAYLOAD + 4096),
    )
        .prop_map(|(room_len, operation, state, size, body)| {
            let mut out = vec![room_len, operation, state];
            out.extend_from_slice(&size);
            out.extend_from_slice(&body);
            out
        })
}

/// What the size field of a 32-byte header declares, or `None` when it does not fit a u64.
fn declared_size(header: &[u8]) -> Option<u64> {
    let field = &header[3..TCRP_HEADER_LEN];
    if field[..21].iter().any(|&b| b != 0) {
        return None;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&field[21..]);
    Some(u64::from_be_bytes(low))
}

/// Runs every decoder on `input` and checks what each one is allowed to return.
fn decode_everything(input: &[u8]) {
    if let Ok(Some(header)) = Header::decode(input) {
        assert!(header.payload_len <= MAX_TCRP_PAYLOAD);
    }
    match Frame::decode(input) {
        Ok(Some((frame, used))) => {
            assert!(frame.payload.len() <= MAX_TCRP_PAYLOAD);
            assert!(used <= input.len());
            assert_eq!(
                used,
                TCRP_HEADER_LEN + frame.room_name.len() + frame.payload.len()
            );
        }
        Ok(None) => assert!(input.len() < TCRP_HEADER_LEN + 255 + MAX_TCRP_PAYLOAD),
        Err(_) => assert!(input.len() >= TCRP_HEADER_LEN),
    }
    if let Ok(datagram) = Datagram::decode(input) {
        assert!(input.len() <= MAX_DATAGRAM);
        let _ = ClientMessage::decode(datagram.message);
    }
    let _ = ClientMessage::decode(input);
    let _ = ServerDatagram::decode(input);
    let _ = UserRequest::parse(input);
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn frames_round_trip(frame in frame(), trailing in bytes(64)) {
        let mut encoded = frame.encode().expect("generated frames are within the limits");
        let len = encoded.len();
        prop_assert_eq!(Frame::decode(&encoded), Ok(Some((frame.clone(), len))));
        // Bytes that follow (a pipelined frame) are left for the next call.
        encoded.extend_from_slice(&trailing);
        prop_assert_eq!(Frame::decode(&encoded), Ok(Some((frame, len))));
    }

    #[test]
    fn every_strict_prefix_of_a_frame_asks_for_more(frame in frame()) {
        let encoded = frame.encode().expect("generated frames are within the limits");
        for cut in 0..encoded.len() {
            prop_assert_eq!(Frame::decode(&encoded[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn frames_decode_from_arbitrary_chunks(
        frame in frame(),
        chunks in proptest::collection::vec(1usize..2048, 1..64),
    ) {
        let encoded = frame.encode().expect("generated frames are within the limits");
        // What a reader does: append what arrived, try to decode, repeat.
        let mut received = Vec::new();
        let mut sizes = chunks.iter().cycle();
        let mut decoded = None;
        while received.len() < encoded.len() {
            let size = *sizes.next().expect("cycle over a non-empty vec");
            let end = (received.len() + size).min(encoded.len());
            received.extend_from_slice(&encoded[received.len()..end]);
            match Frame::decode(&received) {
                Ok(None) => prop_assert!(received.len() < encoded.len()),
                Ok(Some(whole)) => {
                    prop_assert_eq!(received.len(), encoded.len());
                    decoded = Some(whole);
                }
                Err(error) => prop_assert!(false, "decoding failed: {error}"),
            }
        }
        prop_assert_eq!(decoded, Some((frame, encoded.len())));
    }

    #[test]
    fn v1_chat_frames_round_trip(
        // Senders of 253..=256 bytes straddle the longest one the size byte can announce.
        sender in prop_oneof![text(256), "[a-z]{253,256}"],
        text in text(MAX_DATAGRAM),
    ) {
        let mut encoded = Vec::new();
        match encode_v1_chat(&sender, &text, &mut encoded) {
            Ok(()) => {
                prop_assert!(sender.len() < 255 && encoded.len() <= MAX_DATAGRAM);
                let decoded = ServerDatagram::decode(&encoded).expect("what we encode decodes");
                prop_assert_eq!(decoded, ServerDatagram::Chat { sender: &sender, text: &text });
            }
            Err(UcrpError::SenderTooLong(len)) => prop_assert!(len >= 255),
            Err(UcrpError::TooLarge(total)) => prop_assert!(total > MAX_DATAGRAM),
            Err(other) => prop_assert!(false, "unexpected refusal: {other}"),
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn arbitrary_bytes_never_panic(input in bytes(20 * 1024)) {
        decode_everything(&input);
    }

    #[test]
    fn header_like_bytes_never_panic_nor_exceed_the_limit(input in header_like()) {
        decode_everything(&input);
        let declared = declared_size(&input);
        let over = declared.is_none_or(|size| size > MAX_TCRP_PAYLOAD as u64);
        // An oversized declaration is refused from the header alone, whatever follows it.
        for cut in [TCRP_HEADER_LEN, input.len()] {
            let result = Frame::decode(&input[..cut]);
            if over {
                let refused = TcrpError::PayloadTooLarge { limit: MAX_TCRP_PAYLOAD };
                prop_assert_eq!(result, Err(refused));
            } else if let Ok(Some((frame, _))) = result {
                prop_assert!(frame.payload.len() <= MAX_TCRP_PAYLOAD);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn datagrams_round_trip(
        room in text(255),
        token in bytes(255),
        message in bytes(MAX_DATAGRAM),
    ) {
        let capacity = Datagram::message_capacity(&room, &token);
        let message = &message[..message.len().min(capacity)];
        let datagram = Datagram { room: &room, token: &token, message };
        let encoded = datagram.encode().expect("the message was cut to fit");
        prop_assert!(encoded.len() <= MAX_DATAGRAM);
        prop_assert_eq!(Datagram::decode(&encoded).expect("what we encode decodes"), datagram);
    }

    #[test]
    fn user_requests_round_trip(username in text(64), password in proptest::option::of(text(64))) {
        let request = UserRequest { username, password };
        prop_assert_eq!(UserRequest::parse(&request.to_payload()), Ok(request));
    }

    #[test]
    fn client_v2_messages_round_trip(message in client_v2()) {
        let mut encoded = vec![V2_MARKER];
        serde_json::to_writer(&mut encoded, &message).expect("plain values serialize");
        prop_assert_eq!(ClientMessage::decode(&encoded).expect("what we encode decodes"),
            ClientMessage::V2(message));
    }

    #[test]
    fn server_v2_messages_round_trip(message in server_v2()) {
        let mut encoded = Vec::new();
        encode_v2(&message, &mut encoded);
        let decoded = ServerDatagram::decode(&encoded);
        if encoded.len() <= MAX_DATAGRAM {
            prop_assert_eq!(decoded.expect("what we encode decodes"), ServerDatagram::V2(message));
        } else {
            prop_assert!(matches!(decoded, Err(UcrpError::TooLarge(_))));
        }
    }

    #[test]
    fn oversized_declarations_are_errors_without_a_body(
        size in (MAX_TCRP_PAYLOAD as u64 + 1)..=u64::MAX,
        high in proptest::option::of((0usize..21, 1u8..=255)),
        room_len in any::<u8>(),
        operation in any::<u8>(),
        state in 0u8..3,
    ) {
        let mut header = [0u8; TCRP_HEADER_LEN];
        header[..3].copy_from_slice(&[room_len, operation, state]);
        header[24..].copy_from_slice(&size.to_be_bytes());
        if let Some((at, byte)) = high {
            header[3 + at] = byte;
        }
        let refused = Some(TcrpError::PayloadTooLarge { limit: MAX_TCRP_PAYLOAD });
        prop_assert_eq!(Header::decode(&header).err(), refused.clone());
        prop_assert_eq!(Frame::decode(&header).err(), refused);
    }

    #[test]
    fn json_shaped_input_never_panics(value in json_value(), object in v2_object()) {
        for json in [value.to_string(), object] {
            let mut v2 = vec![V2_MARKER];
            v2.extend_from_slice(json.as_bytes());
            decode_everything(json.as_bytes());
            decode_everything(&v2);
        }
    }

    /// The one-pass payload reader agrees with reading through a `serde_json::Value` tree
    /// (what `UserRequest::parse` used to do) on every JSON value.
    #[test]
    fn user_request_parse_matches_the_json_tree_reading(value in json_value()) {
        let payload = value.to_string();
        prop_assert_eq!(UserRequest::parse(payload.as_bytes()), parse_via_tree(&payload));
    }

    /// The one-pass version-2 decoders agree with serde's derived decoder for internally
    /// tagged enums (what they replaced) on objects whose known fields are well typed.
    #[test]
    fn v2_decoding_matches_the_derived_decoder(object in v2_object()) {
        let client = serde_json::from_str::<ClientV2>(&object).ok();
        let derived_client = serde_json::from_str::<DerivedClientV2>(&object)
            .ok()
            .map(|derived| reencode::<ClientV2>(&derived));
        prop_assert_eq!(client, derived_client);
        let server = serde_json::from_str::<ServerV2>(&object).ok();
        let derived_server = serde_json::from_str::<DerivedServerV2>(&object)
            .ok()
            .map(|derived| reencode::<ServerV2>(&derived));
        prop_assert_eq!(server, derived_server);
    }
}

/// `UserRequest::parse` as it was first written, through a `serde_json::Value`.
fn parse_via_tree(text: &str) -> Result<UserRequest, PayloadError> {
    use serde_json::Value;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(username)) => Ok(UserRequest {
            username,
            password: None,
        }),
        Ok(Value::Object(map)) => {
            let username = match map.get("username") {
                Some(Value::String(name)) => name.clone(),
                _ => return Err(PayloadError::MissingUsername),
            };
            let password = match map.get("password") {
                None | Some(Value::Null) => None,
                Some(Value::String(password)) => Some(password.clone()),
                Some(_) => return Err(PayloadError::BadPassword),
            };
            Ok(UserRequest { username, password })
        }
        Ok(Value::Array(_)) => Err(PayloadError::MissingUsername),
        _ => Ok(UserRequest {
            username: text.trim_end_matches(['\r', '\n']).to_owned(),
            password: None,
        }),
    }
}

/// Turns a value of a derived mirror type into the crate's type through the canonical
/// encoding, which both sides write the same way.
fn reencode<T: serde::de::DeserializeOwned>(derived: &impl serde::Serialize) -> T {
    let json = serde_json::to_string(derived).expect("plain values serialize");
    serde_json::from_str(&json).expect("the canonical encoding decodes")
}

/// `ClientV2` with serde's derived decoder, as the crate first had it.
#[derive(serde::Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum DerivedClientV2 {
    Register {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    Msg {
        seq: u64,
        text: String,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    Typing,
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Who,
    Leave,
    Echo {
        nonce: String,
    },
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// `ServerV2` with serde's derived decoder, as the crate first had it.
#[derive(serde::Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum DerivedServerV2 {
    Ack {
        seq: u64,
        id: u64,
    },
    Msg(ChatMessage),
    History {
        messages: Vec<ChatMessage>,
        more: bool,
    },
    Joined {
        name: String,
    },
    Left {
        name: String,
        reason: LeaveReason,
    },
    Typing {
        name: String,
    },
    Members {
        names: Vec<String>,
        host: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u64,
    },
    Challenge {
        nonce: String,
    },
    Moved,
    Pong {
        id: u64,
    },
    RoomClosed {
        reason: CloseReason,
    },
    Error {
        code: V2ErrorCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        message: String,
    },
}
