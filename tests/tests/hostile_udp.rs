//! The data plane under hostile or careless senders: forged, misdirected and malformed
//! datagrams never reach a member, and honest chat keeps flowing around them.
//!
//! To show that something did NOT arrive, each test sends a later marker and waits for it:
//! datagrams to the server's one socket are handled in the order they were sent, so whatever a
//! broken server would have relayed arrives before the marker.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use chat_protocol::ucrp::Datagram;
use chat_protocol::v2::{ClientV2, ServerV2};
use chat_tests::{
    ClientProcess, EVENT_TIMEOUT, ServerProcess, UdpMember, V2Member, create, decode_v2, join,
    v1_frame,
};

/// A deterministic pseudo-random generator (xorshift64), so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).expect("below a usize bound")
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_be_bytes()[0]).collect()
    }

    fn hex_token(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }
}

/// Two registered members of one room; the host has already seen the guest's join notice, so
/// neither has anything pending.
struct Pair {
    host: UdpMember,
    guest: UdpMember,
    guest_token: String,
}

fn pair(server: &ServerProcess, room: &str, host: &str, guest: &str) -> Pair {
    let host_token = create(server.tcp, room, host).token();
    let guest_token = join(server.tcp, room, guest).token();
    let host_member = UdpMember::new(server.udp, room, &host_token);
    let guest_member = UdpMember::new(server.udp, room, &guest_token);
    register(&host_member);
    register(&guest_member);
    expect_chat(&host_member, "*", &format!("{guest} joined"));
    Pair {
        host: host_member,
        guest: guest_member,
        guest_token,
    }
}

/// The next datagram from `from` to `member`, if one arrives before `deadline`.
///
/// Datagrams from any other address are ignored: ephemeral ports are reused, and a server of
/// another test, still running, may keep sending to this port's previous owner.
fn recv_from(member: &UdpMember, from: SocketAddr, deadline: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        // The harness gives the socket a short read timeout, so this wakes up to check.
        if let Ok((len, source)) = member.socket.recv_from(&mut buf)
            && source == from
        {
            return Some(buf[..len].to_vec());
        }
    }
    None
}

/// Waits for a datagram from the server satisfying `wanted`, discarding the others.
fn next_from_server(member: &UdpMember, what: &str, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while let Some(datagram) = recv_from(member, member.server, deadline) {
        if wanted(&datagram) {
            return datagram;
        }
    }
    panic!("timed out waiting for {what}");
}

/// Registers (version 1) and returns the server's welcome notice.
fn register(member: &UdpMember) -> Vec<u8> {
    member.send(b"__REGISTER__");
    next_from_server(member, "the welcome notice", |d| {
        d.starts_with(b"\x01*welcome to ")
    })
}

/// Waits for the version-1 chat frame `[len][sender][text]` from the server.
fn expect_chat(member: &UdpMember, sender: &str, text: &str) {
    let expected = v1_frame(sender, text);
    next_from_server(member, &format!("{sender}: {text}"), |d| d == expected);
}

/// Everything `member` receives from the server before the datagram `marker` from
/// `marker_from`, which must arrive.
fn received_before(member: &UdpMember, marker_from: SocketAddr, marker: &[u8]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut before = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        let Ok((len, source)) = member.socket.recv_from(&mut buf) else {
            continue;
        };
        let datagram = &buf[..len];
        if source == marker_from && datagram == marker {
            return before;
        }
        if source == member.server {
            before.push(datagram.to_vec());
        }
    }
    panic!(
        "the marker {:?} never arrived; received {}",
        String::from_utf8_lossy(marker),
        show(&before)
    );
}

/// Whether `datagram` says only that a room no longer exists: the answer to a datagram with
/// an unknown token, sent back to wherever that datagram came from.
fn is_no_room_answer(datagram: &[u8]) -> bool {
    datagram == b"__ROOM_CLOSED__"
        || datagram.starts_with(b"\xff{\"t\":\"error\",\"code\":\"no_room\"")
}

/// Asserts that `to` receives the chat `text` from `sender` and nothing before it but answers
/// to its own datagrams with unknown tokens (the tests send some from members' addresses).
fn expect_only(to: &UdpMember, sender: &str, text: &str, what: &str) {
    let mut before = received_before(to, to.server, &v1_frame(sender, text));
    before.retain(|datagram| !is_no_room_answer(datagram));
    assert!(
        before.is_empty(),
        "{what}; received before {sender}: {text}: {}",
        show(&before)
    );
}

/// Sends a marker straight from the test to `member`'s socket (not through the server) and
/// returns what the member received from the server before it. Call it only after the server
/// has provably handled everything of interest (another member saw a later message).
fn received_from_server_so_far(member: &UdpMember) -> Vec<Vec<u8>> {
    let marker = b"marker sent by the test itself";
    let poker = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let to = member
        .socket
        .local_addr()
        .expect("a bound socket has an address");
    poker.send_to(marker, to).expect("send the marker");
    let from = poker.local_addr().expect("a bound socket has an address");
    received_before(member, from, marker)
}

fn show(datagrams: &[Vec<u8>]) -> String {
    let shown: Vec<String> = datagrams
        .iter()
        .map(|d| format!("{:?}", String::from_utf8_lossy(d)))
        .collect();
    format!("[{}]", shown.join(", "))
}

/// A datagram in the UCRP envelope with an arbitrary room, token and message.
fn envelope(room: &str, token: &[u8], message: &[u8]) -> Vec<u8> {
    Datagram {
        room,
        token,
        message,
    }
    .encode()
    .expect("a datagram within the limits")
}

/// Like [`envelope`], without the encoder's size limit, for oversized datagrams.
fn raw_envelope(room: &[u8], token: &[u8], message: &[u8]) -> Vec<u8> {
    let size = |field: &[u8]| u8::try_from(field.len()).expect("a field of at most 255 bytes");
    let mut bytes = vec![size(room), size(token)];
    bytes.extend_from_slice(room);
    bytes.extend_from_slice(token);
    bytes.extend_from_slice(message);
    bytes
}

/// Chat text of exactly `len` bytes that mixes one- to four-byte UTF-8 characters, so that any
/// truncation or re-encoding shows.
fn patterned_text(len: usize) -> String {
    let pattern = "0123456789 abcdefghij αβγδ €✓ 👋 ";
    let mut text = String::with_capacity(len);
    for c in pattern.chars().cycle() {
        if text.len() + c.len_utf8() > len {
            break;
        }
        text.push(c);
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

#[test]
fn a_token_used_in_another_room_is_never_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let alpha = pair(&server, "alpha", "alice", "bob");
    let beta = pair(&server, "beta", "carol", "dave");
    let alice_token = alpha.host.token.clone();

    // Valid tokens of room alpha, from their registered addresses, naming other rooms.
    alpha.host.send_raw(&envelope(
        "beta",
        alice_token.as_bytes(),
        b"alice sneaks into beta",
    ));
    alpha
        .host
        .send_raw(&envelope("beta", alice_token.as_bytes(), b"__REGISTER__"));
    alpha.guest.send_raw(&envelope(
        "beta",
        alpha.guest_token.as_bytes(),
        b"bob sneaks into beta",
    ));
    alpha.host.send_raw(&envelope(
        "gamma",
        alice_token.as_bytes(),
        b"alice in no room",
    ));
    // ("Alpha" would be room alpha itself: room names compare by key, see security.rs.)

    alpha.host.send(b"alpha marker from alice");
    expect_only(
        &alpha.guest,
        "alice",
        "alpha marker from alice",
        "room alpha must not see misdirected chat",
    );
    alpha.guest.send(b"alpha marker from bob");
    expect_only(
        &alpha.host,
        "bob",
        "alpha marker from bob",
        "alice must not be welcomed into beta",
    );
    beta.host.send(b"beta marker from carol");
    expect_only(
        &beta.guest,
        "carol",
        "beta marker from carol",
        "room beta must not see alpha's tokens",
    );
    beta.guest.send(b"beta marker from dave");
    expect_only(
        &beta.host,
        "dave",
        "beta marker from dave",
        "room beta must not see alpha's tokens",
    );
}

#[test]
fn a_token_sent_from_another_address_is_never_relayed_and_the_binding_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    // Someone who learned the tokens sends from their own socket, without registering.
    let fake_bob = UdpMember::new(server.udp, "den", &room.guest_token);
    let fake_alice = UdpMember::new(server.udp, "den", &room.host.token);
    fake_bob.send(b"i am bob, really");
    fake_bob.send(b"__LEAVE__");
    fake_alice.send(b"i am the host");
    // A forged host leave would close the room for everyone.
    fake_alice.send(b"__LEAVE__");

    room.guest.send(b"the real bob");
    expect_only(
        &room.host,
        "bob",
        "the real bob",
        "forged chat or leave reached alice",
    );
    room.host.send(b"the real alice");
    expect_only(
        &room.guest,
        "alice",
        "the real alice",
        "forged chat or a room close reached bob",
    );
    let to_impostors: Vec<_> = [&fake_bob, &fake_alice]
        .into_iter()
        .flat_map(received_from_server_so_far)
        .collect();
    assert!(
        to_impostors.is_empty(),
        "the impostors were sent {}",
        show(&to_impostors)
    );
    // Bob is still a member: his name is still taken.
    assert_eq!(
        join(server.tcp, "den", "bob").error_code().as_deref(),
        Some("name_taken")
    );
}

#[test]
fn unknown_and_malformed_tokens_are_never_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    let mut rng = XorShift(0x5eed_f00d_0bad_cafe);
    let bob = room.guest_token.as_bytes();
    let mut not_hex = bob.to_vec();
    not_hex[0] = b'g';
    let mut not_ascii = bob[..62].to_vec();
    not_ascii.extend_from_slice("é".as_bytes());
    let unknown = rng.hex_token();
    let forged_tokens: Vec<Vec<u8>> = vec![
        unknown.clone().into_bytes(),
        rng.hex_token().to_uppercase().into_bytes(),
        bob[..63].to_vec(),
        [bob, b"0"].concat(),
        not_hex,
        not_ascii,
        Vec::new(),
        vec![b' '; 64],
    ];
    let intruder = UdpMember::new(server.udp, "den", &unknown);
    for (i, token) in forged_tokens.iter().enumerate() {
        let text = format!("forged message {i}");
        intruder.send_raw(&envelope("den", token, text.as_bytes()));
        intruder.send_raw(&envelope("den", token, b"__REGISTER__"));
        // From a registered member's own address, too.
        room.host.send_raw(&envelope("den", token, text.as_bytes()));
        room.host.send_raw(&envelope("den", token, b"__LEAVE__"));
    }

    room.host.send(b"marker from alice");
    expect_only(
        &room.guest,
        "alice",
        "marker from alice",
        "a forged token reached bob",
    );
    room.guest.send(b"marker from bob");
    expect_only(
        &room.host,
        "bob",
        "marker from bob",
        "a forged token reached alice",
    );
    // An unknown token is told only that the room no longer exists.
    let to_intruder = received_from_server_so_far(&intruder);
    assert!(
        to_intruder.iter().all(|d| is_no_room_answer(d)),
        "an unknown token was answered: {}",
        show(&to_intruder)
    );
}

#[test]
fn garbage_and_oversized_datagrams_are_dropped_and_relaying_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Flood control is not under test here, and the syncs below are many.
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let room = pair(&server, "den", "alice", "bob");
    let alice = room.host.token.as_bytes();
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();

    let text_to_reach = |total: usize| "x".repeat(total - (2 + "den".len() + alice.len()));
    let crafted: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![3],
        vec![3, 64],
        // Size fields claiming more than the datagram holds.
        raw_envelope(b"den", alice, b"")[..2 + 3 + 10].to_vec(),
        vec![200, 200, b'd', b'e', b'n'],
        vec![255, 255],
        // Invalid UTF-8 in the room name, then in the chat text.
        raw_envelope(b"d\xffn", alice, b"hello"),
        raw_envelope(b"den", alice, b"bad \xff text"),
        raw_envelope(b"den", alice, b"\xc3\x28"),
        raw_envelope(b"den", alice, b"cut short \xe2\x82"),
        // A version-2 marker followed by something that is not JSON.
        raw_envelope(b"den", alice, b"\xffnot json"),
        // Valid text, but the datagram is over the 4096-byte limit.
        raw_envelope(b"den", alice, text_to_reach(4097).as_bytes()),
        raw_envelope(b"den", alice, text_to_reach(60_000).as_bytes()),
    ];
    assert_eq!(crafted[11].len(), 4097);
    assert_eq!(crafted[12].len(), 60_000);

    let mut syncs = 0;
    let mut sync = |why: &str| {
        syncs += 1;
        let text = format!("sync {syncs}");
        room.host.send(text.as_bytes());
        expect_only(&room.guest, "alice", &text, why);
    };
    // One at a time from alice's registered address (where a mistake would be relayed), and
    // from a stranger; a sync after each keeps the server's receive buffer from overflowing.
    for datagram in &crafted {
        room.host.send_raw(datagram);
        intruder.send_to(datagram, server.udp).unwrap();
        sync(&format!(
            "{:?} was relayed",
            String::from_utf8_lossy(&datagram[..datagram.len().min(40)])
        ));
    }
    let mut rng = XorShift(0x0ddb_a11c_0ffe_e000);
    for batch in 0..12 {
        for _ in 0..25 {
            let len = rng.below(600);
            let garbage = rng.bytes(len);
            if rng.below(2) == 0 {
                room.host.send_raw(&garbage);
            } else {
                intruder.send_to(&garbage, server.udp).unwrap();
            }
        }
        sync(&format!("random garbage of batch {batch} was relayed"));
    }

    // Honest chat still flows both ways, byte for byte.
    let honest = "still here after 300 garbage datagrams: ça va? 👋";
    room.guest.send(honest.as_bytes());
    expect_only(&room.host, "bob", honest, "garbage reached alice");
}

#[test]
fn a_datagram_of_exactly_4096_bytes_is_relayed_intact_and_4097_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    let alice = room.host.token.as_bytes();
    let overhead = 2 + "den".len() + alice.len();

    let fits = patterned_text(4096 - overhead);
    let datagram = envelope("den", alice, fits.as_bytes());
    assert_eq!(datagram.len(), 4096);
    room.host.send_raw(&datagram);
    let relayed = next_from_server(&room.guest, "the 4096-byte datagram, relayed", |d| {
        d.starts_with(b"\x05alice")
    });
    let text = &relayed[1 + "alice".len()..];
    assert_eq!(
        text.len(),
        4096 - overhead,
        "the relayed text is cut or padded"
    );
    assert!(
        text == fits.as_bytes(),
        "the relayed text differs from what was sent"
    );

    let too_big = raw_envelope(b"den", alice, patterned_text(4097 - overhead).as_bytes());
    assert_eq!(too_big.len(), 4097);
    room.host.send_raw(&too_big);
    room.host.send(b"after the big one");
    expect_only(
        &room.guest,
        "alice",
        "after the big one",
        "a 4097-byte datagram was relayed",
    );
}

#[test]
fn the_sender_never_receives_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    let carol_token = join(server.tcp, "den", "carol").token();
    let carol = UdpMember::new(server.udp, "den", &carol_token);
    register(&carol);
    expect_chat(&room.host, "*", "carol joined");
    expect_chat(&room.guest, "*", "carol joined");

    room.host.send(b"hello everyone");
    expect_chat(&room.guest, "alice", "hello everyone");
    expect_chat(&carol, "alice", "hello everyone");
    room.guest.send(b"hi alice");
    expect_only(
        &room.host,
        "bob",
        "hi alice",
        "alice got her own message back",
    );
    expect_chat(&carol, "bob", "hi alice");
    // The same from a guest.
    carol.send(b"carol here");
    expect_chat(&room.guest, "carol", "carol here");
    room.host.send(b"welcome carol");
    expect_only(
        &carol,
        "alice",
        "welcome carol",
        "carol got her own message back",
    );
}

#[test]
fn a_member_that_roams_receives_at_its_new_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    let old_bob = &room.guest;
    let new_bob = UdpMember::new(server.udp, "den", &room.guest_token);
    let welcome = register(&new_bob);
    assert!(
        welcome.starts_with(b"\x01*welcome to den, bob"),
        "{:?}",
        String::from_utf8_lossy(&welcome)
    );

    room.host.send(b"where are you now?");
    expect_chat(&new_bob, "alice", "where are you now?");
    room.host.send(b"found you");
    expect_chat(&new_bob, "alice", "found you");
    // The old address hears once that it no longer receives the room, then nothing.
    let to_old = received_from_server_so_far(old_bob);
    assert_eq!(to_old, [v1_frame("*", MOVED_NOTICE)], "{}", show(&to_old));

    // The old address can no longer speak for bob, the new one can, and roaming is no new join.
    old_bob.send(b"from the old socket");
    new_bob.send(b"from the new socket");
    expect_only(
        &room.host,
        "bob",
        "from the new socket",
        "the old address was relayed or bob re-joined",
    );
}

/// What a version-1 address hears when its member registered from another address.
const MOVED_NOTICE: &str =
    "your name is now used from another address; this one no longer receives the room";

/// A room `name` of `count` members with 32-byte names, made over TCP; the first is the host.
/// Returns the tokens in join order.
fn crowd(server: &ServerProcess, room: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let name = format!("member-{i:03}-{}", "x".repeat(21));
            assert_eq!(name.len(), 32);
            let replies = if i == 0 {
                create(server.tcp, room, &name)
            } else {
                join(server.tcp, room, &name)
            };
            replies.token()
        })
        .collect()
}

#[test]
fn a_sniffed_token_cannot_take_a_member_over_from_an_address_that_does_not_receive() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let alice_token = create(server.tcp, "vault", "alice").token();
    let bob_token = join(server.tcp, "vault", "bob").token();
    let alice = V2Member::new(server.udp, "vault", &alice_token);
    let bob = V2Member::new(server.udp, "vault", &bob_token);
    alice.register(None);
    bob.register(None);
    alice.expect("bob's join", |e| matches!(e, ServerV2::Joined { .. }));
    let id = alice.say(1, "the plans");
    bob.expect_msg(id);

    // Mallory saw one of alice's datagrams: room and token. She sends from an address she
    // does not read (a spoofed one): the register, a guessed echo, chat and the host's leave.
    let spoofed = V2Member::new(server.udp, "vault", &alice_token);
    spoofed.send(&ClientV2::Register { last_id: Some(0) });
    spoofed.send(&ClientV2::Echo {
        nonce: "0".repeat(32),
    });
    spoofed.send_msg(2, "forged by mallory");
    spoofed.send(&ClientV2::Leave);

    // Nothing moved: the room is open, its history whole, and alice still hears bob.
    let id = bob.say(1, "still here?");
    let (before, message) = alice.expect_msg(id);
    assert_eq!(message.text, "still here?");
    assert!(
        !before.iter().any(|e| matches!(e, ServerV2::Moved)),
        "alice was moved: {before:?}"
    );
    let history = bob.whole_history(100);
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["the plans", "still here?"]);
    // All the spoofed address got was one challenge per register, no member list, no replay.
    let got: Vec<ServerV2> = spoofed
        .udp
        .drain(std::time::Duration::from_millis(300))
        .iter()
        .map(|d| decode_v2(d))
        .collect();
    assert!(
        got.iter().all(|e| matches!(e, ServerV2::Challenge { .. })),
        "{got:?}"
    );

    // An address that does receive and echoes the challenge takes over, and alice is told.
    let roamed = V2Member::new(server.udp, "vault", &alice_token);
    let replay = roamed.register(Some(0));
    assert_eq!(replay.messages.len(), 2);
    alice.expect("the notice that her address moved", |e| {
        matches!(e, ServerV2::Moved)
    });
}

#[test]
fn a_version_1_token_is_not_registered_from_another_ip() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let room = pair(&server, "den", "alice", "bob");
    // 127.0.0.2 stands for another machine; the handshakes came from 127.0.0.1.
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    socket
        .send_to(
            &envelope("den", room.guest_token.as_bytes(), b"__REGISTER__"),
            server.udp,
        )
        .expect("send the register");
    socket
        .send_to(
            &envelope("den", room.guest_token.as_bytes(), b"__LEAVE__"),
            server.udp,
        )
        .expect("send the leave");
    // Bob is still bob, at his address: the host hears him and nothing about a leave.
    room.guest.send(b"still me");
    expect_only(&room.host, "bob", "still me", "the other IP moved bob");
}

/// Bytes a socket receives from the server within `window`.
fn bytes_received(socket: &UdpSocket, server: SocketAddr, window: std::time::Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; 65_536];
    let mut total = 0;
    while Instant::now() < deadline {
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && from == server
        {
            total += len;
        }
    }
    total
}

#[test]
fn one_register_from_an_unproven_address_is_answered_with_a_few_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--flood-rate", "0", "--handshakes-per-ip", "0"],
    );
    // The issue's room: 255 members with long names and 300 long messages.
    let tokens = crowd(&server, "big", 254);
    let speaker_token = join(server.tcp, "big", "speaker").token();
    let speaker = V2Member::new(server.udp, "big", &speaker_token);
    speaker.register(None);
    for seq in 1..=300 {
        speaker.say(seq, &format!("{seq:04} {}", "y".repeat(3_900)));
    }

    let victim = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    victim
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .expect("set a read timeout");
    let mut sent = 0;
    // A register with last_id 0 for a member that never registered, for one that did, and
    // a version-1 register; each from the victim's address.
    for (token, message) in [
        (&tokens[7], br#"{"t":"register","last_id":0}"#.as_slice()),
        (
            &speaker_token,
            br#"{"t":"register","last_id":0}"#.as_slice(),
        ),
        (&tokens[8], b"__REGISTER__".as_slice()),
    ] {
        let body = if message.starts_with(b"{") {
            [b"\xff".as_slice(), message].concat()
        } else {
            message.to_vec()
        };
        let datagram = envelope("big", token.as_bytes(), &body);
        sent += datagram.len();
        victim.send_to(&datagram, server.udp).expect("send");
    }
    let received = bytes_received(&victim, server.udp, std::time::Duration::from_secs(2));
    let ratio = received as f64 / sent as f64;
    eprintln!("amplification: {sent} bytes in, {received} bytes out, {ratio:.2}x");
    assert!(
        received <= 4 * sent,
        "{sent} bytes in were answered with {received} bytes ({ratio:.0}x)"
    );
    assert!(received > 0, "registrations are still answered");
}

#[test]
fn a_full_room_of_long_names_is_joined_by_version_1_and_2_clients_who_chat() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--handshakes-per-ip", "0"]);
    crowd(&server, "full", 254);
    let mut modern = ClientProcess::start(&server, &["join", "full", "--name", "modern"]);
    modern.wait_for("the welcome", |line| {
        line.starts_with("* welcome to full, modern; here now: member-000")
            && line.ends_with(" more")
    });
    let mut classic = ClientProcess::start(&server, &["--v1", "join", "full", "--name", "classic"]);
    classic.wait_for("the welcome", |line| {
        line.starts_with("* welcome to full, classic; here now: ")
    });
    // The room is full now: 256 members.
    assert_eq!(
        join(server.tcp, "full", "latecomer")
            .error_code()
            .as_deref(),
        Some("room_full")
    );
    modern.wait_for_line("* classic joined");
    modern.send_line("hello from version 2");
    classic.wait_for_line("modern: hello from version 2");
    classic.send_line("hello from version 1");
    modern.wait_for_line("classic: hello from version 1");
    modern.send_line("/who");
    modern.wait_for("the member list", |line| {
        line.starts_with("* here now: member-000") && line.ends_with(" more")
    });
}

/// The token the server granted `username`, read from its state file or journal (the client
/// does not print it).
fn granted_token(dir: &std::path::Path, username: &str) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        for file in ["room_manager.json.journal", "room_manager.json"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let compact: String = text.split_whitespace().collect();
            let Some(at) = compact.find(&format!("\"username\":\"{username}\"")) else {
                continue;
            };
            let rest = &compact[at..];
            if let Some(start) = rest.find("\"token\":\"") {
                let token = &rest[start + 9..];
                if let Some(token) = token.get(..64) {
                    return token.to_owned();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no token for {username} in the state files");
}

#[test]
fn a_client_whose_token_is_taken_over_is_told_and_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let host = V2Member::new(
        server.udp,
        "den",
        &create(server.tcp, "den", "alice").token(),
    );
    host.register(None);
    // Plaintext version 2, where a token holder can try this (a version-3 member's token is
    // refused in plaintext: encryption.rs).
    let mut modern = ClientProcess::start(&server, &["--v2", "join", "den", "--name", "modern"]);
    modern.wait_for("the welcome", |line| {
        line.starts_with("* welcome to den, modern")
    });

    // Someone with modern's token, at an address of their own, answers the challenge.
    let thief = V2Member::new(server.udp, "den", &granted_token(dir.path(), "modern"));
    thief.register(None);
    modern.wait_for("the notice that the token is used elsewhere", |line| {
        line.contains("another address")
    });
    // The client registers again from its own address and answers the challenge: the thief
    // is moved out, and the room reaches the client again.
    thief.expect("the thief's notice that the binding moved", |e| {
        matches!(e, ServerV2::Moved)
    });
    host.say(1, "are you back?");
    modern.wait_for_line("alice: are you back?");
}
