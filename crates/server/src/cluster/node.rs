//! Starting and stopping a node: the engine from the shared state in Redis, and the threads
//! that keep it in step with the other nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::follower::Follower;
use super::subscriber::Subscriber;
use super::{Cluster, ClusterError, state};
use crate::engine::{Engine, HistorySource, Limits, RestoreError};
use crate::flood::FloodPolicy;
use crate::send::Outlet;
use crate::shared::SharedEngine;
use crate::writer::StateWriter;

/// Why a node could not start from the shared state.
#[derive(Debug, thiserror::Error)]
pub enum NodeStartError {
    /// Redis did not answer, or answered nonsense.
    #[error("cannot read the shared state from redis: {0}")]
    Redis(#[from] ClusterError),
    /// The shared state breaks the engine's rules.
    #[error("the shared state in redis is inconsistent: {0}")]
    Restore(#[from] RestoreError),
}

/// The engine as Redis describes it, every member remote until it registers here, and where
/// the change stream stood.
pub fn load_engine(
    cluster: &Cluster,
    limits: Limits,
    flood: FloodPolicy,
    history: &dyn HistorySource,
) -> Result<(Engine, String), NodeStartError> {
    let mut con = cluster.connect()?;
    let loaded = state::load(&mut con, &cluster.node_id, limits.max_rooms)?;
    let mut engine = Engine::restore(loaded.state, limits, flood, Some(history), Instant::now())?;
    let last_ids: std::collections::HashMap<u64, u64> = loaded.last_ids.into_iter().collect();
    let ours: std::collections::HashSet<u64> = loaded.ours.into_iter().collect();
    engine.start_as_node(&|uid| last_ids.get(&uid).copied(), &ours);
    engine.attach_cluster();
    Ok((engine, loaded.cursor))
}

/// The follower and subscriber threads of a running node.
#[derive(Debug)]
pub struct NodeThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NodeThreads {
    /// Starts them.
    pub fn start(
        cluster: &Arc<Cluster>,
        engine: &SharedEngine,
        outlet: &Outlet,
        writer: &StateWriter,
        cursor: String,
        presence_ttl: Duration,
        public_url: Option<String>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        cluster.applied_up_to(&cursor);
        let follower = Follower {
            cluster: Arc::clone(cluster),
            engine: Arc::clone(engine),
            outlet: outlet.clone(),
            writer: writer.clone(),
            cursor,
            presence_ttl,
            public_url,
            stop: Arc::clone(&stop),
        }
        .spawn()?;
        let subscriber = Subscriber {
            cluster: Arc::clone(cluster),
            engine: Arc::clone(engine),
            outlet: outlet.clone(),
            mirror: true,
            stop: Arc::clone(&stop),
        }
        .spawn()?;
        Ok(Self {
            stop,
            threads: vec![follower, subscriber],
        })
    }

    /// Stops them and waits (each notices within a Redis timeout).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
