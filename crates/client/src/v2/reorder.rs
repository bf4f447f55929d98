//! Printing room messages exactly once and in id order, without I/O. Messages arrive live,
//! replayed, duplicated, out of order, or as this member's own acked messages; a reorder buffer
//! keyed by room message id releases them contiguously from a cursor, the newest id printed.

use std::collections::BTreeMap;

use chat_protocol::v2::ChatMessage;

/// Most messages held back waiting for a gap to fill; the newest ones beyond this are dropped
/// and come back through replay, which always starts right after the cursor.
pub const MAX_BUFFERED: usize = 10_000;
/// Consecutive pongs without progress while a gap is open before the gap is given up on:
/// the server no longer has those messages (history retention), so waiting is pointless.
pub const PONGS_BEFORE_SKIPPING: u32 = 20;

/// The receive side of version-2 ordering for one membership.
#[derive(Debug, Clone)]
pub struct ReorderBuffer {
    /// Newest id printed; `None` until the first register's pong said where the room is.
    cursor: Option<u64>,
    /// Messages with ids above the cursor (or all of them before syncing).
    waiting: BTreeMap<u64, ChatMessage>,
    capacity: usize,
    /// Newest id the server said the room has.
    newest_known: u64,
    /// Pongs seen in a row while a gap stayed open and the cursor did not move.
    stalled_pongs: u32,
}

impl Default for ReorderBuffer {
    fn default() -> Self {
        Self::new(MAX_BUFFERED)
    }
}

impl ReorderBuffer {
    /// A buffer that holds everything until [`ReorderBuffer::sync`].
    pub fn new(capacity: usize) -> Self {
        Self {
            cursor: None,
            waiting: BTreeMap::new(),
            capacity: capacity.max(1),
            newest_known: 0,
            stalled_pongs: 0,
        }
    }

    /// The newest id printed contiguously: what `ping` and `register` send as `last_id`.
    pub fn last_id(&self) -> Option<u64> {
        self.cursor
    }

    /// Whether the first pong has set the cursor.
    pub fn is_synced(&self) -> bool {
        self.cursor.is_some()
    }

    /// How many messages wait for a gap to fill.
    pub fn buffered(&self) -> usize {
        self.waiting.len()
    }

    /// Takes a message from anywhere (live, replay, own ack) and returns those now ready to
    /// print, in id order. Ids at or below the cursor were printed already and are dropped.
    pub fn offer(&mut self, message: ChatMessage) -> Vec<ChatMessage> {
        self.newest_known = self.newest_known.max(message.id);
        if self.cursor.is_some_and(|cursor| message.id <= cursor) {
            return Vec::new();
        }
        // The id right after the cursor is released at once, so it never needs room.
        let continues_cursor = self.cursor.is_some_and(|cursor| message.id == cursor + 1);
        if self.waiting.len() >= self.capacity
            && !continues_cursor
            && !self.waiting.contains_key(&message.id)
        {
            match self.waiting.last_key_value() {
                Some((&newest, _)) if newest > message.id => {
                    self.waiting.remove(&newest);
                }
                _ => return Vec::new(),
            }
        }
        self.waiting.entry(message.id).or_insert(message);
        self.release()
    }

    /// The first register's pong: `latest` is the room's newest id. Everything buffered up to
    /// it is the join history and is released in id order, gaps and all; what is newer stays
    /// buffered as live traffic and is released contiguously from there.
    pub fn sync(&mut self, latest: u64) -> Vec<ChatMessage> {
        if self.cursor.is_some() {
            return self.pong(latest);
        }
        self.newest_known = self.newest_known.max(latest);
        let newer = self.waiting.split_off(&latest.saturating_add(1));
        let history = std::mem::replace(&mut self.waiting, newer);
        self.cursor = Some(latest);
        let mut out: Vec<ChatMessage> = history.into_values().collect();
        out.extend(self.release());
        out
    }

    /// Any later pong: notes how far the room goes, and gives up on a gap that replays have
    /// not filled for [`PONGS_BEFORE_SKIPPING`] pongs in a row. Returns what that releases.
    pub fn pong(&mut self, latest: u64) -> Vec<ChatMessage> {
        self.newest_known = self.newest_known.max(latest);
        if !self.has_gap() {
            self.stalled_pongs = 0;
            return Vec::new();
        }
        self.stalled_pongs += 1;
        if self.stalled_pongs < PONGS_BEFORE_SKIPPING {
            return Vec::new();
        }
        tracing::debug!(cursor = ?self.cursor, "giving up on missing messages");
        let skip_to = match self.waiting.first_key_value() {
            Some((&first, _)) => first - 1,
            None => self.newest_known,
        };
        self.cursor = Some(skip_to);
        self.stalled_pongs = 0;
        self.release()
    }

    /// Whether messages are known to be missing: some wait behind a gap, or the server has
    /// newer ones than were printed. The caller then pings soon to get them replayed.
    pub fn has_gap(&self) -> bool {
        self.cursor
            .is_some_and(|cursor| !self.waiting.is_empty() || self.newest_known > cursor)
    }

    /// Pops the messages that continue the cursor.
    fn release(&mut self) -> Vec<ChatMessage> {
        let Some(mut cursor) = self.cursor else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != cursor + 1 {
                break;
            }
            cursor += 1;
            out.push(entry.remove());
        }
        if !out.is_empty() {
            self.stalled_pongs = 0;
        }
        self.cursor = Some(cursor);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> ChatMessage {
        ChatMessage {
            id,
            from: "alice".into(),
            text: format!("message {id}"),
            ts: 0,
            me: false,
            to: None,
        }
    }

    fn ids(messages: &[ChatMessage]) -> Vec<u64> {
        messages.iter().map(|message| message.id).collect()
    }

    fn synced_at(cursor: u64) -> ReorderBuffer {
        let mut ordering = ReorderBuffer::default();
        assert!(ordering.sync(cursor).is_empty());
        ordering
    }

    #[test]
    fn in_order_messages_print_at_once() {
        let mut ordering = synced_at(0);
        assert_eq!(ids(&ordering.offer(msg(1))), [1]);
        assert_eq!(ids(&ordering.offer(msg(2))), [2]);
        assert_eq!(ordering.last_id(), Some(2));
        assert!(!ordering.has_gap());
    }

    #[test]
    fn a_gap_holds_later_messages_until_it_fills() {
        let mut ordering = synced_at(0);
        assert_eq!(ids(&ordering.offer(msg(1))), [1]);
        assert!(ordering.offer(msg(3)).is_empty());
        assert!(ordering.offer(msg(4)).is_empty());
        assert!(ordering.has_gap());
        assert_eq!(ordering.last_id(), Some(1));
        assert_eq!(ids(&ordering.offer(msg(2))), [2, 3, 4]);
        assert!(!ordering.has_gap());
    }

    #[test]
    fn duplicates_print_once() {
        let mut ordering = synced_at(0);
        assert_eq!(ids(&ordering.offer(msg(1))), [1]);
        assert!(ordering.offer(msg(1)).is_empty());
        assert!(ordering.offer(msg(3)).is_empty());
        assert!(ordering.offer(msg(3)).is_empty());
        assert_eq!(ids(&ordering.offer(msg(2))), [2, 3]);
    }

    #[test]
    fn replays_at_or_below_the_cursor_are_dropped() {
        let mut ordering = synced_at(10);
        assert!(ordering.offer(msg(9)).is_empty());
        assert!(ordering.offer(msg(10)).is_empty());
        assert_eq!(ids(&ordering.offer(msg(11))), [11]);
    }

    #[test]
    fn own_acked_messages_take_their_place_in_id_order() {
        let mut ordering = synced_at(0);
        // Bob's message 2 arrives live before the ack that says ours is 1.
        assert!(ordering.offer(msg(2)).is_empty());
        let own = ChatMessage {
            id: 1,
            from: "me".into(),
            text: "mine".into(),
            ts: 0,
            me: false,
            to: None,
        };
        let released = ordering.offer(own);
        assert_eq!(ids(&released), [1, 2]);
        assert_eq!(released[0].from, "me");
        // The same message replayed later (its ack was lost) is not printed again.
        assert!(ordering.offer(msg(1)).is_empty());
    }

    #[test]
    fn join_history_is_released_at_the_first_pong_and_newer_ids_wait_for_gaps() {
        let mut ordering = ReorderBuffer::default();
        // Join history 31..=33 (32 lost) and a live 36, all before the pong.
        for id in [33, 31, 36] {
            assert!(ordering.offer(msg(id)).is_empty());
        }
        assert!(!ordering.has_gap(), "nothing is missing before syncing");
        assert_eq!(ordering.last_id(), None);
        assert_eq!(ids(&ordering.sync(34)), [31, 33]);
        assert_eq!(ordering.last_id(), Some(34));
        assert!(ordering.has_gap());
        assert_eq!(ids(&ordering.offer(msg(35))), [35, 36]);
    }

    #[test]
    fn the_first_pong_releases_contiguous_newer_messages() {
        let mut ordering = ReorderBuffer::default();
        ordering.offer(msg(5));
        ordering.offer(msg(6));
        assert_eq!(ids(&ordering.sync(5)), [5, 6]);
        assert_eq!(ordering.last_id(), Some(6));
    }

    #[test]
    fn a_pong_ahead_of_the_cursor_is_a_gap() {
        let mut ordering = synced_at(3);
        assert!(ordering.pong(5).is_empty());
        assert!(ordering.has_gap());
        assert_eq!(ids(&ordering.offer(msg(4))), [4]);
        assert_eq!(ids(&ordering.offer(msg(5))), [5]);
        assert!(!ordering.has_gap());
    }

    #[test]
    fn a_gap_the_server_cannot_fill_is_skipped_after_many_pongs() {
        let mut ordering = synced_at(0);
        ordering.offer(msg(3));
        for _ in 1..PONGS_BEFORE_SKIPPING {
            assert!(ordering.pong(3).is_empty());
        }
        assert_eq!(ids(&ordering.pong(3)), [3]);
        assert!(!ordering.has_gap());
    }

    #[test]
    fn progress_resets_the_patience_for_gaps() {
        let mut ordering = synced_at(0);
        ordering.offer(msg(5));
        for _ in 1..PONGS_BEFORE_SKIPPING {
            ordering.pong(5);
        }
        assert_eq!(ids(&ordering.offer(msg(1))), [1]);
        assert!(ordering.pong(5).is_empty(), "the count started over");
    }

    #[test]
    fn the_buffer_is_bounded_and_keeps_the_oldest() {
        let mut ordering = ReorderBuffer::new(3);
        ordering.sync(0);
        for id in [5, 4, 3] {
            ordering.offer(msg(id));
        }
        ordering.offer(msg(2)); // evicts 5
        ordering.offer(msg(9)); // newest of all: dropped
        assert_eq!(ordering.buffered(), 3);
        assert_eq!(ids(&ordering.offer(msg(1))), [1, 2, 3, 4]);
        assert_eq!(ordering.last_id(), Some(4));
        // 5 and 9 come back through replay.
        assert_eq!(ids(&ordering.offer(msg(5))), [5]);
    }
}
