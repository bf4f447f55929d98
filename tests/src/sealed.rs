//! A version-3 member for the server's end-to-end tests: the TCRP exchange inside TLS (the
//! server's certificate pinned by fingerprint, or taken on trust and reported), keys from the
//! TLS exporter, sealed datagrams over UDP or over the TLS connection kept as the tunnel.
//! Everything it sends and receives is recorded, so tests can look for what must never
//! cross the wire in the clear.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_protocol::fingerprint::Fingerprint;
use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::pinning::{self, PinVerifier};
use chat_protocol::sealed::{
    self, EXPORTER_LABEL, Header, KEY_MATERIAL_LEN, KeyMaterial, Opener, ReplayWindow, Sealer,
    TunnelFrame,
};
use chat_protocol::tcrp::{Frame, State};
use chat_protocol::ucrp::V2_MARKER;
use chat_protocol::v2::{ClientV2, ServerV2};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::EVENT_TIMEOUT;

/// Every byte a member sent and received, on either plane.
#[derive(Debug, Default, Clone)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Appends bytes seen on the wire.
    pub fn record(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
    }

    /// Whether `needle` appears anywhere in what was captured.
    pub fn contains(&self, needle: &[u8]) -> bool {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        !needle.is_empty() && bytes.windows(needle.len()).any(|window| window == needle)
    }

    /// How many bytes were captured.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A TCP stream that records what crosses it (TLS records, so ciphertext after the hello).
#[derive(Debug)]
pub struct Recorded {
    stream: TcpStream,
    capture: Capture,
}

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.capture.record(&buf[..n]);
        Ok(n)
    }
}

impl Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.capture.record(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A TLS connection to the control port, recorded.
pub type Tls = StreamOwned<ClientConnection, Recorded>;

/// Opens a TLS connection to `tcp`; returns it and the server's fingerprint.
pub fn tls_connect(
    tcp: SocketAddr,
    pin: Option<Fingerprint>,
    capture: &Capture,
) -> Result<(Tls, Fingerprint), String> {
    let seen = Arc::new(Mutex::new(None));
    let config = pinning::client_config(PinVerifier::new(pin, false, Arc::clone(&seen)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("chat-server").map_err(|e| e.to_string())?;
    let connection = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let stream = TcpStream::connect_timeout(&tcp, EVENT_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(EVENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(
        connection,
        Recorded {
            stream,
            capture: capture.clone(),
        },
    );
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let fingerprint = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .ok_or("the server showed no certificate")?;
    Ok((tls, fingerprint))
}

/// One TCRP exchange inside TLS: the two reply frames. The connection stays open (it is the
/// tunnel after a grant or attach).
pub fn tls_exchange(
    tls: &mut Tls,
    operation: u8,
    room: &str,
    payload: &[u8],
) -> Result<(Frame, Frame), String> {
    let request = Frame::new(operation, State::Request, room, payload.to_vec())
        .encode()
        .map_err(|e| e.to_string())?;
    tls.write_all(&request).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut frames = Vec::new();
    while frames.len() < 2 {
        if let Ok(Some((frame, used))) = Frame::decode(&buf) {
            frames.push(frame);
            buf.drain(..used);
            continue;
        }
        let n = tls.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed before both replies".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let complete = frames.pop().ok_or("no reply")?;
    let compliance = frames.pop().ok_or("no reply")?;
    Ok((compliance, complete))
}

/// A version-3 member.
pub struct SealedMember {
    /// The room, as the grant named it.
    pub room: String,
    /// Its token (never sent after the handshake).
    pub token: String,
    /// Its username.
    pub username: String,
    /// The key id of its datagrams.
    pub key_id: u32,
    /// The server's fingerprint, as seen.
    pub fingerprint: Fingerprint,
    /// Every byte sent and received, both planes.
    pub capture: Capture,
    /// The last sealed datagram sent, for replay tests.
    pub last_sent: Vec<u8>,
    sealer: Sealer,
    opener: Opener,
    window: ReplayWindow,
    counter: u64,
    /// The UDP socket.
    pub udp: UdpSocket,
    server_udp: SocketAddr,
    tunnel: Option<Tls>,
    tunnel_buf: Vec<u8>,
    set_aside: VecDeque<ServerV2>,
}

impl SealedMember {
    /// Creates (operation 1), joins (2) or pairs (3) over TLS as `name`.
    pub fn handshake(
        server: &crate::ServerProcess,
        operation: u8,
        room: &str,
        name: &str,
    ) -> Result<Self, String> {
        let capture = Capture::default();
        let (mut tls, fingerprint) = tls_connect(server.tcp, None, &capture)?;
        let payload = serde_json::to_vec(name).map_err(|e| e.to_string())?;
        let (compliance, complete) = tls_exchange(&mut tls, operation, room, &payload)?;
        let accepted: serde_json::Value =
            serde_json::from_slice(&compliance.payload).map_err(|e| e.to_string())?;
        if accepted["success"] != 1 {
            return Err(format!("refused: {accepted}"));
        }
        let grant: serde_json::Value =
            serde_json::from_slice(&complete.payload).map_err(|e| e.to_string())?;
        let key_id = grant["key_id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("a grant over TLS without key_id: {grant}"))?;
        let keys = export(&tls)?;
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(Self {
            room: grant["room"].as_str().unwrap_or(room).to_owned(),
            token: grant["token"].as_str().unwrap_or_default().to_owned(),
            username: name.to_owned(),
            key_id,
            fingerprint,
            capture,
            last_sent: Vec::new(),
            sealer: Sealer::new(&keys.to_server()),
            opener: Opener::new(&keys.to_client()),
            window: ReplayWindow::new(),
            counter: 0,
            udp,
            server_udp: server.udp,
            tunnel: Some(tls),
            tunnel_buf: Vec::new(),
            set_aside: VecDeque::new(),
        })
    }

    /// Joins `room` as `name` over TLS and registers over UDP.
    pub fn joined(server: &crate::ServerProcess, room: &str, name: &str) -> Self {
        let mut member = Self::handshake(server, 2, room, name).expect("a sealed join");
        member.register(None);
        member
    }

    /// Attaches a new TLS connection to this membership (operation 5): new keys, new tunnel.
    pub fn attach(&mut self, tcp: SocketAddr) -> Result<(), String> {
        let (mut tls, _) = tls_connect(tcp, Some(self.fingerprint), &self.capture)?;
        let payload = serde_json::json!({ "token": self.token }).to_string();
        let (compliance, complete) = tls_exchange(&mut tls, 5, &self.room, payload.as_bytes())?;
        let accepted: serde_json::Value =
            serde_json::from_slice(&compliance.payload).map_err(|e| e.to_string())?;
        if accepted["success"] != 1 {
            return Err(format!("attach refused: {accepted}"));
        }
        let grant: serde_json::Value =
            serde_json::from_slice(&complete.payload).map_err(|e| e.to_string())?;
        if grant["key_id"].as_u64() != Some(u64::from(self.key_id)) {
            return Err(format!("attach changed the key id: {grant}"));
        }
        let keys = export(&tls)?;
        self.sealer = Sealer::new(&keys.to_server());
        self.opener = Opener::new(&keys.to_client());
        self.window = ReplayWindow::new();
        self.counter = 0;
        self.tunnel = Some(tls);
        self.tunnel_buf.clear();
        Ok(())
    }

    /// Seals a version-2 message with the next counter.
    pub fn seal(&mut self, message: &ClientV2) -> Vec<u8> {
        let mut body = vec![V2_MARKER];
        body.extend(serde_json::to_vec(message).expect("client messages encode"));
        self.counter += 1;
        let header = Header {
            key_id: self.key_id,
            counter: self.counter,
        };
        self.sealer
            .seal(header, &body)
            .expect("a message that fits")
    }

    /// Sends a message sealed over UDP.
    pub fn send(&mut self, message: &ClientV2) {
        let datagram = self.seal(message);
        self.send_raw(&datagram);
        self.last_sent = datagram;
    }

    /// Sends bytes over UDP as they are.
    pub fn send_raw(&self, datagram: &[u8]) {
        self.capture.record(datagram);
        self.udp
            .send_to(datagram, self.server_udp)
            .expect("send a datagram");
    }

    /// Sends a message sealed through the tunnel.
    pub fn send_tunnel(&mut self, message: &ClientV2) {
        let datagram = self.seal(message);
        let frame = sealed::tunnel_frame(&datagram).expect("a frame");
        let tls = self.tunnel.as_mut().expect("a tunnel");
        tls.write_all(&frame).expect("write to the tunnel");
        tls.flush().expect("flush the tunnel");
        self.last_sent = datagram;
    }

    /// Opens a sealed datagram from the server; `None` for anything that does not open,
    /// or repeats a counter.
    fn open(&mut self, datagram: &mut [u8]) -> Option<ServerV2> {
        let header = Header::peek(datagram)?;
        self.window.check(header.counter).ok()?;
        let (_, message) = self.opener.open(datagram).ok()?;
        let message = message.to_vec();
        self.window.accept(header.counter).ok()?;
        let json = message.strip_prefix(&[V2_MARKER])?;
        serde_json::from_slice(json).ok()
    }

    /// The next event over UDP or the tunnel within `limit` (set-aside ones first).
    pub fn next_event_within(&mut self, limit: Duration) -> Option<ServerV2> {
        if let Some(event) = self.set_aside.pop_front() {
            return Some(event);
        }
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        while Instant::now() < deadline {
            if let Some(mut datagram) = self.next_tunnel_datagram() {
                if let Some(event) = self.open(&mut datagram) {
                    return Some(event);
                }
                continue;
            }
            let _ = self.udp.set_read_timeout(Some(Duration::from_millis(20)));
            if let Ok((n, _)) = self.udp.recv_from(&mut buf) {
                self.capture.record(&buf[..n]);
                if let Some(event) = self.open(&mut buf[..n].to_vec()) {
                    return Some(event);
                }
            }
        }
        None
    }

    fn next_tunnel_datagram(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Ok(Some((frame, used))) = sealed::decode_tunnel_frame(&self.tunnel_buf) {
                let datagram = match frame {
                    TunnelFrame::Datagram(datagram) => Some(datagram.to_vec()),
                    TunnelFrame::Keepalive => None,
                };
                self.tunnel_buf.drain(..used);
                match datagram {
                    Some(datagram) => return Some(datagram),
                    None => continue,
                }
            }
            let tls = self.tunnel.as_mut()?;
            let _ = tls
                .sock
                .stream
                .set_read_timeout(Some(Duration::from_millis(20)));
            let mut chunk = [0u8; 8192];
            match tls.read(&mut chunk) {
                Ok(0) => {
                    self.tunnel = None;
                    return None;
                }
                Ok(n) => self.tunnel_buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for an event satisfying `wanted`, setting aside the
    /// others; panics with what came instead.
    pub fn expect(&mut self, what: &str, wanted: impl Fn(&ServerV2) -> bool) -> ServerV2 {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut others = Vec::new();
        while Instant::now() < deadline {
            if let Some(event) = self.next_event_within(Duration::from_millis(100)) {
                if wanted(&event) {
                    self.set_aside.extend(others);
                    return event;
                }
                others.push(event);
            }
        }
        panic!("timed out waiting for {what}; received instead: {others:?}");
    }

    /// Registers over UDP: answers the challenge, and waits for the `pong` that ends the
    /// registration.
    pub fn register(&mut self, last_id: Option<u64>) {
        self.send(&ClientV2::Register { last_id });
        let challenge = self.expect("a challenge", |e| matches!(e, ServerV2::Challenge { .. }));
        let ServerV2::Challenge { nonce } = challenge else {
            unreachable!()
        };
        self.send(&ClientV2::Echo { nonce });
        self.expect("the pong after registering", |e| {
            matches!(e, ServerV2::Pong { .. })
        });
    }

    /// Registers through the tunnel (no challenge: the connection proves the keys).
    pub fn register_tunnel(&mut self, last_id: Option<u64>) {
        self.send_tunnel(&ClientV2::Register { last_id });
        self.expect("the pong after registering through the tunnel", |e| {
            matches!(e, ServerV2::Pong { .. })
        });
    }

    /// Says `text` as `seq` over UDP and waits for its ack; returns the id.
    pub fn say(&mut self, seq: u64, text: &str) -> u64 {
        self.send(&ClientV2::Msg {
            seq,
            text: text.to_owned(),
        });
        self.expect_ack(seq)
    }

    /// Waits for the ack of `seq`; returns the id.
    pub fn expect_ack(&mut self, seq: u64) -> u64 {
        match self.expect(
            "an ack",
            |e| matches!(e, ServerV2::Ack { seq: s, .. } if *s == seq),
        ) {
            ServerV2::Ack { id, .. } => id,
            _ => unreachable!(),
        }
    }

    /// Waits for the chat message with this text; returns its id.
    pub fn expect_text(&mut self, text: &str) -> u64 {
        match self.expect(text, |e| matches!(e, ServerV2::Msg(m) if m.text == text)) {
            ServerV2::Msg(message) => message.id,
            _ => unreachable!(),
        }
    }

    /// Drops the tunnel connection.
    pub fn close_tunnel(&mut self) {
        self.tunnel = None;
    }
}

fn export(tls: &Tls) -> Result<KeyMaterial, String> {
    tls.conn
        .export_keying_material([0u8; KEY_MATERIAL_LEN], EXPORTER_LABEL, None)
        .map(KeyMaterial)
        .map_err(|e| e.to_string())
}
