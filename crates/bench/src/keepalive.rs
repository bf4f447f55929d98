//! Keeps version-2 members registered through long runs. The server removes a version-2
//! member that sends nothing for its idle timeout (60 s by default); a receiver never sends,
//! and a ramp, or registering thousands of members, outlasts that. As a real client does, a
//! member silent for [`PING_AFTER`] sends `ping`. Without a `last_id` the server answers it
//! with a `pong` alone, which receivers count as a notice. Members that send chat often never
//! ping, so the pings add nothing to a busy run.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chat_protocol::v2::ClientV2;

use crate::error::{BenchError, Result};
use crate::member::Member;
use crate::sealed::Sealing;
use crate::wire::append_v2;

/// Silence after which a member pings: a quarter of the server's default idle timeout.
const PING_AFTER: Duration = Duration::from_secs(15);
/// How often the keepalive looks for silent members.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// When a member last sent anything.
#[derive(Debug)]
pub struct LastSend {
    /// Milliseconds since the process-wide [`clock_ms`] base.
    millis: AtomicU64,
}

impl LastSend {
    /// Stamped now.
    pub fn now() -> Self {
        Self {
            millis: AtomicU64::new(clock_ms()),
        }
    }

    /// Records a send now.
    pub fn touch(&self) {
        self.millis.store(clock_ms(), Ordering::Relaxed);
    }

    /// How long ago the last send was.
    fn idle_for(&self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.millis.load(Ordering::Relaxed)))
    }
}

/// Milliseconds since the first call in this process: a monotonic clock that fits an atomic.
fn clock_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the keepalive needs of one member.
#[derive(Debug)]
struct Pinger {
    /// A clone of the member's socket: the ping must come from its registered address.
    socket: UdpSocket,
    /// Its envelope and `{"t":"ping"}`; version 3: the bare message, sealed at each send.
    ping: Vec<u8>,
    last_send: Arc<LastSend>,
    /// Version 3: its keys (and tunnel), the same counter the pacer uses.
    sealing: Option<Arc<Sealing>>,
}

impl Pinger {
    fn ping(&self, relay: SocketAddr, scratch: &mut Vec<u8>) -> std::io::Result<()> {
        let Some(sealing) = &self.sealing else {
            return self.socket.send_to(&self.ping, relay).map(drop);
        };
        sealing
            .seal(&self.ping, scratch)
            .map_err(std::io::Error::other)?;
        if sealing.send(&self.socket, relay, scratch) {
            Ok(())
        } else {
            Err(std::io::Error::other("a sealed ping was not sent"))
        }
    }
}

/// A thread pinging silent members; stopped and joined when dropped.
#[derive(Debug)]
pub struct Keepalive {
    pingers: Arc<Mutex<Vec<Pinger>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Keepalive {
    /// Starts the thread; members are added with [`Keepalive::watch`] as they register.
    pub fn start(relay: SocketAddr) -> Result<Self> {
        Self::pinging_after(relay, PING_AFTER)
    }

    /// Starts the thread with a given silence before a ping.
    fn pinging_after(relay: SocketAddr, ping_after: Duration) -> Result<Self> {
        let pingers = Arc::new(Mutex::new(Vec::<Pinger>::new()));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread_pingers = Arc::clone(&pingers);
        let thread = std::thread::Builder::new()
            .name("bench-keepalive".to_owned())
            .spawn(move || {
                let mut scratch = Vec::new();
                // Any message or a dropped sender ends the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                    let pingers = thread_pingers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for pinger in pingers.iter() {
                        if pinger.last_send.idle_for() < ping_after {
                            continue;
                        }
                        match pinger.ping(relay, &mut scratch) {
                            Ok(_) => pinger.last_send.touch(),
                            // A full buffer or the like: the next check tries again.
                            Err(error) => tracing::debug!(%error, "keepalive ping not sent"),
                        }
                    }
                }
            })
            .map_err(BenchError::socket("starting the keepalive thread"))?;
        Ok(Self {
            pingers,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Keeps `member` registered from now on.
    pub fn watch(&self, member: &Member) -> Result<()> {
        let socket = member
            .socket
            .try_clone()
            .map_err(BenchError::socket("cloning a member socket"))?;
        let mut ping = member.envelope.clone();
        append_v2(&ClientV2::Ping { last_id: None }, &mut ping);
        let sealing = member.sealing().cloned();
        self.pingers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pinger {
                socket,
                ping,
                last_send: Arc::clone(member.last_send()),
                sealing,
            });
        Ok(())
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{BufferSizes, loopback_socket};
    use chat_protocol::ucrp::{ClientMessage, Datagram};

    #[test]
    fn a_silent_member_pings_from_its_own_address() {
        let relay = loopback_socket(None).unwrap();
        let buffers = BufferSizes {
            receive: 1 << 16,
            send: 1 << 16,
        };
        let member = Member::new("m0".into(), 0, "lobby", &[b'a'; 64], buffers).unwrap();
        let keepalive =
            Keepalive::pinging_after(relay.local_addr().unwrap(), Duration::ZERO).unwrap();
        keepalive.watch(&member).unwrap();
        relay
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let (len, from) = crate::member::recv_from_retrying(&relay, &mut buf).unwrap();
        assert_eq!(from, member.socket.local_addr().unwrap());
        let datagram = Datagram::decode(&buf[..len]).unwrap();
        assert_eq!(datagram.room, "lobby");
        assert_eq!(
            ClientMessage::decode(datagram.message).unwrap(),
            ClientMessage::V2(ClientV2::Ping { last_id: None })
        );
    }
}
