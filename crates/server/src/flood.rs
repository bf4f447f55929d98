//! Flood control: a token bucket per member, like an IRC server's fakelag. A member may send a
//! burst, then a steady rate; what exceeds it is dropped, never queued.

use std::time::Instant;

/// How fast members may send chat and typing messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodPolicy {
    /// Messages a member may send at once after being quiet.
    pub burst: u32,
    /// Messages per second refilled; 0 turns flood control off.
    pub rate: f64,
}

impl FloodPolicy {
    /// No limit at all (benchmarks).
    pub const OFF: Self = Self {
        burst: 0,
        rate: 0.0,
    };

    fn is_off(&self) -> bool {
        self.rate <= 0.0
    }
}

/// One member's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(policy: &FloodPolicy, now: Instant) -> Self {
        Self {
            tokens: f64::from(policy.burst),
            refilled_at: now,
        }
    }

    /// Takes one token if there is one; `false` means the message must be dropped.
    pub fn allow(&mut self, policy: &FloodPolicy, now: Instant) -> bool {
        self.take_up_to(1, policy, now) == 1
    }

    /// Whether a token is there now, without taking it.
    pub fn has_token(&mut self, policy: &FloodPolicy, now: Instant) -> bool {
        self.take_up_to(0, policy, now);
        policy.is_off() || self.tokens >= 1.0
    }

    /// Takes as many of `wanted` tokens as the bucket holds, and says how many.
    pub fn take_up_to(&mut self, wanted: u64, policy: &FloodPolicy, now: Instant) -> u64 {
        if policy.is_off() {
            return wanted;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * policy.rate).min(f64::from(policy.burst.max(1)));
        self.refilled_at = now;
        // Whole tokens only; the bucket never holds more than `burst`, so this fits.
        let taken = wanted.min(self.tokens.floor() as u64);
        self.tokens -= taken as f64;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let policy = FloodPolicy {
            burst: 10,
            rate: 5.0,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&policy, start);
        let allowed = (0..20).filter(|_| bucket.allow(&policy, start)).count();
        assert_eq!(allowed, 10);
        // One second later, five more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..20).filter(|_| bucket.allow(&policy, later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn takes_what_is_there() {
        let policy = FloodPolicy {
            burst: 100,
            rate: 10.0,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&policy, start);
        assert_eq!(bucket.take_up_to(60, &policy, start), 60);
        assert_eq!(bucket.take_up_to(60, &policy, start), 40);
        assert_eq!(bucket.take_up_to(60, &policy, start), 0);
        let later = start + Duration::from_secs(2);
        assert_eq!(bucket.take_up_to(60, &policy, later), 20);
    }

    #[test]
    fn rate_zero_is_off() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&FloodPolicy::OFF, start);
        assert!((0..10_000).all(|_| bucket.allow(&FloodPolicy::OFF, start)));
    }
}
