//! The subscriber thread: listens on the channel of each room this node has members in, and
//! relays what it hears to them in id order. Pub/sub delivers at most once, so every gap (a
//! reconnect, a room just subscribed, an id skipped) is filled from the room's stream by id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::messages::{channel, parse_published, range};
use super::{Cluster, ClusterError, Link, MAX_BACKOFF};
use crate::engine::cluster::LocalRoom;
use crate::engine::{Effects, HistoryJob, SharedMessage, SharedOutcome};
use crate::send::{BatchSender, Outlet};
use crate::shared::{SharedEngine, lock};

/// How long a read of the channel waits, which is also how often the set of rooms to listen
/// on is brought up to date.
const POLL: Duration = Duration::from_millis(50);
/// Messages read from a stream per gap-fill request.
const FILL_BATCH: usize = 512;
/// Most requests one gap fill makes before it gives up on the rest (the stream holds at most
/// `--history-limit` messages anyway).
const MAX_FILL_ROUNDS: usize = 64;

/// What the subscriber needs.
pub struct Subscriber {
    /// The shared handle.
    pub cluster: Arc<Cluster>,
    /// This node's engine.
    pub engine: SharedEngine,
    /// Where relays go, and mirrored messages for the local history.
    pub outlet: Outlet,
    /// Whether a local history store keeps a copy of every message.
    pub mirror: bool,
    /// Set at shutdown.
    pub stop: Arc<AtomicBool>,
}

impl Subscriber {
    /// Starts the thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("redis-subscriber".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut data = Link::new(Arc::clone(&self.cluster));
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let result = self.session(&mut data);
            self.cluster.report(&result);
            if let Err(error) = result {
                if started.elapsed() > Duration::from_secs(5) {
                    backoff = Duration::from_millis(50);
                }
                tracing::debug!(%error, retry_in = ?backoff, "redis subscriber");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// One connection's life: subscribe to the rooms with local members, fill each from its
    /// stream, then relay until the connection fails or the server stops.
    fn session(&self, data: &mut Link) -> Result<(), ClusterError> {
        let mut con = self.cluster.connect()?;
        let mut pubsub = con.as_pubsub();
        pubsub.set_read_timeout(Some(POLL))?;
        let mut sender = BatchSender::default();
        // Channel → room, for the rooms listened to.
        let mut listening: HashMap<String, LocalRoom> = HashMap::new();
        let mut synced = Instant::now() - POLL;
        while !self.stop.load(Ordering::Relaxed) {
            if synced.elapsed() >= POLL {
                synced = Instant::now();
                let wanted: HashMap<String, LocalRoom> = lock(&self.engine)
                    .local_rooms()
                    .into_iter()
                    .map(|room| (channel(room.uid), room))
                    .collect();
                for (name, room) in &wanted {
                    if !listening.contains_key(name) {
                        // Subscribe first, then fill: what is published meanwhile arrives
                        // twice at worst, and duplicates are dropped by id.
                        pubsub.subscribe(name)?;
                        listening.insert(name.clone(), *room);
                        self.fill(data, room, None, &mut sender)?;
                    }
                }
                let gone: Vec<String> = listening
                    .keys()
                    .filter(|name| !wanted.contains_key(*name))
                    .cloned()
                    .collect();
                for name in gone {
                    pubsub.unsubscribe(&name)?;
                    listening.remove(&name);
                }
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(error) if error.is_timeout() => continue,
                Err(error) => return Err(error.into()),
            };
            let Some(room) = listening.get(message.get_channel_name()) else {
                continue;
            };
            let room = *room;
            match parse_published(room.uid, message.get_payload_bytes(), &self.cluster.node_id) {
                Ok(shared) => self.deliver(data, &room, shared, &mut sender)?,
                Err(error) => tracing::warn!(%error, "malformed message from redis ignored"),
            }
        }
        Ok(())
    }

    /// Relays one message; a gap before it is filled from the stream first.
    fn deliver(
        &self,
        data: &mut Link,
        room: &LocalRoom,
        shared: SharedMessage,
        sender: &mut BatchSender,
    ) -> Result<(), ClusterError> {
        match self.relay(room, &shared, false, sender) {
            SharedOutcome::Gap(_) => {
                let id = shared.stored.message.id;
                self.fill(data, room, Some(id), sender)?;
                // Whatever the stream no longer had is skipped: this one goes out now.
                self.relay(room, &shared, true, sender);
            }
            SharedOutcome::Relayed | SharedOutcome::Duplicate | SharedOutcome::UnknownRoom => {}
        }
        Ok(())
    }

    /// Relays, from the room's stream, what came after the room's newest relayed id and
    /// before `before` (everything, without it).
    fn fill(
        &self,
        data: &mut Link,
        room: &LocalRoom,
        before: Option<u64>,
        sender: &mut BatchSender,
    ) -> Result<(), ClusterError> {
        let node = self.cluster.node_id.clone();
        for _ in 0..MAX_FILL_ROUNDS {
            let after = {
                let engine = lock(&self.engine);
                match engine.committed_id_of(room.id, room.uid) {
                    Some(after) => after,
                    None => return Ok(()),
                }
            };
            let upto = before.map(|before| before.saturating_sub(1));
            if upto.is_some_and(|upto| upto <= after) {
                return Ok(());
            }
            let batch = data.call(|con| range(con, room.uid, after, upto, FILL_BATCH, &node))?;
            let full = batch.len() >= FILL_BATCH;
            for (index, shared) in batch.iter().enumerate() {
                // The first may come after ids the stream no longer holds: accept the gap.
                self.relay(room, shared, index == 0, sender);
            }
            if !full {
                return Ok(());
            }
        }
        Ok(())
    }

    fn relay(
        &self,
        room: &LocalRoom,
        shared: &SharedMessage,
        accept_gap: bool,
        sender: &mut BatchSender,
    ) -> SharedOutcome {
        let mut fx = Effects::default();
        let outcome = {
            let mut engine = lock(&self.engine);
            let outcome = engine.relay_shared(room.id, shared, accept_gap, &mut fx);
            if outcome == SharedOutcome::Relayed && self.mirror && !shared.from_here {
                // The local history keeps every message of the rooms this node serves,
                // idempotently by (room, id), for history pages and search.
                fx.history.push(HistoryJob::Mirror(shared.stored.clone()));
            }
            self.outlet.hand_over_jobs(&mut fx);
            outcome
        };
        self.outlet.send(sender, &mut fx);
        outcome
    }
}
