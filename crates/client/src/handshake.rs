//! The TCRP handshake: one request frame over TCP, two reply frames back, and the grant or
//! room list (or a typed refusal) that comes out of them.

use std::net::SocketAddr;
use std::time::Duration;

use chat_protocol::limits::{MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{ErrorCode, Frame, Grant, Operation, RoomList, State, UserRequest};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::display::sanitize;
use crate::error::ClientError;

/// How long one TCP connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sending the request and receiving both replies may take, all together.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest reply frame the contract allows: header, a room name of at most 255 bytes (its size
/// field is one byte) and the payload limit.
const MAX_REPLY_FRAME: usize = TCRP_HEADER_LEN + u8::MAX as usize + MAX_TCRP_PAYLOAD;
/// Both replies together never need more than this; the receive buffer stops growing here.
const MAX_REPLY_BUFFER: usize = 2 * MAX_REPLY_FRAME;
/// A host name resolving to more addresses than this is tried on its first few only.
const MAX_ADDRESSES_TRIED: usize = 4;

/// Time limits of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per TCP connection attempt (and for resolving the host name).
    pub connect: Duration,
    /// For writing the request and reading both replies.
    pub exchange: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            exchange: EXCHANGE_TIMEOUT,
        }
    }
}

/// What the client asks the server for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Create, join or pair.
    pub operation: Operation,
    /// The room, already checked against the naming rules; empty for pair.
    pub room: String,
    /// Who is asking.
    pub user: UserRequest,
}

impl Request {
    /// The username as a JSON string, exactly as the reference client sends it, so that a
    /// version-1-only server stores the name itself; the object form only when a password
    /// has to travel with it (our server reads both).
    pub fn payload(&self) -> Vec<u8> {
        match &self.user.password {
            None => serde_json::Value::from(self.user.username.as_str())
                .to_string()
                .into_bytes(),
            Some(_) => self.user.to_payload(),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, ClientError> {
        Frame::new(
            self.operation as u8,
            State::Request,
            &self.room,
            self.payload(),
        )
        .encode()
        .map_err(ClientError::Request)
    }
}

/// A successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The server's TCP address that answered; its IP is where the UDP datagrams go.
    pub server: SocketAddr,
    /// The grant, with a non-empty token that fits in a datagram envelope.
    pub grant: Grant,
}

/// The State 1 reply, read leniently so that a refusal with a code this client does not know
/// still reaches the user as the server worded it.
#[derive(Debug, Deserialize)]
struct ComplianceReply {
    success: u8,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Connects to `host:port`, sends `request` and returns the server's grant.
pub async fn perform(
    host: &str,
    port: u16,
    request: &Request,
    timeouts: Timeouts,
) -> Result<Admission, ClientError> {
    let frame = request.encode()?;
    let (server, payload) = ask(host, port, &frame, timeouts).await?;
    let grant: Grant = parse_json(&payload, "grant")?;
    if grant.token.is_empty() {
        return Err(ClientError::InvalidReply(
            "the request was accepted but no token was issued".into(),
        ));
    }
    // The datagram envelope gives the token a one-byte size field.
    if grant.token.len() > usize::from(u8::MAX) {
        return Err(ClientError::InvalidReply(format!(
            "the token is {} bytes long, more than a datagram can carry",
            grant.token.len()
        )));
    }
    tracing::debug!(%server, room = ?grant.room, "handshake accepted");
    Ok(Admission { server, grant })
}

impl Admission {
    /// Whether the server answered like a version-1-only server (the reference server): its
    /// grant is a bare token, without the room, username, role and UDP port that every server
    /// speaking version 2 announces.
    pub fn server_is_v1_only(&self) -> bool {
        let grant = &self.grant;
        grant.room.is_none()
            && grant.username.is_none()
            && grant.host.is_none()
            && grant.udp_port.is_none()
    }
}

/// Asks the server at `host:port` for its room list (operation 4, empty room name).
pub async fn list_rooms(
    host: &str,
    port: u16,
    timeouts: Timeouts,
) -> Result<RoomList, ClientError> {
    let frame = Frame::new(Operation::List as u8, State::Request, "", Vec::new())
        .encode()
        .map_err(ClientError::Request)?;
    match ask(host, port, &frame, timeouts).await {
        Ok((_, payload)) => parse_json(&payload, "room list"),
        // The reference server closes the connection without a word on an operation it does
        // not know; ours refuses it by name. Either way the server was reached.
        Err(ClientError::ClosedEarly) => Err(ClientError::ListUnsupported),
        Err(ClientError::Refused { code, .. })
            if code == ErrorCode::UnsupportedOperation.as_str() =>
        {
            Err(ClientError::ListUnsupported)
        }
        Err(other) => Err(other),
    }
}

/// One exchange: the accepted request's complete payload, with the address that answered.
async fn ask(
    host: &str,
    port: u16,
    frame: &[u8],
    timeouts: Timeouts,
) -> Result<(SocketAddr, Vec<u8>), ClientError> {
    let stream = connect(host, port, timeouts.connect).await?;
    let server = stream.peer_addr().map_err(ClientError::HandshakeIo)?;
    let payload = tokio::time::timeout(timeouts.exchange, exchange(stream, frame))
        .await
        .map_err(|_| ClientError::HandshakeTimeout(timeouts.exchange))??;
    Ok((server, payload))
}

/// Resolves `host` and connects to the first address that accepts, so that a name such as
/// `localhost` works whichever of its IPv4 or IPv6 addresses the server listens on.
async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ClientError> {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| ClientError::NoAddress {
            host: host.to_owned(),
        })?
        .map_err(|source| ClientError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    let mut last_error = None;
    for addr in resolved.take(MAX_ADDRESSES_TRIED) {
        tracing::debug!(%addr, "connecting");
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) => last_error = Some(ClientError::Connect { addr, source }),
            Err(_) => last_error = Some(ClientError::ConnectTimeout { addr, timeout }),
        }
    }
    Err(last_error.unwrap_or_else(|| ClientError::NoAddress {
        host: host.to_owned(),
    }))
}

async fn exchange(mut stream: TcpStream, request: &[u8]) -> Result<Vec<u8>, ClientError> {
    stream
        .write_all(request)
        .await
        .map_err(ClientError::HandshakeIo)?;
    let mut replies = ReplyReader::new(stream);

    let compliance_frame = replies.next_frame().await?;
    expect_state(&compliance_frame, State::Compliance)?;
    let compliance: ComplianceReply = parse_json(&compliance_frame.payload, "compliance")?;
    if compliance.success != 1 {
        // The second frame only carries an empty token; the refusal is complete without it.
        return Err(ClientError::Refused {
            code: sanitize(compliance.error.as_deref().unwrap_or("unknown")).into_owned(),
            message: sanitize(
                compliance
                    .message
                    .as_deref()
                    .unwrap_or("the server gave no reason"),
            )
            .into_owned(),
        });
    }

    let complete_frame = replies.next_frame().await?;
    expect_state(&complete_frame, State::Complete)?;
    Ok(complete_frame.payload)
}

fn expect_state(frame: &Frame, expected: State) -> Result<(), ClientError> {
    if frame.state == expected {
        Ok(())
    } else {
        Err(ClientError::InvalidReply(format!(
            "expected a frame in state {}, got state {}",
            expected as u8, frame.state as u8
        )))
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(payload: &[u8], what: &str) -> Result<T, ClientError> {
    serde_json::from_slice(payload)
        .map_err(|error| ClientError::InvalidReply(format!("the {what} payload: {error}")))
}

/// Reads reply frames incrementally from a byte stream, never buffering more than two
/// maximum-size frames.
struct ReplyReader<R> {
    stream: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    fn new(stream: R) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            match Frame::decode(&self.buffer) {
                Ok(Some((frame, used))) => {
                    self.buffer.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(error) => return Err(ClientError::InvalidReply(error.to_string())),
            }
            let room = MAX_REPLY_BUFFER.saturating_sub(self.buffer.len());
            if room == 0 {
                return Err(ClientError::InvalidReply(
                    "the replies are larger than the contract allows".into(),
                ));
            }
            let limit = room.min(chunk.len());
            let read = self
                .stream
                .read(&mut chunk[..limit])
                .await
                .map_err(ClientError::HandshakeIo)?;
            if read == 0 {
                return Err(ClientError::ClosedEarly);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_protocol::tcrp::{Compliance, ErrorCode, to_json_payload};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Generous enough never to fire on a slow machine, except where a test wants it to.
    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            exchange: Duration::from_secs(10),
        }
    }

    fn join_bob() -> Request {
        Request {
            operation: Operation::Join,
            room: "lobby".into(),
            user: UserRequest {
                username: "bob".into(),
                password: None,
            },
        }
    }

    fn reply(state: State, room: &str, payload: Vec<u8>) -> Vec<u8> {
        Frame::new(Operation::Join as u8, state, room, payload)
            .encode()
            .unwrap()
    }

    async fn read_request(stream: &mut TcpStream) -> Frame {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some((frame, _)) = Frame::decode(&buffer).unwrap() {
                return frame;
            }
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "client closed before sending a whole request");
            buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// A one-connection fake server on 127.0.0.1: it reads the request, lets `answer` write
    /// whatever the test wants, and hands back the request for inspection.
    async fn fake_server<F, Fut>(answer: F) -> (u16, JoinHandle<Frame>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = read_request(&mut stream).await;
            answer(stream).await;
            request
        });
        (port, task)
    }

    #[tokio::test]
    async fn accepted_join_returns_the_grant() {
        let (port, server) = fake_server(|mut stream| async move {
            let grant = Grant {
                token: TOKEN.into(),
                room: Some("lobby".into()),
                username: Some("bob".into()),
                host: Some(false),
                udp_port: Some(9191),
                send_burst: Some(10),
                send_interval_ms: Some(200),
            };
            let mut bytes = reply(
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::accepted()),
            );
            bytes.extend(reply(State::Complete, "lobby", to_json_payload(&grant)));
            stream.write_all(&bytes).await.unwrap();
        })
        .await;

        let admission = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap();
        assert_eq!(admission.grant.token, TOKEN);
        assert_eq!(admission.grant.udp_port, Some(9191));
        assert_eq!(admission.grant.host, Some(false));
        assert_eq!(admission.server, SocketAddr::from(([127, 0, 0, 1], port)));

        let request = server.await.unwrap();
        assert_eq!(request.state, State::Request);
        assert_eq!(request.operation, Operation::Join as u8);
        assert_eq!(request.room_name, "lobby");
        assert_eq!(
            UserRequest::parse(&request.payload).unwrap(),
            join_bob().user
        );
        // The reference client's form: a JSON string.
        assert_eq!(request.payload, br#""bob""#);
    }

    #[tokio::test]
    async fn replies_split_into_single_bytes_are_reassembled() {
        let (port, _server) = fake_server(|mut stream| async move {
            let grant = Grant {
                token: TOKEN.into(),
                room: Some("lobby".into()),
                username: Some("bob".into()),
                host: Some(true),
                udp_port: None,
                send_burst: None,
                send_interval_ms: None,
            };
            let mut bytes = reply(
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::accepted()),
            );
            bytes.extend(reply(State::Complete, "lobby", to_json_payload(&grant)));
            for byte in bytes {
                stream.write_all(&[byte]).await.unwrap();
                stream.flush().await.unwrap();
            }
        })
        .await;

        let admission = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap();
        assert_eq!(admission.grant.host, Some(true));
        assert_eq!(admission.grant.udp_port, None);
    }

    #[tokio::test]
    async fn refusal_carries_the_servers_code_and_message() {
        let (port, _server) = fake_server(|mut stream| async move {
            let refusal = Compliance::refused(
                ErrorCode::NameTaken,
                "the name \"bob\" is taken in \"lobby\"",
            );
            let mut bytes = reply(State::Compliance, "lobby", to_json_payload(&refusal));
            bytes.extend(reply(
                State::Complete,
                "lobby",
                to_json_payload(&Grant::failed()),
            ));
            stream.write_all(&bytes).await.unwrap();
        })
        .await;

        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Refused { code, .. } if code == "name_taken"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "refused: name_taken: the name \"bob\" is taken in \"lobby\""
        );
        assert_eq!(error.exit_code(), 3);
    }

    #[tokio::test]
    async fn server_closing_without_replying_is_closed_early() {
        let (port, _server) = fake_server(|stream| async move { drop(stream) }).await;
        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::ClosedEarly), "{error:?}");
        assert_eq!(error.exit_code(), 4);
    }

    #[tokio::test]
    async fn server_closing_after_the_first_reply_is_closed_early() {
        let (port, _server) = fake_server(|mut stream| async move {
            let bytes = reply(
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::accepted()),
            );
            stream.write_all(&bytes).await.unwrap();
        })
        .await;
        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::ClosedEarly), "{error:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (port, _server) = fake_server(|stream| async move {
            // Holds the connection open, saying nothing, until the test is over.
            let _ = held.await;
            drop(stream);
        })
        .await;
        let short = Timeouts {
            connect: Duration::from_secs(10),
            exchange: Duration::from_millis(200),
        };
        let error = perform("127.0.0.1", port, &join_bob(), short)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::HandshakeTimeout(_)),
            "{error:?}"
        );
        assert_eq!(error.exit_code(), 4);
        drop(release);
    }

    #[tokio::test]
    async fn malformed_reply_is_an_invalid_reply() {
        let (port, _server) = fake_server(|mut stream| async move {
            let mut header = [0u8; TCRP_HEADER_LEN];
            header[2] = 9; // no such state
            stream.write_all(&header).await.unwrap();
        })
        .await;
        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::InvalidReply(_)), "{error:?}");
        assert_eq!(error.exit_code(), 1);
    }

    #[tokio::test]
    async fn accepted_without_token_is_an_invalid_reply() {
        let (port, _server) = fake_server(|mut stream| async move {
            let mut bytes = reply(
                State::Compliance,
                "lobby",
                to_json_payload(&Compliance::accepted()),
            );
            bytes.extend(reply(
                State::Complete,
                "lobby",
                to_json_payload(&Grant::failed()),
            ));
            stream.write_all(&bytes).await.unwrap();
        })
        .await;
        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::InvalidReply(_)), "{error:?}");
    }

    #[tokio::test]
    async fn room_lists_are_requested_with_operation_4_and_an_empty_name() {
        let (port, server) = fake_server(|mut stream| async move {
            let list = RoomList {
                rooms: vec![chat_protocol::tcrp::RoomSummary {
                    name: "lobby".into(),
                    members: 3,
                    private: false,
                }],
            };
            let mut bytes = Frame::new(
                Operation::List as u8,
                State::Compliance,
                "",
                to_json_payload(&Compliance::accepted()),
            )
            .encode()
            .unwrap();
            bytes.extend(
                Frame::new(
                    Operation::List as u8,
                    State::Complete,
                    "",
                    to_json_payload(&list),
                )
                .encode()
                .unwrap(),
            );
            stream.write_all(&bytes).await.unwrap();
        })
        .await;
        let list = list_rooms("127.0.0.1", port, timeouts()).await.unwrap();
        assert_eq!(list.rooms.len(), 1);
        assert_eq!(list.rooms[0].name, "lobby");
        let request = server.await.unwrap();
        assert_eq!(request.operation, Operation::List as u8);
        assert_eq!(request.room_name, "");
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable() {
        // Bind then release a port so that nothing listens on it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = perform("127.0.0.1", port, &join_bob(), timeouts())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert_eq!(error.exit_code(), 4);
    }
}
