//! Members on the data plane, speaking UCRP from their own UDP sockets: [`UdpMember`] sends
//! raw datagrams (version 1, or anything at all), [`V2Member`] speaks version 2.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use chat_protocol::ucrp::Datagram;

use crate::EVENT_TIMEOUT;

mod v2;

pub use v2::{Replay, V2Member, decode_v2};

/// A member on the data plane, speaking raw UCRP from its own UDP socket.
pub struct UdpMember {
    /// The socket (bound to 127.0.0.1, ephemeral port).
    pub socket: UdpSocket,
    /// The server's data-plane address.
    pub server: SocketAddr,
    /// The room.
    pub room: String,
    /// The token.
    pub token: String,
}

impl UdpMember {
    /// A member with a fresh socket.
    pub fn new(server: SocketAddr, room: &str, token: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set timeout");
        Self {
            socket,
            server,
            room: room.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Sends a message body in this member's envelope.
    pub fn send(&self, message: &[u8]) {
        let datagram = Datagram {
            room: &self.room,
            token: self.token.as_bytes(),
            message,
        }
        .encode()
        .expect("encodable datagram");
        self.send_raw(&datagram);
    }

    /// Sends arbitrary bytes to the server.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.server)
            .expect("send datagram");
    }

    /// Registers (version 1) and waits for the server's welcome notice.
    pub fn register(&self) -> Vec<u8> {
        self.send(b"__REGISTER__");
        self.recv_matching(|d| d.starts_with(b"\x01*welcome to "))
            .expect("the server welcomes a registered member")
    }

    /// The next datagram within `limit`, if any.
    /// Only datagrams from the server count: tests run in parallel, and a port this socket got
    /// may have belonged a moment ago to another test's member, whose server still sends to it.
    pub fn recv_within(&self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) if from == self.server => return Some(buf[..len].to_vec()),
                Ok(_) | Err(_) => continue,
            }
        }
        None
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for a datagram satisfying `wanted`, discarding others.
    pub fn recv_matching(&self, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(datagram) = self.recv_within(Duration::from_millis(200))
                && wanted(&datagram)
            {
                return Some(datagram);
            }
        }
        None
    }

    /// Waits for the version-1 chat frame `[len][sender][text]`.
    pub fn expect_chat(&self, sender: &str, text: &str) {
        let expected = v1_frame(sender, text);
        assert!(
            self.recv_matching(|d| d == expected.as_slice()).is_some(),
            "expected {sender}: {text}"
        );
    }

    /// Receives everything that arrives within `limit` (to check that something did not).
    pub fn drain(&self, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut all = Vec::new();
        while let Some(datagram) =
            self.recv_within(deadline.saturating_duration_since(Instant::now()))
        {
            all.push(datagram);
        }
        all
    }
}

/// The version-1 frame the server sends for chat from `sender`.
pub fn v1_frame(sender: &str, text: &str) -> Vec<u8> {
    let mut frame = vec![u8::try_from(sender.len()).expect("short sender")];
    frame.extend_from_slice(sender.as_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}
