//! The state writer: one task that turns room-engine changes into durable writes.
//!
//! Handshakes change the engine, then wait until a write covering their change is on disk
//! before they answer; several handshakes arriving together share one write (group commit).
//! Changes made from the relay path (leaves, closes, registrations) only ask for a write and
//! never wait, so the relay never touches the disk.
//!
//! A write is normally an append of the new changes to the journal: its cost follows what
//! changed, not the size of the state. Now and then the writer writes a full snapshot instead
//! and empties the journal (see [`crate::journal`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Link as RedisLink, state as shared_state};
use crate::engine::JournalRecord;
use crate::engine::durable::PersistedState;
use crate::journal;
use crate::shared::{SharedEngine, lock};

/// How long to wait before retrying a write that failed (disk full, read-only directory).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The journal is folded into a snapshot once it holds more records than this, or than twice
/// the members: a snapshot costs in proportion to the members, so this keeps its share of
/// each change small, and bounds how much a restart has to replay.
const MIN_JOURNAL_BEFORE_SNAPSHOT: usize = 4096;

/// The state write covering a change failed; the change must be taken back.
#[derive(Debug, Clone, Error)]
#[error("the state file could not be written: {0}")]
pub struct WriteFailed(String);

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Highest journal_seq known to be on disk.
    durable: u64,
    /// Highest journal_seq whose write failed, with the reason.
    failed: u64,
    reason: String,
}

/// What one round writes.
enum Write {
    /// These changes, at the end of the journal.
    Append(Vec<JournalRecord>),
    /// The whole state, replacing the state file and emptying the journal.
    Snapshot(PersistedState),
    /// Scale-out: these changes, committed to Redis (see [`shared_state::commit_batch`]),
    /// which replaces the state file.
    Redis(String, Vec<JournalRecord>),
}

/// Handle through which the front ends ask for writes and wait for durability.
#[derive(Debug, Clone)]
pub struct StateWriter {
    wake: Arc<Notify>,
    progress: watch::Receiver<Progress>,
    cluster: Option<Arc<Cluster>>,
}

impl StateWriter {
    /// Starts the writer task. `stop` ends it after one last write of anything outstanding.
    pub fn spawn(
        engine: SharedEngine,
        path: PathBuf,
        mut stop: watch::Receiver<bool>,
        cluster: Option<Arc<Cluster>>,
    ) -> (Self, JoinHandle<()>) {
        let redis = cluster
            .clone()
            .map(|cluster| Arc::new(std::sync::Mutex::new(RedisLink::new(cluster))));
        let wake = Arc::new(Notify::new());
        // What is on disk already: changes made before the writer started (this start's boot
        // number) are not, and a wait for them must wait for their write.
        let initial = lock(&engine).saved_journal_seq();
        let (progress_tx, progress) = watch::channel(Progress {
            durable: initial,
            ..Progress::default()
        });
        let task_wake = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            let mut written = initial;
            let mut dirty = false;
            // The journal may end with a torn line or hold records the state file already
            // has; nothing may be appended after those, so the first write is a snapshot. So
            // is the one after a failed write, which may have left part of a line behind.
            let mut snapshot_next = redis.is_none();
            // Scale-out: changes whose commit to Redis failed (not refused), sent again first.
            let mut unsent: Vec<JournalRecord> = Vec::new();
            let mut journal_records = 0;
            loop {
                let stopping = tokio::select! {
                    () = task_wake.notified() => false,
                    () = tokio::time::sleep(RETRY_AFTER_FAILURE), if dirty => false,
                    _ = stop.wait_for(|stop| *stop) => true,
                };
                let (journal_seq, write) = {
                    let mut engine = lock(&engine);
                    let journal_seq = engine.journal_seq();
                    let mut changes = engine.take_changes();
                    if !unsent.is_empty() {
                        changes.splice(0..0, unsent.drain(..));
                    }
                    let journal_full = journal_records + changes.len()
                        > MIN_JOURNAL_BEFORE_SNAPSHOT.max(2 * engine.member_count());
                    // At shutdown the journal is folded in even if nothing changed, so that
                    // the next start reads a snapshot alone.
                    let fold_in = stopping && (snapshot_next || journal_records > 0);
                    let write = if let Some(redis) = &redis {
                        // Redis holds the state: every change is committed there, no file.
                        let _ = redis;
                        (journal_seq != written || !changes.is_empty()).then(|| {
                            match shared_state::commit_batch(&engine, &changes) {
                                Ok(batch) => Write::Redis(batch, changes),
                                Err(error) => {
                                    tracing::error!(%error, "state change not encodable for redis");
                                    Write::Redis("[]".into(), Vec::new())
                                }
                            }
                        })
                    } else if journal_seq == written && !fold_in {
                        None
                    } else if snapshot_next || journal_full || stopping {
                        // The one write that costs the whole state, under the lock: rare.
                        Some(Write::Snapshot(engine.snapshot()))
                    } else {
                        Some(Write::Append(changes))
                    };
                    (journal_seq, write)
                };
                if let Some(write) = write {
                    let target = path.clone();
                    let appended = match &write {
                        Write::Append(changes) => Some(changes.len()),
                        Write::Snapshot(_) | Write::Redis(..) => None,
                    };
                    let redis = redis.clone();
                    let result = tokio::task::spawn_blocking(move || match write {
                        Write::Append(changes) => {
                            journal::append(&target, &changes).map_err(|e| (e, Vec::new()))
                        }
                        Write::Snapshot(state) => {
                            journal::compact(&target, &state).map_err(|e| (e, Vec::new()))
                        }
                        Write::Redis(batch, changes) => {
                            commit_to_redis(redis.as_deref(), &batch).map_err(|error| {
                                // Redis did not answer: the changes go again with the next
                                // write (a refusal is final: the other node's change stands).
                                let retry = error.kind() != std::io::ErrorKind::AlreadyExists;
                                (error, if retry { changes } else { Vec::new() })
                            })
                        }
                    })
                    .await
                    .unwrap_or_else(|join_error| {
                        Err((std::io::Error::other(join_error.to_string()), Vec::new()))
                    });
                    match result {
                        Ok(()) => {
                            written = journal_seq;
                            dirty = false;
                            snapshot_next = false;
                            journal_records = appended.map_or(0, |n| journal_records + n);
                            progress_tx.send_modify(|p| p.durable = journal_seq);
                        }
                        Err((error, retry)) => {
                            unsent = retry;
                            tracing::error!(%error, path = %path.display(), "state file write failed; handshakes are refused until it succeeds");
                            dirty = true;
                            snapshot_next = true;
                            progress_tx.send_modify(|p| {
                                p.failed = journal_seq;
                                p.reason = error.to_string();
                            });
                        }
                    }
                }
                if stopping {
                    break;
                }
            }
        });
        (
            Self {
                wake,
                progress,
                cluster,
            },
            task,
        )
    }

    /// Asks for a write soon, without waiting for it.
    pub fn schedule(&self) {
        self.wake.notify_one();
    }

    /// Scale-out: waits (briefly) until this node has applied every change other nodes had
    /// committed, so that a refusal such as `room_not_found` is not only this node lagging.
    /// False without `--redis`, or when nothing could be caught up.
    pub async fn catch_up(&self) -> bool {
        let Some(cluster) = self.cluster.clone() else {
            return false;
        };
        tokio::task::spawn_blocking(move || cluster.catch_up(Duration::from_secs(1)))
            .await
            .unwrap_or(false)
    }

    /// Why the latest write failed, while no later one has succeeded (for `/readyz`).
    pub fn failure(&self) -> Option<String> {
        if let Some(problem) = self.cluster.as_ref().and_then(|c| c.failure()) {
            return Some(format!("redis is unavailable: {problem}"));
        }
        let progress = self.progress.borrow();
        (progress.failed > progress.durable).then(|| progress.reason.clone())
    }

    /// Asks for a write and waits until `journal_seq` is on disk, or its write failed.
    pub async fn durable(&self, journal_seq: u64) -> Result<(), WriteFailed> {
        self.schedule();
        let mut progress = self.progress.clone();
        let outcome = progress
            .wait_for(|p| p.durable >= journal_seq || p.failed >= journal_seq)
            .await
            .map(|p| {
                if p.durable >= journal_seq {
                    Ok(())
                } else {
                    Err(WriteFailed(p.reason.clone()))
                }
            });
        outcome.unwrap_or_else(|_| Err(WriteFailed("the server is shutting down".into())))
    }
}

/// Commits a batch of changes to Redis on the writer's connection. A change Redis refused (a
/// room or user name another node took a moment earlier) fails the write, so the handshakes
/// it covers are withdrawn and refused, as for a full disk.
fn commit_to_redis(
    redis: Option<&std::sync::Mutex<RedisLink>>,
    batch: &str,
) -> std::io::Result<()> {
    let Some(redis) = redis else {
        return Err(std::io::Error::other("no redis connection"));
    };
    let mut link = redis
        .lock()
        .map_err(|_| std::io::Error::other("redis connection poisoned"))?;
    let node = link.cluster().node_id.clone();
    match link.call(|con| shared_state::commit(con, &node, batch)) {
        Ok(0) => Ok(()),
        Ok(refused) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{refused} change(s) conflicted with another node's"),
        )),
        Err(error) => Err(std::io::Error::other(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::engine::{Effects, Engine, Limits, Membership, RoomKind};
    use crate::flood::FloodPolicy;
    use crate::persist;
    use crate::shared::now;

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        engine: SharedEngine,
        writer: StateWriter,
        stop: watch::Sender<bool>,
        task: Option<JoinHandle<()>>,
    }

    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let engine = Arc::new(Mutex::new(Engine::new(Limits::default(), FloodPolicy::OFF)));
        let (stop, stopped) = watch::channel(false);
        let (writer, task) = StateWriter::spawn(Arc::clone(&engine), path.clone(), stopped, None);
        Running {
            _dir: dir,
            path,
            engine,
            writer,
            stop,
            task: Some(task),
        }
    }

    impl Running {
        /// A join as the control plane makes it: change, then wait until it is durable.
        async fn join(&self, name: &str) -> (Membership, Result<(), WriteFailed>) {
            let (membership, journal_seq) = {
                let mut engine = lock(&self.engine);
                let membership = engine
                    .join("den", name, None, now(), &mut Effects::default())
                    .unwrap();
                (membership, engine.journal_seq())
            };
            (membership, self.writer.durable(journal_seq).await)
        }

        async fn shut_down(&mut self) {
            self.stop.send(true).unwrap();
            if let Some(task) = self.task.take() {
                task.await.unwrap();
            }
        }

        async fn create(&self) {
            let journal_seq = {
                let mut engine = lock(&self.engine);
                engine
                    .create("den", "host", RoomKind::Public, now())
                    .unwrap();
                engine.journal_seq()
            };
            self.writer.durable(journal_seq).await.unwrap();
        }

        fn journal_lines(&self) -> usize {
            fs::read_to_string(journal::journal_path(&self.path))
                .unwrap()
                .lines()
                .count()
        }

        fn snapshot_on_disk(&self) -> PersistedState {
            persist::load(&self.path).unwrap().unwrap()
        }

        fn names_on_disk(&self) -> Vec<String> {
            let state = journal::load(&self.path).unwrap().unwrap();
            state.rooms[0]
                .members
                .iter()
                .map(|m| m.username.clone())
                .collect()
        }
    }

    #[tokio::test]
    async fn handshakes_are_appended_and_shutdown_writes_a_snapshot() {
        let mut running = start();
        running.create().await;
        // The first write is a snapshot, and starts an empty journal.
        assert_eq!(running.snapshot_on_disk().rooms.len(), 1);
        assert_eq!(running.journal_lines(), 0);

        running.join("bob").await.1.unwrap();
        running.join("carol").await.1.unwrap();
        assert_eq!(running.journal_lines(), 2);
        assert_eq!(running.snapshot_on_disk().rooms[0].members.len(), 1);
        assert_eq!(running.names_on_disk(), ["host", "bob", "carol"]);

        running.shut_down().await;
        assert_eq!(running.journal_lines(), 0);
        assert_eq!(running.snapshot_on_disk(), lock(&running.engine).snapshot());
    }

    #[tokio::test]
    async fn a_long_journal_is_folded_into_a_snapshot() {
        let running = start();
        running.create().await;
        running.join("bob").await.1.unwrap();
        assert_eq!(running.journal_lines(), 1);
        // Churn: many records, few members.
        let journal_seq = {
            let mut engine = lock(&running.engine);
            for _ in 0..MIN_JOURNAL_BEFORE_SNAPSHOT / 2 + 1 {
                let mut fx = Effects::default();
                let guest = engine.join("den", "guest", None, now(), &mut fx).unwrap();
                engine.revoke(&guest.token, Instant::now(), &mut fx);
            }
            engine.journal_seq()
        };
        running.writer.durable(journal_seq).await.unwrap();
        assert_eq!(running.journal_lines(), 0);
        assert_eq!(running.snapshot_on_disk().journal_seq, journal_seq);
        assert_eq!(running.names_on_disk(), ["host", "bob"]);
    }

    /// Makes every write fail: the journal path is a directory, and so is the snapshot's
    /// temporary file. Returns how to undo it.
    fn break_writes(path: &Path) -> impl FnOnce() {
        let journal = journal::journal_path(path);
        let temporary = path.with_file_name(".state.json.tmp");
        fs::remove_file(&journal).unwrap();
        fs::create_dir(&journal).unwrap();
        fs::create_dir(&temporary).unwrap();
        move || {
            fs::remove_dir(&journal).unwrap();
            fs::remove_dir(&temporary).unwrap();
        }
    }

    #[tokio::test]
    async fn a_failed_append_is_refused_and_the_next_write_is_a_snapshot() {
        let running = start();
        running.create().await;
        running.join("bob").await.1.unwrap();
        let before = fs::read(&running.path).unwrap();

        let repair = break_writes(&running.path);
        let (refused, outcome) = running.join("carol").await;
        assert!(outcome.is_err(), "the append failed");
        let revoked = {
            let mut engine = lock(&running.engine);
            engine.revoke(&refused.token, Instant::now(), &mut Effects::default());
            engine.journal_seq()
        };
        running.writer.schedule();
        assert_eq!(
            fs::read(&running.path).unwrap(),
            before,
            "the state file is intact"
        );

        repair();
        running.join("dave").await.1.unwrap();
        // No line may follow what the failed append left: the write after it was a snapshot
        // (which also brought back the journal the failure had lost).
        assert!(running.snapshot_on_disk().journal_seq >= revoked);
        assert_eq!(running.names_on_disk(), ["host", "bob", "dave"]);
    }
}
