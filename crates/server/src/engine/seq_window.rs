//! Per-member ordering and deduplication of version-2 chat.
//!
//! A member's messages are accepted in `seq` order: one that arrives early (an earlier one was
//! lost and is being retransmitted) is held until the gap fills, so everyone sees a person's
//! lines in the order they were typed. Seen sequence numbers are remembered with what became of
//! them, so a retransmission is answered again (ack or refusal) and never stored twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_protocol::v2::V2ErrorCode;

/// How many recent sequence numbers each member remembers. Clients keep far fewer messages
/// unacknowledged than this, so a retransmission always falls inside the window.
pub const SEQ_WINDOW: usize = 1024;
/// Most early messages held per member while a gap fills; later ones are dropped and come
/// again with the client's retransmissions.
pub const HOLD_LIMIT: usize = 256;
/// Most bytes of early messages held per member, whatever their number.
pub const HOLD_BYTES: usize = 64 * 1024;
/// How long a gap may hold back a member's later messages. A gap that outlives this will not
/// fill (say the missing message was refused before a restart), so the held ones go ahead.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the window knows about a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// Never seen: a new message.
    New,
    /// Accepted and being stored, or held for an earlier gap; the ack comes later.
    Pending,
    /// Stored as this room message id.
    Stored(u64),
    /// Refused with this code.
    Refused(V2ErrorCode),
    /// Older than anything remembered: a stale duplicate, ignored.
    Forgotten,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Pending,
    Stored(u64),
    Refused(V2ErrorCode),
}

/// The recent sequence numbers of one member.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    seen: BTreeMap<u64, Outcome>,
    /// The next sequence number that may be accepted.
    next: u64,
    /// Early arrivals: seq → (text, when it arrived).
    held: BTreeMap<u64, (String, Instant)>,
    /// Bytes of text in `held`.
    held_bytes: usize,
    /// Set after a restart or a failover: what the member sent before is known only from
    /// stored messages (refusals were never saved) or not at all here, so the first new seq
    /// sets where the window starts instead of waiting for a gap that may never fill.
    resync: bool,
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self {
            seen: BTreeMap::new(),
            next: 1,
            held: BTreeMap::new(),
            held_bytes: 0,
            resync: false,
        }
    }
}

impl SeqWindow {
    /// What is known about `seq`.
    pub fn status(&self, seq: u64) -> SeqStatus {
        match self.seen.get(&seq) {
            Some(Outcome::Stored(id)) => SeqStatus::Stored(*id),
            Some(Outcome::Pending) => SeqStatus::Pending,
            Some(Outcome::Refused(code)) => SeqStatus::Refused(*code),
            None if self.held.contains_key(&seq) => SeqStatus::Pending,
            None if self.seen.len() >= SEQ_WINDOW
                && self.seen.keys().next().is_some_and(|&oldest| seq < oldest) =>
            {
                SeqStatus::Forgotten
            }
            None => SeqStatus::New,
        }
    }

    /// Takes a new message and returns those that may be accepted now, in seq order: it alone
    /// when it is the next one, followed by any held ones it unblocks; nothing when it must
    /// wait for an earlier one.
    /// `allowance` is how many more bytes the server-wide budget lets this member hold.
    pub fn admit(
        &mut self,
        seq: u64,
        text: &str,
        now: Instant,
        allowance: usize,
    ) -> Vec<(u64, String)> {
        if std::mem::take(&mut self.resync) {
            self.next = self.next.max(seq);
        }
        if seq < self.next {
            // Its gap was given up on; late is better than never.
            return vec![(seq, text.to_owned())];
        }
        if seq > self.next {
            let room_to_hold = self.held.len() < HOLD_LIMIT
                && self.held_bytes + text.len() <= HOLD_BYTES
                && text.len() <= allowance;
            if room_to_hold && !self.held.contains_key(&seq) {
                self.held_bytes += text.len();
                self.held.insert(seq, (text.to_owned(), now));
            }
            return self.release_expired(now);
        }
        self.held_bytes += text.len();
        self.held.insert(seq, (text.to_owned(), now));
        self.release_ready()
    }

    /// Gives up on a gap that has held messages back for [`HOLD_TIMEOUT`] and returns what
    /// that releases. Called on every arrival, retransmissions of held messages included, and
    /// by the clock tick, so nothing waits on a gap for long even when the sender has
    /// nothing new to send.
    pub fn release_expired(&mut self, now: Instant) -> Vec<(u64, String)> {
        let oldest_wait = self.held.values().map(|(_, since)| *since).min();
        match oldest_wait {
            Some(since) if now.saturating_duration_since(since) >= HOLD_TIMEOUT => {
                // The gap did not fill in time: skip it (what was skipped gets in late).
                self.next = self.held.keys().next().copied().unwrap_or(self.next);
                self.release_ready()
            }
            _ => Vec::new(),
        }
    }

    /// Bytes of text held back.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Whether early messages are held back.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Marks the window as rebuilt from stored messages after a restart, or as new on this
    /// node for a member that failed over from another (see `resync`).
    pub fn restored(&mut self) {
        self.resync = true;
    }

    fn release_ready(&mut self) -> Vec<(u64, String)> {
        let mut ready = Vec::new();
        while let Some((text, _)) = self.held.remove(&self.next) {
            self.held_bytes -= text.len();
            ready.push((self.next, text));
            self.next += 1;
        }
        ready
    }

    /// Records `seq` as accepted and waiting for its commit.
    pub fn accept(&mut self, seq: u64) {
        self.record(seq, Outcome::Pending);
    }

    /// Records that `seq` was stored as message `id`.
    pub fn stored(&mut self, seq: u64, id: u64) {
        self.record(seq, Outcome::Stored(id));
        self.next = self.next.max(seq + 1);
    }

    /// Records that `seq` was refused, so a retransmission gets the same answer.
    pub fn refused(&mut self, seq: u64, code: V2ErrorCode) {
        self.record(seq, Outcome::Refused(code));
    }

    fn record(&mut self, seq: u64, outcome: Outcome) {
        self.seen.insert(seq, outcome);
        while self.seen.len() > SEQ_WINDOW {
            self.seen.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(ready: &[(u64, String)]) -> Vec<u64> {
        ready.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn tracks_new_pending_stored_and_refused() {
        let mut window = SeqWindow::default();
        assert_eq!(window.status(1), SeqStatus::New);
        assert_eq!(seqs(&window.admit(1, "a", Instant::now(), usize::MAX)), [1]);
        window.accept(1);
        assert_eq!(window.status(1), SeqStatus::Pending);
        window.stored(1, 40);
        assert_eq!(window.status(1), SeqStatus::Stored(40));
        window.refused(2, V2ErrorCode::RateLimited);
        assert_eq!(
            window.status(2),
            SeqStatus::Refused(V2ErrorCode::RateLimited)
        );
    }

    #[test]
    fn early_messages_wait_for_the_gap_and_then_go_in_order() {
        let now = Instant::now();
        let mut window = SeqWindow::default();
        assert_eq!(seqs(&window.admit(1, "one", now, usize::MAX)), [1]);
        assert!(window.admit(3, "three", now, usize::MAX).is_empty());
        assert!(window.admit(4, "four", now, usize::MAX).is_empty());
        assert_eq!(
            window.status(3),
            SeqStatus::Pending,
            "held counts as pending"
        );
        let ready = window.admit(2, "two", now, usize::MAX);
        assert_eq!(seqs(&ready), [2, 3, 4]);
        assert_eq!(ready[1].1, "three");
        assert_eq!(window.held_bytes, 0);
    }

    #[test]
    fn a_gap_that_never_fills_is_skipped_and_the_late_one_still_gets_in() {
        let start = Instant::now();
        let mut window = SeqWindow::default();
        assert!(window.admit(5, "five", start, usize::MAX).is_empty());
        assert!(window.admit(6, "six", start, usize::MAX).is_empty());
        let later = start + HOLD_TIMEOUT + Duration::from_millis(1);
        assert_eq!(seqs(&window.admit(6, "six", later, usize::MAX)), [5, 6]);
        assert_eq!(window.status(2), SeqStatus::New);
        assert_eq!(seqs(&window.admit(2, "two", later, usize::MAX)), [2]);
    }

    #[test]
    fn a_retransmission_of_a_held_message_releases_it_once_the_gap_expires() {
        let start = Instant::now();
        let mut window = SeqWindow::default();
        assert!(window.admit(5, "five", start, usize::MAX).is_empty());
        let later = start + HOLD_TIMEOUT;
        assert_eq!(window.status(5), SeqStatus::Pending);
        assert_eq!(seqs(&window.release_expired(later)), [5]);
        assert!(!window.holds_any());
    }

    #[test]
    fn after_a_restart_the_first_new_seq_goes_straight_in() {
        let now = Instant::now();
        let mut window = SeqWindow::default();
        window.stored(10, 100);
        window.restored();
        // 11 to 15 were refused before the restart, which nobody saved.
        assert_eq!(seqs(&window.admit(16, "sixteen", now, usize::MAX)), [16]);
        assert!(
            window.admit(18, "eighteen", now, usize::MAX).is_empty(),
            "ordering resumes"
        );
    }

    #[test]
    fn holding_is_bounded_in_count_and_bytes() {
        let now = Instant::now();
        let mut window = SeqWindow::default();
        for seq in 2..(2 + 3 * HOLD_LIMIT as u64) {
            window.admit(seq, "x", now, usize::MAX);
        }
        assert_eq!(window.held.len(), HOLD_LIMIT);
        let mut big = SeqWindow::default();
        let kilobyte = "k".repeat(1024);
        for seq in 2..200 {
            big.admit(seq, &kilobyte, now, usize::MAX);
        }
        assert!(big.held_bytes <= HOLD_BYTES);
        assert_eq!(big.held.len(), HOLD_BYTES / 1024);
    }

    #[test]
    fn stays_bounded_and_forgets_the_oldest() {
        let mut window = SeqWindow::default();
        for seq in 1..=(SEQ_WINDOW as u64 + 10) {
            window.stored(seq, seq);
        }
        assert_eq!(window.status(5), SeqStatus::Forgotten);
        let newest = SEQ_WINDOW as u64 + 10;
        assert_eq!(window.status(newest), SeqStatus::Stored(newest));
        assert_eq!(window.status(newest + 1), SeqStatus::New);
    }
}
