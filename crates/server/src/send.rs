//! The one way out for datagrams, and for the engine's other effects.
//!
//! Every datagram the server sends (relays, acks and relays released by a history commit,
//! challenges, welcomes, replays, history pages, notices from a tick or a handshake) leaves
//! through a [`BatchSender`], which hands UDP datagrams to the kernel with `sendmmsg` and web
//! members' frames to their connections' queues ([`WebPeers`]). An [`Outlet`] carries out what
//! the engine decided: history jobs to the history thread while the engine is still locked,
//! datagrams after.

use std::io::IoSlice;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

use crate::engine::endpoint::SealedPath;
use crate::engine::{Effects, Endpoint, Engine, HistoryJob, Outbox};
use crate::secure::{KeyTable, Tunnels};
use crate::shared::{SharedEngine, lock};
use crate::stats::RelayStats;
use crate::web::WebPeers;

/// Where the engine's frames go: the data-plane socket (or a clone of it, so members see one
/// server address) and the web connections.
#[derive(Debug)]
pub struct Transports {
    /// The UDP data plane.
    pub udp: UdpSocket,
    /// WebSocket members and HTTP requests waiting for an answer.
    pub web: Arc<WebPeers>,
    /// Version-3 members' keys: their frames are sealed on the way out.
    pub keys: Arc<KeyTable>,
    /// Version-3 members' TLS tunnels.
    pub tunnels: Arc<Tunnels>,
}

/// Carries out the engine's effects for one I/O loop: history jobs go to the history thread,
/// datagrams to their transport through a [`BatchSender`].
#[derive(Debug, Clone)]
pub struct Outlet {
    transports: Arc<Transports>,
    jobs: Sender<HistoryJob>,
    stats: Arc<RelayStats>,
}

impl Outlet {
    /// An outlet sending through `transports` and handing jobs to `jobs`.
    pub fn new(
        transports: Arc<Transports>,
        jobs: Sender<HistoryJob>,
        stats: Arc<RelayStats>,
    ) -> Self {
        Self {
            transports,
            jobs,
            stats,
        }
    }

    /// Where the frames go.
    pub fn transports(&self) -> &Arc<Transports> {
        &self.transports
    }

    /// Hands the history jobs over. Called with the engine still locked: store jobs carry ids
    /// in the order the engine handed them out, and two loops that each let go of the lock
    /// first could swap them on the way to the history thread.
    pub fn hand_over_jobs(&self, fx: &mut Effects) {
        for job in fx.history.drain(..) {
            // Fails only once the history thread has stopped, at the very end of shutdown.
            let _ = self.jobs.send(job);
        }
    }

    /// Sends the queued datagrams and empties `fx`. Called after the engine's lock is
    /// released.
    pub fn send(&self, sender: &mut BatchSender, fx: &mut Effects) {
        sender.send_all(&self.transports, &fx.datagrams, &self.stats);
        self.stats
            .replayed
            .fetch_add(fx.replayed, Ordering::Relaxed);
        fx.clear();
    }

    /// Feeds the engine one input under its lock and carries out the effects: jobs before
    /// the lock is released, datagrams after.
    pub fn apply<R>(
        &self,
        engine: &SharedEngine,
        input: impl FnOnce(&mut Engine, &mut Effects) -> R,
    ) -> R {
        let mut fx = Effects::default();
        let result = {
            let mut engine = lock(engine);
            let result = input(&mut engine, &mut fx);
            self.hand_over_jobs(&mut fx);
            result
        };
        if !fx.datagrams.is_empty() {
            self.send(&mut BatchSender::default(), &mut fx);
        }
        result
    }
}

/// A frame too large to seal: the engine fits what it sends into
/// [`chat_protocol::limits::MAX_SERVER_MESSAGE`], so this is a bug to see, not a case to
/// handle.
fn unsealable(stats: &RelayStats, to: Endpoint) {
    stats.unsealable.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%to, "a frame too large to seal was not sent");
}

/// Most datagrams handed to the kernel in one `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// Sends queued datagrams with as few system calls as possible: one `sendmmsg` per
/// [`SEND_BATCH`] datagrams instead of one `sendto` each, which is most of what a fan-out costs
/// beyond the kernel's own work (measured in docs/performance.md).
pub struct BatchSender {
    headers: MultiHeaders<SockaddrStorage>,
    /// Sealed copies of this round's frames for version-3 members, and where each goes;
    /// the buffers are kept for the next round.
    sealed: Vec<(Vec<u8>, SealedPath)>,
    spare: Vec<Vec<u8>>,
}

impl Default for BatchSender {
    fn default() -> Self {
        Self {
            headers: MultiHeaders::preallocate(SEND_BATCH, None),
            sealed: Vec::new(),
            spare: Vec::new(),
        }
    }
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchSender")
    }
}

impl BatchSender {
    /// Sends every queued datagram. A failed send concerns one recipient (gone, unreachable,
    /// not reading) and never stops the others.
    pub fn send_all(&mut self, to: &Transports, out: &Outbox, stats: &RelayStats) {
        let plain = out.datagrams().filter_map(|(frame, addr)| match addr {
            Endpoint::Udp(addr) => Some((frame, addr)),
            _ => None,
        });
        self.send_udp(&to.udp, plain, stats);
        if !to.keys.is_empty() {
            self.send_sealed(to, out, stats);
        }
        if to.web.open() > 0 {
            to.web
                .deliver(out.datagrams().filter_map(|(frame, addr)| match addr {
                    Endpoint::Web { conn, .. } => Some((frame, conn)),
                    Endpoint::Udp(_) | Endpoint::Sealed { .. } => None,
                }));
        }
    }

    /// Seals each frame for a version-3 member under its keys (a fan-out seals once per
    /// recipient: each has its own keys), then sends it by UDP or queues it on its tunnel.
    fn send_sealed(&mut self, to: &Transports, out: &Outbox, stats: &RelayStats) {
        let mut sealed = std::mem::take(&mut self.sealed);
        for (frame, addr) in out.datagrams() {
            let Endpoint::Sealed { path, key_id } = addr else {
                continue;
            };
            // A member that left since: nothing to seal with, nobody to send to.
            let Some(keys) = to.keys.get(key_id) else {
                continue;
            };
            let mut buffer = self.spare.pop().unwrap_or_default();
            match path {
                SealedPath::Udp(_) => {
                    if keys.seal(frame, &mut buffer).is_err() {
                        unsealable(stats, addr);
                        continue;
                    }
                }
                SealedPath::Tunnel { .. } => {
                    // Room for the length first, then the datagram after it.
                    let mut datagram = self.spare.pop().unwrap_or_default();
                    if keys.seal(frame, &mut datagram).is_err() {
                        unsealable(stats, addr);
                        continue;
                    }
                    buffer.clear();
                    buffer.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
                    buffer.extend_from_slice(&datagram);
                    self.spare.push(datagram);
                }
            }
            sealed.push((buffer, path));
        }
        let udp = sealed.iter().filter_map(|(bytes, path)| match path {
            SealedPath::Udp(addr) => Some((bytes.as_slice(), *addr)),
            SealedPath::Tunnel { .. } => None,
        });
        self.send_udp(&to.udp, udp, stats);
        // UDP copies are sent: their buffers go back to the pool. Tunnel frames move into
        // their tunnels' queues.
        let mut tunnelled = Vec::new();
        for (bytes, path) in sealed.drain(..) {
            match path {
                SealedPath::Tunnel { conn, .. } => tunnelled.push((bytes, conn)),
                SealedPath::Udp(_) => self.spare.push(bytes),
            }
        }
        if !tunnelled.is_empty() {
            to.tunnels.deliver(tunnelled.into_iter(), stats);
        }
        // Keep a bounded pool: one fan-out's worth is plenty.
        self.spare.truncate(SEND_BATCH);
        self.sealed = sealed;
    }

    fn send_udp<'a>(
        &mut self,
        socket: &UdpSocket,
        datagrams: impl Iterator<Item = (&'a [u8], std::net::SocketAddr)>,
        stats: &RelayStats,
    ) {
        let mut datagrams = datagrams.peekable();
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
            out.unicast(Endpoint::Udp(receiver.local_addr().unwrap()), |buf| {
                buf.extend_from_slice(format!("datagram {index}").as_bytes());
                Ok(())
            });
        }
        let stats = RelayStats::default();
        let transports = Transports {
            udp: sender,
            web: Arc::default(),
            keys: Arc::new(KeyTable::new(1)),
            tunnels: Arc::new(Tunnels::new(1)),
        };
        BatchSender::default().send_all(&transports, &out, &stats);
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
