//! The server's side, scripted by each test: a TCP listener for one handshake, a UDP socket
//! for the datagrams.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use chat_protocol::tcrp::{Compliance, Frame, Grant, State, to_json_payload};
use chat_protocol::ucrp::{ClientMessage, Datagram, V2_MARKER, encode_v2};
use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2};
use chat_tests::EVENT_TIMEOUT;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The server side: a TCP listener for one handshake, a UDP socket for the datagrams.
pub struct FakeServer {
    tcp: TcpListener,
    pub udp: UdpSocket,
    pub client: Option<SocketAddr>,
}

impl FakeServer {
    pub fn new() -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set the UDP read timeout");
        Self {
            tcp: TcpListener::bind("127.0.0.1:0").expect("bind a TCP listener on 127.0.0.1"),
            udp,
            client: None,
        }
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp
            .local_addr()
            .expect("the listener has an address")
            .port()
    }

    /// Answers one handshake with `compliance` and `complete`, returning the request.
    pub fn answer_handshake(&self, compliance: &Compliance, complete: Vec<u8>) -> Frame {
        let (mut stream, _) = self.tcp.accept().expect("accept the client's connection");
        stream
            .set_read_timeout(Some(EVENT_TIMEOUT))
            .expect("set the TCP read timeout");
        let mut buffer = Vec::new();
        let request = loop {
            if let Some((frame, _)) =
                Frame::decode(&buffer).expect("the client sends a well-formed frame")
            {
                break frame;
            }
            let mut chunk = [0u8; 1024];
            let read = stream.read(&mut chunk).expect("read the request");
            assert!(read > 0, "the client closed before sending its request");
            buffer.extend_from_slice(&chunk[..read]);
        };
        let op = request.operation;
        let mut reply = Frame::new(op, State::Compliance, "lobby", to_json_payload(compliance))
            .encode()
            .expect("encodable reply");
        reply.extend(
            Frame::new(op, State::Complete, "lobby", complete)
                .encode()
                .expect("encodable reply"),
        );
        stream.write_all(&reply).expect("send the replies");
        request
    }

    /// Grants `username` a membership in "lobby" whose datagrams go to this fake.
    pub fn grant(&self, username: &str) -> Frame {
        let grant = Grant {
            token: TOKEN.into(),
            room: Some("lobby".into()),
            username: Some(username.into()),
            host: Some(false),
            udp_port: Some(
                self.udp
                    .local_addr()
                    .expect("the UDP socket has an address")
                    .port(),
            ),
            send_burst: None,
            send_interval_ms: None,
            http_port: None,
            key_id: None,
        };
        self.answer_handshake(&Compliance::accepted(), to_json_payload(&grant))
    }

    /// The next version-2 message from the client within the event timeout.
    pub fn next(&mut self) -> ClientV2 {
        self.next_matching(|_| true)
    }

    /// The next version-2 message from the client that `wanted` accepts.
    pub fn next_matching(&mut self, wanted: impl Fn(&ClientV2) -> bool) -> ClientV2 {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut buffer = [0u8; 8192];
        while Instant::now() < deadline {
            let Ok((len, from)) = self.udp.recv_from(&mut buffer) else {
                continue;
            };
            let datagram =
                Datagram::decode(&buffer[..len]).expect("the client sends well-formed envelopes");
            assert_eq!(datagram.room, "lobby");
            assert_eq!(datagram.token, TOKEN.as_bytes());
            assert_eq!(datagram.message.first(), Some(&V2_MARKER), "version 2");
            let ClientMessage::V2(message) = ClientMessage::decode(datagram.message)
                .expect("the client sends well-formed messages")
            else {
                panic!("not a version-2 message");
            };
            self.client = Some(from);
            if wanted(&message) {
                return message;
            }
        }
        panic!("the client sent nothing wanted in time");
    }

    pub fn send(&self, message: &ServerV2) {
        let mut datagram = Vec::new();
        encode_v2(message, &mut datagram);
        let client = self.client.expect("the client spoke first");
        self.udp
            .send_to(&datagram, client)
            .expect("send a datagram to the client");
    }

    /// Confirms a first registration: members, join history, pong.
    pub fn welcome(&mut self, names: &[&str], history: &[ChatMessage], latest: u64) {
        assert_eq!(self.next(), ClientV2::Register { last_id: None });
        self.send(&ServerV2::Members {
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            host: names[0].to_owned(),
            more: 0,
            topic: None,
            away: Default::default(),
        });
        for message in history {
            self.send(&ServerV2::Msg(message.clone()));
        }
        self.send(&ServerV2::Pong { id: latest });
    }
}
