//! The UDP data plane: receive a datagram, let the room manager decide, send what it decided.
//!
//! This is the hot path. The manager lock is held only while deciding (no `.await` inside),
//! frames are encoded once per message into a reused [`Outbox`], and nothing here touches the
//! disk or logs above debug level per datagram.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::Datagram;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::manager::{DropReason, SharedManager, lock};
use crate::outbox::Outbox;
use crate::writer::StateWriter;

/// Counters of what the data plane did, for logs and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams dropped as malformed or oversized.
    pub malformed: AtomicU64,
    /// Datagrams dropped for an unknown token, wrong room or wrong address.
    pub unauthorized: AtomicU64,
    /// Chat dropped by flood control.
    pub rate_limited: AtomicU64,
}

impl RelayStats {
    fn count_drop(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &self.malformed,
            DropReason::UnknownToken | DropReason::WrongRoom | DropReason::WrongAddress => {
                &self.unauthorized
            }
            DropReason::RateLimited => &self.rate_limited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.unauthorized.load(Ordering::Relaxed)
            + self.rate_limited.load(Ordering::Relaxed)
    }
}

/// Relays until `stop` turns true.
pub async fn serve(
    socket: Arc<UdpSocket>,
    manager: SharedManager,
    writer: StateWriter,
    stats: Arc<RelayStats>,
    mut stop: watch::Receiver<bool>,
) {
    // One byte more than the limit, so an oversized datagram shows as oversized rather than
    // silently truncated to a valid-looking one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = Outbox::default();
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                tracing::debug!(%error, "UDP receive error");
                continue;
            }
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        if let Err(reason) = decide(&buf[..len], src, &manager, &writer, &mut out) {
            stats.count_drop(reason);
            tracing::debug!(%src, ?reason, token = %token_prefix(&buf[..len]), "datagram dropped");
        }
        send_all(&socket, &out, &stats).await;
        out.clear();
    }
}

/// Parses a datagram and lets the manager queue its effects.
fn decide(
    bytes: &[u8],
    src: SocketAddr,
    manager: &SharedManager,
    writer: &StateWriter,
    out: &mut Outbox,
) -> Result<(), DropReason> {
    let datagram = Datagram::decode(bytes).map_err(|_| DropReason::Malformed)?;
    let mut manager = lock(manager);
    let generation = manager.generation();
    let result = manager.handle_datagram(
        datagram.room,
        datagram.token,
        datagram.message,
        src,
        Instant::now(),
        out,
    );
    let changed = manager.generation() != generation;
    drop(manager);
    if changed {
        // A leave or close: the state file catches up in the background.
        writer.schedule();
    }
    result
}

async fn send_all(socket: &UdpSocket, out: &Outbox, stats: &RelayStats) {
    for (frame, addr) in out.datagrams() {
        // Try without yielding first: the socket is almost always writable, and awaiting
        // readiness per recipient would cost a trip through the scheduler each time.
        let sent = match socket.try_send_to(frame, addr) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                socket.send_to(frame, addr).await
            }
            other => other,
        };
        match sent {
            Ok(_) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::debug!(%addr, %error, "UDP send failed"),
        }
    }
}

/// The first few characters of a datagram's token, for logs that must not reveal tokens.
fn token_prefix(bytes: &[u8]) -> String {
    Datagram::decode(bytes)
        .map(|datagram| {
            let shown = &datagram.token[..datagram.token.len().min(8)];
            format!("{}…", String::from_utf8_lossy(shown))
        })
        .unwrap_or_default()
}
