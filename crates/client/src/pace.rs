//! Pacing chat to the flood control the server announced in its grant, in either version of
//! the data plane, so that lines typed or pasted faster than it allows wait their turn.

use std::time::{Duration, Instant};

use crate::entering::handshake::Membership;

/// The longest per-message interval a grant may impose; a larger one is read as this.
pub const MAX_PACE_INTERVAL: Duration = Duration::from_secs(60);

/// The server's flood control as its grant announced it, modelled on this side so that lines
/// typed or pasted faster than it allows wait their turn instead of being refused.
#[derive(Debug, Clone)]
pub struct Pacer {
    burst: f64,
    interval: Duration,
    tokens: f64,
    refilled_at: Instant,
}

impl Pacer {
    /// A bucket a little stricter than the server's (one message less of burst, 10% slower),
    /// so that the two clocks drifting apart never tips a message over the limit.
    pub fn new(burst: u32, interval: Duration, now: Instant) -> Self {
        let burst = f64::from(burst.saturating_sub(1).max(1));
        let interval = interval
            .clamp(Duration::from_millis(1), MAX_PACE_INTERVAL)
            .mul_f64(1.1);
        Self {
            burst,
            interval,
            tokens: burst,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.burst);
        self.refilled_at = self.refilled_at.max(now);
    }

    /// Takes the right to send one message now, if the pace allows it.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // Float rounding must not make a message wait one more tick than its turn.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next message may go.
    pub fn ready_at(&self) -> Instant {
        if self.tokens >= 1.0 - 1e-9 {
            self.refilled_at
        } else {
            self.refilled_at + self.interval.mul_f64(1.0 - self.tokens)
        }
    }
}

/// The flood control the grant announced, if any.
pub fn announced(membership: &Membership) -> Option<(u32, Duration)> {
    let burst = membership.grant.send_burst?;
    let interval = membership.grant.send_interval_ms?;
    Some((burst, Duration::from_millis(interval)))
}
