//! Pacing of typing indicators, both ways: this user's edits send `typing` at most once per
//! interval, and each other member's `typing` is shown at most once per interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The shortest spacing of typing indicators, sent or shown.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(3);
/// Members remembered for pacing before stale entries are forgotten.
const MAX_TRACKED: usize = 256;

/// Lets an event through at most once per interval.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle that lets the first event through.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether an event at `now` goes through; if it does, the interval starts again.
    pub fn ready(&mut self, now: Instant) -> bool {
        let ready = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

/// Which members' typing indicators to show.
#[derive(Debug, Clone)]
pub struct TypingNotices {
    interval: Duration,
    shown: HashMap<String, Instant>,
}

impl Default for TypingNotices {
    fn default() -> Self {
        Self::new(TYPING_INTERVAL)
    }
}

impl TypingNotices {
    /// Shows each member at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            shown: HashMap::new(),
        }
    }

    /// Whether `name` typing at `now` should be shown.
    pub fn should_show(&mut self, name: &str, now: Instant) -> bool {
        if let Some(last) = self.shown.get(name)
            && now.saturating_duration_since(*last) < self.interval
        {
            return false;
        }
        if self.shown.len() >= MAX_TRACKED {
            let interval = self.interval;
            self.shown
                .retain(|_, last| now.saturating_duration_since(*last) < interval);
        }
        if self.shown.len() < MAX_TRACKED {
            self.shown.insert(name.to_owned(), now);
        }
        true
    }

    /// `name` said something or left: their next typing indicator is news again.
    pub fn forget(&mut self, name: &str) {
        self.shown.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn throttle_lets_one_event_through_per_interval() {
        let start = Instant::now();
        let mut throttle = Throttle::new(TYPING_INTERVAL);
        assert!(throttle.ready(start));
        assert!(!throttle.ready(start + secs(1.0)));
        assert!(!throttle.ready(start + secs(2.9)));
        assert!(throttle.ready(start + secs(3.0)));
        assert!(!throttle.ready(start + secs(5.0)));
    }

    #[test]
    fn each_member_is_shown_at_most_once_per_interval() {
        let start = Instant::now();
        let mut notices = TypingNotices::default();
        assert!(notices.should_show("bob", start));
        assert!(notices.should_show("carol", start + secs(0.5)));
        assert!(!notices.should_show("bob", start + secs(2.0)));
        assert!(notices.should_show("bob", start + secs(3.0)));
    }

    #[test]
    fn a_message_from_a_member_resets_their_pacing() {
        let start = Instant::now();
        let mut notices = TypingNotices::default();
        assert!(notices.should_show("bob", start));
        notices.forget("bob");
        assert!(notices.should_show("bob", start + secs(1.0)));
    }

    #[test]
    fn the_set_of_members_stays_bounded() {
        let start = Instant::now();
        let mut notices = TypingNotices::default();
        for n in 0..(MAX_TRACKED * 3) {
            assert!(notices.should_show(&format!("user{n}"), start));
        }
        assert!(notices.shown.len() <= MAX_TRACKED);
    }
}
