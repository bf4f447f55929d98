//! The UDP data plane: receive a datagram, let the engine decide, send what it decided.
//!
//! This is the hot path. The engine's lock is held only while deciding (no `.await` inside),
//! frames are encoded once per message into a reused [`Effects`], everything goes out through
//! one [`BatchSender`], and nothing here touches the disk or logs above debug level per
//! datagram.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed;
use chat_protocol::ucrp::Datagram;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

use crate::engine::dispatch::answer_no_room;
use crate::engine::endpoint::SealedPath;
use crate::engine::{DropReason, Effects, Endpoint};
use crate::flood::{FloodPolicy, TokenBucket};
use crate::secure::KeyTable;
use crate::send::{BatchSender, Outlet};
use crate::shared::{self, SharedEngine, lock};
use crate::stats::RelayStats;
use crate::writer::StateWriter;

/// How often the relay thread looks up from a quiet socket to see whether it should stop.
pub const STOP_POLL: Duration = Duration::from_millis(200);
/// Most datagrams taken from the socket in one `recvmmsg`. A quiet socket yields one at a
/// time; under load one call (and one `sendmmsg` for everything they cause) serves many.
const RECV_BATCH: usize = 32;

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
    /// Version-3 members' keys: sealed datagrams are opened with them.
    pub keys: Arc<KeyTable>,
    /// Drop every plaintext datagram (`--require-encryption`).
    pub require_encryption: bool,
}

fn serve(socket: &UdpSocket, relay: &Relay, stop: &AtomicBool) {
    let Relay {
        engine,
        outlet,
        writer,
        stats,
        no_room,
        keys,
        require_encryption,
    } = relay;
    let no_room = *no_room;
    let mut no_room_budget = TokenBucket::new(&no_room, Instant::now());
    // One byte more than the limit, so an oversized datagram shows as oversized rather than
    // silently truncated to a valid-looking one.
    let mut buffers = vec![[0u8; MAX_DATAGRAM + 1]; RECV_BATCH];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
    let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(RECV_BATCH);
    let mut fx = Effects::default();
    let mut sender = BatchSender::default();
    while !stop.load(Ordering::Relaxed) {
        match receive_batch(socket, &mut buffers, &mut headers, &mut received) {
            Ok(()) => {}
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                tracing::debug!(%error, "UDP receive error");
                continue;
            }
        }
        for (&(len, src), buf) in received.iter().zip(buffers.iter_mut()) {
            stats.received.fetch_add(1, Ordering::Relaxed);
            let Some(src) = src else { continue };
            let len = len.min(buf.len());
            if sealed::is_sealed(&buf[..len]) {
                if let Err(reason) =
                    decide_sealed(&mut buf[..len], src, keys, engine, outlet, writer, &mut fx)
                {
                    stats.count_drop(reason);
                    tracing::debug!(%src, ?reason, "sealed datagram dropped");
                }
                continue;
            }
            let bytes = &buf[..len];
            let src = Endpoint::Udp(src);
            if *require_encryption {
                stats.count_drop(DropReason::Plaintext);
                tracing::debug!(%src, "plaintext datagram dropped (--require-encryption)");
                continue;
            }
            if let Err(reason) = decide(bytes, src, engine, outlet, writer, &mut fx) {
                stats.count_drop(reason);
                tracing::debug!(%src, ?reason, token = %token_prefix(bytes), "datagram dropped");
                if reason == DropReason::UnknownToken
                    && no_room.burst > 0
                    && no_room_budget.allow(&no_room, Instant::now())
                    && answer_no_room(bytes, src, &mut fx.datagrams)
                {
                    stats.no_room_replies.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Everything the batch caused, in as few `sendmmsg` calls as it takes.
        outlet.send(&mut sender, &mut fx);
    }
}

/// Waits for at least one datagram (up to the socket's read timeout), then takes whatever
/// else is already queued, up to one buffer each; `received` says each one's length and
/// sender.
fn receive_batch(
    socket: &UdpSocket,
    buffers: &mut [[u8; MAX_DATAGRAM + 1]],
    headers: &mut MultiHeaders<SockaddrStorage>,
    received: &mut Vec<(usize, Option<SocketAddr>)>,
) -> Result<(), Errno> {
    received.clear();
    let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
        .iter_mut()
        .map(|buffer| [IoSliceMut::new(buffer)])
        .collect();
    let results = recvmmsg(
        socket.as_raw_fd(),
        headers,
        slices.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )?;
    received.extend(results.map(|message| {
        (
            message.bytes,
            message.address.as_ref().and_then(socket_addr),
        )
    }));
    Ok(())
}

/// The standard library's form of an address the kernel filled in.
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Opens a sealed datagram (version 3) in place and lets the engine decide, as for a plain
/// one from the member whose keys opened it.
fn decide_sealed(
    bytes: &mut [u8],
    src: SocketAddr,
    keys: &KeyTable,
    engine: &SharedEngine,
    outlet: &Outlet,
    writer: &StateWriter,
    fx: &mut Effects,
) -> Result<(), DropReason> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DropReason::Malformed);
    }
    let (member, message) = keys.open(bytes, None)?;
    let datagram = Datagram {
        room: &member.room,
        token: member.token_hex.as_bytes(),
        message: &bytes[message],
    };
    let src = Endpoint::Sealed {
        path: SealedPath::Udp(src),
        key_id: member.key_id,
    };
    feed(&datagram, src, engine, outlet, writer, fx)
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
    feed(&datagram, src, engine, outlet, writer, fx)
}

fn feed(
    datagram: &Datagram<'_>,
    src: Endpoint,
    engine: &SharedEngine,
    outlet: &Outlet,
    writer: &StateWriter,
    fx: &mut Effects,
) -> Result<(), DropReason> {
    let mut engine = lock(engine);
    let journal_seq = engine.journal_seq();
    let result = engine.datagram(datagram, src, shared::now(), fx);
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
