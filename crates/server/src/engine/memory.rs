//! The server-wide memory budget (`--memory-budget`) that every cache and queue a client can
//! fill draws from, so that no number of rooms, members or messages can grow the server's
//! memory without bound.
//!
//! Each kind of memory has a fixed share of the budget, so that one kind cannot starve
//! another: the replay caches, which are only a speed-up and give way first, a quarter; the
//! messages held back for an earlier one of the same sender, a quarter; and the accepted
//! messages waiting for the history database (a slow or full disk), half.

use std::collections::VecDeque;

use super::room::RoomId;

/// The default budget, in MiB.
pub const DEFAULT_BUDGET_MIB: u64 = 256;

/// What the history backlog is charged per message beyond its bytes: the message's copies
/// and bookkeeping on its way to the database.
pub const PER_MESSAGE_OVERHEAD: usize = 160;

/// Bytes in use and allowed, by kind.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    /// The whole budget, in bytes.
    pub limit: usize,
    /// Encoded messages kept in the rooms' replay caches.
    pub cached: usize,
    /// Text of messages held back for an earlier `seq` of their sender.
    pub held: usize,
    /// Messages accepted and not yet stored.
    pub unstored: usize,
    /// Cached messages, oldest first across every room, for evicting the oldest when the
    /// cache share is full. Entries whose message already left its room's cache are skipped.
    cache_order: VecDeque<(RoomId, u64)>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing in use.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            cached: 0,
            held: 0,
            unstored: 0,
            cache_order: VecDeque::new(),
        }
    }

    /// Bytes the replay caches may use together.
    pub fn cache_limit(&self) -> usize {
        self.limit / 4
    }

    /// Bytes of held-back messages there is still room for.
    pub fn hold_allowance(&self) -> usize {
        (self.limit / 4).saturating_sub(self.held)
    }

    /// Whether `bytes` more of unstored messages fit.
    pub fn backlog_fits(&self, bytes: usize) -> bool {
        self.unstored + bytes <= self.limit / 2
    }

    /// Records that a member's held-back bytes went from `before` to `after`.
    pub fn release_held(&mut self, before: usize, after: usize) {
        self.held = (self.held + after).saturating_sub(before);
    }

    /// Everything in use.
    pub fn used(&self) -> usize {
        self.cached + self.held + self.unstored
    }

    /// Records a message just added to `room`'s cache.
    pub fn cached_message(&mut self, room: RoomId, id: u64, bytes: usize) {
        self.cached += bytes;
        self.cache_order.push_back((room, id));
    }

    /// Records bytes that left the caches (evicted by a room's own cap, or a room's cache
    /// emptied).
    pub fn uncached(&mut self, bytes: usize) {
        self.cached = self.cached.saturating_sub(bytes);
    }

    /// The oldest cached message across rooms, to evict while the cache share is exceeded;
    /// None when within the share. The caller evicts it (or finds it already gone) and calls
    /// [`MemoryBudget::uncached`] for what it freed.
    pub fn next_to_evict(&mut self) -> Option<(RoomId, u64)> {
        if self.cached <= self.cache_limit() {
            return None;
        }
        self.cache_order.pop_front()
    }

    /// Drops eviction entries that no longer name a cached message, once they outnumber the
    /// live ones, so the order costs memory in proportion to what is cached.
    pub fn compact_cache_order(
        &mut self,
        live_entries: usize,
        is_live: impl Fn(RoomId, u64) -> bool,
    ) {
        if self.cache_order.len() > 2 * live_entries + 1024 {
            self.cache_order.retain(|&(room, id)| is_live(room, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_budget() {
        let mut budget = MemoryBudget::new(1000);
        assert_eq!(budget.cache_limit(), 250);
        assert_eq!(budget.hold_allowance(), 250);
        budget.held = 200;
        assert_eq!(budget.hold_allowance(), 50);
        assert!(budget.backlog_fits(500));
        budget.unstored = 400;
        assert!(!budget.backlog_fits(101));
        assert_eq!(budget.used(), 600);
    }

    #[test]
    fn evicts_oldest_first_only_while_over_the_cache_share() {
        let mut budget = MemoryBudget::new(480);
        budget.cached_message(1, 1, 60);
        budget.cached_message(2, 1, 60);
        assert_eq!(budget.next_to_evict(), None);
        budget.cached_message(1, 2, 60);
        assert_eq!(budget.next_to_evict(), Some((1, 1)));
        budget.uncached(60);
        assert_eq!(budget.next_to_evict(), None);
    }
}
