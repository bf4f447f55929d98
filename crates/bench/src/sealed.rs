//! A version-3 member's data plane: its keys (sealing what it sends with a counter that never
//! repeats, opening what the server sealed for it) and, for members that send and receive
//! through their TLS connection instead of UDP, that connection as a tunnel
//! (docs/protocol.md, "Sealed datagrams" and "The tunnel").
//!
//! A tunnel is shared by the pacer (which writes frames) and one receiver thread (which reads
//! them): the rustls connection sits behind a mutex held only while records are encrypted,
//! decrypted or moved to and from the socket, which is non-blocking from the start, so
//! neither side ever waits on the network with the lock held.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed::{
    Header, KeyMaterial, Opener, ReplayWindow, SealError, Sealer, TUNNEL_PREFIX_LEN,
};
use rustls::{ClientConnection, StreamOwned};

use crate::error::{BenchError, Result};
use crate::tls::TlsStream;

/// Retries of a write that found the socket buffer full.
const WRITE_RETRIES: u32 = 10_000;
/// TLS reads from one tunnel before a receiver moves on to the next ready source.
const TLS_READS_PER_TURN: usize = 64;

/// One member's keys and, when it uses one, its tunnel.
#[derive(Debug)]
pub struct Sealing {
    /// The key id of its datagrams, from the grant.
    pub key_id: u32,
    sealer: Sealer,
    opener: Opener,
    /// The last counter used; shared by the pacer and the keepalive, so taken atomically.
    counter: AtomicU64,
    tunnel: Option<Tunnel>,
}

impl Sealing {
    /// A member's sealing state from its grant's key id and the exported keys.
    pub fn new(key_id: u32, keys: &KeyMaterial, tunnel: Option<Tunnel>) -> Self {
        Self {
            key_id,
            sealer: Sealer::new(&keys.to_server()),
            opener: Opener::new(&keys.to_client()),
            counter: AtomicU64::new(0),
            tunnel,
        }
    }

    /// Its tunnel, if it sends and receives through one.
    pub fn tunnel(&self) -> Option<&Tunnel> {
        self.tunnel.as_ref()
    }

    /// Seals `message` (a version-2 message, marker and JSON) into `out` with the next
    /// counter.
    pub fn seal(&self, message: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), SealError> {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let header = Header {
            key_id: self.key_id,
            counter,
        };
        self.sealer.seal_into(header, message, out)
    }

    /// Opens a datagram the server sealed for this member, in place, as a client does: the
    /// replay window first, then the tag, then the counter is recorded. `None` for anything
    /// that does not open or repeats a counter.
    pub fn open<'a>(&self, window: &mut ReplayWindow, datagram: &'a mut [u8]) -> Option<&'a [u8]> {
        let header = Header::peek(datagram)?;
        window.check(header.counter).ok()?;
        let (_, message) = self.opener.open(datagram).ok()?;
        window.accept(header.counter).ok()?;
        Some(message)
    }

    /// Sends a sealed datagram by the member's path: its tunnel, or `socket` to `relay`.
    pub fn send(&self, socket: &UdpSocket, relay: SocketAddr, datagram: &[u8]) -> bool {
        match &self.tunnel {
            Some(tunnel) => tunnel.send(datagram),
            None => crate::load::send_with_retry(socket, datagram, relay),
        }
    }
}

/// A member's TLS connection kept open as its tunnel.
#[derive(Debug)]
pub struct Tunnel {
    conn: Mutex<ClientConnection>,
    /// Non-blocking.
    stream: TcpStream,
    /// Plaintext read off the connection that does not make a whole frame yet.
    inbox: Mutex<Vec<u8>>,
}

/// What one read turn of a tunnel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRead {
    /// The socket has nothing more for now.
    Exhausted,
    /// The turn ended with data possibly still waiting.
    More,
}

impl Tunnel {
    /// Turns an established TLS connection into a tunnel; `leftover` is plaintext already
    /// read past the handshake's replies.
    pub fn new(tls: TlsStream, leftover: Vec<u8>) -> Result<Self> {
        let StreamOwned { conn, sock } = tls;
        sock.set_nonblocking(true)
            .map_err(BenchError::socket("making a tunnel non-blocking"))?;
        Ok(Self {
            conn: Mutex::new(conn),
            stream: sock,
            inbox: Mutex::new(leftover),
        })
    }

    /// The socket, for readiness polling (a clone shares it).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn conn(&self) -> MutexGuard<'_, ClientConnection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one sealed datagram as one tunnel frame (one TLS record).
    pub fn send(&self, datagram: &[u8]) -> bool {
        let Ok(len) = u16::try_from(datagram.len()) else {
            return false;
        };
        let mut frame = Vec::with_capacity(TUNNEL_PREFIX_LEN + datagram.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(datagram);
        if self.conn().writer().write_all(&frame).is_err() {
            return false;
        }
        self.flush()
    }

    /// Moves whatever rustls has encrypted to the socket; the lock is let go between tries
    /// so a receiver is never kept from reading while the socket is full.
    fn flush(&self) -> bool {
        for _ in 0..WRITE_RETRIES {
            let mut conn = self.conn();
            if !conn.wants_write() {
                return true;
            }
            match conn.write_tls(&mut &self.stream) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    drop(conn);
                    std::thread::yield_now();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel write failed");
                    return false;
                }
            }
        }
        false
    }

    /// Reads what the socket holds (a bounded number of TLS reads), and hands each whole
    /// datagram frame to `each`, in place so that it can be opened there. Keepalives are
    /// skipped. An error means the tunnel is broken (closed, or not TLS any more).
    pub fn read_datagrams(&self, mut each: impl FnMut(&mut [u8])) -> io::Result<TunnelRead> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = TunnelRead::More;
        {
            let mut conn = self.conn();
            for _ in 0..TLS_READS_PER_TURN {
                match conn.read_tls(&mut &self.stream) {
                    Ok(0) => return Err(io::Error::from(ErrorKind::UnexpectedEof)),
                    Ok(_) => {
                        let io_state = conn.process_new_packets().map_err(io::Error::other)?;
                        let waiting = io_state.plaintext_bytes_to_read();
                        if waiting > 0 {
                            let start = inbox.len();
                            inbox.resize(start + waiting, 0);
                            conn.reader().read_exact(&mut inbox[start..])?;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        state = TunnelRead::Exhausted;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut at = 0;
        while let Some(prefix) = inbox.get(at..at + TUNNEL_PREFIX_LEN) {
            let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            if len > MAX_DATAGRAM {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("a tunnel frame of {len} bytes"),
                ));
            }
            let body = at + TUNNEL_PREFIX_LEN..at + TUNNEL_PREFIX_LEN + len;
            if body.end > inbox.len() {
                break;
            }
            if len > 0 {
                each(&mut inbox[body.clone()]);
            }
            at = body.end;
        }
        inbox.drain(..at);
        Ok(state)
    }

    /// Waits up to `limit` for at least one datagram (setup only; the socket stays
    /// non-blocking, so this polls).
    pub fn wait_datagrams(&self, limit: Duration, mut each: impl FnMut(&mut [u8])) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut got = false;
            self.read_datagrams(|datagram| {
                got = true;
                each(datagram);
            })
            .map_err(|e| BenchError::Tls(format!("reading the tunnel: {e}")))?;
            if got || Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::sealed::{KEY_MATERIAL_LEN, Opener, REPLAY_WINDOW};

    fn keys() -> KeyMaterial {
        let mut bytes = [0u8; KEY_MATERIAL_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i * 7) as u8;
        }
        KeyMaterial(bytes)
    }

    #[test]
    fn what_a_member_seals_the_server_opens_with_counters_from_one() {
        let sealing = Sealing::new(42, &keys(), None);
        let server = Opener::new(&keys().to_server());
        let mut out = Vec::new();
        for expected in 1..=3u64 {
            sealing.seal(b"\xff{\"t\":\"ping\"}", &mut out).unwrap();
            let (header, message) = server.open(&mut out).unwrap();
            assert_eq!((header.key_id, header.counter), (42, expected));
            assert_eq!(message, b"\xff{\"t\":\"ping\"}");
        }
    }

    #[test]
    fn what_the_server_seals_opens_once() {
        let sealing = Sealing::new(7, &keys(), None);
        let server = Sealer::new(&keys().to_client());
        let mut window = ReplayWindow::new();
        let header = Header {
            key_id: 7,
            counter: (3 << 40) + 1,
        };
        let sealed = server.seal(header, b"\xff{}").unwrap();
        let mut first = sealed.clone();
        assert_eq!(sealing.open(&mut window, &mut first), Some(&b"\xff{}"[..]));
        let mut replayed = sealed.clone();
        assert_eq!(sealing.open(&mut window, &mut replayed), None);
        let mut forged = server
            .seal(
                Header {
                    counter: header.counter + REPLAY_WINDOW,
                    ..header
                },
                b"\xff{}",
            )
            .unwrap();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(sealing.open(&mut window, &mut forged), None);
        assert_eq!(
            window.newest(),
            header.counter,
            "a forgery does not move the window"
        );
    }
}
