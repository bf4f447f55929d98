//! The follower thread: applies the other nodes' state changes to this node's engine, keeps
//! this node's presence key alive, and removes the members of nodes that died.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::directory::{self, Directory};
use super::state::bulk_string;
use super::{Cluster, ClusterError, Link, MAX_BACKOFF};
use crate::engine::{Effects, StateChange};
use crate::send::{BatchSender, Outlet};
use crate::shared::{SharedEngine, lock, now};
use crate::writer::StateWriter;

/// Changes read from the stream at a time.
const READ_BATCH: usize = 256;
/// How long one read waits for a change (also how often presence is refreshed at most).
const READ_BLOCK: Duration = Duration::from_millis(250);
/// Most members of a dead node removed per pass.
const REAP_BATCH: usize = 1024;
/// How often the other nodes are looked at (at most): the live ones for the directory, so
/// that a page learns of a new node soon, and the dead ones to reap.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// What the follower needs.
pub struct Follower {
    /// The shared handle.
    pub cluster: Arc<Cluster>,
    /// This node's engine.
    pub engine: SharedEngine,
    /// Where the effects of applied changes go.
    pub outlet: Outlet,
    /// Asked to publish what reaping a dead node's members changed.
    pub writer: StateWriter,
    /// The change stream entry the start-up state includes.
    pub cursor: String,
    /// A node whose presence key is gone this long is dead: its members are removed (its
    /// key lives this long after each refresh, so this is also the refresh's expiry).
    pub presence_ttl: Duration,
    /// Where this node's page is, announced for the other nodes' pages to move to.
    pub public_url: Option<String>,
    /// Set at shutdown.
    pub stop: Arc<AtomicBool>,
}

impl Follower {
    /// Starts the thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("redis-follower".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut link = Link::new(Arc::clone(&self.cluster));
        let mut sender = BatchSender::default();
        let mut backoff = Duration::from_millis(50);
        let refresh_every = (self.presence_ttl / 4).max(Duration::from_millis(100));
        let look_every = LOOK_EVERY.min(refresh_every);
        let mut refreshed: Option<Instant> = None;
        let mut looked: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let due = refreshed.is_none_or(|at| at.elapsed() >= refresh_every);
            let look = looked.is_none_or(|at| at.elapsed() >= look_every);
            let result = (|| -> Result<(), ClusterError> {
                if due {
                    self.refresh_presence(&mut link)?;
                    refreshed = Some(Instant::now());
                }
                if look {
                    self.reap_dead_nodes(&mut link, &mut sender)?;
                    looked = Some(Instant::now());
                }
                self.follow(&mut link, &mut sender)
            })();
            match result {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(error) => {
                    tracing::debug!(%error, retry_in = ?backoff, "redis follower");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // A clean stop: the node's members are still served until they fail over, so its
        // presence is simply left to expire.
    }

    fn refresh_presence(&self, link: &mut Link) -> Result<(), ClusterError> {
        let node = &self.cluster.node_id;
        let ttl = u64::try_from(self.presence_ttl.as_millis()).unwrap_or(u64::MAX);
        link.call(|con| {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(format!("chat:alive:{node}"))
                .arg(1)
                .arg("PX")
                .arg(ttl.max(100))
                .ignore()
                .cmd("SADD")
                .arg("chat:nodes")
                .arg(node)
                .ignore();
            if let Some(url) = &self.public_url {
                pipe.cmd("HSET")
                    .arg(directory::URLS_KEY)
                    .arg(node)
                    .arg(url)
                    .ignore();
            }
            pipe.query::<()>(con)?;
            Ok(())
        })
    }

    /// Members of nodes whose presence expired, and which have not registered elsewhere since
    /// (the commit moved them to the new node's set), are removed as timed out. The live
    /// nodes and the announced URLs become the [`Directory`].
    fn reap_dead_nodes(
        &self,
        link: &mut Link,
        sender: &mut BatchSender,
    ) -> Result<(), ClusterError> {
        let me = self.cluster.node_id.clone();
        let (dead, live, urls) = link.call(|con| {
            let nodes: Vec<String> = redis::cmd("SRANDMEMBER")
                .arg("chat:nodes")
                .arg(directory::MAX_NODES)
                .query(con)?;
            // HRANDFIELD bounds the read however many entries the hash has.
            let urls: Vec<(String, String)> = redis::cmd("HRANDFIELD")
                .arg(directory::URLS_KEY)
                .arg(directory::MAX_NODES)
                .arg("WITHVALUES")
                .query(con)?;
            let mut dead: Vec<(String, Vec<u64>)> = Vec::new();
            let mut live = Vec::new();
            for node in nodes.into_iter().filter(|n| *n != me && n.len() <= 64) {
                let alive: bool = redis::cmd("EXISTS")
                    .arg(format!("chat:alive:{node}"))
                    .query(con)?;
                if alive {
                    live.push(node);
                    continue;
                }
                let members: Vec<String> = redis::cmd("SRANDMEMBER")
                    .arg(format!("chat:node:{node}:members"))
                    .arg(REAP_BATCH)
                    .query(con)?;
                if members.is_empty() {
                    redis::cmd("SREM")
                        .arg("chat:nodes")
                        .arg(&node)
                        .query::<()>(con)?;
                    continue;
                }
                let uids = members.iter().filter_map(|m| m.parse().ok()).collect();
                dead.push((node, uids));
            }
            Ok((dead, live, urls))
        })?;
        self.cluster.set_directory(Directory::new(&me, live, &urls));
        for (node, uids) in dead {
            let mut fx = Effects::default();
            let reaped = {
                let mut engine = lock(&self.engine);
                let reaped = engine.reap_remote(&uids, now().instant, &mut fx);
                self.outlet.hand_over_jobs(&mut fx);
                reaped
            };
            if reaped > 0 {
                tracing::info!(node = %crate::escape::quoted(&node), members = reaped, "a node stopped answering; its members timed out");
                self.writer.schedule();
            } else {
                // Not here (already gone): drop them from the dead node's set.
                link.call(|con| {
                    redis::cmd("SREM")
                        .arg(format!("chat:node:{node}:members"))
                        .arg(&uids)
                        .query::<()>(con)?;
                    Ok(())
                })?;
            }
            self.outlet.send(sender, &mut fx);
        }
        Ok(())
    }

    /// Reads and applies the next changes of the stream (waiting up to [`READ_BLOCK`]).
    fn follow(&mut self, link: &mut Link, sender: &mut BatchSender) -> Result<(), ClusterError> {
        let cursor = self.cursor.clone();
        let reply: redis::streams::StreamReadReply = link.call(|con| {
            Ok(redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(READ_BLOCK.as_millis()).unwrap_or(250))
                .arg("STREAMS")
                .arg("chat:journal")
                .arg(&cursor)
                .query(con)?)
        })?;
        let mut changes = Vec::new();
        let read_up_to = reply
            .keys
            .iter()
            .flat_map(|key| key.ids.last())
            .map(|entry| entry.id.clone())
            .next_back();
        for key in reply.keys {
            for entry in key.ids.into_iter().take(READ_BATCH) {
                self.cursor = entry.id.clone();
                let node = bulk_string(entry.map.get("node").cloned())?;
                if node == self.cluster.node_id {
                    continue;
                }
                let text = bulk_string(entry.map.get("change").cloned())?;
                match serde_json::from_str::<StateChange>(&text) {
                    Ok(change) => changes.push(change),
                    Err(error) => tracing::warn!(%error, "malformed change in redis ignored"),
                }
            }
        }
        if !changes.is_empty() {
            let mut fx = Effects::default();
            {
                let mut engine = lock(&self.engine);
                let clock = now();
                for change in changes {
                    engine.apply_remote(change, clock, &mut fx);
                }
                self.outlet.hand_over_jobs(&mut fx);
            }
            self.outlet.send(sender, &mut fx);
        }
        if let Some(id) = read_up_to {
            self.cluster.applied_up_to(&id);
        }
        Ok(())
    }
}
