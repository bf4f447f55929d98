//! The TCP control plane: one request, two reply frames, close.
//!
//! Every connection gets its own task, bounded by a semaphore; the whole request must arrive
//! before a deadline so a client that sends half a header holds only its own task. Every
//! request that got as far as a header is answered with the contract's error code and a sentence
//! a person can act on. A create, join or pair is answered only once it is on disk.
//!
//! TLS shares the port (version 3): a connection that opens with a TLS record is served the
//! same exchange inside TLS, and after a grant or an attach it stays open as the member's
//! tunnel (`crate::secure::tunnel`), without holding a handshake slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::limits::TCRP_HEADER_LEN;
use chat_protocol::sealed::{EXPORTER_LABEL, KEY_MATERIAL_LEN, KeyMaterial};
use chat_protocol::tcrp::{
    Compliance, ErrorCode, Frame, Grant, Header, State, TcrpError, to_json_payload,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ip_limit::{Admission, HandshakeRateLimiter};
use crate::metrics::Metrics;
use crate::password_gate::PasswordGate;
use crate::room_quota::RoomQuota;
use crate::secure::detect::{self, Opening};
use crate::secure::tunnel::{self, TunnelContext};
use crate::send::Outlet;
use crate::shared::SharedEngine;
use crate::writer::StateWriter;

/// How long writing the replies may take before the client is given up on.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the request deadline, how long the slow parts (password hashing, the durable write)
/// may take before the handshake is abandoned.
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(30);

/// What the control plane needs from the rest of the server.
#[derive(Debug)]
pub struct ControlContext {
    /// The rooms.
    pub engine: SharedEngine,
    /// Where the engine's effects go: a join that frees a ghost's name tells the room.
    pub outlet: Outlet,
    /// Durability of handshakes.
    pub writer: StateWriter,
    /// The UDP port announced in grants.
    pub udp_port: u16,
    /// The HTTP port announced in grants, unless `--no-http`.
    pub http_port: Option<u16>,
    /// Flood control's burst and milliseconds per message, announced in grants so that
    /// clients pace themselves; `None` when flood control is off.
    pub send_pace: Option<(u32, u64)>,
    /// How long a client has to send its whole request.
    pub request_timeout: Duration,
    /// Most handshakes handled at once; more are refused with `server_busy`.
    pub max_handshakes: usize,
    /// Connections one source address may open per minute; more are refused with
    /// `server_busy`. 0 turns the limit off.
    pub handshakes_per_ip: u32,
    /// Bounds password hashing and counts wrong passwords.
    pub passwords: PasswordGate,
    /// Live rooms each source address may have created.
    pub room_quota: RoomQuota,
    /// Where handshakes are counted.
    pub metrics: Arc<Metrics>,
    /// TLS with the server's certificate (version 3).
    pub tls: Arc<rustls::ServerConfig>,
    /// Refuse plain TCRP (`--require-encryption`).
    pub require_encryption: bool,
    /// What a tunnel needs, for connections that become one.
    pub tunnel: TunnelContext,
}

/// Accepts connections until `stop` turns true, then waits for the handshakes in flight.
pub async fn serve(
    listener: TcpListener,
    context: Arc<ControlContext>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(context.max_handshakes));
    // Only this loop touches the per-address buckets, so they need no lock.
    let mut per_address = HandshakeRateLimiter::new(context.handshakes_per_ip);
    // Every handler holds a clone of `in_flight`; when all are dropped, `finished` yields None.
    let (in_flight, mut finished) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A TLS handshake and a tunnel write small records back to back: with Nagle's
        // algorithm each waited for the peer's delayed ACK (40 ms a handshake, measured).
        let _ = stream.set_nodelay(true);
        // Checked before the semaphore, so that one address over its allowance cannot hold
        // the slots everyone else needs.
        match per_address.check(peer.ip(), std::time::Instant::now()) {
            Admission::Admitted | Admission::Untracked => {}
            Admission::Refused { first } => {
                refuse_over_address_limit(&stream, peer, &per_address, first);
                continue;
            }
        }
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let context = Arc::clone(&context);
                let in_flight = in_flight.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let tunnel = handle_connection(stream, peer, &context, stop.clone()).await;
                    // A tunnel holds no handshake slot, and shutdown does not wait for it:
                    // it ends on `stop` by itself.
                    drop(permit);
                    drop(in_flight);
                    if let Some((stream, key_id)) = tunnel {
                        tunnel::run(stream, key_id, peer.ip(), context.tunnel.clone(), stop).await;
                    }
                });
            }
            Err(_) => refuse_when_overloaded(stream, peer),
        }
    }
    drop(listener);
    drop(in_flight);
    let _ = finished.recv().await;
}

/// Over the handshake cap there is no task to spare, so the refusal is written without waiting:
/// a fresh socket's send buffer always has room for it, and if not, closing says enough.
fn refuse_when_overloaded(stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "too many handshakes in progress; refusing");
    let reply = Reply::refused(
        0,
        String::new(),
        ErrorCode::ServerBusy,
        "the server is handling too many requests; try again shortly".into(),
    );
    let _ = stream.try_write(&reply.encode());
}

/// Like [`refuse_when_overloaded`], for an address that connects too often. Only the first
/// refusal in a row is logged above debug level, so a flood of connections cannot flood the log.
fn refuse_over_address_limit(
    stream: &TcpStream,
    peer: SocketAddr,
    limiter: &HandshakeRateLimiter,
    first: bool,
) {
    if first {
        tracing::warn!(ip = %peer.ip(), "too many requests from one address; refusing its requests for now");
    } else {
        tracing::debug!(%peer, "too many requests from this address; refusing");
    }
    let wait = match limiter.retry_after().as_secs_f64().ceil() {
        seconds if seconds <= 1.0 => "a second".to_owned(),
        seconds => format!("{seconds} seconds"),
    };
    let reply = Reply::refused(
        0,
        String::new(),
        ErrorCode::ServerBusy,
        format!("too many requests from your address; try again in {wait}"),
    );
    let _ = stream.try_write(&reply.encode());
}

/// A TLS connection that became a member's tunnel, and the member's key id.
type Tunnel = (TlsStream<TcpStream>, u32);

/// Serves one connection's exchange, plain or TLS; a TLS one that granted or attached a
/// membership comes back to become its tunnel.
async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: &ControlContext,
    stop: watch::Receiver<bool>,
) -> Option<Tunnel> {
    let deadline = Instant::now() + context.request_timeout;
    match detect::opening(&stream, context.request_timeout).await {
        Opening::Nothing => None,
        Opening::Plain => {
            let mut stream = stream;
            exchange(&mut stream, peer, context, stop, deadline, None).await;
            None
        }
        Opening::Tls => {
            let acceptor = TlsAcceptor::from(Arc::clone(&context.tls));
            let accepted = timeout_at(deadline, acceptor.accept(stream)).await;
            let mut stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake not done before the time limit");
                    return None;
                }
            };
            let keys = stream
                .get_ref()
                .1
                .export_keying_material([0u8; KEY_MATERIAL_LEN], EXPORTER_LABEL, None)
                .ok()
                .map(KeyMaterial);
            let Some(keys) = keys else {
                tracing::warn!(%peer, "no keys could be exported from a TLS session");
                return None;
            };
            let key_id = exchange(&mut stream, peer, context, stop, deadline, Some(keys)).await?;
            Some((stream, key_id))
        }
    }
}

/// Reads one request, answers it, and says which key id the connection now carries, if it
/// granted or attached a version-3 membership. `keys` are the TLS session's, for a TLS one.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    context: &ControlContext,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
    keys: Option<KeyMaterial>,
) -> Option<u32> {
    // A request still arriving when the server stops is refused rather than waited for: a
    // slow or stalled client must not hold up shutdown for the whole request timeout. Nothing
    // was promised to it yet, and server_busy tells it to try again.
    let read = tokio::select! {
        read = read_request(stream, deadline) => read,
        _ = stop.wait_for(|stop| *stop) => Err(ReadFailure::Answer(Reply::refused(
            0,
            String::new(),
            ErrorCode::ServerBusy,
            "the server is shutting down; try again shortly".into(),
        ))),
    };
    let (reply, key_id) = match read {
        Ok(frame) => {
            match timeout(
                PROCESSING_TIMEOUT,
                process(frame.clone(), peer, context, keys),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => (
                    Reply::refused(
                        frame.operation,
                        frame.room_name,
                        ErrorCode::ServerBusy,
                        "the server took too long to complete the request; try again".into(),
                    ),
                    None,
                ),
            }
        }
        Err(ReadFailure::Answer(reply)) => (reply, None),
        Err(ReadFailure::Silent(reason)) => {
            tracing::debug!(%peer, reason, "connection closed without a reply");
            return None;
        }
    };
    let bytes = reply.encode();
    let written = timeout(REPLY_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        if key_id.is_some() {
            // The connection stays open as the tunnel.
            stream.flush().await
        } else {
            stream.shutdown().await
        }
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(%peer, "client went away before reading the reply");
        return None;
    }
    key_id
}

/// A request that could not be read.
enum ReadFailure {
    /// Nothing worth answering arrived (no complete header).
    Silent(&'static str),
    /// The header arrived but the request is unusable: answer with this refusal.
    Answer(Reply),
}

/// Reads exactly one request frame, never more bytes than its header announces, and never
/// more than the contract's limits.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
) -> Result<Frame, ReadFailure> {
    let mut buf = Vec::with_capacity(TCRP_HEADER_LEN);
    loop {
        match Frame::decode(&buf) {
            Ok(Some((frame, _))) => return Ok(frame),
            Ok(None) => {}
            Err(error) => return Err(ReadFailure::Answer(malformed_header(&buf, &error))),
        }
        // The header, once here, is valid (decode would have failed otherwise), so the frame
        // length is bounded by the contract.
        let wanted = match Header::decode(&buf) {
            Ok(Some(header)) => header.frame_len(),
            _ => TCRP_HEADER_LEN,
        };
        let missing = (wanted - buf.len()) as u64;
        let read = timeout_at(deadline, (&mut *stream).take(missing).read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) => {
                return Err(ReadFailure::Silent(
                    "closed before the request was complete",
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(ReadFailure::Silent("read error")),
            Err(_) if buf.len() >= TCRP_HEADER_LEN => {
                return Err(ReadFailure::Answer(Reply::refused(
                    buf[1],
                    String::new(),
                    ErrorCode::InvalidRequest,
                    "the request was not complete before the time limit".into(),
                )));
            }
            Err(_) => {
                return Err(ReadFailure::Silent(
                    "no complete header before the time limit",
                ));
            }
        }
    }
}

fn malformed_header(buf: &[u8], error: &TcrpError) -> Reply {
    let operation = buf.get(1).copied().unwrap_or(0);
    let code = match error {
        TcrpError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::InvalidRequest,
    };
    Reply::refused(operation, String::new(), code, error.to_string())
}

/// Both reply frames of one exchange.
#[derive(Debug)]
struct Reply {
    operation: u8,
    room: String,
    compliance: Compliance,
    complete: Vec<u8>,
}

impl Reply {
    fn refused(operation: u8, room: String, code: ErrorCode, message: String) -> Self {
        Self {
            operation,
            room,
            compliance: Compliance::refused(code, message),
            complete: to_json_payload(&Grant::failed()),
        }
    }

    fn accepted(operation: u8, room: String, complete: Vec<u8>) -> Self {
        Self {
            operation,
            room,
            compliance: Compliance::accepted(),
            complete,
        }
    }

    fn encode(&self) -> Vec<u8> {
        // A room name that arrived in a frame fits in one again; if it somehow did not, the
        // reply goes out without it rather than not at all.
        let frame = |state, payload: Vec<u8>| {
            let mut frame = Frame::new(self.operation, state, &self.room, payload);
            frame.encode().unwrap_or_else(|_| {
                frame.room_name.clear();
                frame.encode().unwrap_or_default()
            })
        };
        let mut bytes = frame(State::Compliance, to_json_payload(&self.compliance));
        bytes.extend(frame(State::Complete, self.complete.clone()));
        bytes
    }
}

pub mod handshake;

use handshake::process;
