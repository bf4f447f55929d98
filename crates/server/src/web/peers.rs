//! The HTTP listener's connections as the engine's endpoints.
//!
//! Each WebSocket (and each HTTP request waiting for an answer that the engine sends as an
//! event) gets an [`Endpoint::Web`] and a bounded queue. The one sender
//! ([`crate::send::BatchSender`]) hands the engine's frames to these queues without waiting:
//! a connection whose queue is full is cut off rather than allowed to slow the room, and a
//! frame for a connection that has gone is dropped. Both are counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use chat_protocol::ucrp::V2_MARKER;
use tokio::sync::{mpsc, watch};

use crate::engine::Endpoint;

/// Events a connection may have waiting before it counts as not reading.
pub const WEB_QUEUE: usize = 256;

/// What happened to the frames meant for web connections.
#[derive(Debug, Default)]
pub struct WebStats {
    /// Messages received from WebSocket members.
    pub received: AtomicU64,
    /// Frames queued for a connection.
    pub delivered: AtomicU64,
    /// Frames dropped because the connection's queue was full (the connection is cut off).
    pub dropped_slow: AtomicU64,
    /// Frames for a connection that had already closed.
    pub dropped_gone: AtomicU64,
    /// Connections cut off for not reading.
    pub cut_off: AtomicU64,
}

/// Every open web connection's queue, by connection number.
#[derive(Debug)]
pub struct WebPeers {
    next_conn: AtomicU64,
    /// How many queues exist, so that a server without web members skips them at no cost.
    open: AtomicUsize,
    queues: Mutex<HashMap<u64, mpsc::Sender<Utf8Bytes>>>,
    /// Counts history commits, so that an HTTP request waiting for its message to be stored
    /// wakes when a batch is (the history thread bumps it).
    commits: watch::Sender<u64>,
    /// What happened to frames.
    pub stats: WebStats,
}

impl Default for WebPeers {
    fn default() -> Self {
        Self {
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            queues: Mutex::new(HashMap::new()),
            commits: watch::channel(0).0,
            stats: WebStats::default(),
        }
    }
}

impl WebPeers {
    /// A new endpoint for a connection from `ip`, and the queue its events arrive on. With
    /// `capacity` 1 it serves one HTTP request that waits for one answer.
    pub fn connect(&self, ip: IpAddr, capacity: usize) -> (Endpoint, mpsc::Receiver<Utf8Bytes>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (queue, events) = mpsc::channel(capacity.max(1));
        self.lock().insert(conn, queue);
        self.open.fetch_add(1, Ordering::Relaxed);
        (Endpoint::Web { conn, ip }, events)
    }

    /// Forgets a connection's queue (it closed).
    pub fn disconnect(&self, endpoint: Endpoint) {
        if let Endpoint::Web { conn, .. } = endpoint
            && self.lock().remove(&conn).is_some()
        {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many web connections are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Queues frames for their connections; `frames` yields each frame and its connection.
    /// A version-2 frame goes without its `0xFF` marker (a WebSocket message is the JSON
    /// alone); one frame's text is made once however many connections it goes to.
    pub fn deliver<'a>(&self, frames: impl Iterator<Item = (&'a [u8], u64)>) {
        let mut queues = self.lock();
        let mut last: Option<(*const u8, usize, Utf8Bytes)> = None;
        for (frame, conn) in frames {
            let text = match &last {
                Some((ptr, len, text)) if *ptr == frame.as_ptr() && *len == frame.len() => {
                    text.clone()
                }
                _ => {
                    // Only version-2 members are web members; anything else was never meant
                    // for one.
                    let Some(json) = frame.strip_prefix(&[V2_MARKER]) else {
                        continue;
                    };
                    let Ok(json) = std::str::from_utf8(json) else {
                        continue;
                    };
                    let text = Utf8Bytes::from(json.to_owned());
                    last = Some((frame.as_ptr(), frame.len(), text.clone()));
                    text
                }
            };
            let Some(queue) = queues.get(&conn) else {
                self.stats.dropped_gone.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match queue.try_send(text) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the connection's stream once it has drained
                    // what it has: it closes as too slow, and the room never waits for it.
                    queues.remove(&conn);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    self.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    self.stats.cut_off.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    queues.remove(&conn);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    self.stats.dropped_gone.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Tells waiting requests that a history batch was committed.
    pub fn committed(&self) {
        if self.commits.receiver_count() > 0 {
            self.commits
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Wakes on every commit from now on.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Utf8Bytes>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
