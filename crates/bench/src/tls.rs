//! Version 3's control plane, client side: TLS 1.3 to the control port (rustls on the ring
//! provider, as the server and our client use), the server's certificate pinned by its
//! fingerprint (docs/protocol.md, "TLS on the control port"), the TCRP exchange inside, and
//! the member's keys taken from the TLS exporter.
//!
//! Pinning: `--fingerprint SHA256:...` pins up front; without it the first certificate seen
//! is pinned for the rest of the run (a spawned server makes its own on start), and any other
//! certificate after that is refused. Session resumption is off, so every connection is a
//! full handshake, which is what `handshake --tls` measures.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_protocol::fingerprint::Fingerprint;
use chat_protocol::pinning::{self, PinVerifier};
use chat_protocol::sealed::{EXPORTER_LABEL, KEY_MATERIAL_LEN, KeyMaterial};
use chat_protocol::tcrp::{Grant, Operation};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::error::{BenchError, Result};
use crate::tcrp_client::{
    BUSY_BACKOFF, Outcome, SERVER_BUSY, exchange, operation_name, outcome, request_frame,
};

/// Connect, handshake, read and write timeout of one TLS connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The name sent in the hello; the server's certificate is pinned, not checked by name.
const SERVER_NAME: &str = "chat-server";

/// A blocking TLS connection to the control port.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Makes TLS connections to one server, all pinned to the same certificate.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// A client pinned to `pin`, or to the first certificate it sees.
    pub fn new(pin: Option<Fingerprint>) -> Result<Self> {
        // Every connection a full handshake: the configuration keeps and offers no tickets.
        let presented = Arc::new(Mutex::new(None));
        let config = pinning::client_config(PinVerifier::new(pin, true, Arc::clone(&presented)))
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Connects and completes the TLS handshake (blocking, with timeouts).
    pub fn connect(&self, addr: SocketAddr) -> Result<TlsStream> {
        let io = |source| BenchError::Handshake { addr, source };
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| BenchError::Tls(e.to_string()))?;
        let connection = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut tls = StreamOwned::new(connection, stream);
        // Bounded: each round trip moves the handshake on or fails.
        for _ in 0..16 {
            if !tls.conn.is_handshaking() {
                return Ok(tls);
            }
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| BenchError::Tls(format!("handshake with {addr}: {e}")))?;
        }
        Err(BenchError::Tls(format!(
            "the handshake with {addr} did not complete"
        )))
    }

    /// One create, join or list inside a fresh TLS connection: the TCRP reply, how long it
    /// took from connect to both reply frames, and the connection (the member's tunnel after
    /// a grant) with any bytes read past the replies.
    pub fn handshake(
        &self,
        addr: SocketAddr,
        operation: Operation,
        room: &str,
        username: &str,
    ) -> Result<TlsHandshake> {
        let request = request_frame(operation, room, username)?;
        let started = Instant::now();
        let mut tls = self.connect(addr)?;
        let (compliance, complete, leftover) = exchange(&mut tls, &request, |source| {
            BenchError::Handshake { addr, source }
        })?;
        let elapsed = started.elapsed();
        Ok(TlsHandshake {
            outcome: outcome(compliance, complete)?,
            elapsed,
            tls,
            leftover,
        })
    }

    /// A create or join over TLS that must succeed, retrying `server_busy` until
    /// `deadline`: the grant, its key id and keys, and the open connection.
    pub fn must_grant(
        &self,
        addr: SocketAddr,
        operation: Operation,
        room: &str,
        username: &str,
        deadline: Instant,
    ) -> Result<SealedGrant> {
        loop {
            let done = self.handshake(addr, operation, room, username)?;
            match done.outcome {
                Outcome::Granted(grant) => {
                    let key_id = grant.key_id.ok_or_else(|| {
                        BenchError::BadReply("a grant over TLS without key_id".to_owned())
                    })?;
                    let keys = export_keys(&done.tls)?;
                    return Ok(SealedGrant {
                        grant,
                        key_id,
                        keys,
                        tls: done.tls,
                        leftover: done.leftover,
                    });
                }
                Outcome::Refused { code, .. }
                    if code == SERVER_BUSY && Instant::now() + BUSY_BACKOFF < deadline =>
                {
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
}

/// One TCRP exchange inside TLS.
pub struct TlsHandshake {
    /// What the server answered.
    pub outcome: Outcome,
    /// Connect (TCP and TLS) to both reply frames received.
    pub elapsed: Duration,
    /// The connection, still open.
    pub tls: TlsStream,
    /// Bytes read after the two reply frames.
    pub leftover: Vec<u8>,
}

/// A membership granted over TLS.
pub struct SealedGrant {
    /// The grant.
    pub grant: Grant,
    /// The key id of the member's sealed datagrams.
    pub key_id: u32,
    /// Both directions' keys, from the TLS exporter.
    pub keys: KeyMaterial,
    /// The connection: the member's tunnel if it keeps it.
    pub tls: TlsStream,
    /// Bytes read after the reply frames (tunnel frames, if the server sent any already).
    pub leftover: Vec<u8>,
}

/// The 64 bytes of key material both ends export from the session.
pub fn export_keys(tls: &TlsStream) -> Result<KeyMaterial> {
    tls.conn
        .export_keying_material([0u8; KEY_MATERIAL_LEN], EXPORTER_LABEL, None)
        .map(KeyMaterial)
        .map_err(|e| BenchError::Tls(format!("key export: {e}")))
}

/// Says goodbye properly (close_notify) and drops the connection; errors do not matter.
pub fn close(mut tls: TlsStream) {
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}
