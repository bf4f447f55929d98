//! The server's background tasks beside the front ends: the engine's clock tick, and the
//! status line on SIGUSR1.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Effects;
use crate::send::{BatchSender, Outlet};
use crate::shared::{self, SharedEngine, lock};
use crate::stats::RelayStats;
use crate::writer::StateWriter;

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
    outlet: Outlet,
    writer: StateWriter,
    shortest_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let period = (shortest_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    let mut fx = Effects::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
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
