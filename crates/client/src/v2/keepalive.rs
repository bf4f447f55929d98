//! When to ping, when to register again, and when to tell the user the server went quiet,
//! without I/O. The caller reports every datagram heard and asks what to send at `now`.

use std::time::{Duration, Instant};

/// How the keepalive paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveTiming {
    /// A ping every this long keeps the membership alive and fetches missed messages.
    pub ping_every: Duration,
    /// After this long without a datagram the server may have restarted and forgotten this
    /// address, so the probe is a `register` instead of a `ping`.
    pub register_after: Duration,
    /// The shortest spacing of probes while a gap in the messages is waiting to be filled.
    pub fill_spacing: Duration,
    /// After this long without a datagram the user is told the server does not answer.
    pub notice_after: Duration,
    /// After this long without a datagram the client gives up.
    pub give_up_after: Duration,
}

impl Default for KeepaliveTiming {
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(2),
            register_after: Duration::from_secs(3),
            fill_spacing: Duration::from_millis(300),
            notice_after: Duration::from_secs(10),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// What to send to keep in touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `{"t":"ping","last_id":N}`.
    Ping,
    /// `{"t":"register","last_id":N}`: the server has been silent, it may have restarted.
    Register,
}

/// What the silence of the server means now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Nothing new to say.
    Nothing,
    /// The server just crossed the notice threshold: tell the user, once.
    Noticed,
    /// The server has been silent for too long: stop.
    GiveUp,
}

/// Keepalive state of one membership.
#[derive(Debug, Clone)]
pub struct Keepalive {
    timing: KeepaliveTiming,
    last_heard: Instant,
    last_probe: Instant,
    fill_wanted: bool,
    notice_shown: bool,
}

impl Keepalive {
    /// Starts counting from `now`, when registration has just been answered.
    pub fn new(timing: KeepaliveTiming, now: Instant) -> Self {
        Self {
            timing,
            last_heard: now,
            last_probe: now,
            fill_wanted: false,
            notice_shown: false,
        }
    }

    /// A datagram came from the server. `true` when the user had been told it was silent and
    /// should now hear that it is back.
    pub fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = now;
        std::mem::take(&mut self.notice_shown)
    }

    /// Whether messages are missing: while they are, the next probe comes soon instead of at
    /// the next regular ping.
    pub fn want_fill(&mut self, wanted: bool) {
        self.fill_wanted = wanted;
    }

    /// When the next probe is due.
    pub fn next_probe(&self) -> Instant {
        let wait = if self.fill_wanted {
            self.timing.fill_spacing
        } else {
            self.timing.ping_every
        };
        self.last_probe + wait
    }

    /// The probe to send at `now`, if one is due; it counts as sent.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe> {
        if now < self.next_probe() {
            return None;
        }
        self.last_probe = now;
        self.fill_wanted = false;
        if now.saturating_duration_since(self.last_heard) >= self.timing.register_after {
            Some(Probe::Register)
        } else {
            Some(Probe::Ping)
        }
    }

    /// Whether the silence so far deserves a notice or the end.
    pub fn poll_silence(&mut self, now: Instant) -> Silence {
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.timing.give_up_after {
            Silence::GiveUp
        } else if silent >= self.timing.notice_after && !self.notice_shown {
            self.notice_shown = true;
            Silence::Noticed
        } else {
            Silence::Nothing
        }
    }

    /// How long the server has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }

    /// The next instant at which [`Keepalive::poll_probe`] or [`Keepalive::poll_silence`]
    /// may have something to say.
    pub fn next_wakeup(&self) -> Instant {
        let silence_deadline = if self.notice_shown {
            self.last_heard + self.timing.give_up_after
        } else {
            self.last_heard + self.timing.notice_after
        };
        self.next_probe().min(silence_deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn pings_every_two_seconds_while_the_server_answers() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(KeepaliveTiming::default(), start);
        assert_eq!(keepalive.poll_probe(start + secs(1.9)), None);
        keepalive.heard(start + secs(1.9));
        assert_eq!(keepalive.poll_probe(start + secs(2.0)), Some(Probe::Ping));
        assert_eq!(keepalive.poll_probe(start + secs(2.1)), None);
        assert_eq!(keepalive.next_probe(), start + secs(4.0));
    }

    #[test]
    fn registers_instead_of_pinging_after_three_silent_seconds() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(KeepaliveTiming::default(), start);
        assert_eq!(keepalive.poll_probe(start + secs(2.0)), Some(Probe::Ping));
        assert_eq!(
            keepalive.poll_probe(start + secs(4.0)),
            Some(Probe::Register)
        );
        assert_eq!(
            keepalive.poll_probe(start + secs(6.0)),
            Some(Probe::Register)
        );
        keepalive.heard(start + secs(6.5));
        assert_eq!(keepalive.poll_probe(start + secs(8.0)), Some(Probe::Ping));
    }

    #[test]
    fn a_gap_brings_the_next_ping_forward_but_not_closer_than_300_ms() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(KeepaliveTiming::default(), start);
        keepalive.poll_probe(start + secs(2.0));
        keepalive.want_fill(true);
        assert_eq!(keepalive.next_probe(), start + secs(2.3));
        assert_eq!(keepalive.poll_probe(start + secs(2.2)), None);
        assert_eq!(keepalive.poll_probe(start + secs(2.3)), Some(Probe::Ping));
        // Filled: back to the regular pace.
        assert_eq!(keepalive.next_probe(), start + secs(4.3));
    }

    #[test]
    fn silence_is_noticed_once_and_recovery_is_reported() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(KeepaliveTiming::default(), start);
        assert_eq!(keepalive.poll_silence(start + secs(9.9)), Silence::Nothing);
        assert_eq!(keepalive.next_wakeup(), start + secs(2.0));
        assert_eq!(keepalive.poll_silence(start + secs(10.0)), Silence::Noticed);
        assert_eq!(keepalive.poll_silence(start + secs(12.0)), Silence::Nothing);
        assert!(
            keepalive.heard(start + secs(13.0)),
            "tell the user it is back"
        );
        assert!(!keepalive.heard(start + secs(14.0)), "only once");
    }

    #[test]
    fn gives_up_after_a_long_silence() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(KeepaliveTiming::default(), start);
        assert_eq!(keepalive.poll_silence(start + secs(10.0)), Silence::Noticed);
        assert_eq!(
            keepalive.poll_silence(start + secs(299.0)),
            Silence::Nothing
        );
        assert_eq!(keepalive.poll_silence(start + secs(300.0)), Silence::GiveUp);
    }
}
