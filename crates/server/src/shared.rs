//! The engine as the I/O loops share it, and the clock they read for it.
//!
//! The relay thread, the control tasks, the tick task, the history thread and the state
//! writer each lock the engine for microseconds, never across an `.await`, feed it one input
//! and carry out its effects after letting go (see [`crate::send::Outlet`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use crate::engine::{Engine, Now};

/// The engine as the I/O loops share it.
pub type SharedEngine = Arc<Mutex<Engine>>;

/// Locks the engine. A panic while it was held cannot leave it half-updated in a way that
/// matters more than stopping every room would, so a poisoned lock is taken over, not fatal.
pub fn lock(engine: &SharedEngine) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time now, as the engine takes it: the only place the I/O layer reads both clocks.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: chat_protocol::time::unix_ms(SystemTime::now()),
    }
}
