//! A benchmark member: one UDP socket on 127.0.0.1 with its UCRP envelope (room and token)
//! already encoded, and the registration dance: version 1 sends `__REGISTER__` until the
//! server's `welcome to` notice arrives, version 2 sends `register` until both the `members`
//! confirmation and the closing `pong` arrived.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed::ReplayWindow;
use chat_protocol::ucrp::{Datagram, NOTICE_SENDER, REGISTER, ServerDatagram};
use chat_protocol::v2::{ClientV2, ServerV2};
use socket2::{Domain, Socket, Type};

use crate::error::{BenchError, Result};
use crate::keepalive::LastSend;
use crate::sealed::{Sealing, Tunnel};
use crate::wire::{Protocol, append_v2};

/// How long to wait for the confirmation before registering again.
const REGISTER_RETRY: Duration = Duration::from_millis(250);
/// How many register datagrams to send before giving up.
const REGISTER_ATTEMPTS: u32 = 20;
/// The text a registration notice starts with.
pub const WELCOME_PREFIX: &str = "welcome to";

/// Socket buffer sizes asked of the kernel (it caps them at net.core.rmem_max / wmem_max).
#[derive(Debug, Clone, Copy)]
pub struct BufferSizes {
    /// SO_RCVBUF in bytes.
    pub receive: usize,
    /// SO_SNDBUF in bytes.
    pub send: usize,
}

/// One room member as the load generator sees it.
#[derive(Debug)]
pub struct Member {
    /// The member's username.
    pub username: String,
    /// Index of its room in the layout.
    pub room_index: usize,
    /// Its socket; the address the server has registered for its token.
    pub socket: UdpSocket,
    /// `[room len][token len][room][token]`, the prefix of every datagram it sends.
    pub envelope: Vec<u8>,
    /// The last version-2 `seq` it sent (0: none yet). It counts on across runs: the server
    /// acks a repeated seq again but never relays it twice.
    v2_seq: AtomicU64,
    /// When it last sent anything, shared with the keepalive.
    last_send: Arc<LastSend>,
    /// Version 3: its keys, and its tunnel if it uses one.
    sealing: Option<Arc<Sealing>>,
}

impl Member {
    /// Binds a fresh loopback socket for a member of `room` holding `token`.
    pub fn new(
        username: String,
        room_index: usize,
        room: &str,
        token: &[u8],
        buffers: BufferSizes,
    ) -> Result<Self> {
        let envelope = Datagram {
            room,
            token,
            message: &[],
        }
        .encode()
        .map_err(|e| BenchError::InvalidArguments(format!("cannot frame room {room:?}: {e}")))?;
        Ok(Self {
            username,
            room_index,
            socket: loopback_socket(Some(buffers))?,
            envelope,
            v2_seq: AtomicU64::new(0),
            last_send: Arc::new(LastSend::now()),
            sealing: None,
        })
    }

    /// A version-3 member: no envelope (the key id in each sealed header says who sends),
    /// its keys, and its tunnel if it sends and receives through one. It still gets a UDP
    /// socket, unused by a tunnel member.
    pub fn sealed(
        username: String,
        room_index: usize,
        sealing: Sealing,
        buffers: BufferSizes,
    ) -> Result<Self> {
        Ok(Self {
            username,
            room_index,
            socket: loopback_socket(Some(buffers))?,
            envelope: Vec::new(),
            v2_seq: AtomicU64::new(0),
            last_send: Arc::new(LastSend::now()),
            sealing: Some(Arc::new(sealing)),
        })
    }

    /// Its version-3 keys and tunnel, if it is a version-3 member.
    pub fn sealing(&self) -> Option<&Arc<Sealing>> {
        self.sealing.as_ref()
    }

    /// Its tunnel, if it sends and receives through one.
    pub fn tunnel(&self) -> Option<&Tunnel> {
        self.sealing.as_deref().and_then(Sealing::tunnel)
    }

    /// The `seq` its next version-2 chat message carries.
    pub fn next_v2_seq(&self) -> u64 {
        // Only the pacer thread sends chat, so the counter needs no stronger ordering.
        self.v2_seq.load(Ordering::Relaxed) + 1
    }

    /// Records that the message with `seq` left; a send that failed does not use up its seq,
    /// so the server never waits on a gap this tool made.
    pub fn v2_seq_sent(&self, seq: u64) {
        self.v2_seq.store(seq, Ordering::Relaxed);
    }

    /// When it last sent anything.
    pub fn last_send(&self) -> &Arc<LastSend> {
        &self.last_send
    }

    /// Appends this member's envelope followed by `message` to `out`.
    pub fn frame_into(&self, message: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.envelope);
        out.extend_from_slice(message);
    }

    /// Registers with `relay` in `protocol`, resending the register datagram until the
    /// server confirmed it: version 1 by the `*` notice starting with `welcome to`, version 2 by
    /// the `members` reply and the `pong` that ends the answer (they may come in reply to
    /// different attempts). Other datagrams in between (replayed history, join notices of
    /// others) are ignored.
    pub fn register(&self, relay: SocketAddr, room: &str, protocol: Protocol) -> Result<()> {
        if let Some(sealing) = &self.sealing {
            return self.register_sealed(sealing, relay, room);
        }
        let mut datagram = self.envelope.clone();
        let mut answer = RegisterAnswer::default();
        match protocol {
            Protocol::V1 => datagram.extend_from_slice(REGISTER),
            _ => append_v2(&ClientV2::Register { last_id: None }, &mut datagram),
        }
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        for attempt in 1..=REGISTER_ATTEMPTS {
            self.socket
                .send_to(&datagram, relay)
                .map_err(BenchError::socket("sending a register"))?;
            self.last_send.touch();
            let deadline = Instant::now() + REGISTER_RETRY;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(BenchError::socket("setting a read timeout"))?;
                match self.socket.recv_from(&mut buf) {
                    Ok((len, from)) if from == relay => {
                        // A first registration is answered with a challenge: echo it from
                        // this socket to prove the address.
                        if let Ok(ServerDatagram::V2(ServerV2::Challenge { nonce })) =
                            ServerDatagram::decode(&buf[..len])
                        {
                            let mut echo = self.envelope.clone();
                            append_v2(&ClientV2::Echo { nonce }, &mut echo);
                            self.socket
                                .send_to(&echo, relay)
                                .map_err(BenchError::socket("sending an echo"))?;
                            continue;
                        }
                        if answer.confirms(protocol, &buf[..len]) {
                            tracing::trace!(member = %self.username, attempt, "registered");
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    // A socket with a read timeout is not restarted after the process was
                    // stopped and continued (signal(7)): EINTR is just another wake-up.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(BenchError::socket("waiting for the confirmation")(e)),
                }
            }
        }
        Err(BenchError::RegisterTimeout {
            member: self.username.clone(),
            room: room.to_owned(),
            attempts: REGISTER_ATTEMPTS,
        })
    }
}

impl Member {
    /// Registers a version-3 member. Over UDP: a sealed `register`, answered with a sealed
    /// `challenge` that it echoes (sealed) from the same socket, resent until `members` and
    /// `pong` came. Through the tunnel: a sealed `register` there binds it at once, no
    /// challenge (the connection proved the keys), and TCP loses nothing, so it is sent once.
    fn register_sealed(&self, sealing: &Sealing, relay: SocketAddr, room: &str) -> Result<()> {
        let mut message = Vec::new();
        append_v2(&ClientV2::Register { last_id: None }, &mut message);
        let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
        let sealed = |message: &[u8], datagram: &mut Vec<u8>| {
            sealing
                .seal(message, datagram)
                .map_err(|e| BenchError::Tls(format!("sealing a register: {e}")))
        };
        let mut answer = RegisterAnswer::default();
        let mut window = ReplayWindow::new();
        if let Some(tunnel) = sealing.tunnel() {
            sealed(&message, &mut datagram)?;
            if !tunnel.send(&datagram) {
                return Err(BenchError::Tls(
                    "sending a register through the tunnel".into(),
                ));
            }
            self.last_send.touch();
            let deadline = Instant::now() + REGISTER_RETRY * REGISTER_ATTEMPTS;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let mut confirmed = false;
                tunnel.wait_datagrams(left, |datagram| {
                    if let Some(message) = sealing.open(&mut window, datagram) {
                        confirmed |= answer.confirms(Protocol::V3Tunnel, message);
                    }
                })?;
                if confirmed {
                    return Ok(());
                }
            }
            return Err(BenchError::RegisterTimeout {
                member: self.username.clone(),
                room: room.to_owned(),
                attempts: 1,
            });
        }
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        for attempt in 1..=REGISTER_ATTEMPTS {
            sealed(&message, &mut datagram)?;
            self.socket
                .send_to(&datagram, relay)
                .map_err(BenchError::socket("sending a register"))?;
            self.last_send.touch();
            let deadline = Instant::now() + REGISTER_RETRY;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(BenchError::socket("setting a read timeout"))?;
                let len = match self.socket.recv_from(&mut buf) {
                    Ok((len, from)) if from == relay => len,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(BenchError::socket("waiting for the confirmation")(e)),
                };
                let Some(message) = sealing.open(&mut window, &mut buf[..len]) else {
                    continue;
                };
                if let Ok(ServerDatagram::V2(ServerV2::Challenge { nonce })) =
                    ServerDatagram::decode(message)
                {
                    let mut echo = Vec::new();
                    append_v2(&ClientV2::Echo { nonce }, &mut echo);
                    sealed(&echo, &mut datagram)?;
                    self.socket
                        .send_to(&datagram, relay)
                        .map_err(BenchError::socket("sending an echo"))?;
                    continue;
                }
                if answer.confirms(Protocol::V3, message) {
                    tracing::trace!(member = %self.username, attempt, "registered (sealed)");
                    return Ok(());
                }
            }
        }
        Err(BenchError::RegisterTimeout {
            member: self.username.clone(),
            room: room.to_owned(),
            attempts: REGISTER_ATTEMPTS,
        })
    }
}

/// What a registering member has heard back so far.
#[derive(Debug, Default)]
struct RegisterAnswer {
    members: bool,
    pong: bool,
}

impl RegisterAnswer {
    /// Takes one datagram from the server; true once registration is confirmed.
    fn confirms(&mut self, protocol: Protocol, datagram: &[u8]) -> bool {
        match protocol {
            Protocol::V1 => is_welcome(datagram),
            // Version 3's messages are version 2's, once opened.
            Protocol::V2 | Protocol::V3 | Protocol::V3Tunnel => {
                match ServerDatagram::decode(datagram) {
                    Ok(ServerDatagram::V2(ServerV2::Members { .. })) => self.members = true,
                    Ok(ServerDatagram::V2(ServerV2::Pong { .. })) => self.pong = true,
                    _ => {}
                }
                self.members && self.pong
            }
        }
    }
}

/// Whether a server datagram is the registration notice.
pub fn is_welcome(datagram: &[u8]) -> bool {
    matches!(
        ServerDatagram::decode(datagram),
        Ok(ServerDatagram::Chat { sender, text }) if sender == NOTICE_SENDER && text.starts_with(WELCOME_PREFIX)
    )
}

/// A UDP socket bound to an ephemeral port on 127.0.0.1, with the given buffers or the
/// kernel's defaults.
pub fn loopback_socket(buffers: Option<BufferSizes>) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(BenchError::socket("creating a UDP socket"))?;
    if let Some(buffers) = buffers {
        // Asking for more than the kernel's maximum is not an error; it silently caps.
        socket
            .set_recv_buffer_size(buffers.receive)
            .map_err(BenchError::socket("setting SO_RCVBUF"))?;
        socket
            .set_send_buffer_size(buffers.send)
            .map_err(BenchError::socket("setting SO_SNDBUF"))?;
    }
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
        .map_err(BenchError::socket("binding a UDP socket on 127.0.0.1"))?;
    Ok(socket.into())
}

/// `recv_from`, asked again when a stop and continue of the process interrupted it (a socket
/// with a read timeout is not restarted then, signal(7)); at most 100 times. For tests.
#[cfg(test)]
pub fn recv_from_retrying(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    let mut interrupted = 0;
    loop {
        match socket.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && interrupted < 100 => {
                interrupted += 1;
            }
            other => return other,
        }
    }
}

/// Silence the relay must keep before a run may start.
const QUIET_PERIOD: Duration = Duration::from_millis(200);
/// How often member queues are emptied while waiting for silence.
const QUIET_CHECK: Duration = Duration::from_millis(50);

/// Empties every member's receive queue until nothing has arrived for 200 ms, or `limit`
/// passed: join notices of later registrations, and the backlog an overloaded relay still
/// works through after an earlier run, must not leak into the next measurement. Returns how
/// many datagrams were thrown away.
pub fn quiesce(members: &[Member], limit: Duration) -> Result<u64> {
    let deadline = Instant::now() + limit;
    let mut quiet_since = Instant::now();
    let mut drained = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    for member in members {
        member
            .socket
            .set_nonblocking(true)
            .map_err(BenchError::socket("draining member sockets"))?;
    }
    while Instant::now() < deadline && quiet_since.elapsed() < QUIET_PERIOD {
        std::thread::sleep(QUIET_CHECK);
        let mut this_round = 0u64;
        for member in members {
            // Bounded: one pass takes at most what the queue held.
            for _ in 0..100_000 {
                if member.socket.recv_from(&mut buf).is_err() {
                    break;
                }
                this_round += 1;
            }
            if let Some(tunnel) = member.tunnel() {
                // Read through TLS and the frames (their boundaries must be kept), then
                // thrown away; a broken tunnel shows up in the run itself.
                for _ in 0..1000 {
                    match tunnel.read_datagrams(|_| this_round += 1) {
                        Ok(crate::sealed::TunnelRead::More) => {}
                        Ok(crate::sealed::TunnelRead::Exhausted) | Err(_) => break,
                    }
                }
            }
        }
        if this_round > 0 {
            drained += this_round;
            quiet_since = Instant::now();
        }
    }
    for member in members {
        member
            .socket
            .set_nonblocking(false)
            .map_err(BenchError::socket("draining member sockets"))?;
    }
    if quiet_since.elapsed() < QUIET_PERIOD {
        tracing::warn!(
            drained,
            "the relay was still sending when the quiet wait ran out; the next run may see its backlog"
        );
    }
    Ok(drained)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_star_welcome_counts() {
        assert!(is_welcome(b"\x01*welcome to lobby, m0; here now: m0"));
        assert!(!is_welcome(b"\x01*m1 joined"));
        assert!(!is_welcome(b"\x02m0welcome to lobby"));
        assert!(!is_welcome(b"__ROOM_CLOSED__"));
    }

    #[test]
    fn registration_retries_until_welcomed() {
        let buffers = BufferSizes {
            receive: 1 << 16,
            send: 1 << 16,
        };
        let relay = loopback_socket(None).unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let member = Member::new("m0".into(), 0, "lobby", &[b'a'; 64], buffers).unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ignore the first register, as a lossy network would, and answer the second.
            let (len, _) = relay.recv_from(&mut buf).unwrap();
            let first = buf[..len].to_vec();
            let (len, from) = relay.recv_from(&mut buf).unwrap();
            assert_eq!(first, &buf[..len]);
            relay.send_to(b"\x01*m9 joined", from).unwrap();
            relay.send_to(b"\x01*welcome to lobby, m0", from).unwrap();
            first
        });
        member.register(relay_addr, "lobby", Protocol::V1).unwrap();
        let datagram = responder.join().unwrap();
        let parsed = Datagram::decode(&datagram).unwrap();
        assert_eq!(parsed.room, "lobby");
        assert_eq!(parsed.message, REGISTER);
    }

    #[test]
    fn v2_registration_waits_for_members_and_pong_across_attempts() {
        let buffers = BufferSizes {
            receive: 1 << 16,
            send: 1 << 16,
        };
        let relay = loopback_socket(None).unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let member = Member::new("m1".into(), 0, "lobby", &[b'a'; 64], buffers).unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // The first answer loses its pong, as a lossy network would; a replayed message
            // and someone's join in between must not confirm anything.
            let (len, from) = relay.recv_from(&mut buf).unwrap();
            let first = buf[..len].to_vec();
            relay
                .send_to(
                    b"\xff{\"t\":\"members\",\"names\":[\"m0\",\"m1\"],\"host\":\"m0\"}",
                    from,
                )
                .unwrap();
            relay
                .send_to(
                    b"\xff{\"t\":\"msg\",\"id\":1,\"from\":\"m0\",\"text\":\"hi\",\"ts\":5}",
                    from,
                )
                .unwrap();
            let (len, from) = relay.recv_from(&mut buf).unwrap();
            assert_eq!(first, &buf[..len], "the same register is sent again");
            relay
                .send_to(b"\xff{\"t\":\"joined\",\"name\":\"m2\"}", from)
                .unwrap();
            relay
                .send_to(b"\xff{\"t\":\"pong\",\"id\":1}", from)
                .unwrap();
            first
        });
        member.register(relay_addr, "lobby", Protocol::V2).unwrap();
        let datagram = responder.join().unwrap();
        let parsed = Datagram::decode(&datagram).unwrap();
        assert_eq!(parsed.message, b"\xff{\"t\":\"register\"}");
    }

    #[test]
    fn the_v2_seq_counts_from_one_and_only_past_sent_messages() {
        let buffers = BufferSizes {
            receive: 1 << 16,
            send: 1 << 16,
        };
        let member = Member::new("m0".into(), 0, "lobby", &[b'a'; 64], buffers).unwrap();
        assert_eq!(member.next_v2_seq(), 1);
        assert_eq!(member.next_v2_seq(), 1, "asking does not use it up");
        member.v2_seq_sent(1);
        assert_eq!(member.next_v2_seq(), 2);
    }
}
