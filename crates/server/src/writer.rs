//! The state writer: one task that turns room-manager changes into durable state-file writes.
//!
//! Handshakes change the manager, then wait until a write covering their change is on disk
//! before they answer; several handshakes arriving together share one write (group commit).
//! Changes made from the relay path (leaves, closes) only ask for a write and never wait, so the
//! relay never touches the disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::manager::{SharedManager, lock};
use crate::persist;

/// How long to wait before retrying a write that failed (disk full, read-only directory).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The state write covering a change failed; the change must be taken back.
#[derive(Debug, Clone, Error)]
#[error("the state file could not be written: {0}")]
pub struct WriteFailed(String);

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Highest generation known to be on disk.
    durable: u64,
    /// Highest generation whose write failed, with the reason.
    failed: u64,
    reason: String,
}

/// Handle through which the front ends ask for writes and wait for durability.
#[derive(Debug, Clone)]
pub struct StateWriter {
    wake: Arc<Notify>,
    progress: watch::Receiver<Progress>,
}

impl StateWriter {
    /// Starts the writer task. `stop` ends it after one last write of anything outstanding.
    pub fn spawn(
        manager: SharedManager,
        path: PathBuf,
        mut stop: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let wake = Arc::new(Notify::new());
        let initial = lock(&manager).generation();
        let (progress_tx, progress) = watch::channel(Progress {
            durable: initial,
            ..Progress::default()
        });
        let task_wake = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            let mut written = initial;
            let mut dirty = false;
            loop {
                let stopping = tokio::select! {
                    () = task_wake.notified() => false,
                    () = tokio::time::sleep(RETRY_AFTER_FAILURE), if dirty => false,
                    _ = stop.wait_for(|stop| *stop) => true,
                };
                let (generation, snapshot) = {
                    let manager = lock(&manager);
                    (manager.generation(), manager.snapshot())
                };
                if generation != written {
                    let target = path.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        let bytes = serde_json::to_vec_pretty(&snapshot)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        persist::write_atomic(&target, &bytes)
                    })
                    .await
                    .unwrap_or_else(|join_error| {
                        Err(std::io::Error::other(join_error.to_string()))
                    });
                    match result {
                        Ok(()) => {
                            written = generation;
                            dirty = false;
                            progress_tx.send_modify(|p| p.durable = generation);
                        }
                        Err(error) => {
                            tracing::error!(%error, path = %path.display(), "state file write failed; handshakes are refused until it succeeds");
                            dirty = true;
                            progress_tx.send_modify(|p| {
                                p.failed = generation;
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
        (Self { wake, progress }, task)
    }

    /// Asks for a write soon, without waiting for it.
    pub fn schedule(&self) {
        self.wake.notify_one();
    }

    /// Asks for a write and waits until `generation` is on disk, or its write failed.
    pub async fn durable(&self, generation: u64) -> Result<(), WriteFailed> {
        self.schedule();
        let mut progress = self.progress.clone();
        let outcome = progress
            .wait_for(|p| p.durable >= generation || p.failed >= generation)
            .await
            .map(|p| {
                if p.durable >= generation {
                    Ok(())
                } else {
                    Err(WriteFailed(p.reason.clone()))
                }
            });
        outcome.unwrap_or_else(|_| Err(WriteFailed("the server is shutting down".into())))
    }
}
