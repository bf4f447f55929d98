//! Counters of what the data plane did, shared by every loop that receives or sends.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::engine::DropReason;

/// Counters of what the data plane did, for logs, tests and `/metrics`.
#[derive(Debug)]
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
    /// Sealed datagrams that did not authenticate.
    pub forged: AtomicU64,
    /// Sealed datagrams replayed (a counter seen before, or too old).
    pub replayed_sealed: AtomicU64,
    /// Sealed datagrams under a key id nobody has.
    pub unknown_key: AtomicU64,
    /// Plaintext datagrams where only sealed ones are taken.
    pub plaintext: AtomicU64,
    /// Datagrams with an unknown token answered "this room no longer exists".
    pub no_room_replies: AtomicU64,
    /// Messages replayed to members catching up.
    pub replayed: AtomicU64,
    /// Seconds each history commit took.
    pub commit_seconds: Histogram,
}

impl Default for RelayStats {
    fn default() -> Self {
        Self {
            received: AtomicU64::default(),
            sent: AtomicU64::default(),
            malformed: AtomicU64::default(),
            unauthorized: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            forged: AtomicU64::default(),
            replayed_sealed: AtomicU64::default(),
            unknown_key: AtomicU64::default(),
            plaintext: AtomicU64::default(),
            no_room_replies: AtomicU64::default(),
            replayed: AtomicU64::default(),
            // 0.25 ms to about 2 s: a commit in WAL mode without fsync is well under a
            // millisecond; one stuck behind a checkpoint's restart, seconds.
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 14)),
        }
    }
}

impl RelayStats {
    /// Counts a dropped datagram under its reason.
    pub fn count_drop(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &self.malformed,
            DropReason::UnknownToken | DropReason::WrongRoom | DropReason::WrongAddress => {
                &self.unauthorized
            }
            DropReason::RateLimited | DropReason::HistoryBacklog => &self.rate_limited,
            DropReason::Forged => &self.forged,
            DropReason::Replayed => &self.replayed_sealed,
            DropReason::UnknownKey => &self.unknown_key,
            DropReason::Plaintext => &self.plaintext,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.unauthorized.load(Ordering::Relaxed)
            + self.rate_limited.load(Ordering::Relaxed)
            + self.forged.load(Ordering::Relaxed)
            + self.replayed_sealed.load(Ordering::Relaxed)
            + self.unknown_key.load(Ordering::Relaxed)
            + self.plaintext.load(Ordering::Relaxed)
    }
}
