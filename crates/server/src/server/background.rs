//! The server's background tasks beside the front ends: the engine's clock tick, and the
//! status line on SIGUSR1.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Effects;
use crate::secure::KeyTable;
use crate::send::{BatchSender, Outlet};
use crate::shared::{self, SharedEngine, lock};
use crate::stats::RelayStats;
use crate::writer::StateWriter;

/// How often the key table drops the keys of members who left.
const KEY_SWEEP: Duration = Duration::from_secs(5);

/// SIGUSR1 logs one status line (it would otherwise kill the process without a final state
/// write).
#[cfg(unix)]
pub(super) async fn log_status_on_sigusr1(
    engine: SharedEngine,
    stats: Arc<RelayStats>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = usr1.recv() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let (rooms, members, memory_used, memory_budget) = {
            let engine = lock(&engine);
            let memory = engine.memory();
            (
                engine.room_count(),
                engine.member_count(),
                memory.used(),
                memory.limit,
            )
        };
        tracing::info!(
            rooms,
            members,
            memory_used,
            memory_budget,
            received = stats.received.load(Ordering::Relaxed),
            dropped = stats.dropped(),
            "status"
        );
    }
}

/// The engine's clock tick, a few times per idle period: members that went silent are
/// removed, messages held behind an expired gap are let go.
pub(super) async fn tick(
    engine: SharedEngine,
    keys: Arc<KeyTable>,
    outlet: Outlet,
    writer: StateWriter,
    shortest_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let period = (shortest_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    let mut fx = Effects::default();
    let mut last_sweep = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if !keys.is_empty() && last_sweep.elapsed() >= KEY_SWEEP {
            // Keys of members that left go: nothing more is sealed for them or opened
            // from them. One pass under the engine's lock, every few seconds.
            last_sweep = std::time::Instant::now();
            let mut engine = lock(&engine);
            keys.retain(|member| engine.is_sealed_member(&member.token, member.key_id));
            engine.prune_key_ids();
        }
        let changed = {
            let mut engine = lock(&engine);
            let journal_seq = engine.journal_seq();
            engine.tick(shared::now(), period, &mut fx);
            outlet.hand_over_jobs(&mut fx);
            engine.journal_seq() != journal_seq
        };
        if changed {
            writer.schedule();
        }
        // A `BatchSender` cannot be kept across an `.await`; making one per tick costs one
        // small allocation.
        outlet.send(&mut BatchSender::default(), &mut fx);
    }
}
