//! Tunnels: TLS control connections kept open after a version-3 grant or attach, which carry
//! the member's sealed datagrams when UDP does not get through (docs/protocol.md, "The
//! tunnel").
//!
//! Each tunnel gets an [`Endpoint::Sealed`] with a [`SealedPath::Tunnel`] and a bounded
//! queue. The one sender ([`crate::send::BatchSender`]) seals and hands frames to these queues
//! without waiting: a tunnel whose queue is full is cut off rather than allowed to slow the
//! room (its client attaches again), and a frame for a tunnel that has gone is dropped. A
//! member has one tunnel at a time: a new one replaces the old.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed::{self, TUNNEL_KEEPALIVE, TunnelFrame};
use chat_protocol::ucrp::Datagram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};

use super::keys::KeyTable;
use crate::engine::endpoint::SealedPath;
use crate::engine::{DropReason, Endpoint};
use crate::send::Outlet;
use crate::shared::{self, SharedEngine};
use crate::stats::RelayStats;
use crate::writer::StateWriter;

/// Frames a tunnel may have waiting before it counts as not reading.
pub const TUNNEL_QUEUE: usize = 256;
/// A tunnel that has sent nothing for this long is closed.
pub const TUNNEL_SILENCE: Duration = Duration::from_secs(60);
/// After this long without sending, the server sends a keepalive.
pub const TUNNEL_KEEPALIVE_AFTER: Duration = Duration::from_secs(20);
/// Most frames written in one go.
const WRITE_BATCH: usize = 32;

/// What happened on tunnels.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Tunnels opened.
    pub opened: AtomicU64,
    /// Tunnels cut off for not reading.
    pub cut_off: AtomicU64,
    /// Tunnels refused at the `--max-tunnels` cap.
    pub refused: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    key_id: u32,
    frames: mpsc::Sender<Vec<u8>>,
}

/// Every open tunnel's queue, by connection number.
#[derive(Debug)]
pub struct Tunnels {
    next_conn: AtomicU64,
    open: AtomicUsize,
    max: usize,
    queues: Mutex<Queues>,
    /// What happened on tunnels.
    pub stats: TunnelStats,
}

#[derive(Debug, Default)]
struct Queues {
    by_conn: HashMap<u64, Queue>,
    by_key: HashMap<u32, u64>,
}

impl Queues {
    fn remove(&mut self, conn: u64) -> bool {
        match self.by_conn.remove(&conn) {
            Some(queue) => {
                if self.by_key.get(&queue.key_id) == Some(&conn) {
                    self.by_key.remove(&queue.key_id);
                }
                true
            }
            None => false,
        }
    }
}

impl Tunnels {
    /// No tunnels yet; at most `max` at once.
    pub fn new(max: usize) -> Self {
        Self {
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            max,
            queues: Mutex::new(Queues::default()),
            stats: TunnelStats::default(),
        }
    }

    /// Opens a tunnel for member `key_id` from `ip`, replacing the member's previous one;
    /// `None` at the cap.
    fn connect(&self, key_id: u32, ip: IpAddr) -> Option<(Endpoint, mpsc::Receiver<Vec<u8>>)> {
        let mut queues = self.lock();
        if let Some(old) = queues.by_key.get(&key_id).copied()
            && queues.remove(old)
        {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if self.open.load(Ordering::Relaxed) >= self.max {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (frames, receiver) = mpsc::channel(TUNNEL_QUEUE);
        queues.by_conn.insert(conn, Queue { key_id, frames });
        queues.by_key.insert(key_id, conn);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        Some((
            Endpoint::Sealed {
                path: SealedPath::Tunnel { conn, ip },
                key_id,
            },
            receiver,
        ))
    }

    fn disconnect(&self, conn: u64) {
        if self.lock().remove(conn) {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many tunnels are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Queues sealed datagrams for their tunnels (each already framed for the tunnel).
    pub fn deliver(&self, frames: impl Iterator<Item = (Vec<u8>, u64)>, stats: &RelayStats) {
        let mut queues = self.lock();
        for (frame, conn) in frames {
            let Some(queue) = queues.by_conn.get(&conn) else {
                continue;
            };
            match queue.frames.try_send(frame) {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the tunnel once it has written what it has.
                    queues.remove(conn);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    self.stats.cut_off.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    queues.remove(conn);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a tunnel needs from the rest of the server.
#[derive(Debug, Clone)]
pub struct TunnelContext {
    /// The rules.
    pub engine: SharedEngine,
    /// Where the engine's effects go.
    pub outlet: Outlet,
    /// Told when a datagram changed the durable state.
    pub writer: StateWriter,
    /// Opens what arrives.
    pub keys: Arc<KeyTable>,
    /// The open tunnels.
    pub tunnels: Arc<Tunnels>,
    /// Counters.
    pub stats: Arc<RelayStats>,
}

/// Carries member `key_id`'s sealed datagrams over `stream` until either end closes, the
/// member falls silent, its queue overflows, or the server stops.
pub async fn run<S>(
    stream: S,
    key_id: u32,
    ip: IpAddr,
    context: TunnelContext,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((endpoint, frames)) = context.tunnels.connect(key_id, ip) else {
        tracing::info!(%ip, "too many tunnels; closing this one");
        return;
    };
    let Endpoint::Sealed {
        path: SealedPath::Tunnel { conn, .. },
        ..
    } = endpoint
    else {
        return;
    };
    tracing::debug!(%ip, key_id, conn, "tunnel open");
    let (reader, writer) = tokio::io::split(stream);
    let writing = tokio::spawn(write_frames(writer, frames));
    tokio::select! {
        () = read_frames(reader, key_id, endpoint, &context) => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
    context.tunnels.disconnect(conn);
    // The queue's sender is gone now, so the writer drains what it has and ends.
    let _ = writing.await;
    tracing::debug!(%ip, key_id, conn, "tunnel closed");
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    key_id: u32,
    endpoint: Endpoint,
    context: &TunnelContext,
) {
    let mut buf = Vec::with_capacity(2 * (MAX_DATAGRAM + sealed::TUNNEL_PREFIX_LEN));
    loop {
        let deadline = Instant::now() + TUNNEL_SILENCE;
        // Take every complete frame first; only then wait for more bytes.
        loop {
            match sealed::decode_tunnel_frame(&buf) {
                Ok(Some((frame, used))) => {
                    if let TunnelFrame::Datagram(datagram) = frame {
                        let mut datagram = datagram.to_vec();
                        context.stats.received.fetch_add(1, Ordering::Relaxed);
                        if let Err(reason) = feed(&mut datagram, key_id, endpoint, context) {
                            context.stats.count_drop(reason);
                            tracing::debug!(%endpoint, ?reason, "tunnelled datagram dropped");
                        }
                    }
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%endpoint, %error, "closing a tunnel");
                    return;
                }
            }
        }
        // Never more than one frame beyond what is buffered: bounded whatever the peer sends.
        let room = MAX_DATAGRAM + sealed::TUNNEL_PREFIX_LEN;
        let read = timeout_at(deadline, (&mut reader).take(room as u64).read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!(%endpoint, "tunnel silent too long; closing it");
                return;
            }
        }
    }
}

/// Opens one tunnelled datagram and lets the engine decide, as the relay does for UDP.
fn feed(
    datagram: &mut [u8],
    key_id: u32,
    endpoint: Endpoint,
    context: &TunnelContext,
) -> Result<(), DropReason> {
    let (keys, message) = context.keys.open(datagram, Some(key_id))?;
    let datagram = Datagram {
        room: &keys.room,
        token: keys.token_hex.as_bytes(),
        message: &datagram[message],
    };
    let (result, changed) = context.outlet.apply(&context.engine, |engine, fx| {
        let journal_seq = engine.journal_seq();
        let result = engine.datagram(&datagram, endpoint, shared::now(), fx);
        (result, engine.journal_seq() != journal_seq)
    });
    if changed {
        context.writer.schedule();
    }
    result
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut out = Vec::new();
    loop {
        let first = match tokio::time::timeout(TUNNEL_KEEPALIVE_AFTER, frames.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => TUNNEL_KEEPALIVE.to_vec(),
        };
        out.clear();
        out.extend_from_slice(&first);
        // What else is waiting goes in the same write.
        for _ in 1..WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => out.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = tokio::time::timeout(TUNNEL_SILENCE, async {
            writer.write_all(&out).await?;
            writer.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            break;
        }
    }
    let _ = writer.shutdown().await;
}
