//! An abusive client against a live conversation: random and mutated datagrams (from the
//! abuser's own registered member and from an address the server never saw) and random TCP
//! requests, while two honest version-2 members chat. The honest conversation must arrive
//! complete and in order, the unknown address must be sent nothing, and the server's memory
//! must stay bounded.
//!
//! The suite runs a short version; `scripts/abuse.sh` runs the full one (the ignored test at
//! the end) and prints its figures.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::tcrp::{Frame, State};
use chat_protocol::ucrp::Datagram;
use chat_protocol::v2::ServerV2;
use chat_tests::{
    EVENT_TIMEOUT, ServerProcess, UdpMember, V2Member, XorShift64Star, create, join, proc_status_kb,
};

/// The honest members type faster than people do, so their allowance is raised from the
/// default (10, then 5 a second); the abuser's valid chat still runs into it. Every TCP request
/// is let through to the handshake code (no per-address limit), the worst case for the server.
const SERVER_FLAGS: &[&str] = &[
    "--log-level",
    "info",
    "--flood-burst",
    "50",
    "--flood-rate",
    "50",
    "--handshakes-per-ip",
    "0",
];

/// Peak resident memory the server may reach in the short run. Measured peaks are 13 to 14 MB
/// (debug build; see the figures the test prints), of which about 11 MB is there before any
/// abuse. 64 MB leaves room for a slow, shared machine, yet a leak of one receive buffer per
/// abusive datagram (4 KiB x 20,000 = 80 MB) would exceed it.
const SHORT_RUN_PEAK_RSS_KB: u64 = 64 * 1024;

/// Pause between honest messages: about 20 a second each, within the raised allowance.
const HONEST_PACE: Duration = Duration::from_millis(25);

#[derive(Debug, Default)]
struct Figures {
    datagrams_from_member: u64,
    datagrams_from_stranger: u64,
    bytes_from_stranger: u64,
    bytes_to_stranger: usize,
    /// How long the abuse took, for the "room no longer exists" answer budget.
    seconds: f64,
    tcp_requests: u64,
    tcp_granted: u64,
    tcp_refused: u64,
    tcp_unanswered: u64,
    /// Rooms and members in the state file at the end.
    rooms_at_end: usize,
    members_at_end: usize,
    honest_messages: usize,
    honest_retransmissions: u64,
    baseline_rss_kb: u64,
    max_sampled_rss_kb: u64,
    peak_rss_kb: u64,
    server_summary: String,
}

/// A small random generator on top of the harness's.
struct Rng(XorShift64Star);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.0.next_u64() % bound as u64).expect("below a usize bound")
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| self.0.next_u64().to_le_bytes()[0])
            .collect()
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }

    /// Bit flips, byte changes, truncation, extension, or a mix.
    fn mutate(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.below(3) {
            match self.below(6) {
                0 | 1 if !bytes.is_empty() => {
                    let at = self.below(bytes.len());
                    bytes[at] ^= 1 << self.below(8);
                }
                2 if !bytes.is_empty() => {
                    let at = self.below(bytes.len());
                    bytes[at] = self.bytes(1)[0];
                }
                3 => {
                    let keep = self.below(bytes.len() + 1);
                    bytes.truncate(keep);
                }
                4 => {
                    let more = self.below(64);
                    bytes.extend(self.bytes(more));
                }
                _ => {
                    // Now and then past the 4096-byte limit.
                    if self.below(20) == 0 {
                        bytes.resize(4097 + self.below(2000), b'x');
                    }
                }
            }
        }
        bytes
    }
}

fn envelope(room: &str, token: &str, message: &[u8]) -> Vec<u8> {
    Datagram {
        room,
        token: token.as_bytes(),
        message,
    }
    .encode()
    .unwrap_or_else(|_| {
        // Over the limit on purpose: build the envelope by hand.
        let mut bytes = vec![room.len() as u8, token.len() as u8];
        bytes.extend_from_slice(room.as_bytes());
        bytes.extend_from_slice(token.as_bytes());
        bytes.extend_from_slice(message);
        bytes
    })
}

/// Messages a member might send, as mutation material.
fn templates() -> Vec<Vec<u8>> {
    let long_text = "y".repeat(4000);
    [
        "hello everyone".to_owned(),
        "__REGISTER__".to_owned(),
        "\u{0}\u{1}".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain(
        [
            r#"{"t":"msg","seq":1,"text":"hi"}"#.to_owned(),
            r#"{"t":"msg","seq":99999999999,"text":""}"#.to_owned(),
            format!(r#"{{"t":"msg","seq":7,"text":"{long_text}"}}"#),
            r#"{"t":"ping","last_id":0}"#.to_owned(),
            r#"{"t":"register","last_id":3}"#.to_owned(),
            r#"{"t":"who"}"#.to_owned(),
            r#"{"t":"typing"}"#.to_owned(),
            r#"{"t":"history","before":5,"limit":100}"#.to_owned(),
            r#"{"t":"msg","seq":2,"text":"x","extra":[0,0,0,0,0,0,0,0,0,0,0,0]}"#.to_owned(),
        ]
        .into_iter()
        .map(|json| {
            let mut body = vec![0xFF];
            body.extend_from_slice(json.as_bytes());
            body
        }),
    )
    .collect()
}

/// One abusive datagram from the abuser's own member: a mutated message in her envelope, or
/// a mutated whole datagram.
fn member_datagram(rng: &mut Rng, templates: &[Vec<u8>], room: &str, token: &str) -> Vec<u8> {
    let template = templates[rng.below(templates.len())].clone();
    if rng.below(2) == 0 {
        envelope(room, token, &rng.mutate(template))
    } else {
        rng.mutate(envelope(room, token, &template))
    }
}

/// One abusive datagram from an address the server never saw: random bytes, a valid-looking
/// envelope with an unknown token, or a mutated one. Never a real token: a register with one
/// would rightly bind this address.
fn stranger_datagram(rng: &mut Rng, templates: &[Vec<u8>], room: &str) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let len = rng.below(600);
            rng.bytes(len)
        }
        1 => envelope(
            if rng.below(2) == 0 { room } else { "elsewhere" },
            &rng.hex(64),
            &templates[rng.below(templates.len())],
        ),
        _ => {
            let template = templates[rng.below(templates.len())].clone();
            let datagram = envelope(room, &rng.hex(64), &template);
            rng.mutate(datagram)
        }
    }
}

/// One random TCP request: random bytes, a valid header with a random body, a mutated valid
/// request (create, join, pair, list), an absurd size, or a cut-off header.
fn tcp_request(rng: &mut Rng, room: &str) -> Vec<u8> {
    let frame = |operation: u8, state: State, room: &str, payload: Vec<u8>| {
        Frame::new(operation, state, room, payload)
            .encode()
            .unwrap_or_default()
    };
    let name = format!("\"u{}\"", rng.hex(6));
    match rng.below(8) {
        0 => {
            let len = rng.below(300);
            rng.bytes(len)
        }
        1 => {
            let len = rng.below(200);
            let body = rng.bytes(len);
            frame(rng.below(6) as u8, State::Request, "", body)
        }
        2 => {
            let valid = frame(rng.below(5) as u8, State::Request, room, name.into_bytes());
            rng.mutate(valid)
        }
        3 => {
            let mut header = vec![5, 1, 0];
            header.extend(rng.bytes(29));
            header
        }
        4 => {
            let valid = frame(1, State::Request, room, name.into_bytes());
            valid[..rng.below(32)].to_vec()
        }
        5 => frame(
            1,
            State::Request,
            &format!("r{}", rng.hex(8)),
            name.into_bytes(),
        ),
        6 => frame(2, State::Request, room, name.into_bytes()),
        _ => frame(3, State::Request, "", name.into_bytes()),
    }
}

/// Sends one request, closes the sending side (so the server never waits on us) and reads
/// what comes back: 1 granted, 2 refused, 0 nothing.
fn send_tcp_request(tcp: SocketAddr, request: &[u8]) -> u8 {
    let Ok(mut stream) = TcpStream::connect_timeout(&tcp, EVENT_TIMEOUT) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(EVENT_TIMEOUT));
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    match Frame::decode(&reply) {
        Ok(Some((frame, _))) if frame.payload.starts_with(br#"{"success":1"#) => 1,
        Ok(Some(_)) => 2,
        _ => 0,
    }
}

/// An honest version-2 member in the conversation.
struct Honest {
    name: &'static str,
    member: V2Member,
    next_seq: u64,
    /// Every chat message seen (live or replayed), by id.
    seen: BTreeMap<u64, (String, String)>,
    last_ping: Instant,
}

impl Honest {
    fn new(name: &'static str, member: V2Member) -> Self {
        // Short reads, so that polling two members in turn is quick.
        member
            .udp
            .socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .expect("set a read timeout");
        Self {
            name,
            member,
            next_seq: 1,
            seen: BTreeMap::new(),
            last_ping: Instant::now(),
        }
    }

    /// The newest id up to which nothing is missing.
    fn contiguous(&self) -> u64 {
        let mut last = 0;
        for &id in self.seen.keys() {
            if id != last + 1 {
                break;
            }
            last = id;
        }
        last
    }

    /// Handles what arrived; returns the acks among it.
    fn poll(&mut self) -> Vec<(u64, u64)> {
        let mut acks = Vec::new();
        while let Some(event) = self.member.next_event_within(Duration::from_millis(2)) {
            match event {
                ServerV2::Ack { seq, id } => acks.push((seq, id)),
                ServerV2::Msg(message) => {
                    self.seen.insert(message.id, (message.from, message.text));
                }
                ServerV2::Error { code, message, .. } => {
                    panic!("{} was refused: {code:?} {message}", self.name)
                }
                ServerV2::RoomClosed { reason } => panic!("the room closed: {reason:?}"),
                _ => {}
            }
        }
        // Fill gaps (datagrams the flood crowded out) the way a client does.
        if self.last_ping.elapsed() > Duration::from_millis(300) {
            self.last_ping = Instant::now();
            self.member.send(&chat_protocol::v2::ClientV2::Ping {
                last_id: Some(self.contiguous()),
            });
        }
        acks
    }
}

/// Runs the conversation: `messages` messages, alternately from alice and bob, each resent
/// until acked and seen by the other. Returns the texts in the order sent and the number of
/// retransmissions.
fn converse(members: &mut [Honest; 2], messages: usize) -> (Vec<(String, String)>, u64) {
    let mut sent = Vec::with_capacity(messages);
    let mut retransmissions = 0;
    let whole_deadline = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(200) * u32::try_from(messages).unwrap_or(u32::MAX);
    for k in 0..messages {
        let (speaker, listener) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
        let text = format!("honest message {k}");
        let seq = members[speaker].next_seq;
        members[speaker].next_seq += 1;
        members[speaker].member.send_msg(seq, &text);
        let mut last_send = Instant::now();
        let mut acked = None;
        let deadline = Instant::now() + 3 * EVENT_TIMEOUT;
        loop {
            for (acked_seq, id) in members[speaker].poll() {
                if acked_seq == seq {
                    acked = Some(id);
                }
            }
            members[listener].poll();
            let delivered = acked.is_some_and(|id| members[listener].seen.contains_key(&id));
            if delivered {
                break;
            }
            assert!(
                Instant::now() < deadline.min(whole_deadline),
                "message {k} was never acked and delivered in time"
            );
            if acked.is_none() && last_send.elapsed() > Duration::from_millis(300) {
                members[speaker].member.send_msg(seq, &text);
                last_send = Instant::now();
                retransmissions += 1;
            }
        }
        sent.push((members[speaker].name.to_owned(), text));
        thread::sleep(HONEST_PACE);
    }
    (sent, retransmissions)
}

/// What the server sent `socket` so far: a marker sent from the test straight to the socket
/// and every byte that came before it.
fn bytes_received_before_marker(socket: &UdpSocket) -> usize {
    let marker = b"marker from the test itself";
    let poker = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    poker
        .send_to(
            marker,
            socket.local_addr().expect("a bound socket has an address"),
        )
        .expect("send the marker");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set a read timeout");
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            if &buf[..len] == marker {
                return total;
            }
            total += len;
        }
    }
    panic!("the test's own marker never arrived");
}

/// Clears a flag when dropped, also when a failed assertion unwinds, so that the thread
/// watching it stops and the scope can end.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Spreads `quota` items over `planned`: sleeps until item `done` is due.
fn pace(started: Instant, planned: Duration, done: u64, quota: u64) {
    let due = started + planned.mul_f64(done as f64 / quota.max(1) as f64);
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
}

fn abuse(datagrams: u64, tcp_requests: u64, messages: usize) -> Figures {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), SERVER_FLAGS);
    let pid = server.pid();
    let mut figures = Figures::default();

    let room = "honest";
    let alice = V2Member::new(server.udp, room, &create(server.tcp, room, "alice").token());
    alice.register(None);
    let bob = V2Member::new(server.udp, room, &join(server.tcp, room, "bob").token());
    bob.register(None);
    let mallory_token = join(server.tcp, room, "mallory").token();
    let mallory = UdpMember::new(server.udp, room, &mallory_token);
    mallory.register();
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    figures.baseline_rss_kb = proc_status_kb(pid, "VmRSS").unwrap_or(0);

    // The abuse is spread over the conversation's planned length, so that it runs while the
    // honest members chat; if the conversation takes longer, the rest of it is quiet.
    let planned = (HONEST_PACE + Duration::from_millis(5)) * u32::try_from(messages).unwrap_or(0);
    let started = Instant::now();
    let sampling = AtomicBool::new(true);
    let max_rss = AtomicU64::new(0);
    let from_member = AtomicU64::new(0);
    let from_stranger = AtomicU64::new(0);
    let bytes_from_stranger = AtomicU64::new(0);
    let tcp_counts: [AtomicU64; 4] = Default::default();
    let (tcp, udp) = (server.tcp, server.udp);
    let mut honest = [Honest::new("alice", alice), Honest::new("bob", bob)];
    let (sent, retransmissions) = thread::scope(|scope| {
        scope.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kb(pid, "VmRSS") {
                    max_rss.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        scope.spawn(|| {
            let mut rng = Rng(XorShift64Star::new(0xab05e));
            let templates = templates();
            for sent in 0..datagrams {
                if sent % 50 == 0 {
                    pace(started, planned, sent, datagrams);
                }
                if rng.below(3) == 0 {
                    let datagram = member_datagram(&mut rng, &templates, room, &mallory_token);
                    mallory.send_raw(&datagram);
                    from_member.fetch_add(1, Ordering::Relaxed);
                } else {
                    let datagram = stranger_datagram(&mut rng, &templates, room);
                    let _ = stranger.send_to(&datagram, udp);
                    from_stranger.fetch_add(1, Ordering::Relaxed);
                    bytes_from_stranger.fetch_add(datagram.len() as u64, Ordering::Relaxed);
                }
            }
        });
        // TCP requests, from 4 connections at a time, with a few stalled ones held open.
        for worker in 0..4u64 {
            let tcp_counts = &tcp_counts;
            scope.spawn(move || {
                let mut rng = Rng(XorShift64Star::new(0x7c9 + worker));
                let mut stalled = VecDeque::new();
                let quota = tcp_requests / 4 + u64::from(worker < tcp_requests % 4);
                for sent in 1..=quota {
                    pace(started, planned, sent, quota);
                    let request = tcp_request(&mut rng, room);
                    let outcome = send_tcp_request(tcp, &request);
                    tcp_counts[usize::from(outcome)].fetch_add(1, Ordering::Relaxed);
                    tcp_counts[3].fetch_add(1, Ordering::Relaxed);
                    if sent % 50 == 0 {
                        if let Ok(mut stream) = TcpStream::connect(tcp) {
                            let _ = stream.write_all(&[5, 2, 0]);
                            stalled.push_back(stream);
                        }
                        if stalled.len() > 5 {
                            stalled.pop_front();
                        }
                    }
                }
            });
        }
        // Sampling stops when the conversation is over, even if it fails.
        let _stop = ClearOnDrop(&sampling);
        converse(&mut honest, messages)
    });
    figures.honest_messages = sent.len();
    figures.honest_retransmissions = retransmissions;
    figures.datagrams_from_member = from_member.load(Ordering::Relaxed);
    figures.datagrams_from_stranger = from_stranger.load(Ordering::Relaxed);
    figures.tcp_requests = tcp_counts[3].load(Ordering::Relaxed);
    figures.tcp_granted = tcp_counts[1].load(Ordering::Relaxed);
    figures.tcp_refused = tcp_counts[2].load(Ordering::Relaxed);
    figures.tcp_unanswered = tcp_counts[0].load(Ordering::Relaxed);
    figures.max_sampled_rss_kb = max_rss.load(Ordering::Relaxed);
    figures.peak_rss_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);

    // Each honest member saw the other's messages complete and in order, ids rising.
    for (index, member) in honest.iter().enumerate() {
        let other = honest[1 - index].name;
        let expected: Vec<&str> = sent
            .iter()
            .filter(|(from, _)| from == other)
            .map(|(_, text)| text.as_str())
            .collect();
        let got: Vec<&str> = member
            .seen
            .values()
            .filter(|(from, _)| from == other)
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(got, expected, "{} saw {other}'s messages", member.name);
    }
    // The room's history holds the whole conversation in order (the abuser's accepted chat
    // may sit between the lines).
    let history = honest[0].member.whole_history(100);
    let stored: Vec<(String, String)> = history
        .into_iter()
        .filter(|message| message.from == "alice" || message.from == "bob")
        .map(|message| (message.from, message.text))
        .collect();
    assert_eq!(stored, sent, "the stored conversation");

    // The address the server never registered was sent nothing but "this room no longer
    // exists" answers to its unknown tokens (checked against their budget by the caller).
    figures.bytes_to_stranger = bytes_received_before_marker(&stranger);
    figures.bytes_from_stranger = bytes_from_stranger.load(Ordering::Relaxed);
    figures.seconds = started.elapsed().as_secs_f64();
    // The server still serves. (A create might meet the room cap, which the long run reaches.)
    let listed = chat_tests::handshake(server.tcp, 4, "", b"");
    assert_eq!(listed.error_code(), None, "the room list after the abuse");

    let state_file = server.state.clone();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_file).expect("the state file exists"))
            .expect("the state file parses");
    let rooms = state["rooms"].as_array().cloned().unwrap_or_default();
    figures.rooms_at_end = rooms.len();
    figures.members_at_end = rooms
        .iter()
        .map(|room| room["members"].as_array().map_or(0, Vec::len))
        .sum();
    let log = std::fs::read_dir(dir.path())
        .expect("the test directory lists")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "log"))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    figures.server_summary = log
        .lines()
        .find(|line| line.contains("goodbye"))
        .unwrap_or("")
        .to_owned();
    figures
}

/// The unknown address may be told that its room no longer exists, at most 20 times a second
/// server-wide (`--no-room-replies`, plus its burst), each answer no larger than what it
/// answers (one is at most 128 bytes): never more bytes out than in.
fn assert_no_amplification(figures: &Figures) {
    let budget = (20.0 * figures.seconds + 20.0) * 128.0;
    assert!(
        figures.bytes_to_stranger as f64 <= budget
            && figures.bytes_to_stranger as u64 <= figures.bytes_from_stranger,
        "the unknown address got {} bytes (budget {budget:.0}, it sent {})",
        figures.bytes_to_stranger,
        figures.bytes_from_stranger
    );
}

/// One figure per line, each line starting with `FIGURES abuse:` for scripts/abuse.sh.
fn print(figures: &Figures) {
    let lines = [
        format!(
            "datagrams sent {} ({} from the abuser's registered member, {} from an unknown address)",
            figures.datagrams_from_member + figures.datagrams_from_stranger,
            figures.datagrams_from_member,
            figures.datagrams_from_stranger
        ),
        format!(
            "bytes sent to the unknown address {} (it sent {} in {:.1} s)",
            figures.bytes_to_stranger, figures.bytes_from_stranger, figures.seconds
        ),
        format!(
            "TCP requests {} (granted {}, refused {}, closed without a reply {})",
            figures.tcp_requests, figures.tcp_granted, figures.tcp_refused, figures.tcp_unanswered
        ),
        format!(
            "rooms at the end {} with {} members (caps: 10000 rooms, 256 per room)",
            figures.rooms_at_end, figures.members_at_end
        ),
        format!(
            "honest messages {} complete and in order ({} retransmissions)",
            figures.honest_messages, figures.honest_retransmissions
        ),
        format!(
            "server RSS: baseline {} kB, highest sample {} kB, peak (VmHWM) {} kB",
            figures.baseline_rss_kb, figures.max_sampled_rss_kb, figures.peak_rss_kb
        ),
        format!("server's own count: {}", figures.server_summary.trim()),
    ];
    // A fresh line: with --nocapture the test's name is still on the current one.
    println!();
    for line in lines {
        println!("FIGURES abuse: {line}");
    }
}

#[test]
fn an_abusive_client_does_not_disturb_an_honest_conversation() {
    let figures = abuse(20_000, 2_000, 100);
    print(&figures);
    assert_eq!(
        figures.datagrams_from_member + figures.datagrams_from_stranger,
        20_000
    );
    assert_eq!(figures.tcp_requests, 2_000);
    assert_eq!(figures.honest_messages, 100);
    assert_no_amplification(&figures);
    assert!(
        figures.peak_rss_kb < SHORT_RUN_PEAK_RSS_KB,
        "peak RSS {} kB",
        figures.peak_rss_kb
    );
}

/// The full run, for `scripts/abuse.sh`: sizes from ABUSE_DATAGRAMS, ABUSE_TCP_REQUESTS and
/// ABUSE_MESSAGES.
#[test]
#[ignore = "long; run by scripts/abuse.sh"]
fn long_abuse() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let datagrams = number("ABUSE_DATAGRAMS", 100_000);
    let tcp_requests = number("ABUSE_TCP_REQUESTS", 10_000);
    let messages = usize::try_from(number("ABUSE_MESSAGES", 300)).unwrap();
    let figures = abuse(datagrams, tcp_requests, messages);
    print(&figures);
    assert_eq!(figures.honest_messages, messages);
    assert_no_amplification(&figures);
}
