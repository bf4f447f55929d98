//! Handshakes per source address: one token bucket per IP, so that a single host cannot take
//! every handshake slot or churn through rooms, however fast it connects.
//!
//! The map of addresses is bounded. An address whose bucket has refilled carries no
//! information and is pruned; if a spray of source addresses fills the map anyway, addresses
//! beyond it are admitted untracked (fail open): a sender with that many addresses is not held
//! back by a per-address limit in any case, and refusing them would refuse honest newcomers too.
//! The handshake semaphore still caps how many are served at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::flood::{FloodPolicy, TokenBucket};

/// Most addresses tracked at once (roughly 80 bytes each, so about 1.3 MB at most).
pub const MAX_TRACKED_ADDRESSES: usize = 16_384;
/// The window the limit is expressed in.
const WINDOW: Duration = Duration::from_secs(60);
/// Pruning scans the whole map, so a full map is pruned at most this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a connection may proceed to a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within its address's allowance (or the limit is off).
    Admitted,
    /// Admitted although its address is not tracked, because the map is full.
    Untracked,
    /// Over its address's allowance.
    Refused {
        /// The first refusal since this address was last admitted, worth a warning in the log;
        /// the rest are not, so that the log cannot be flooded.
        first: bool,
    },
}

#[derive(Debug)]
struct Entry {
    bucket: TokenBucket,
    last_seen: Instant,
    refused: bool,
}

/// Token buckets per source address: `per_minute` handshakes at once, refilled at
/// `per_minute` a minute.
#[derive(Debug)]
pub struct HandshakeRateLimiter {
    policy: Option<FloodPolicy>,
    entries: HashMap<IpAddr, Entry>,
    pruned_at: Option<Instant>,
}

impl HandshakeRateLimiter {
    /// A limiter allowing `per_minute` handshakes per address and minute; 0 turns it off.
    pub fn new(per_minute: u32) -> Self {
        let policy = (per_minute > 0).then(|| FloodPolicy {
            burst: per_minute,
            rate: f64::from(per_minute) / WINDOW.as_secs_f64(),
        });
        Self {
            policy,
            entries: HashMap::new(),
            pruned_at: None,
        }
    }

    /// The longest a refused client waits before its address may try again.
    pub fn retry_after(&self) -> Duration {
        match self.policy {
            Some(policy) => Duration::from_secs_f64(1.0 / policy.rate),
            None => Duration::ZERO,
        }
    }

    /// How many addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Counts a connection from `ip` and says whether it may proceed.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Admission {
        let Some(policy) = self.policy else {
            return Admission::Admitted;
        };
        // An IPv4 client seen through a dual-stack socket is the same host as over IPv4.
        let ip = ip.to_canonical();
        if !self.entries.contains_key(&ip) && self.entries.len() >= MAX_TRACKED_ADDRESSES {
            self.prune(now);
            if self.entries.len() >= MAX_TRACKED_ADDRESSES {
                return Admission::Untracked;
            }
        }
        let entry = self.entries.entry(ip).or_insert_with(|| Entry {
            bucket: TokenBucket::new(&policy, now),
            last_seen: now,
            refused: false,
        });
        entry.last_seen = now;
        if entry.bucket.allow(&policy, now) {
            entry.refused = false;
            Admission::Admitted
        } else {
            let first = !entry.refused;
            entry.refused = true;
            Admission::Refused { first }
        }
    }

    /// Forgets addresses quiet for a whole window: their buckets are full again, exactly as a
    /// new entry's would be.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_INTERVAL)
        {
            return;
        }
        self.pruned_at = Some(now);
        self.entries
            .retain(|_, entry| now.saturating_duration_since(entry.last_seen) < WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn each_address_gets_its_allowance_then_a_steady_rate() {
        let start = Instant::now();
        let mut limiter = HandshakeRateLimiter::new(6);
        let admitted = (0..10)
            .filter(|_| limiter.check(v4(1), start) == Admission::Admitted)
            .count();
        assert_eq!(admitted, 6);
        // Another address is not affected.
        assert_eq!(limiter.check(v4(2), start), Admission::Admitted);
        // 6 a minute: one more every 10 seconds.
        assert_eq!(limiter.retry_after(), Duration::from_secs(10));
        let later = start + Duration::from_secs(10);
        assert_eq!(limiter.check(v4(1), later), Admission::Admitted);
        assert_eq!(
            limiter.check(v4(1), later),
            Admission::Refused { first: true }
        );
    }

    #[test]
    fn only_the_first_refusal_in_a_row_is_flagged() {
        let now = Instant::now();
        let mut limiter = HandshakeRateLimiter::new(1);
        assert_eq!(limiter.check(v4(1), now), Admission::Admitted);
        assert_eq!(
            limiter.check(v4(1), now),
            Admission::Refused { first: true }
        );
        assert_eq!(
            limiter.check(v4(1), now),
            Admission::Refused { first: false }
        );
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let now = Instant::now();
        let mut limiter = HandshakeRateLimiter::new(1);
        let plain = Ipv4Addr::new(192, 168, 1, 7);
        assert_eq!(limiter.check(IpAddr::V4(plain), now), Admission::Admitted);
        let mapped = IpAddr::V6(plain.to_ipv6_mapped());
        assert!(matches!(
            limiter.check(mapped, now),
            Admission::Refused { .. }
        ));
        assert_eq!(limiter.tracked(), 1);
        assert_eq!(
            limiter.check(IpAddr::V6(Ipv6Addr::LOCALHOST), now),
            Admission::Admitted
        );
    }

    #[test]
    fn zero_turns_the_limit_off_and_tracks_nothing() {
        let now = Instant::now();
        let mut limiter = HandshakeRateLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check(v4(1), now) == Admission::Admitted));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_spray_of_addresses_cannot_grow_the_map_beyond_its_bound() {
        let start = Instant::now();
        let mut limiter = HandshakeRateLimiter::new(120);
        let total = u32::try_from(MAX_TRACKED_ADDRESSES).unwrap() * 3;
        let mut untracked = 0;
        for n in 0..total {
            if limiter.check(v4(n), start) == Admission::Untracked {
                untracked += 1;
            }
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_ADDRESSES);
        assert_eq!(untracked, total as usize - MAX_TRACKED_ADDRESSES);
        // A tracked address is still limited while the map is full.
        let tracked = v4(0);
        assert!(
            (0..200).any(|_| matches!(limiter.check(tracked, start), Admission::Refused { .. }))
        );
        // A window later the quiet addresses are pruned and newcomers are tracked again.
        let later = start + WINDOW + Duration::from_secs(1);
        assert_eq!(limiter.check(v4(total + 1), later), Admission::Admitted);
        assert!(limiter.tracked() <= 2, "{}", limiter.tracked());
    }
}
