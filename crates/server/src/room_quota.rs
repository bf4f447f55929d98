//! Rooms per source address. One address that creates rooms by the hundred fills the room
//! list and the server's room cap for everyone; each address may hold at most `per_address`
//! live rooms it created (create, or a pair request that opened a new pair room). A room that
//! closes frees its place; the count is checked against the engine when an address creates
//! again, so nothing has to report closes here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Beyond this many addresses, those without a live room are forgotten on the next create.
const PRUNE_ABOVE: usize = 16_384;

/// The rooms each address created, with the ones still being granted.
#[derive(Debug, Default)]
struct Held {
    /// (room name, room uid) of the rooms created; a closed one is dropped when noticed.
    rooms: Vec<(String, u64)>,
    /// Creates granted a place but not yet finished.
    pending: usize,
}

/// The per-address room cap.
#[derive(Debug)]
pub struct RoomQuota {
    per_address: usize,
    held: Mutex<HashMap<IpAddr, Held>>,
}

/// A place reserved for one create; given back when dropped unless [`Reservation::granted`].
#[derive(Debug)]
pub struct Reservation<'a> {
    quota: &'a RoomQuota,
    ip: Option<IpAddr>,
}

impl RoomQuota {
    /// At most `per_address` live rooms per address; 0 turns the cap off.
    pub fn new(per_address: usize) -> Self {
        Self {
            per_address,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The cap.
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves a place for a room created by `ip`, or None when the address already holds
    /// its cap. `alive(name, uid)` says whether a room it created still exists.
    pub fn reserve(
        &self,
        ip: IpAddr,
        alive: impl Fn(&str, u64) -> bool,
    ) -> Option<Reservation<'_>> {
        if self.per_address == 0 {
            return Some(Reservation {
                quota: self,
                ip: None,
            });
        }
        let ip = ip.to_canonical();
        let mut held = self.held();
        if held.len() > PRUNE_ABOVE {
            for entry in held.values_mut() {
                entry.rooms.retain(|(name, uid)| alive(name, *uid));
            }
            held.retain(|_, entry| !entry.rooms.is_empty() || entry.pending > 0);
        }
        let entry = held.entry(ip).or_default();
        entry.rooms.retain(|(name, uid)| alive(name, *uid));
        if entry.rooms.len() + entry.pending >= self.per_address {
            return None;
        }
        entry.pending += 1;
        Some(Reservation {
            quota: self,
            ip: Some(ip),
        })
    }
}

impl Reservation<'_> {
    /// The create succeeded: the room counts against the address until it closes.
    pub fn granted(mut self, name: &str, uid: u64) {
        if let Some(ip) = self.ip.take() {
            let mut held = self.quota.held();
            let entry = held.entry(ip).or_default();
            entry.pending = entry.pending.saturating_sub(1);
            entry.rooms.push((name.to_owned(), uid));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip.take() {
            let mut held = self.quota.held();
            if let Some(entry) = held.get_mut(&ip) {
                entry.pending = entry.pending.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    #[test]
    fn an_address_holds_its_cap_until_a_room_closes() {
        let quota = RoomQuota::new(2);
        let live = RefCell::new(HashSet::new());
        let alive = |_: &str, uid: u64| live.borrow().contains(&uid);
        for uid in 1..=2 {
            quota.reserve(ip(1), alive).unwrap().granted("r", uid);
            live.borrow_mut().insert(uid);
        }
        assert!(quota.reserve(ip(1), alive).is_none());
        assert!(
            quota.reserve(ip(2), alive).is_some(),
            "other addresses are not affected"
        );
        live.borrow_mut().remove(&1);
        assert!(
            quota.reserve(ip(1), alive).is_some(),
            "a closed room frees its place"
        );
    }

    #[test]
    fn a_create_in_progress_holds_a_place_and_a_failed_one_gives_it_back() {
        let quota = RoomQuota::new(1);
        let first = quota.reserve(ip(1), |_, _| true).unwrap();
        assert!(quota.reserve(ip(1), |_, _| true).is_none());
        drop(first);
        assert!(quota.reserve(ip(1), |_, _| true).is_some());
    }

    #[test]
    fn zero_turns_the_cap_off() {
        let quota = RoomQuota::new(0);
        for uid in 0..100 {
            quota.reserve(ip(1), |_, _| true).unwrap().granted("r", uid);
        }
    }
}
