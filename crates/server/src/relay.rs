//! The UDP data plane: receive a datagram, let the engine decide, send what it decided.
//!
//! This is the hot path. The engine's lock is held only while deciding (no `.await` inside),
//! frames are encoded once per message into a reused [`Effects`], everything goes out through
//! one [`BatchSender`], and nothing here touches the disk or logs above debug level per
//! datagram.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::Datagram;

use crate::engine::dispatch::answer_no_room;
use crate::engine::{DropReason, Effects, Endpoint};
use crate::flood::{FloodPolicy, TokenBucket};
use crate::send::{BatchSender, Outlet};
use crate::shared::{self, SharedEngine, lock};
use crate::stats::RelayStats;
use crate::writer::StateWriter;

/// How often the relay thread looks up from a quiet socket to see whether it should stop.
pub const STOP_POLL: Duration = Duration::from_millis(200);

/// Starts the relay thread on `socket`, which must be blocking with a read timeout of about
/// [`STOP_POLL`]. It relays until `stop` is set.
///
/// A plain thread rather than an async task: the relay never waits on anything but the socket,
/// and a blocking receive costs one system call per datagram where readiness polling costs
/// three (measured in docs/performance.md).
pub fn spawn(socket: UdpSocket, relay: Relay, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("relay".into())
        .spawn(move || serve(&socket, &relay, &stop))
}

/// What the relay thread works with besides its socket.
#[derive(Debug)]
pub struct Relay {
    /// The rules.
    pub engine: SharedEngine,
    /// Where the engine's effects go.
    pub outlet: Outlet,
    /// Told when a datagram changed the durable state.
    pub writer: StateWriter,
    /// Counters.
    pub stats: Arc<RelayStats>,
    /// How often a datagram with an unknown token is answered.
    pub no_room: FloodPolicy,
}

fn serve(socket: &UdpSocket, relay: &Relay, stop: &AtomicBool) {
    let Relay {
        engine,
        outlet,
        writer,
        stats,
        no_room,
    } = relay;
    let no_room = *no_room;
    let mut no_room_budget = TokenBucket::new(&no_room, Instant::now());
    // One byte more than the limit, so an oversized datagram shows as oversized rather than
    // silently truncated to a valid-looking one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut fx = Effects::default();
    let mut sender = BatchSender::default();
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                tracing::debug!(%error, "UDP receive error");
                continue;
            }
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let src = Endpoint::Udp(src);
        if let Err(reason) = decide(&buf[..len], src, engine, outlet, writer, &mut fx) {
            stats.count_drop(reason);
            tracing::debug!(%src, ?reason, token = %token_prefix(&buf[..len]), "datagram dropped");
            if reason == DropReason::UnknownToken
                && no_room.burst > 0
                && no_room_budget.allow(&no_room, Instant::now())
                && answer_no_room(&buf[..len], src, &mut fx.datagrams)
            {
                stats.no_room_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
        outlet.send(&mut sender, &mut fx);
    }
}

/// Parses a datagram and lets the engine decide; hands its history jobs over before the lock
/// is released (their order matters), and leaves its datagrams in `fx` for the caller.
fn decide(
    bytes: &[u8],
    src: Endpoint,
    engine: &SharedEngine,
    outlet: &Outlet,
    writer: &StateWriter,
    fx: &mut Effects,
) -> Result<(), DropReason> {
    let datagram = Datagram::decode(bytes).map_err(|_| DropReason::Malformed)?;
    let mut engine = lock(engine);
    let journal_seq = engine.journal_seq();
    let result = engine.datagram(&datagram, src, shared::now(), fx);
    outlet.hand_over_jobs(fx);
    let changed = engine.journal_seq() != journal_seq;
    drop(engine);
    if changed {
        // A leave or close: the state file catches up in the background.
        writer.schedule();
    }
    result
}

/// The first few characters of a datagram's token, for logs that must not reveal tokens.
fn token_prefix(bytes: &[u8]) -> String {
    Datagram::decode(bytes)
        .map(|datagram| {
            // Any bytes at all: a forged token must not forge the log line.
            let shown = &datagram.token[..datagram.token.len().min(8)];
            format!("{}…", crate::escape::quoted(shown))
        })
        .unwrap_or_default()
}
