//! Per-member deduplication of version-2 chat: which sequence numbers were seen, and the room
//! message id each one became once stored.

use std::collections::BTreeMap;

/// How many recent sequence numbers each member remembers. Clients keep far fewer messages
/// unacknowledged than this, so a retransmission always falls inside the window.
pub const SEQ_WINDOW: usize = 1024;

/// What the window knows about a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// Never seen: a new message.
    New,
    /// Seen, and being stored right now; the ack follows the commit.
    Pending,
    /// Seen and stored as this room message id.
    Stored(u64),
    /// Older than anything remembered: a stale duplicate, ignored.
    Forgotten,
}

/// The recent sequence numbers of one member.
#[derive(Debug, Default, Clone)]
pub struct SeqWindow {
    seen: BTreeMap<u64, Option<u64>>,
}

impl SeqWindow {
    /// What is known about `seq`.
    pub fn status(&self, seq: u64) -> SeqStatus {
        match self.seen.get(&seq) {
            Some(Some(id)) => SeqStatus::Stored(*id),
            Some(None) => SeqStatus::Pending,
            None if self.seen.len() >= SEQ_WINDOW
                && self.seen.keys().next().is_some_and(|&oldest| seq < oldest) =>
            {
                SeqStatus::Forgotten
            }
            None => SeqStatus::New,
        }
    }

    /// Records `seq` as accepted and waiting for its commit.
    pub fn accept(&mut self, seq: u64) {
        self.seen.insert(seq, None);
        while self.seen.len() > SEQ_WINDOW {
            self.seen.pop_first();
        }
    }

    /// Records that `seq` was stored as message `id`.
    pub fn stored(&mut self, seq: u64, id: u64) {
        self.seen.insert(seq, Some(id));
        while self.seen.len() > SEQ_WINDOW {
            self.seen.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_new_pending_and_stored() {
        let mut window = SeqWindow::default();
        assert_eq!(window.status(1), SeqStatus::New);
        window.accept(1);
        assert_eq!(window.status(1), SeqStatus::Pending);
        window.stored(1, 40);
        assert_eq!(window.status(1), SeqStatus::Stored(40));
    }

    #[test]
    fn stays_bounded_and_forgets_the_oldest() {
        let mut window = SeqWindow::default();
        for seq in 1..=(SEQ_WINDOW as u64 + 10) {
            window.stored(seq, seq);
        }
        assert_eq!(window.status(5), SeqStatus::Forgotten);
        assert_eq!(
            window.status(SEQ_WINDOW as u64 + 10),
            SeqStatus::Stored(SEQ_WINDOW as u64 + 10)
        );
        assert_eq!(window.status(SEQ_WINDOW as u64 + 11), SeqStatus::New);
    }
}
