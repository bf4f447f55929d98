//! A UDP proxy that loses, duplicates and reorders datagrams between clients and the server,
//! deterministically from a seed.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Which faults a [`LossProxy`] injects, in percent of datagrams, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Datagrams dropped.
    pub loss_percent: u32,
    /// Datagrams forwarded twice.
    pub duplicate_percent: u32,
    /// Datagrams held back and released after the next one (or after the proxy's reorder
    /// hold, [`REORDER_HOLD`] by default, when no next one comes).
    pub reorder_percent: u32,
}

impl Faults {
    /// A perfect network.
    pub const NONE: Self = Self {
        loss_percent: 0,
        duplicate_percent: 0,
        reorder_percent: 0,
    };
}

/// Longest time a held-back datagram waits for a successor before it is released anyway.
pub const REORDER_HOLD: Duration = Duration::from_millis(100);

/// How often the proxy's threads look at their stop flag.
const PROXY_POLL: Duration = Duration::from_millis(20);

/// What a [`LossProxy`] did, over all its links and both directions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Of those, datagrams received from clients (on their way to the server).
    pub from_clients: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams sent after their successor.
    pub reordered: AtomicU64,
}

impl ProxyStats {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        format!(
            "{} datagrams, {} dropped, {} duplicated, {} reordered",
            self.received.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed),
            self.reordered.load(Ordering::Relaxed),
        )
    }
}

/// xorshift64*: small, fast and deterministic, so a proxy's decisions repeat from its seed.
#[derive(Debug, Clone)]
pub struct XorShift64Star(u64);

impl XorShift64Star {
    /// A generator from any seed (spread with splitmix64, so nearby seeds differ; never zero).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && (self.next_u64() >> 32) % 100 < u64::from(percent)
    }
}

/// A UDP proxy between clients and the server that loses, duplicates and reorders datagrams,
/// deterministically from its seed, in both directions.
///
/// Each client gets its own link: a socket on 127.0.0.1 that the client uses as the server's
/// UDP port, and an upstream socket that talks to the real server. Replies from the server go
/// back to the address the client last sent from. Threads stop when the proxy is dropped.
pub struct LossProxy {
    upstream: SocketAddr,
    seed: u64,
    reorder_hold: Duration,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    links: u64,
    /// What the proxy did so far.
    pub stats: Arc<ProxyStats>,
    /// Every datagram it received, either way, before faults (what a sniffer sees).
    pub capture: crate::Capture,
}

impl LossProxy {
    /// A proxy towards the server's data plane at `upstream`, with no links yet.
    pub fn new(upstream: SocketAddr, faults: Faults, seed: u64) -> Self {
        Self {
            upstream,
            seed,
            reorder_hold: REORDER_HOLD,
            faults: Arc::new(Mutex::new(faults)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            links: 0,
            stats: Arc::new(ProxyStats::default()),
            capture: crate::Capture::default(),
        }
    }

    /// Sets how long a held-back datagram waits for a successor before it goes anyway (for
    /// links opened from now on). A long hold makes the order of what arrives depend on the
    /// order of what was sent alone, never on timing.
    pub fn with_reorder_hold(mut self, hold: Duration) -> Self {
        self.reorder_hold = hold;
        self
    }

    /// Changes the faults of every link from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Opens a link for one more client; returns the UDP port the client must send to.
    pub fn open_link(&mut self) -> u16 {
        let downstream = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's client side");
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's server side");
        for socket in [&downstream, &upstream] {
            socket
                .set_read_timeout(Some(PROXY_POLL))
                .expect("set timeout");
        }
        let port = downstream.local_addr().expect("bound").port();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let link = self.links;
        self.links += 1;
        let to_server = Direction {
            from: downstream.try_clone().expect("clone socket"),
            to: upstream.try_clone().expect("clone socket"),
            rng: XorShift64Star::new(self.seed ^ (link << 1)),
            towards_server: true,
            hold: self.reorder_hold,
        };
        let to_client = Direction {
            from: upstream,
            to: downstream,
            rng: XorShift64Star::new(self.seed ^ ((link << 1) | 1)),
            towards_server: false,
            hold: self.reorder_hold,
        };
        let server = self.upstream;
        let shared = (
            Arc::clone(&self.faults),
            Arc::clone(&self.stop),
            Arc::clone(&self.stats),
            self.capture.clone(),
        );
        let client_in = Arc::clone(&client);
        let (faults, stop, stats, capture) = shared.clone();
        self.threads.push(thread::spawn(move || {
            to_server.run(&faults, &stop, &stats, &capture, |source| {
                // Whatever the client sends from is where replies go (it may rebind).
                *client_in.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
                Some(server)
            });
        }));
        let (faults, stop, stats, capture) = shared;
        self.threads.push(thread::spawn(move || {
            to_client.run(&faults, &stop, &stats, &capture, |source| {
                if source != server {
                    return None;
                }
                *client.lock().unwrap_or_else(PoisonError::into_inner)
            });
        }));
        port
    }
}

impl Drop for LossProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction of one proxy link.
struct Direction {
    from: UdpSocket,
    to: UdpSocket,
    rng: XorShift64Star,
    towards_server: bool,
    hold: Duration,
}

impl Direction {
    /// Forwards until `stop`; `destination` says where a datagram from a source goes (None
    /// drops it).
    fn run(
        mut self,
        faults: &Mutex<Faults>,
        stop: &AtomicBool,
        stats: &ProxyStats,
        capture: &crate::Capture,
        mut destination: impl FnMut(SocketAddr) -> Option<SocketAddr>,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut held: Option<(Vec<u8>, SocketAddr, Instant)> = None;
        while !stop.load(Ordering::Relaxed) {
            let received = self.from.recv_from(&mut buf);
            let Ok((len, source)) = received else {
                if let Some((datagram, to, since)) = held.take() {
                    if since.elapsed() >= self.hold {
                        let _ = self.to.send_to(&datagram, to);
                    } else {
                        held = Some((datagram, to, since));
                    }
                }
                continue;
            };
            let Some(to) = destination(source) else {
                continue;
            };
            capture.record(&buf[..len]);
            let faults = *faults.lock().unwrap_or_else(PoisonError::into_inner);
            // Every decision draws from the generator, so the sequence of decisions depends
            // only on the seed and the sequence of datagrams.
            let lose = self.rng.chance(faults.loss_percent);
            let duplicate = self.rng.chance(faults.duplicate_percent);
            let reorder = self.rng.chance(faults.reorder_percent);
            // Counted once decided, so that a reader of the counters knows the faults then in
            // force applied to every datagram counted.
            stats.received.fetch_add(1, Ordering::Relaxed);
            if self.towards_server {
                stats.from_clients.fetch_add(1, Ordering::Relaxed);
            }
            if lose {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let datagram = &buf[..len];
            if duplicate {
                stats.duplicated.fetch_add(1, Ordering::Relaxed);
                let _ = self.to.send_to(datagram, to);
            }
            if reorder && held.is_none() {
                stats.reordered.fetch_add(1, Ordering::Relaxed);
                held = Some((datagram.to_vec(), to, Instant::now()));
                continue;
            }
            let _ = self.to.send_to(datagram, to);
            if let Some((earlier, earlier_to, _)) = held.take() {
                let _ = self.to.send_to(&earlier, earlier_to);
            }
        }
    }
}

/// A TCP proxy towards the server's control port that records every byte either way (what a
/// sniffer on the path sees of TLS). Each connection is forwarded by two threads; all stop when
/// the proxy is dropped.
pub struct TcpCapture {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Every byte forwarded, both ways.
    pub capture: crate::Capture,
    stop: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl TcpCapture {
    /// A capturing proxy towards `upstream`.
    pub fn new(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the TCP proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("bound");
        let capture = crate::Capture::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopping) = (capture.clone(), Arc::clone(&stop));
        let accepting = thread::spawn(move || {
            let mut pipes = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(PROXY_POLL);
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (record, stopping) = (record.clone(), Arc::clone(&stopping));
                    pipes.push(thread::spawn(move || pipe(from, to, &record, &stopping)));
                }
            }
            for pipe in pipes {
                let _ = pipe.join();
            }
        });
        Self {
            addr,
            capture,
            stop,
            accepting: Some(accepting),
        }
    }
}

impl Drop for TcpCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

fn pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    capture: &crate::Capture,
    stop: &AtomicBool,
) {
    use std::io::{Read, Write};
    let _ = from.set_read_timeout(Some(PROXY_POLL));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                capture.record(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
