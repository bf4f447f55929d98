//! Scale-out (`--redis URL --node-id NAME`, issue 12): several nodes serve one set of rooms
//! through Redis. Without `--redis` none of this runs.
//!
//! - [`state`]: rooms, members, tokens and password hashes live in Redis; the state writer
//!   commits each change there (checked: a name is granted once across nodes) and appends it
//!   to a change stream that every node's [`follower`] applies to its own engine.
//! - [`messages`]: the history thread's commit publishes each message through a script that
//!   assigns the room's next id, appends it to the room's bounded stream and publishes it on
//!   the room's channel in one step; an ack follows only once that returned (and, with SQLite
//!   history, once it is stored locally too).
//! - [`subscriber`]: listens on the channels of rooms this node has members in, relays each
//!   message to them in id order, and fills gaps from the stream.
//! - [`follower`] also keeps this node's presence key alive and removes the members of nodes
//!   whose key expired (they died) unless they came back elsewhere.
//! - [`directory`]: where each node's page is, for the chat page's failover.
//!
//! All Redis I/O runs on threads of its own with blocking connections and timeouts: the relay
//! thread never waits for Redis, and no lock is held across a Redis call.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;

pub mod directory;
pub mod follower;
pub mod messages;
pub mod node;
pub mod scripts;
pub mod state;
pub mod subscriber;

/// Longest value read back from Redis (a room, a member, a message body); anything longer is
/// refused, as it would be from the network.
pub const MAX_REDIS_VALUE: usize = 64 * 1024;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one command may take before the connection counts as broken.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A Redis call failed, or Redis answered something this node will not use.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Redis refused, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A JSON value from Redis did not parse.
    #[error("malformed JSON in redis: {0}")]
    Json(#[from] serde_json::Error),
    /// A reply of the wrong shape or size.
    #[error("malformed reply from redis: {0}")]
    Malformed(&'static str),
}

/// `--redis` and `--node-id`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// This node's name, unique among the nodes.
    pub node_id: String,
}

/// What the node's Redis threads share: how to connect, and whether Redis answers.
#[derive(Debug)]
pub struct Cluster {
    client: redis::Client,
    /// This node's name.
    pub node_id: String,
    healthy: AtomicBool,
    problem: Mutex<String>,
    /// The change stream entry the follower has applied up to (`(ms, seq)` of its id).
    applied: Mutex<(u64, u64)>,
    /// The nodes and their pages, as the follower last read them.
    directory: Mutex<directory::Directory>,
}

/// A stream entry id, `ms-seq`, as numbers that compare in stream order.
pub fn stream_position(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Cluster {
    /// A handle for `config`; connects nothing yet.
    pub fn new(config: &ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        Ok(Arc::new(Self {
            client: redis::Client::open(config.url.as_str())?,
            node_id: config.node_id.clone(),
            healthy: AtomicBool::new(true),
            problem: Mutex::new(String::new()),
            applied: Mutex::new((0, 0)),
            directory: Mutex::default(),
        }))
    }

    /// A blocking connection with timeouts, so that no thread waits on Redis for long.
    pub fn connect(&self) -> Result<redis::Connection, ClusterError> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Records the outcome of a Redis call, for `/readyz` and the handshakes.
    pub fn report<T>(&self, result: &Result<T, ClusterError>) {
        match result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis answers again");
                }
            }
            Err(error) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(%error, "redis is unavailable; handshakes are refused until it answers");
                }
                if let Ok(mut problem) = self.problem.lock() {
                    *problem = error.to_string();
                }
            }
        }
    }

    /// Records how far the follower has applied the change stream.
    pub fn applied_up_to(&self, id: &str) {
        if let (Some(position), Ok(mut applied)) = (stream_position(id), self.applied.lock()) {
            *applied = (*applied).max(position);
        }
    }

    /// Waits (up to `limit`) until this node has applied every change Redis had committed
    /// when called: a join for a room created on another node a moment ago then finds it.
    /// Blocking: call it off the async runtime. False when Redis or the wait failed.
    pub fn catch_up(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let head = self.connect().and_then(|mut con| {
            let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg("chat:journal")
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(&mut con)?;
            Ok(newest
                .ids
                .first()
                .and_then(|entry| stream_position(&entry.id)))
        });
        let Ok(head) = head else {
            return false;
        };
        let Some(head) = head else {
            return true;
        };
        while std::time::Instant::now() < deadline {
            if self.applied.lock().is_ok_and(|applied| *applied >= head) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Replaces the directory with what the follower read.
    pub fn set_directory(&self, directory: directory::Directory) {
        *self
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = directory;
    }

    /// The live nodes, this one included.
    pub fn live_nodes(&self) -> Vec<directory::NodeEntry> {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .live()
            .to_vec()
    }

    /// The `host:port` of every node's page.
    pub fn page_origins(&self) -> Vec<String> {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .origins()
            .to_vec()
    }

    /// Whether a page from `origin` was served by one of the nodes.
    pub fn trusts_origin(&self, origin: &str) -> bool {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .trusts(origin)
    }

    /// Why Redis is unavailable, while it is.
    pub fn failure(&self) -> Option<String> {
        if self.healthy.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.problem
                .lock()
                .map(|p| p.clone())
                .unwrap_or_else(|_| "redis is unavailable".into()),
        )
    }
}

/// A connection kept across calls and made again after a failure.
pub struct Link {
    cluster: Arc<Cluster>,
    con: Option<redis::Connection>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.cluster.node_id)
            .field("connected", &self.con.is_some())
            .finish()
    }
}

impl Link {
    /// Not connected until first used.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster, con: None }
    }

    /// The cluster handle.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Runs `call` on the connection (connecting first if needed); a failure drops the
    /// connection, so the next call reconnects. The outcome is reported for `/readyz`.
    pub fn call<T>(
        &mut self,
        call: impl FnOnce(&mut redis::Connection) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let result = match self.con.take() {
            Some(con) => Ok(con),
            None => self.cluster.connect(),
        }
        .and_then(|mut con| {
            let result = call(&mut con);
            if result.is_ok() {
                self.con = Some(con);
            }
            result
        });
        self.cluster.report(&result);
        result
    }
}
