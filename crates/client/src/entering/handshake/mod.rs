//! The TCRP handshake: one request frame over TCP, two reply frames back, and the grant or
//! room list (or a typed refusal) that comes out of them.

use std::net::SocketAddr;
use std::time::Duration;

use chat_protocol::tcrp::{ErrorCode, Frame, Grant, Operation, RoomList, State, UserRequest};
use tokio::net::TcpStream;

use crate::error::ClientError;

pub(crate) mod replies;

use replies::{exchange, parse_json};

/// How long one TCP connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sending the request and receiving both replies may take, all together.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// The request frame.
    pub fn encode(&self) -> Result<Vec<u8>, ClientError> {
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
pub struct Membership {
    /// The server's TCP address that answered; its IP is where the UDP datagrams go.
    pub server: SocketAddr,
    /// The grant, with a non-empty token that fits in a datagram envelope.
    pub grant: Grant,
}

/// Connects to `host:port`, sends `request` and returns the server's grant.
pub async fn perform(
    host: &str,
    port: u16,
    request: &Request,
    timeouts: Timeouts,
) -> Result<Membership, ClientError> {
    let frame = request.encode()?;
    let (server, payload) = ask(host, port, &frame, timeouts).await?;
    let membership = granted(server, &payload)?;
    tracing::debug!(%server, room = ?membership.grant.room, "handshake accepted");
    Ok(membership)
}

/// The membership a complete reply grants, checked.
pub(crate) fn granted(server: SocketAddr, payload: &[u8]) -> Result<Membership, ClientError> {
    let grant: Grant = parse_json(payload, "grant")?;
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
    Ok(Membership { server, grant })
}

impl Membership {
    /// Whether the membership is version 3's: granted over TLS with a key id, so that its
    /// datagrams are sealed and its token never goes on the wire again (a saved one is
    /// never used in plaintext).
    pub fn is_encrypted(&self) -> bool {
        self.grant.key_id.is_some()
    }

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
pub(crate) async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ClientError> {
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

#[cfg(test)]
mod tests;
