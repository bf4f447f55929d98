//! The control plane from a test's side: TCRP exchanges with raw or well-formed requests, and
//! their two reply frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use chat_protocol::tcrp::{Frame, State};

use crate::EVENT_TIMEOUT;

/// The two reply frames of one TCRP exchange, as JSON.
#[derive(Debug)]
pub struct Replies {
    /// State 1 frame.
    pub compliance: Frame,
    /// State 2 frame.
    pub complete: Frame,
}

impl Replies {
    /// The compliance payload as JSON.
    pub fn compliance_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.compliance.payload).expect("compliance payload is JSON")
    }

    /// The complete payload as JSON.
    pub fn complete_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.complete.payload).expect("complete payload is JSON")
    }

    /// The error code of a refusal, or None when accepted.
    pub fn error_code(&self) -> Option<String> {
        let json = self.compliance_json();
        (json["success"] != 1).then(|| json["error"].as_str().unwrap_or("").to_owned())
    }

    /// The token of a grant (panics on a refusal, with the server's message).
    pub fn token(&self) -> String {
        let json = self.compliance_json();
        assert_eq!(json["success"], 1, "handshake refused: {json}");
        self.complete_json()["token"]
            .as_str()
            .expect("grant has a token")
            .to_owned()
    }
}

/// Sends raw bytes as a TCRP request and reads everything the server answers until it closes.
pub fn raw_exchange(tcp: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(tcp).expect("connect to the control plane");
    stream
        .set_read_timeout(Some(EVENT_TIMEOUT))
        .expect("set timeout");
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// Decodes the frames in a reply stream.
pub fn decode_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(Some((frame, used))) = Frame::decode(bytes) {
        frames.push(frame);
        bytes = &bytes[used..];
    }
    assert!(
        bytes.is_empty(),
        "trailing bytes after the reply frames: {bytes:?}"
    );
    frames
}

/// One TCRP exchange with an arbitrary payload.
pub fn handshake(tcp: SocketAddr, operation: u8, room: &str, payload: &[u8]) -> Replies {
    let request = Frame::new(operation, State::Request, room, payload.to_vec())
        .encode()
        .expect("encodable request");
    let mut frames = decode_frames(&raw_exchange(tcp, &request)).into_iter();
    let compliance = frames.next().expect("a State 1 reply");
    let complete = frames.next().expect("a State 2 reply");
    assert_eq!(compliance.state, State::Compliance);
    assert_eq!(complete.state, State::Complete);
    Replies {
        compliance,
        complete,
    }
}

/// Create, with the reference client's JSON-string payload.
pub fn create(tcp: SocketAddr, room: &str, username: &str) -> Replies {
    handshake(
        tcp,
        1,
        room,
        serde_json::to_string(username).expect("json").as_bytes(),
    )
}

/// Join, with the reference client's JSON-string payload.
pub fn join(tcp: SocketAddr, room: &str, username: &str) -> Replies {
    handshake(
        tcp,
        2,
        room,
        serde_json::to_string(username).expect("json").as_bytes(),
    )
}

/// One TCRP exchange that may fail, for tests that kill or stop the server mid-burst: the two
/// reply frames, or None when the connection failed or closed before both arrived.
pub fn try_handshake(
    tcp: SocketAddr,
    operation: u8,
    room: &str,
    payload: &[u8],
) -> Option<Replies> {
    let request = Frame::new(operation, State::Request, room, payload.to_vec())
        .encode()
        .expect("encodable request");
    let mut stream = TcpStream::connect_timeout(&tcp, EVENT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).ok()?;
    stream.write_all(&request).ok()?;
    let mut reply = Vec::new();
    // A reset after the replies still leaves them in `reply`.
    let _ = stream.read_to_end(&mut reply);
    let (compliance, used) = Frame::decode(&reply).ok()??;
    let (complete, _) = Frame::decode(&reply[used..]).ok()??;
    (compliance.state == State::Compliance && complete.state == State::Complete).then_some(
        Replies {
            compliance,
            complete,
        },
    )
}
