//! The UDP data plane: receive a datagram, let the room manager decide, send what it decided.
//!
//! This is the hot path. The manager lock is held only while deciding (no `.await` inside),
//! frames are encoded once per message into a reused [`Outbox`], and nothing here touches the
//! disk or logs above debug level per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::{Datagram, ROOM_CLOSED, V2_MARKER, encode_v2};
use chat_protocol::v2::{ServerV2, V2ErrorCode};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

use crate::flood::{FloodPolicy, TokenBucket};
use crate::manager::{DropReason, NO_ROOM_TEXT, SharedManager, lock};
use crate::outbox::Outbox;
use crate::writer::StateWriter;

/// Counters of what the data plane did, for logs and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams dropped as malformed or oversized.
    pub malformed: AtomicU64,
    /// Datagrams dropped for an unknown token, wrong room or wrong address.
    pub unauthorized: AtomicU64,
    /// Chat dropped by flood control.
    pub rate_limited: AtomicU64,
    /// Datagrams with an unknown token answered "this room no longer exists".
    pub no_room_replies: AtomicU64,
}

impl RelayStats {
    fn count_drop(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &self.malformed,
            DropReason::UnknownToken | DropReason::WrongRoom | DropReason::WrongAddress => {
                &self.unauthorized
            }
            DropReason::RateLimited | DropReason::HistoryBacklog => &self.rate_limited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.unauthorized.load(Ordering::Relaxed)
            + self.rate_limited.load(Ordering::Relaxed)
    }
}

/// How often the relay thread looks up from a quiet socket to see whether it should stop.
pub const STOP_POLL: Duration = Duration::from_millis(200);

/// Starts the relay thread on `socket`, which must be blocking with a read timeout of about
/// [`STOP_POLL`]. It relays until `stop` is set.
///
/// A plain thread rather than an async task: the relay never waits on anything but the socket,
/// and a blocking receive costs one system call per datagram where readiness polling costs
/// three (measured in docs/performance.md).
pub fn spawn(
    socket: UdpSocket,
    manager: SharedManager,
    writer: StateWriter,
    stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    no_room: FloodPolicy,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("relay".into())
        .spawn(move || serve(&socket, &manager, &writer, &stats, &stop, no_room))
}

fn serve(
    socket: &UdpSocket,
    manager: &SharedManager,
    writer: &StateWriter,
    stats: &RelayStats,
    stop: &AtomicBool,
    no_room: FloodPolicy,
) {
    let mut no_room_budget = TokenBucket::new(&no_room, Instant::now());
    // One byte more than the limit, so an oversized datagram shows as oversized rather than
    // silently truncated to a valid-looking one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = Outbox::default();
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
        if let Err(reason) = decide(&buf[..len], src, manager, writer, &mut out) {
            stats.count_drop(reason);
            tracing::debug!(%src, ?reason, token = %token_prefix(&buf[..len]), "datagram dropped");
            if reason == DropReason::UnknownToken
                && no_room.burst > 0
                && no_room_budget.allow(&no_room, Instant::now())
                && answer_no_room(&buf[..len], src, &mut out)
            {
                stats.no_room_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
        sender.send_all(socket, &out, stats);
        out.clear();
    }
}

/// Parses a datagram and lets the manager queue its effects.
fn decide(
    bytes: &[u8],
    src: SocketAddr,
    manager: &SharedManager,
    writer: &StateWriter,
    out: &mut Outbox,
) -> Result<(), DropReason> {
    let datagram = Datagram::decode(bytes).map_err(|_| DropReason::Malformed)?;
    let mut manager = lock(manager);
    let generation = manager.generation();
    let result = manager.handle_datagram(
        datagram.room,
        datagram.token,
        datagram.message,
        src,
        Instant::now(),
        out,
    );
    let changed = manager.generation() != generation;
    drop(manager);
    if changed {
        // A leave or close: the state file catches up in the background.
        writer.schedule();
    }
    result
}

/// Tells the sender of a datagram whose token the server does not know that its room is gone,
/// in the version the datagram speaks: a version-2 `error` with code `no_room`, or the bare
/// `__ROOM_CLOSED__` of version 1 (the only word version 1 has for it). The answer is never
/// larger than the datagram, so a forged source address gains an attacker nothing; a
/// datagram too short for it gets none. `true` when an answer was queued.
fn answer_no_room(bytes: &[u8], src: SocketAddr, out: &mut Outbox) -> bool {
    let Ok(datagram) = Datagram::decode(bytes) else {
        return false;
    };
    let mut reply = Vec::new();
    if datagram.message.first() == Some(&V2_MARKER) {
        encode_v2(
            &ServerV2::Error {
                code: V2ErrorCode::NoRoom,
                seq: None,
                message: NO_ROOM_TEXT.to_owned(),
            },
            &mut reply,
        );
    } else {
        reply.extend_from_slice(ROOM_CLOSED);
    }
    if reply.len() > bytes.len() {
        return false;
    }
    out.unicast(src, |buf| {
        buf.extend_from_slice(&reply);
        Ok(())
    });
    true
}

/// Most datagrams handed to the kernel in one `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// Sends queued datagrams with as few system calls as possible: one `sendmmsg` per
/// [`SEND_BATCH`] datagrams instead of one `sendto` each, which is most of what a fan-out costs
/// beyond the kernel's own work (measured in docs/performance.md).
pub struct BatchSender {
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for BatchSender {
    fn default() -> Self {
        Self {
            headers: MultiHeaders::preallocate(SEND_BATCH, None),
        }
    }
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchSender")
    }
}

impl BatchSender {
    /// Sends every queued datagram. A failed send concerns one recipient (gone, unreachable)
    /// and never stops the others.
    pub fn send_all(&mut self, socket: &UdpSocket, out: &Outbox, stats: &RelayStats) {
        let mut datagrams = out.datagrams().peekable();
        while datagrams.peek().is_some() {
            let mut slices = [[IoSlice::new(&[])]; SEND_BATCH];
            let mut addrs: [Option<SockaddrStorage>; SEND_BATCH] = [None; SEND_BATCH];
            let mut count = 0;
            // The batch's slots first: `zip` takes from its first iterator before asking the
            // second, so with the datagrams first the one after a full batch was taken and lost.
            for ((slice, slot), (frame, addr)) in slices
                .iter_mut()
                .zip(addrs.iter_mut())
                .zip(datagrams.by_ref())
            {
                *slice = [IoSlice::new(frame)];
                *slot = Some(SockaddrStorage::from(addr));
                count += 1;
            }
            self.send_batch(socket, &slices[..count], &addrs[..count], stats);
        }
    }

    fn send_batch(
        &mut self,
        socket: &UdpSocket,
        slices: &[[IoSlice<'_>; 1]],
        addrs: &[Option<SockaddrStorage>],
        stats: &RelayStats,
    ) {
        let mut start = 0;
        while start < slices.len() {
            let sent = sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                &slices[start..],
                &addrs[start..],
                [] as [ControlMessage<'_>; 0],
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            match sent {
                Ok(sent) if sent > 0 => {
                    stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
                    start += sent;
                }
                // The datagram at `start` failed (the kernel reports the first failure of a
                // batch); skip it and carry on with the rest.
                Ok(_) | Err(_) => {
                    tracing::debug!(to = ?addrs[start], error = ?sent.err(), "UDP send failed");
                    start += 1;
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// More datagrams than one `sendmmsg` batch: every one arrives.
    #[test]
    fn batches_beyond_the_first_lose_nothing() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3 * SEND_BATCH + 5)
            .map(|_| {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                socket
            })
            .collect();
        let mut out = Outbox::default();
        for (index, receiver) in receivers.iter().enumerate() {
            out.unicast(receiver.local_addr().unwrap(), |buf| {
                buf.extend_from_slice(format!("datagram {index}").as_bytes());
                Ok(())
            });
        }
        let stats = RelayStats::default();
        BatchSender::default().send_all(&sender, &out, &stats);
        assert_eq!(stats.sent.load(Ordering::Relaxed), receivers.len() as u64);
        for (index, receiver) in receivers.iter().enumerate() {
            let mut buf = [0; 64];
            let length = receiver
                .recv(&mut buf)
                .unwrap_or_else(|error| panic!("datagram {index} did not arrive: {error}"));
            assert_eq!(&buf[..length], format!("datagram {index}").as_bytes());
        }
    }
}
