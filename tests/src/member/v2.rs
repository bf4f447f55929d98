//! A version-2 member: `0xFF` + JSON in its envelope, the server's replies decoded as
//! [`ServerV2`] events, with what arrived while waiting for something else set aside.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::V2_MARKER;
use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2};

use super::UdpMember;
use crate::EVENT_TIMEOUT;

/// A version-2 member on the data plane: sends `0xFF` + JSON in its envelope and reads the
/// server's `0xFF` + JSON replies as [`ServerV2`] events.
pub struct V2Member {
    /// The raw member underneath (socket, room, token).
    pub udp: UdpMember,
    /// Datagrams that arrived while waiting for something else (an ack, a history page),
    /// handed out again, in arrival order, before anything newer.
    set_aside: RefCell<VecDeque<Vec<u8>>>,
}

/// What a version-2 `register` (or `ping`) was answered with.
#[derive(Debug)]
pub struct Replay {
    /// The `members` confirmation (register only).
    pub members: Option<(Vec<String>, String)>,
    /// Replayed messages, in the order they arrived.
    pub messages: Vec<ChatMessage>,
    /// The newest stored id the closing `pong` announced.
    pub latest: u64,
    /// Any other event that arrived before the `pong`.
    pub other: Vec<ServerV2>,
}

impl Replay {
    /// The ids of the replayed messages.
    pub fn ids(&self) -> Vec<u64> {
        self.messages.iter().map(|message| message.id).collect()
    }
}

/// Decodes a datagram the server sent a version-2 member; panics on anything else, which is
/// what a version-2 member must never receive.
pub fn decode_v2(datagram: &[u8]) -> ServerV2 {
    let Some((&V2_MARKER, json)) = datagram.split_first() else {
        panic!(
            "a version-2 member received a datagram without the 0xFF marker: {:?}",
            String::from_utf8_lossy(datagram)
        );
    };
    serde_json::from_slice(json).unwrap_or_else(|error| {
        panic!(
            "undecodable version-2 datagram ({error}): {}",
            String::from_utf8_lossy(json)
        )
    })
}

impl V2Member {
    /// A member with a fresh socket (not registered yet).
    pub fn new(server: SocketAddr, room: &str, token: &str) -> Self {
        Self::from_udp(UdpMember::new(server, room, token))
    }

    /// A member that joined `room` as `name` over TCP and registered from a fresh socket.
    pub fn joined(server: &crate::ServerProcess, room: &str, name: &str) -> Self {
        let token = crate::join(server.tcp, room, name).token();
        let member = Self::new(server.udp, room, &token);
        member.register(None);
        member
    }

    /// A version-2 member over an existing raw member (e.g. one sharing another's socket).
    pub fn from_udp(udp: UdpMember) -> Self {
        Self {
            udp,
            set_aside: RefCell::default(),
        }
    }

    /// Sends a version-2 message.
    pub fn send(&self, message: &ClientV2) {
        let json = serde_json::to_vec(message).expect("client messages encode");
        self.send_json_bytes(&json);
    }

    /// Sends arbitrary JSON after the `0xFF` marker.
    pub fn send_json_bytes(&self, json: &[u8]) {
        let mut body = vec![V2_MARKER];
        body.extend_from_slice(json);
        self.udp.send(&body);
    }

    /// Sends a chat message without waiting for anything.
    pub fn send_msg(&self, seq: u64, text: &str) {
        self.send(&ClientV2::Msg {
            seq,
            text: text.to_owned(),
        });
    }

    /// The next datagram within `limit`, as raw bytes (set-aside ones first).
    pub fn recv_raw_within(&self, limit: Duration) -> Option<Vec<u8>> {
        if let Some(datagram) = self.set_aside.borrow_mut().pop_front() {
            return Some(datagram);
        }
        self.udp.recv_within(limit)
    }

    /// Puts datagrams back in front of everything not yet handed out, in the given order.
    fn set_aside(&self, datagrams: Vec<Vec<u8>>) {
        let mut queue = self.set_aside.borrow_mut();
        for datagram in datagrams.into_iter().rev() {
            queue.push_front(datagram);
        }
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for a datagram satisfying `wanted`, setting aside the
    /// others for later reads.
    fn wait_setting_aside(&self, what: &str, wanted: impl Fn(&ServerV2) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut others = Vec::new();
        while Instant::now() < deadline {
            if let Some(datagram) = self.recv_raw_within(Duration::from_millis(200)) {
                if wanted(&decode_v2(&datagram)) {
                    self.set_aside(others);
                    return datagram;
                }
                others.push(datagram);
            }
        }
        let others: Vec<ServerV2> = others.iter().map(|d| decode_v2(d)).collect();
        panic!("timed out waiting for {what}; received instead: {others:?}");
    }

    /// The next event within `limit`.
    pub fn next_event_within(&self, limit: Duration) -> Option<ServerV2> {
        self.recv_raw_within(limit)
            .map(|datagram| decode_v2(&datagram))
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for an event satisfying `wanted`; returns the events
    /// that came before it and the event itself. Panics with what came instead on timeout.
    pub fn expect(
        &self,
        what: &str,
        wanted: impl Fn(&ServerV2) -> bool,
    ) -> (Vec<ServerV2>, ServerV2) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut before = Vec::new();
        while Instant::now() < deadline {
            if let Some(event) = self.next_event_within(Duration::from_millis(200)) {
                if wanted(&event) {
                    return (before, event);
                }
                before.push(event);
            }
        }
        panic!("timed out waiting for {what}; received instead: {before:?}");
    }

    /// Registers (optionally with `last_id`) and collects the answer up to its `pong`.
    pub fn register(&self, last_id: Option<u64>) -> Replay {
        self.send(&ClientV2::Register { last_id });
        self.collect_until_pong("the pong that ends a registration")
    }

    /// Pings (optionally with `last_id`) and collects the answer up to its `pong`.
    pub fn ping(&self, last_id: Option<u64>) -> Replay {
        self.send(&ClientV2::Ping { last_id });
        self.collect_until_pong("the pong that answers a ping")
    }

    /// Collects events up to the `pong`, answering a `challenge` on the way as a client
    /// does: an address the server has not bound yet must echo one first.
    fn collect_until_pong(&self, what: &str) -> Replay {
        let mut before = Vec::new();
        let mut latest = None;
        for _ in 0..8 {
            let (mut earlier, event) = self.expect(what, |event| {
                matches!(event, ServerV2::Pong { .. } | ServerV2::Challenge { .. })
            });
            before.append(&mut earlier);
            match event {
                ServerV2::Challenge { nonce } => self.send(&ClientV2::Echo { nonce }),
                ServerV2::Pong { id } => {
                    latest = Some(id);
                    break;
                }
                _ => unreachable!("matched a pong or a challenge"),
            }
        }
        let latest = latest.unwrap_or_else(|| panic!("challenged again and again: {what}"));
        let mut replay = Replay {
            members: None,
            messages: Vec::new(),
            latest,
            other: Vec::new(),
        };
        for event in before {
            match event {
                ServerV2::Members { names, host, .. } if replay.members.is_none() => {
                    replay.members = Some((names, host));
                }
                ServerV2::Msg(message) => replay.messages.push(message),
                other => replay.other.push(other),
            }
        }
        replay
    }

    /// Sends a chat message and waits for its ack; returns the room id it was stored as.
    /// Other events that arrive meanwhile are kept for later reads.
    pub fn say(&self, seq: u64, text: &str) -> u64 {
        self.send_msg(seq, text);
        let ack = self.wait_setting_aside(
            &format!("the ack of seq {seq}"),
            |event| matches!(event, ServerV2::Ack { seq: acked, .. } if *acked == seq),
        );
        let ServerV2::Ack { id, .. } = decode_v2(&ack) else {
            unreachable!("matched an ack")
        };
        id
    }

    /// Sends a message as a client does, again every second until it is acked (for up to twice
    /// [`EVENT_TIMEOUT`]: the first copy can meet a full socket buffer), and returns its id.
    /// Events other than the ack are dropped.
    pub fn say_retrying(&self, seq: u64, text: &str) -> u64 {
        let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
        while Instant::now() < deadline {
            self.send_msg(seq, text);
            let until = Instant::now() + Duration::from_secs(1);
            while let Some(event) =
                self.next_event_within(until.saturating_duration_since(Instant::now()))
            {
                if let ServerV2::Ack { seq: acked, id } = event
                    && acked == seq
                {
                    return id;
                }
            }
        }
        panic!("seq {seq} was never acked");
    }

    /// Waits for the live `msg` event with this id; returns it and the events before it.
    pub fn expect_msg(&self, id: u64) -> (Vec<ServerV2>, ChatMessage) {
        let (before, event) = self.expect(
            &format!("message {id}"),
            |event| matches!(event, ServerV2::Msg(message) if message.id == id),
        );
        let ServerV2::Msg(message) = event else {
            unreachable!("matched a msg")
        };
        (before, message)
    }

    /// One `history` page: its messages, `more`, and the datagram's size in bytes. Other
    /// events that arrive meanwhile are kept for later reads.
    pub fn history(
        &self,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> (Vec<ChatMessage>, bool, usize) {
        self.send(&ClientV2::History { before, limit });
        let datagram = self.wait_setting_aside("a history page", |event| {
            matches!(event, ServerV2::History { .. })
        });
        let ServerV2::History { messages, more } = decode_v2(&datagram) else {
            unreachable!("matched a history page")
        };
        (messages, more, datagram.len())
    }

    /// Walks `history` back from the newest message to the oldest reachable one, `limit` per
    /// page; returns every message oldest first. Each page is checked to fit in a datagram.
    pub fn whole_history(&self, limit: u32) -> Vec<ChatMessage> {
        let mut all: Vec<ChatMessage> = Vec::new();
        let mut before = None;
        for _ in 0..10_000 {
            let (page, more, size) = self.history(before, Some(limit));
            assert!(size <= MAX_DATAGRAM, "a history page of {size} bytes");
            if let Some(first) = page.first() {
                before = Some(first.id);
            }
            let mut page = page;
            page.append(&mut all);
            all = page;
            if !more {
                return all;
            }
            assert!(before.is_some(), "an empty page that says there is more");
        }
        panic!("history never ended");
    }
}
