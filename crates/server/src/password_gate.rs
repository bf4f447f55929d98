//! What stands between the network and argon2. Each password check costs about 19 MiB and a
//! core for tens of milliseconds, so an attacker who can make the server hash at will can
//! exhaust its memory (120 wrong-password joins took it from 7 MB to 2.2 GB) or its CPU.
//! The gate bounds how many hashes run at once (about one per core; the rest wait for a turn
//! within the handshake deadline, or are refused `server_busy`), and counts wrong passwords per
//! room and per source address: over either allowance, a join is refused
//! `too_many_attempts` without hashing at all.
//!
//! Hashes run on the gate's own threads, one per turn, rather than on tokio's blocking pool:
//! the allocator keeps a freed 19 MiB buffer in the arena of the thread that used it, so
//! hashing on whichever of dozens of pool threads is free left hundreds of megabytes resident
//! even with the number at once bounded. A fixed set of threads keeps at most one buffer each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Most addresses (and rooms) whose failures are remembered at once. Beyond it, entries whose
/// count has decayed to nothing are dropped; if none has, a new address is not tracked (a
/// sender with that many addresses is not held back by a per-address limit anyway), while the
/// per-room count and the hashing bound still apply.
pub const MAX_TRACKED: usize = 16_384;
/// The window the allowances are expressed in: `N` failures, forgiven at `N` a minute.
const WINDOW: Duration = Duration::from_secs(60);

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Password hashes (create) and checks (join) running at once.
    pub concurrent: usize,
    /// Wrong passwords one source address may send per minute; 0 turns the limit off.
    pub failures_per_ip: u32,
    /// Wrong passwords one room may receive per minute, from everyone; 0 turns it off.
    pub failures_per_room: u32,
}

impl PasswordPolicy {
    /// One hash per core (at least 1), the default allowances.
    pub fn for_this_machine(failures_per_ip: u32, failures_per_room: u32) -> Self {
        Self {
            concurrent: std::thread::available_parallelism().map_or(1, usize::from),
            failures_per_ip,
            failures_per_room,
        }
    }
}

/// Why a password may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    /// The source address sent too many wrong passwords lately.
    Address,
    /// The room received too many wrong passwords lately.
    Room,
    /// Every hashing slot stayed busy until the deadline, or the hashing threads are gone.
    Busy,
}

/// Work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// Failures that decay: `count` drops by `limit` per [`WINDOW`].
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: f64,
    at: Instant,
}

impl Failures {
    fn decayed(&self, limit: u32, now: Instant) -> f64 {
        let forgiven = now.saturating_duration_since(self.at).as_secs_f64() / WINDOW.as_secs_f64()
            * f64::from(limit);
        (self.count - forgiven).max(0.0)
    }
}

#[derive(Debug)]
struct Ledger<K> {
    entries: HashMap<K, Failures>,
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Ledger<K> {
    fn over(&self, key: &K, limit: u32, now: Instant) -> bool {
        limit > 0
            && self
                .entries
                .get(key)
                .is_some_and(|failures| failures.decayed(limit, now) >= f64::from(limit))
    }

    fn record(&mut self, key: K, limit: u32, now: Instant) {
        if limit == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TRACKED {
            self.entries
                .retain(|_, failures| failures.decayed(limit, now) > 0.0);
            if self.entries.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = self.entries.entry(key).or_insert(Failures {
            count: 0.0,
            at: now,
        });
        entry.count = entry.decayed(limit, now) + 1.0;
        entry.at = now;
    }
}

#[derive(Debug, Default)]
struct Ledgers {
    per_ip: Ledger<IpAddr>,
    per_room: Ledger<String>,
}

/// The gate, shared by every handshake task.
#[derive(Debug)]
pub struct PasswordGate {
    policy: PasswordPolicy,
    hashing: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    ledgers: Mutex<Ledgers>,
}

/// A turn at hashing; the slot is free again when it is dropped.
#[derive(Debug)]
pub struct HashingTurn<'a> {
    jobs: &'a mpsc::Sender<Job>,
    _slot: OwnedSemaphorePermit,
}

impl HashingTurn<'_> {
    /// Runs `work` on a hashing thread. A thread is always free for a turn: there are as many
    /// threads as turns.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateRefusal> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).map_err(|_| GateRefusal::Busy)?;
        result.await.map_err(|_| GateRefusal::Busy)
    }
}

impl PasswordGate {
    /// A gate with these settings and its hashing threads.
    pub fn new(policy: PasswordPolicy) -> std::io::Result<Self> {
        let threads = policy.concurrent.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-{n}"))
                .spawn(move || {
                    loop {
                        // The guard is released as soon as a job is taken.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(),
                            // The gate is gone: the server is stopping.
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(Self {
            policy,
            hashing: Arc::new(Semaphore::new(threads)),
            jobs,
            ledgers: Mutex::new(Ledgers::default()),
        })
    }

    fn ledgers(&self) -> std::sync::MutexGuard<'_, Ledgers> {
        self.ledgers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a password for `room_key` from `ip` may be checked at all now. Cheap; asked
    /// before waiting for a turn and again once the turn comes.
    pub fn admit(&self, ip: IpAddr, room_key: &str, now: Instant) -> Result<(), GateRefusal> {
        let ledgers = self.ledgers();
        if ledgers
            .per_ip
            .over(&ip.to_canonical(), self.policy.failures_per_ip, now)
        {
            return Err(GateRefusal::Address);
        }
        if ledgers
            .per_room
            .over(&room_key.to_owned(), self.policy.failures_per_room, now)
        {
            return Err(GateRefusal::Room);
        }
        Ok(())
    }

    /// Waits for a hashing slot until `deadline`.
    pub async fn turn(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<HashingTurn<'_>, GateRefusal> {
        match tokio::time::timeout_at(deadline, Arc::clone(&self.hashing).acquire_owned()).await {
            Ok(Ok(slot)) => Ok(HashingTurn {
                jobs: &self.jobs,
                _slot: slot,
            }),
            Ok(Err(_)) | Err(_) => Err(GateRefusal::Busy),
        }
    }

    /// Counts a wrong password for `room_key` from `ip`.
    pub fn failed(&self, ip: IpAddr, room_key: &str, now: Instant) {
        let mut ledgers = self.ledgers();
        ledgers
            .per_ip
            .record(ip.to_canonical(), self.policy.failures_per_ip, now);
        ledgers
            .per_room
            .record(room_key.to_owned(), self.policy.failures_per_room, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    fn gate(per_ip: u32, per_room: u32) -> PasswordGate {
        PasswordGate::new(PasswordPolicy {
            concurrent: 2,
            failures_per_ip: per_ip,
            failures_per_room: per_room,
        })
        .unwrap()
    }

    #[test]
    fn an_address_over_its_failures_is_refused_then_forgiven() {
        let gate = gate(3, 100);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(gate.admit(ip(1), "den", start), Ok(()));
            gate.failed(ip(1), "den", start);
        }
        assert_eq!(gate.admit(ip(1), "den", start), Err(GateRefusal::Address));
        assert_eq!(gate.admit(ip(2), "den", start), Ok(()), "others are not");
        // One failure is forgiven every 20 s at 3 a minute.
        assert_eq!(
            gate.admit(ip(1), "den", start + Duration::from_secs(21)),
            Ok(())
        );
    }

    #[test]
    fn a_room_over_its_failures_is_refused_from_everywhere() {
        let gate = gate(100, 4);
        let now = Instant::now();
        for n in 0..4 {
            gate.failed(ip(n), "den", now);
        }
        assert_eq!(gate.admit(ip(9), "den", now), Err(GateRefusal::Room));
        assert_eq!(gate.admit(ip(9), "attic", now), Ok(()));
    }

    #[test]
    fn zero_turns_the_limits_off() {
        let gate = gate(0, 0);
        let now = Instant::now();
        for _ in 0..100 {
            gate.failed(ip(1), "den", now);
        }
        assert_eq!(gate.admit(ip(1), "den", now), Ok(()));
    }

    #[tokio::test]
    async fn hashing_turns_are_bounded_and_waiting_ends_at_the_deadline() {
        let gate = gate(0, 0);
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        let first = gate.turn(soon).await.unwrap();
        let _second = gate.turn(soon).await.unwrap();
        assert_eq!(gate.turn(soon).await.unwrap_err(), GateRefusal::Busy);
        assert_eq!(first.run(|| 6 * 7).await, Ok(42));
        let later = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            gate.turn(later).await.is_ok(),
            "a turn that ran is given back"
        );
    }
}
