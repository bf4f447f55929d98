//! Counters of what the data plane did, shared by every loop that receives or sends.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::DropReason;

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
    /// Datagrams with an unknown token answered "this room no longer exists".
    pub no_room_replies: AtomicU64,
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
