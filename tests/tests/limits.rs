//! The server's limits as a client meets them: full rooms, the room cap, handshakes per
//! address and at once, flood control for both protocol versions (keepalives and leave
//! exempt), silence towards unknown senders, tokens that die the moment their member or room
//! does, and logs that never show a token in full.
//!
//! To show that something did NOT arrive, a test sends a later marker and waits for it: the
//! server handles datagrams in the order they arrive, so whatever a broken server would have
//! sent arrives before the marker.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use chat_protocol::ucrp::Datagram;
use chat_protocol::v2::{ClientV2, LeaveReason, ServerV2, V2ErrorCode};
use chat_tests::{
    EVENT_TIMEOUT, Replies, ServerProcess, UdpMember, V2Member, XorShift64Star, create, handshake,
    join, v1_frame,
};

/// A refusal as the contract words it: `success` 0, the code, a sentence, an empty token.
fn assert_refused(replies: &Replies, code: &str) -> String {
    let json = replies.compliance_json();
    assert_eq!(json["success"], 0, "{json}");
    assert_eq!(json["error"], code, "{json}");
    let message = json["message"].as_str().unwrap_or("").to_owned();
    assert!(
        !message.trim().is_empty(),
        "a refusal explains itself: {json}"
    );
    assert_eq!(
        replies.complete_json()["token"],
        "",
        "a refusal grants no token"
    );
    message
}

fn list(server: &ServerProcess) -> Replies {
    handshake(server.tcp, 4, "", b"")
}

fn pair_request(server: &ServerProcess, name: &str) -> Replies {
    handshake(
        server.tcp,
        3,
        "",
        &serde_json::to_vec(name).expect("a name encodes as JSON"),
    )
}

/// A version-1 member that is registered in `room`.
fn v1_member(server: &ServerProcess, room: &str, grant: &Replies) -> UdpMember {
    let member = UdpMember::new(server.udp, room, &grant.token());
    member.register();
    member
}

/// What the server sent `socket` so far: a marker sent straight from the test to the socket
/// (not through the server) and everything that came before it. Call it only once the server
/// has provably handled everything of interest.
fn received_from_server_so_far(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let marker = b"marker sent by the test itself";
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
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut before = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            if &buf[..len] == marker {
                return before;
            }
            before.push(buf[..len].to_vec());
        }
    }
    panic!("the test's own marker never arrived");
}

/// Sends `text` from `from` until `to` receives it (a flood-limited sender may need a few
/// tries) and returns everything `to` received before the first copy. A retry comes only after
/// a whole second without the text, so a duplicate copy is unlikely, though not impossible;
/// callers that sync repeatedly with one receiver look past earlier sync texts.
fn sync_v1(from: &UdpMember, to: &UdpMember, sender: &str, text: &str) -> Vec<Vec<u8>> {
    let expected = v1_frame(sender, text);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut before = Vec::new();
    while Instant::now() < deadline {
        from.send(text.as_bytes());
        let attempt_ends = Instant::now() + Duration::from_secs(1);
        while Instant::now() < attempt_ends {
            if let Some(datagram) = to.recv_within(Duration::from_millis(50)) {
                if datagram == expected {
                    return before;
                }
                before.push(datagram);
            }
        }
    }
    panic!(
        "{text:?} from {sender} never arrived; received {}",
        show(&before)
    );
}

fn show(datagrams: &[Vec<u8>]) -> String {
    let shown: Vec<String> = datagrams
        .iter()
        .map(|d| format!("{:?}", String::from_utf8_lossy(d)))
        .collect();
    format!("[{}]", shown.join(", "))
}

/// Whether `datagram` is the only thing an unknown token may hear: that its room no longer
/// exists (`__ROOM_CLOSED__` in version 1, a `no_room` error in version 2).
fn is_no_room_answer(datagram: &[u8]) -> bool {
    datagram == b"__ROOM_CLOSED__"
        || datagram.split_first().is_some_and(|(&marker, json)| {
            marker == 0xff
                && matches!(
                    serde_json::from_slice(json),
                    Ok(ServerV2::Error {
                        code: V2ErrorCode::NoRoom,
                        seq: None,
                        ..
                    })
                )
        })
}

/// Leaves from a registered member's socket.
fn leave_v1(member: &UdpMember) {
    member.send(b"__LEAVE__");
}

#[test]
fn a_full_room_refuses_with_room_full_until_someone_leaves() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--max-members", "2"]);
    create(server.tcp, "den", "alice").token();
    let bob_grant = join(server.tcp, "den", "bob");
    let message = assert_refused(&join(server.tcp, "den", "carol"), "room_full");
    assert!(message.contains("full"), "says why: {message}");

    // Another room is not affected, and a seat that frees up can be taken.
    create(server.tcp, "other", "dave").token();
    let bob = v1_member(&server, "den", &bob_grant);
    leave_v1(&bob);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match join(server.tcp, "den", "carol").error_code() {
            None => break,
            Some(code) if code == "room_full" && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(code) => panic!("carol could not join after bob left: {code}"),
        }
    }
}

#[test]
fn the_room_cap_refuses_new_rooms_with_server_busy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--max-rooms", "2"]);
    let alice_grant = create(server.tcp, "one", "alice");
    create(server.tcp, "two", "bob").token();

    let message = assert_refused(&create(server.tcp, "three", "carol"), "server_busy");
    assert!(message.contains("2 rooms"), "names the limit: {message}");
    // A pair request that would need a new room is refused the same way.
    assert_refused(&pair_request(&server, "dave"), "server_busy");
    // Joining an existing room and listing still work.
    join(server.tcp, "one", "erin").token();
    assert_eq!(list(&server).error_code(), None);

    // Once a room closes, a new one can be made.
    let alice = v1_member(&server, "one", &alice_grant);
    leave_v1(&alice);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match create(server.tcp, "three", "carol").error_code() {
            None => break,
            Some(code) if code == "server_busy" && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(code) => panic!("no room could be made after one closed: {code}"),
        }
    }
}

#[test]
fn one_address_over_its_handshake_allowance_is_refused_with_server_busy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--handshakes-per-ip", "5"]);
    let grant = create(server.tcp, "den", "alice");
    for _ in 0..4 {
        assert_eq!(list(&server).error_code(), None);
    }
    // The sixth connection within the minute, whatever it asks, is refused at once.
    let message = assert_refused(&join(server.tcp, "den", "bob"), "server_busy");
    assert!(
        message.contains("too many requests from your address"),
        "says why: {message}"
    );
    assert_refused(&list(&server), "server_busy");
    assert_refused(&create(server.tcp, "other", "carol"), "server_busy");
    // The data plane is not limited by it: the member that got in registers as usual.
    v1_member(&server, "den", &grant);
    assert!(server.log().contains("too many requests from one address"));
}

#[test]
fn zero_handshakes_per_ip_turns_the_limit_off() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--handshakes-per-ip", "0"]);
    // Far more than the default allowance of 120 a minute, from one address.
    for i in 0..300 {
        assert_eq!(list(&server).error_code(), None, "request {i}");
    }
}

#[test]
fn handshakes_beyond_the_cap_are_refused_at_once_with_server_busy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(
        dir.path(),
        &["--max-handshakes", "2", "--handshake-timeout", "60"],
    );
    // Two clients that send half a header and stall hold both slots.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(server.tcp).unwrap();
            stream.write_all(&[5, 1, 0, 0, 0]).unwrap();
            stream
        })
        .collect();
    let message = assert_refused(&create(server.tcp, "den", "alice"), "server_busy");
    assert!(message.contains("too many requests"), "says why: {message}");

    // When they go away, their slots are free again.
    stalled.clear();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match create(server.tcp, "den", "alice").error_code() {
            None => break,
            Some(code) if code == "server_busy" && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(code) => panic!("the slots never came back: {code}"),
        }
    }
}

#[test]
fn a_version_1_flood_is_cut_to_the_burst_with_a_notice_and_never_queued() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The defaults: a burst of 10, then 5 a second.
    let server = ServerProcess::start(dir.path());
    let alice = v1_member(&server, "den", &create(server.tcp, "den", "alice"));
    let bob = v1_member(&server, "den", &join(server.tcp, "den", "bob"));
    alice.expect_chat("*", "bob joined");

    for i in 1..=30 {
        alice.send(format!("flood {i}").as_bytes());
    }
    let notice = alice
        .recv_matching(|d| d.starts_with(b"\x01*") && d.windows(8).any(|w| w == b"too fast"))
        .expect("the flooder is told that messages are dropped");
    assert!(String::from_utf8_lossy(&notice).contains("dropped"));

    // A marker sent (as often as needed) once the flood is over: anything queued would come
    // before it.
    let before = sync_v1(&alice, &bob, "alice", "after the flood");
    let delivered: Vec<u32> = before
        .iter()
        .map(|datagram| {
            let text = datagram
                .strip_prefix(b"\x05alice".as_slice())
                .unwrap_or_else(|| panic!("unexpected datagram {}", show(&before)));
            let text = String::from_utf8_lossy(text);
            text.strip_prefix("flood ").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        delivered[..10],
        (1..=10).collect::<Vec<u32>>(),
        "the burst passes in order"
    );
    assert!(delivered.len() < 30, "the excess is dropped: {delivered:?}");
    assert!(
        delivered.windows(2).all(|pair| pair[0] < pair[1]),
        "what passes keeps its order: {delivered:?}"
    );
    // Nothing of the flood trickles in later.
    let late: Vec<Vec<u8>> = bob
        .drain(Duration::from_millis(500))
        .into_iter()
        .filter(|d| d.windows(5).any(|w| w == b"flood"))
        .collect();
    assert!(
        late.is_empty(),
        "queued flood arrived late: {}",
        show(&late)
    );
}

/// Registers two version-2 members of a fresh room.
fn v2_pair(server: &ServerProcess, room: &str) -> (V2Member, V2Member) {
    let alice = V2Member::new(server.udp, room, &create(server.tcp, room, "alice").token());
    alice.register(None);
    let bob = V2Member::new(server.udp, room, &join(server.tcp, room, "bob").token());
    bob.register(None);
    alice.expect("bob joined", |event| {
        matches!(event, ServerV2::Joined { .. })
    });
    (alice, bob)
}

#[test]
fn a_version_2_flood_gets_one_answer_per_message_and_only_acked_ones_exist() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let (alice, bob) = v2_pair(&server, "den");

    for seq in 1..=30 {
        alice.send_msg(seq, &format!("flood {seq}"));
    }
    let mut acked = std::collections::BTreeMap::new();
    let mut limited = Vec::new();
    while acked.len() + limited.len() < 30 {
        let (_, answer) = alice.expect("an ack or an error per message", |event| {
            matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
        });
        match answer {
            ServerV2::Ack { seq, id } => assert!(acked.insert(seq, id).is_none(), "acked twice"),
            ServerV2::Error {
                code, seq, message, ..
            } => {
                assert_eq!(code, V2ErrorCode::RateLimited);
                assert!(!message.is_empty());
                limited.push(seq.expect("the error names the seq"));
            }
            _ => unreachable!(),
        }
    }
    assert!(
        (1..=10).all(|seq| acked.contains_key(&seq)),
        "the burst is acked: {acked:?}"
    );
    assert!(!limited.is_empty(), "the excess is refused");

    // The other member gets exactly the acked messages, and the room stores nothing else.
    let newest = *acked.values().max().unwrap();
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let (_, message) = bob.expect_msg(seen.len() as u64 + 1);
        seen.push(message.text);
    }
    let expected: Vec<String> = acked.keys().map(|seq| format!("flood {seq}")).collect();
    assert_eq!(seen, expected);
    let replay = bob.ping(Some(newest));
    assert!(replay.messages.is_empty(), "{:?}", replay.messages);
    assert_eq!(
        replay.latest,
        acked.len() as u64,
        "only acked messages were stored"
    );
}

#[test]
fn typing_counts_against_flood_control() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A slow refill, so that no token comes back while the test looks.
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0.2"]);
    let (alice, bob) = v2_pair(&server, "den");
    for _ in 0..20 {
        alice.send(&ClientV2::Typing);
    }
    alice.send_msg(1, "right after typing");
    let (_, answer) = alice.expect("the answer to the msg", |event| {
        matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
    });
    assert!(
        matches!(
            answer,
            ServerV2::Error {
                code: V2ErrorCode::RateLimited,
                ..
            }
        ),
        "typing used up the allowance: {answer:?}"
    );
    // Bob saw at most the burst of typing indicators.
    let pong = bob.ping(None);
    let typing = pong
        .other
        .iter()
        .filter(|event| matches!(event, ServerV2::Typing { .. }))
        .count();
    assert!(
        (1..20).contains(&typing),
        "the excess typing was dropped: {typing}"
    );
}

#[test]
fn keepalives_register_and_leave_survive_a_chat_flood() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let (alice, bob) = v2_pair(&server, "den");
    // Use up the allowance and then some.
    for seq in 1..=20 {
        alice.send_msg(seq, "flood");
    }
    let (_, _) = alice.expect("a rate_limited error", |event| {
        matches!(
            event,
            ServerV2::Error {
                code: V2ErrorCode::RateLimited,
                ..
            }
        )
    });
    // Pings draw on a budget of their own (the registration took one of ten): a chat flood
    // does not silence them.
    for _ in 0..5 {
        alice.send(&ClientV2::Ping { last_id: None });
    }
    let mut pongs = 0;
    while pongs < 5 {
        alice.expect("5 pongs", |event| matches!(event, ServerV2::Pong { .. }));
        pongs += 1;
    }
    // Registering again is answered too.
    let registration = alice.register(None);
    assert!(registration.members.is_some());
    // And so is leaving: bob is told at once.
    bob.send(&ClientV2::Leave);
    alice.expect("bob's leave", |event| {
        matches!(event, ServerV2::Left { name, reason: LeaveReason::Leave } if name == "bob")
    });

    // Version 1: a flooder can still leave.
    let carol_grant = join(server.tcp, "den", "carol");
    let carol = UdpMember::new(server.udp, "den", &carol_grant.token());
    carol.register();
    alice.expect("carol joined", |event| {
        matches!(event, ServerV2::Joined { .. })
    });
    for i in 0..30 {
        carol.send(format!("carol floods {i}").as_bytes());
    }
    carol
        .recv_matching(|d| d.windows(8).any(|w| w == b"too fast"))
        .expect("carol is told she is too fast");
    leave_v1(&carol);
    alice.expect("carol's leave", |event| {
        matches!(event, ServerV2::Left { name, reason: LeaveReason::Leave } if name == "carol")
    });
}

#[test]
fn unknown_senders_are_told_only_that_the_room_is_gone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let alice_grant = create(server.tcp, "den", "alice");
    let bob_grant = join(server.tcp, "den", "bob");
    let alice = v1_member(&server, "den", &alice_grant);
    let bob = v1_member(&server, "den", &bob_grant);
    alice.expect_chat("*", "bob joined");
    let real_tokens = [alice_grant.token(), bob_grant.token()];

    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let mut rng = XorShift64Star::new(0xbad5eed);
    // A real token from the wrong address may say anything but register, which would rightly
    // move its member here; registers go with unknown tokens only.
    let registers: [&[u8]; 3] = [
        b"__REGISTER__",
        b"\xff{\"t\":\"register\"}",
        b"\xff{\"t\":\"register\",\"last_id\":0}",
    ];
    let others: [&[u8]; 11] = [
        b"__LEAVE__",
        b"hello from nowhere",
        b"\xff{\"t\":\"msg\",\"seq\":1,\"text\":\"\"}",
        b"\xff{\"t\":\"msg\",\"seq\":2,\"text\":\"hi\"}",
        b"\xff{\"t\":\"ping\",\"last_id\":0}",
        b"\xff{\"t\":\"who\"}",
        b"\xff{\"t\":\"history\",\"limit\":100}",
        b"\xff{\"t\":\"typing\"}",
        b"\xff{\"t\":\"leave\"}",
        b"\xff{\"t\":\"nonsense\"}",
        b"\xff{\"t\":\"msg\",\"seq\":3,\"text\":\"hi\",\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}",
    ];
    let mut sent = 0;
    for batch in 0..10 {
        for _ in 0..100 {
            let random_token: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
            let mut pick =
                |from: &[&'static [u8]]| from[(rng.next_u64() % from.len() as u64) as usize];
            let (token, message) = match sent % 3 {
                0 => (random_token, pick(&registers)),
                1 => (random_token, pick(&others)),
                _ => (real_tokens[sent % 2].clone(), pick(&others)),
            };
            let room = if sent % 4 == 0 { "nowhere" } else { "den" };
            let datagram = Datagram {
                room,
                token: token.as_bytes(),
                message,
            }
            .encode()
            .unwrap();
            stranger.send_to(&datagram, server.udp).unwrap();
            sent += 1;
        }
        // Honest chat flows, untouched, between batches (which also keeps the server's
        // receive buffer from overflowing).
        let before = sync_v1(&alice, &bob, "alice", &format!("sync {batch}"));
        let earlier_sync = |d: &Vec<u8>| d.starts_with(b"\x05alicesync ");
        assert!(
            before.iter().all(earlier_sync),
            "bob received {}",
            show(&before)
        );
    }
    assert_eq!(sent, 1000);
    // Unknown tokens hear that the room no longer exists (rate-limited, never larger than
    // what they sent); real tokens from the wrong address or room hear nothing.
    let to_stranger = received_from_server_so_far(&stranger);
    assert!(
        to_stranger.iter().all(|d| is_no_room_answer(d)),
        "the stranger was answered: {}",
        show(&to_stranger)
    );
    // Forged leaves did nothing: both are still members.
    let before = sync_v1(&bob, &alice, "bob", "still here");
    assert!(before.is_empty(), "alice received {}", show(&before));
    assert_eq!(
        join(server.tcp, "den", "bob").error_code().as_deref(),
        Some("name_taken")
    );
}

#[test]
fn leave_and_close_invalidate_tokens_at_once_and_for_good() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let alice_grant = create(server.tcp, "den", "alice");
    let bob_grant = join(server.tcp, "den", "bob");
    let carol_grant = join(server.tcp, "den", "carol");
    let alice = v1_member(&server, "den", &alice_grant);
    let bob = v1_member(&server, "den", &bob_grant);
    let carol = v1_member(&server, "den", &carol_grant);
    alice.expect_chat("*", "carol joined");
    bob.expect_chat("*", "carol joined");

    leave_v1(&bob);
    alice.expect_chat("*", "bob left");
    carol.expect_chat("*", "bob left");
    // Bob's token is dead: neither registering nor chatting does anything.
    bob.send(b"__REGISTER__");
    bob.send(b"a ghost speaks");
    let before = sync_v1(&alice, &carol, "alice", "after bob left");
    assert!(before.is_empty(), "carol received {}", show(&before));
    let to_bob = received_from_server_so_far(&bob.socket);
    assert!(
        !to_bob.is_empty() && to_bob.iter().all(|d| is_no_room_answer(d)),
        "bob's dead token was answered: {}",
        show(&to_bob)
    );

    // The host leaves: the room and every token in it die.
    leave_v1(&alice);
    assert!(carol.recv_matching(|d| d == b"__ROOM_CLOSED__").is_some());
    carol.send(b"__REGISTER__");
    // The name is free: a new room under it, with a new host.
    let dave_grant = create(server.tcp, "den", "dave");
    let erin_grant = join(server.tcp, "den", "erin");
    let dave = v1_member(&server, "den", &dave_grant);
    let erin = v1_member(&server, "den", &erin_grant);
    dave.expect_chat("*", "erin joined");
    for (old, who) in [(&carol, "carol"), (&alice, "alice"), (&bob, "bob")] {
        old.send(b"__REGISTER__");
        old.send(format!("{who} from beyond").as_bytes());
    }
    let before = sync_v1(&dave, &erin, "dave", "new room");
    assert!(before.is_empty(), "erin received {}", show(&before));
    for (old, who) in [(&carol, "carol"), (&alice, "alice"), (&bob, "bob")] {
        let to_old = received_from_server_so_far(&old.socket);
        assert!(
            to_old.iter().all(|d| is_no_room_answer(d)),
            "{who}'s dead token was answered: {}",
            show(&to_old)
        );
    }

    // After a restart the old tokens are still dead (the state file caught up).
    let (tcp, udp) = (server.tcp, server.udp);
    assert!(server.terminate().success());
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    let dave = v1_member(&server, "den", &dave_grant);
    let erin = v1_member(&server, "den", &erin_grant);
    for old in [&carol, &alice, &bob] {
        old.send(b"__REGISTER__");
    }
    let before = sync_v1(&dave, &erin, "dave", "after the restart");
    assert!(
        before.iter().all(|d| d.starts_with(b"\x01*")),
        "erin received {}",
        show(&before)
    );
    for (old, who) in [(&carol, "carol"), (&alice, "alice"), (&bob, "bob")] {
        let to_old = received_from_server_so_far(&old.socket);
        assert!(
            to_old.iter().all(|d| is_no_room_answer(d)),
            "{who}'s token came back after a restart: {}",
            show(&to_old)
        );
    }
}

#[test]
fn no_token_appears_in_full_in_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--log-level", "trace"]);
    let mut tokens = Vec::new();
    // A full conversation in both versions, with every kind of message.
    let alice_grant = create(server.tcp, "den", "alice");
    let bob_grant = join(server.tcp, "den", "bob");
    tokens.extend([alice_grant.token(), bob_grant.token()]);
    let alice = v1_member(&server, "den", &alice_grant);
    let bob = V2Member::new(server.udp, "den", &bob_grant.token());
    bob.register(None);
    alice.expect_chat("*", "bob joined");
    alice.send(b"hello bob");
    bob.expect_msg(1);
    bob.say(1, "hello alice");
    alice.expect_chat("bob", "hello alice");
    bob.send(&ClientV2::Typing);
    bob.send(&ClientV2::Who);
    bob.send(&ClientV2::History {
        before: None,
        limit: Some(10),
    });
    bob.ping(Some(0));
    bob.say(1, "hello alice");
    // Private and pair rooms.
    let private = handshake(
        server.tcp,
        1,
        "vault",
        br#"{"username":"carol","password":"s3cret"}"#,
    );
    let dave = handshake(
        server.tcp,
        2,
        "vault",
        br#"{"username":"dave","password":"s3cret"}"#,
    );
    let erin = pair_request(&server, "erin");
    let frank = pair_request(&server, "frank");
    tokens.extend([private.token(), dave.token(), erin.token(), frank.token()]);
    assert_eq!(list(&server).error_code(), None);
    // Dropped datagrams are logged at debug level: real tokens from the wrong address, in
    // the wrong room, and a v2 error to a member.
    let stranger = UdpMember::new(server.udp, "den", &alice_grant.token());
    stranger.send(b"not really alice");
    let misdirected = UdpMember::new(server.udp, "vault", &bob_grant.token());
    misdirected.send(b"wrong room");
    bob.send_msg(2, "");
    bob.expect("the invalid error", |event| {
        matches!(event, ServerV2::Error { .. })
    });
    // Refusals, and goodbyes.
    join(server.tcp, "den", "Bob").error_code();
    bob.send(&ClientV2::Leave);
    alice.expect_chat("*", "bob left");
    alice.send(b"__LEAVE__");
    assert!(server.terminate().success());

    let log = std::fs::read_to_string(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "log"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        log.contains("handshake granted"),
        "the log is at trace level:\n{log}"
    );
    assert!(log.contains("datagram dropped"), "drops are logged:\n{log}");
    for token in &tokens {
        assert_eq!(token.len(), 64);
        // The 8-character prefix may be shown; no 12 characters in a row of the token may.
        for start in 0..=token.len() - 12 {
            let window = &token[start..start + 12];
            assert!(
                !log.contains(window),
                "the log shows {window} from a token (offset {start})"
            );
        }
        assert!(
            log.contains(&token[..8]),
            "tokens are shown by their prefix"
        );
    }
}

#[test]
fn a_room_list_longer_than_one_reply_is_cut_not_broken() {
    let dir = tempfile::tempdir().unwrap();
    // One address creates every room here; the per-address limits are not under test.
    let server = ServerProcess::start_with(
        dir.path(),
        &["--handshakes-per-ip", "0", "--rooms-per-ip", "0"],
    );
    // 64-byte names: about 100 bytes per room in the list, so 200 rooms exceed 16 KiB.
    let names: Vec<String> = (0..200)
        .map(|i| format!("{i:03}{}", "r".repeat(61)))
        .collect();
    for name in &names {
        create(server.tcp, name, "host").token();
    }
    let listed = list(&server);
    assert!(listed.complete.payload.len() <= 16 * 1024);
    let rooms: Vec<String> = listed.complete_json()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        (100..200).contains(&rooms.len()),
        "{} rooms listed",
        rooms.len()
    );
    assert_eq!(rooms[..], names[..rooms.len()], "the first rooms by name");
    // And the reply says where the next page starts.
    assert_eq!(
        listed.complete_json()["next"].as_str(),
        rooms.last().map(String::as_str)
    );
}
