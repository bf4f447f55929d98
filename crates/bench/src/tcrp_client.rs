//! The client half of a TCRP handshake, blocking: connect, send one request frame, read the
//! compliance and complete frames, and let the server close.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chat_protocol::limits::{MAX_ROOM_NAME, MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{Compliance, Frame, Grant, Operation, State, UserRequest};

use crate::error::{BenchError, Result};

/// Connect, read and write timeout of one handshake.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes two reply frames can take.
const MAX_REPLY_BYTES: usize = 2 * (TCRP_HEADER_LEN + u8::MAX as usize + MAX_TCRP_PAYLOAD);

/// How a handshake ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted: the member's grant.
    Granted(Grant),
    /// Refused with an error code.
    Refused {
        /// The contract's error code (or `unknown`).
        code: String,
        /// The server's sentence.
        message: String,
    },
}

/// One finished handshake and how long it took from connect to the second reply frame.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// What the server answered.
    pub outcome: Outcome,
    /// Connect to both reply frames received.
    pub elapsed: Duration,
}

/// The request frame of a create, join (or list) for `username` in `room`.
pub fn request_frame(operation: Operation, room: &str, username: &str) -> Result<Vec<u8>> {
    debug_assert!(room.len() <= MAX_ROOM_NAME);
    Frame::new(
        operation as u8,
        State::Request,
        room,
        UserRequest {
            username: username.to_owned(),
            password: None,
        }
        .to_payload(),
    )
    .encode()
    .map_err(|e| BenchError::BadReply(format!("cannot encode the request: {e}")))
}

/// Performs one create or join for `username` in `room`.
pub fn handshake(
    addr: SocketAddr,
    operation: Operation,
    room: &str,
    username: &str,
) -> Result<Handshake> {
    let request = request_frame(operation, room, username)?;
    let io = |source| BenchError::Handshake { addr, source };

    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let (compliance, complete, _) = exchange(&mut stream, &request, io)?;
    let elapsed = started.elapsed();
    let outcome = outcome(compliance, complete)?;
    Ok(Handshake { outcome, elapsed })
}

/// Writes `request` and reads the two reply frames, over plain TCP or inside TLS. Returns
/// them and whatever bytes followed them.
pub fn exchange<S: Read + Write>(
    stream: &mut S,
    request: &[u8],
    io: impl Fn(std::io::Error) -> BenchError,
) -> Result<(Frame, Frame, Vec<u8>)> {
    stream.write_all(request).map_err(&io)?;
    stream.flush().map_err(&io)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let mut frames = Vec::with_capacity(2);
    let mut interrupted = 0u32;
    while frames.len() < 2 {
        match Frame::decode(&buf).map_err(|e| BenchError::BadReply(e.to_string()))? {
            Some((frame, used)) => {
                buf.drain(..used);
                frames.push(frame);
                continue;
            }
            None if buf.len() >= MAX_REPLY_BYTES => {
                return Err(BenchError::BadReply(
                    "reply larger than two frames".to_owned(),
                ));
            }
            None => {}
        }
        // A read with a timeout is not restarted after the process was stopped and continued
        // (signal(7)); it is asked again, up to 100 times.
        let read = match stream.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && interrupted < 100 => {
                interrupted += 1;
                continue;
            }
            other => other.map_err(&io)?,
        };
        if read == 0 {
            return Err(BenchError::BadReply(format!(
                "the server closed the connection after {} of 2 reply frames",
                frames.len()
            )));
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    let [compliance, complete] = <[Frame; 2]>::try_from(frames)
        .map_err(|_| BenchError::BadReply("expected exactly two frames".to_owned()))?;
    Ok((compliance, complete, buf))
}

/// What the two reply frames say: a grant or a refusal.
pub fn outcome(compliance: Frame, complete: Frame) -> Result<Outcome> {
    if compliance.state != State::Compliance || complete.state != State::Complete {
        return Err(BenchError::BadReply(format!(
            "reply states were {:?} and {:?}",
            compliance.state, complete.state
        )));
    }
    let compliance: Compliance = serde_json::from_slice(&compliance.payload)
        .map_err(|e| BenchError::BadReply(format!("compliance payload: {e}")))?;
    if compliance.is_accepted() {
        let grant: Grant = serde_json::from_slice(&complete.payload)
            .map_err(|e| BenchError::BadReply(format!("complete payload: {e}")))?;
        if grant.token.is_empty() {
            return Err(BenchError::BadReply(
                "accepted request with an empty token".to_owned(),
            ));
        }
        Ok(Outcome::Granted(grant))
    } else {
        Ok(Outcome::Refused {
            code: compliance
                .error
                .map_or_else(|| "unknown".to_owned(), |code| code.as_str().to_owned()),
            message: compliance.message.unwrap_or_default(),
        })
    }
}

/// The refusal that means "try again later" rather than "no".
pub const SERVER_BUSY: &str = "server_busy";
/// Pause before retrying a `server_busy` refusal.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(250);

/// A handshake that must succeed: its grant, or an error naming the refusal. A
/// `server_busy` refusal is retried, as the server asks, until `deadline`.
pub fn must_grant(
    addr: SocketAddr,
    operation: Operation,
    room: &str,
    username: &str,
    deadline: Instant,
) -> Result<Grant> {
    loop {
        match handshake(addr, operation, room, username)?.outcome {
            Outcome::Granted(grant) => return Ok(grant),
            Outcome::Refused { code, .. }
                if code == SERVER_BUSY && Instant::now() + BUSY_BACKOFF < deadline =>
            {
                tracing::debug!(room, username, "server busy; retrying");
                std::thread::sleep(BUSY_BACKOFF);
            }
            Outcome::Refused { code, message } => {
                return Err(BenchError::Refused {
                    operation: operation_name(operation),
                    room: room.to_owned(),
                    code,
                    message,
                });
            }
        }
    }
}

/// The lowercase name of an operation, for reports.
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Join => "join",
        Operation::Pair => "pair",
        Operation::List => "list",
        Operation::Attach => "attach",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::tcrp::{ErrorCode, to_json_payload};
    use std::net::TcpListener;

    /// A one-connection TCRP peer: checks the request, answers with `replies`, closes.
    fn scripted_server(replies: Vec<Frame>) -> (SocketAddr, std::thread::JoinHandle<Frame>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let request = loop {
                if let Some((frame, _)) = Frame::decode(&buf).unwrap() {
                    break frame;
                }
                let read = stream.read(&mut chunk).unwrap();
                assert!(read > 0, "client closed before sending a whole request");
                buf.extend_from_slice(&chunk[..read]);
            };
            for reply in replies {
                stream.write_all(&reply.encode().unwrap()).unwrap();
            }
            request
        });
        (addr, peer)
    }

    #[test]
    fn a_grant_is_returned_with_its_token() {
        let grant = Grant {
            token: "ab".repeat(32),
            room: Some("lobby".into()),
            username: Some("alice".into()),
            host: Some(true),
            udp_port: Some(9091),
            send_burst: None,
            send_interval_ms: None,
            http_port: None,
            key_id: None,
        };
        let (addr, peer) = scripted_server(vec![
            Frame::new(
                1,
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::accepted()),
            ),
            Frame::new(1, State::Complete, "lobby", to_json_payload(&grant)),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = must_grant(addr, Operation::Create, "lobby", "alice", deadline).unwrap();
        assert_eq!(got, grant);
        let request = peer.join().unwrap();
        assert_eq!(request.operation, Operation::Create as u8);
        assert_eq!(request.room_name, "lobby");
        assert_eq!(
            UserRequest::parse(&request.payload).unwrap().username,
            "alice"
        );
    }

    #[test]
    fn a_refusal_names_its_code() {
        let (addr, peer) = scripted_server(vec![
            Frame::new(
                2,
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::refused(
                    ErrorCode::RoomFull,
                    "the room is full",
                )),
            ),
            Frame::new(
                2,
                State::Complete,
                "lobby",
                to_json_payload(&Grant::failed()),
            ),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = must_grant(addr, Operation::Join, "lobby", "bob", deadline).unwrap_err();
        peer.join().unwrap();
        match error {
            BenchError::Refused {
                operation, code, ..
            } => {
                assert_eq!(operation, "join");
                assert_eq!(code, "room_full");
            }
            other => panic!("expected a refusal, got {other}"),
        }
    }

    #[test]
    fn a_server_that_closes_early_is_an_error() {
        let (addr, peer) = scripted_server(vec![Frame::new(
            1,
            State::Compliance,
            "lobby",
            to_json_payload(&Compliance::accepted()),
        )]);
        let error = handshake(addr, Operation::Create, "lobby", "alice").unwrap_err();
        peer.join().unwrap();
        assert!(matches!(error, BenchError::BadReply(_)), "{error}");
    }
}
