//! Version 2 of the data plane against the real server, spoken by raw members: acks with room
//! ids, deduplication, replay on register and ping, history pages, presence, flood control,
//! pair rooms, the room list, private rooms, idle timeouts and a `kill -9` in the middle.
//!
//! To show that something did NOT arrive, a test sends a later marker and waits for it: the
//! server handles one member's datagrams in order and relays committed messages in id order,
//! so whatever a broken server would have sent arrives before the marker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_protocol::v2::{ChatMessage, ClientV2, CloseReason, LeaveReason, ServerV2, V2ErrorCode};
use chat_tests::{
    EVENT_TIMEOUT, Replies, ServerProcess, UdpMember, V2Member, create, handshake, join, v1_frame,
};

/// Creates `room` with `names[0]` as host, joins the others, registers everyone as version 2
/// (in order), and consumes the `joined` notices, so that no one has anything pending.
fn v2_room(server: &ServerProcess, room: &str, names: &[&str]) -> Vec<V2Member> {
    let mut members: Vec<V2Member> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let grant = if i == 0 {
            create(server.tcp, room, name)
        } else {
            join(server.tcp, room, name)
        };
        let member = V2Member::new(server.udp, room, &grant.token());
        let registration = member.register(None);
        let (here, host) = registration
            .members
            .expect("a registration is confirmed with the member list");
        assert_eq!(here, names[..=i], "members after {name} registered");
        assert_eq!(host, names[0]);
        for earlier in &members {
            earlier.expect(
                &format!("{name} joined"),
                |event| matches!(event, ServerV2::Joined { name: joined } if joined == name),
            );
        }
        members.push(member);
    }
    members
}

/// Sends every text as a new message (seqs from `first_seq`), a few at a time so that no
/// socket buffer overflows, and returns the ids they were acked with.
fn say_all(member: &V2Member, first_seq: u64, texts: &[String]) -> Vec<u64> {
    let mut ids = Vec::with_capacity(texts.len());
    for (chunk_index, chunk) in texts.chunks(10).enumerate() {
        let chunk_first = first_seq + 10 * chunk_index as u64;
        for (offset, text) in chunk.iter().enumerate() {
            member.send_msg(chunk_first + offset as u64, text);
        }
        let mut acked: Vec<Option<u64>> = vec![None; chunk.len()];
        while acked.iter().any(Option::is_none) {
            let (_, ack) = member.expect("acks of a burst of messages", |event| {
                matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
            });
            match ack {
                ServerV2::Ack { seq, id } => {
                    let slot = usize::try_from(seq - chunk_first).expect("small offset");
                    assert!(
                        acked[slot].is_none_or(|earlier| earlier == id),
                        "seq {seq} acked twice with different ids"
                    );
                    acked[slot] = Some(id);
                }
                other => panic!("a message was refused: {other:?}"),
            }
        }
        ids.extend(acked.into_iter().flatten());
    }
    ids
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("{prefix} {i}")).collect()
}

fn ids_of(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|message| message.id).collect()
}

fn list_rooms(server: &ServerProcess) -> serde_json::Value {
    let replies = handshake(server.tcp, 4, "", b"");
    assert_eq!(replies.error_code(), None);
    replies.complete_json()
}

fn pair_request(server: &ServerProcess, name: &str) -> Replies {
    handshake(
        server.tcp,
        3,
        "",
        serde_json::to_string(name)
            .expect("a name is JSON")
            .as_bytes(),
    )
}

/// The room a grant is for, as its State 2 payload and its echoed room name both say.
fn granted_room(replies: &Replies) -> String {
    let room = replies.complete_json()["room"]
        .as_str()
        .expect("a grant names its room")
        .to_owned();
    assert_eq!(
        replies.complete.room_name, room,
        "the reply echoes the room"
    );
    room
}

fn is_host(replies: &Replies) -> bool {
    replies.complete_json()["host"]
        .as_bool()
        .expect("a grant says whether the member hosts")
}

/// A version-2 member that shares `socket_of`'s socket but speaks with another token, to show
/// what arrived on that socket before an answer to it.
fn same_socket(socket_of: &V2Member, server: SocketAddr, room: &str, token: &str) -> V2Member {
    V2Member::from_udp(UdpMember {
        socket: socket_of.udp.socket.try_clone().expect("clone the socket"),
        server,
        room: room.to_owned(),
        token: token.to_owned(),
    })
}

/// Keeps every member in `active` alive with pings until `done` holds for the events they
/// received (one list per member, pongs left out); returns those events.
fn ping_until(active: &[&V2Member], done: impl Fn(&[Vec<ServerV2>]) -> bool) -> Vec<Vec<ServerV2>> {
    let mut received: Vec<Vec<ServerV2>> = vec![Vec::new(); active.len()];
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        for (member, events) in active.iter().zip(&mut received) {
            member.send(&ClientV2::Ping { last_id: None });
            while let Some(event) = member.next_event_within(Duration::from_millis(50)) {
                if !matches!(event, ServerV2::Pong { .. }) {
                    events.push(event);
                }
            }
        }
        if done(&received) {
            return received;
        }
    }
    panic!("timed out; the members received {received:?}");
}

#[test]
fn acks_carry_room_ids_and_a_retransmission_is_acked_again_but_relayed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let members = v2_room(&server, "ids", &["alice", "bob", "carol"]);
    let [alice, bob, carol] = &members[..] else {
        unreachable!()
    };

    // Ids count the room's messages, whoever sends them.
    assert_eq!(alice.say(1, "first from alice"), 1);
    assert_eq!(bob.say(1, "first from bob"), 2);
    assert_eq!(carol.say(1, "first from carol"), 3);
    assert_eq!(alice.say(2, "second from alice"), 4);

    // The ack of a retransmission names the id the first copy got.
    alice.send_msg(2, "second from alice");
    let (_, ack) = alice.expect("the ack of the retransmission", |event| {
        matches!(event, ServerV2::Ack { .. })
    });
    assert_eq!(ack, ServerV2::Ack { seq: 2, id: 4 });
    // Three copies at once, possibly while the first is being stored: every ack says 5.
    for _ in 0..3 {
        alice.send_msg(3, "third from alice");
    }
    alice.send_msg(4, "marker");
    let (acks, marker_ack) = alice.expect("the ack of the marker", |event| {
        matches!(event, ServerV2::Ack { seq: 4, .. })
    });
    assert_eq!(marker_ack, ServerV2::Ack { seq: 4, id: 6 });
    assert!(!acks.is_empty(), "seq 3 was never acked");
    assert!(
        acks.iter()
            .all(|ack| *ack == ServerV2::Ack { seq: 3, id: 5 }),
        "{acks:?}"
    );

    // Each receiver got every other member's message once, with the id the sender was acked.
    let expected = [
        (1, "alice", "first from alice"),
        (2, "bob", "first from bob"),
        (3, "carol", "first from carol"),
        (4, "alice", "second from alice"),
        (5, "alice", "third from alice"),
        (6, "alice", "marker"),
    ];
    for (receiver, name) in [(bob, "bob"), (carol, "carol")] {
        let (before, marker) = receiver.expect_msg(6);
        let mut got: Vec<(u64, String, String)> = before
            .into_iter()
            .map(|event| match event {
                ServerV2::Msg(message) => (message.id, message.from, message.text),
                other => panic!("{name} received {other:?}"),
            })
            .collect();
        got.push((marker.id, marker.from, marker.text));
        let wanted: Vec<(u64, String, String)> = expected
            .iter()
            .filter(|(_, from, _)| *from != name)
            .map(|(id, from, text)| (*id, (*from).to_owned(), (*text).to_owned()))
            .collect();
        assert_eq!(got, wanted, "what {name} received");
    }
}

#[test]
fn version_1_and_version_2_members_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let alice = V2Member::new(
        server.udp,
        "mixed",
        &create(server.tcp, "mixed", "alice").token(),
    );
    alice.register(None);
    let bob = UdpMember::new(
        server.udp,
        "mixed",
        &join(server.tcp, "mixed", "bob").token(),
    );
    let welcome = bob.register();
    assert_eq!(
        welcome,
        v1_frame("*", "welcome to mixed, bob; here now: alice, bob")
    );
    alice.expect("bob joined", |event| {
        *event == ServerV2::Joined { name: "bob".into() }
    });

    assert_eq!(alice.say(1, "hello bob, from version 2"), 1);
    assert_eq!(
        bob.recv_within(EVENT_TIMEOUT).as_deref(),
        Some(v1_frame("alice", "hello bob, from version 2").as_slice()),
        "the version-1 member gets the plain frame and nothing before it"
    );
    bob.send(b"hello alice, from version 1");
    let (before, message) = alice.expect_msg(2);
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(message.from, "bob");
    assert_eq!(message.text, "hello alice, from version 1");
    // Both are stored, in order.
    let (page, more, _) = alice.history(None, None);
    assert!(!more);
    let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["hello bob, from version 2", "hello alice, from version 1"]
    );
}

#[test]
fn a_new_member_gets_the_last_20_messages_then_pong() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let members = v2_room(&server, "recent", &["alice"]);
    let texts = numbered("message", 30);
    assert_eq!(
        say_all(&members[0], 1, &texts),
        (1..=30).collect::<Vec<_>>()
    );

    let bob = V2Member::new(
        server.udp,
        "recent",
        &join(server.tcp, "recent", "bob").token(),
    );
    let replay = bob.register(None);
    assert_eq!(replay.ids(), (11..=30).collect::<Vec<_>>());
    let replayed: Vec<&str> = replay.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(replayed, texts[10..]);
    assert!(replay.messages.iter().all(|m| m.from == "alice"));
    assert_eq!(replay.latest, 30);
    assert!(replay.other.is_empty(), "{:?}", replay.other);
}

#[test]
fn join_history_sets_how_many_messages_a_new_member_gets() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-rate", "0", "--join-history", "5"]);
    let members = v2_room(&server, "recent", &["alice"]);
    say_all(&members[0], 1, &numbered("message", 30));

    let bob = V2Member::new(
        server.udp,
        "recent",
        &join(server.tcp, "recent", "bob").token(),
    );
    let replay = bob.register(None);
    assert_eq!(replay.ids(), (26..=30).collect::<Vec<_>>());
    assert_eq!(replay.latest, 30);
}

#[test]
fn register_and_ping_with_last_id_replay_exactly_what_was_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let members = v2_room(&server, "gaps", &["alice", "bob"]);
    let [alice, bob] = &members[..] else {
        unreachable!()
    };
    say_all(alice, 1, &numbered("before", 5));
    bob.expect_msg(5);

    // Bob's laptop sleeps: messages 6..=10 go to an address nobody reads any more. He wakes
    // up on a new address and registers with the last id he has.
    say_all(alice, 6, &numbered("while away", 5));
    let bob = V2Member::new(server.udp, "gaps", &bob.udp.token);
    let replay = bob.register(Some(5));
    assert_eq!(replay.ids(), (6..=10).collect::<Vec<_>>());
    let texts: Vec<&str> = replay.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, numbered("while away", 5));
    assert_eq!(replay.latest, 10);
    assert!(
        replay.members.is_some(),
        "re-registering is confirmed as well"
    );

    // Live messages now reach the new address; pretend 11..=13 were lost on the way.
    say_all(alice, 11, &numbered("lost", 3));
    bob.expect_msg(13);
    let replay = bob.ping(Some(10));
    assert_eq!(replay.ids(), [11, 12, 13]);
    assert_eq!(replay.latest, 13);
    assert!(replay.members.is_none() && replay.other.is_empty());
    // Up to date: nothing to replay, just the pong.
    let replay = bob.ping(Some(13));
    assert!(replay.messages.is_empty(), "{:?}", replay.messages);
    assert_eq!(replay.latest, 13);
    let replay = bob.register(Some(13));
    assert!(replay.messages.is_empty(), "{:?}", replay.messages);
    assert_eq!(replay.latest, 13);
    // Own messages are replayed too: alice registers from scratch with last_id 0.
    let alice_again = V2Member::new(server.udp, "gaps", &alice.udp.token);
    let replay = alice_again.register(Some(0));
    assert_eq!(replay.ids(), (1..=13).collect::<Vec<_>>());
}

#[test]
fn history_pages_walk_back_to_the_first_message_and_fit_in_a_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let members = v2_room(&server, "archive", &["alice"]);
    let alice = &members[0];
    // Lengths from a few bytes to 1.5 KB, so that pages are cut by size, not only by limit.
    let texts: Vec<String> = (1..=120usize)
        .map(|i| format!("{i}:{}", "h".repeat((i * 37) % 1500)))
        .collect();
    say_all(alice, 1, &texts);

    let all = alice.whole_history(100);
    assert_eq!(ids_of(&all), (1..=120).collect::<Vec<_>>());
    let stored: Vec<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(stored, texts);

    // Short messages: pages are cut by the limit alone.
    let (page, more, _) = alice.history(Some(50), Some(3));
    assert_eq!(ids_of(&page), [47, 48, 49]);
    assert!(more);
    let (page, more, _) = alice.history(Some(3), Some(10));
    assert_eq!(ids_of(&page), [1, 2]);
    assert!(!more, "nothing is older than message 1");
    // Without `before`, the newest page.
    let (page, more, size) = alice.history(None, Some(100));
    assert!(size <= 4096);
    assert_eq!(page.last().map(|m| m.id), Some(120));
    assert!(more);
}

#[test]
fn history_limit_keeps_only_the_newest_messages_reachable_by_paging() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-rate", "0", "--history-limit", "10"]);
    let members = v2_room(&server, "short memory", &["alice"]);
    say_all(&members[0], 1, &numbered("message", 30));

    for limit in [100, 4] {
        let all = members[0].whole_history(limit);
        assert_eq!(ids_of(&all), (21..=30).collect::<Vec<_>>(), "limit {limit}");
    }
    let (page, more, _) = members[0].history(Some(21), Some(100));
    assert!(page.is_empty() && !more, "{page:?}");
}

#[test]
fn history_limit_also_bounds_what_register_replays() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-rate", "0", "--history-limit", "10"]);
    let members = v2_room(&server, "short memory", &["alice"]);
    say_all(&members[0], 1, &numbered("message", 30));

    // The contract: replay is "bounded by history retention". Paging stops at 21; so must
    // replay, with or without last_id.
    let bob = V2Member::new(
        server.udp,
        "short memory",
        &join(server.tcp, "short memory", "bob").token(),
    );
    let replayed = [
        bob.register(None).ids(),
        bob.register(Some(0)).ids(),
        bob.ping(Some(0)).ids(),
    ];
    let retained: Vec<u64> = (21..=30).collect();
    assert_eq!(
        replayed,
        [retained.clone(), retained.clone(), retained],
        "register without last_id, register with last_id 0, ping with last_id 0"
    );
}

#[test]
fn who_lists_members_and_typing_reaches_the_others_without_being_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let members = v2_room(&server, "presence", &["alice", "bob", "carol"]);
    let [alice, bob, carol] = &members[..] else {
        unreachable!()
    };

    carol.send(&ClientV2::Who);
    let (before, members_event) = carol.expect("the member list", |event| {
        matches!(event, ServerV2::Members { .. })
    });
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(
        members_event,
        ServerV2::Members {
            names: vec!["alice".into(), "bob".into(), "carol".into()],
            host: "alice".into(),
            more: 0,
            topic: None,
            away: Default::default(),
        }
    );

    bob.send(&ClientV2::Typing);
    for other in [alice, carol] {
        let raw = other
            .recv_raw_within(EVENT_TIMEOUT)
            .expect("the typing indicator arrives");
        assert_eq!(raw, b"\xff{\"t\":\"typing\",\"name\":\"bob\"}");
    }
    // Not echoed to bob: the answer to his next request is the first thing he gets.
    bob.send(&ClientV2::Who);
    let (before, _) = bob.expect("the member list", |event| {
        matches!(event, ServerV2::Members { .. })
    });
    assert!(before.is_empty(), "bob was sent {before:?}");

    // Never stored: the next message is the room's first, and the history holds only it.
    assert_eq!(bob.say(1, "i was typing this"), 1);
    let (page, more, _) = carol.history(None, None);
    assert_eq!(ids_of(&page), [1]);
    assert!(!more);
    assert_eq!(page[0].text, "i was typing this");
}

#[test]
fn flood_control_acks_the_burst_and_refuses_the_rest_with_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let members = v2_room(&server, "flood", &["alice", "bob"]);
    let [alice, bob] = &members[..] else {
        unreachable!()
    };
    for seq in 1..=30 {
        alice.send_msg(seq, &format!("flood {seq}"));
    }
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    while acked.len() + refused.len() < 30 {
        let (_, event) = alice.expect("an answer to each of 30 messages", |event| {
            matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
        });
        match event {
            ServerV2::Ack { seq, id } => acked.push((seq, id)),
            ServerV2::Error {
                code: V2ErrorCode::RateLimited,
                seq: Some(seq),
                ..
            } => refused.push(seq),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    acked.sort_unstable();
    refused.sort_unstable();
    assert_eq!(acked, (1..=10).map(|n| (n, n)).collect::<Vec<_>>());
    assert_eq!(refused, (11..=30).collect::<Vec<_>>());

    // A retransmission of an acked message is never rate limited.
    alice.send_msg(4, "flood 4");
    let (_, answer) = alice.expect("the answer to a retransmission", |event| {
        matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
    });
    assert_eq!(answer, ServerV2::Ack { seq: 4, id: 4 });
    // Only the ten accepted ones were relayed and stored.
    let (before, _) = bob.expect_msg(10);
    assert_eq!(before.len(), 9, "{before:?}");
    let (page, _, _) = bob.history(None, None);
    assert_eq!(ids_of(&page), (1..=10).collect::<Vec<_>>());
}

#[test]
fn with_flood_rate_0_every_message_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let members = v2_room(&server, "flood", &["alice"]);
    let alice = &members[0];
    for seq in 1..=30 {
        alice.send_msg(seq, &format!("flood {seq}"));
    }
    let mut acked = Vec::new();
    while acked.len() < 30 {
        let (_, event) = alice.expect("an answer to each of 30 messages", |event| {
            matches!(event, ServerV2::Ack { .. } | ServerV2::Error { .. })
        });
        match event {
            ServerV2::Ack { seq, id } => acked.push((seq, id)),
            other => panic!("refused with flood control off: {other:?}"),
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=30).map(|n| (n, n)).collect::<Vec<_>>());
}

/// Bytes of the version-2 `msg` event the server would send for `text` from `from`.
fn framed_event_len(from: &str, text: &str, id: u64) -> usize {
    let event = ServerV2::Msg(ChatMessage {
        id,
        from: from.to_owned(),
        text: text.to_owned(),
        // Thirteen digits, like every Unix-millisecond time until the year 2286.
        ts: 1_700_000_000_000,
        me: false,
        to: None,
    });
    1 + serde_json::to_vec(&event).expect("events encode").len()
}

/// Bytes of the client datagram that carries `text` as message `seq`.
fn client_datagram_len(room: &str, token: &str, seq: u64, text: &str) -> usize {
    let mut body = vec![0xff];
    body.extend(
        serde_json::to_vec(&ClientV2::Msg {
            seq,
            text: text.to_owned(),
        })
        .expect("messages encode"),
    );
    2 + room.len() + token.len() + body.len()
}

#[test]
fn a_message_that_fits_the_datagram_but_not_the_relayed_event_is_refused_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // The client's own JSON escapes text exactly as the server's does, so only the sender
    // name can make the relayed event larger than what the client sent: 32 quote characters
    // become 64 bytes of JSON, in a room whose name is one byte.
    let name = "\"".repeat(32);
    let members = v2_room(&server, "q", &[&name, "bob"]);
    let [sender, bob] = &members[..] else {
        unreachable!()
    };
    let token = &sender.udp.token;
    let longest = (1..4096)
        .rev()
        .find(|&len| client_datagram_len("q", token, 2, &"x".repeat(len)) <= 4096)
        .expect("some text fits");
    let too_large = "x".repeat(longest);
    assert_eq!(client_datagram_len("q", token, 2, &too_large), 4096);
    // A stored message must also fit a history page of its own, so that paging back always
    // makes progress: the limit is a little under the datagram's.
    let limit = chat_protocol::ucrp::MAX_STORED_MSG_FRAME;
    assert!(framed_event_len(&name, &too_large, 2) > limit);
    let fits = (1..longest)
        .rev()
        .map(|len| "x".repeat(len))
        .find(|text| framed_event_len(&name, text, 1) <= limit)
        .expect("some text fits the event");

    assert_eq!(sender.say(1, &fits), 1, "the longest text that fits");
    let (_, relayed) = bob.expect_msg(1);
    assert_eq!(relayed.text, fits);

    sender.send_msg(2, &too_large);
    let (_, refusal) = sender.expect("the refusal", |event| {
        matches!(event, ServerV2::Error { .. } | ServerV2::Ack { .. })
    });
    let ServerV2::Error { code, seq, message } = refusal else {
        panic!("accepted a message that cannot be relayed: {refusal:?}");
    };
    assert_eq!((code, seq), (V2ErrorCode::TooLarge, Some(2)));
    assert!(!message.is_empty());
    // Empty text is invalid.
    sender.send_msg(3, "");
    let (_, refusal) = sender.expect("the refusal", |event| {
        matches!(event, ServerV2::Error { .. } | ServerV2::Ack { .. })
    });
    assert!(
        matches!(
            refusal,
            ServerV2::Error {
                code: V2ErrorCode::Invalid,
                seq: Some(3),
                ..
            }
        ),
        "{refusal:?}"
    );
    // Neither was relayed or took an id.
    assert_eq!(sender.say(4, "after the refusals"), 2);
    let (before, _) = bob.expect_msg(2);
    assert!(before.is_empty(), "{before:?}");
}

#[test]
fn pairing_fills_waiting_rooms_oldest_first_and_refills_after_a_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let first = pair_request(&server, "ann");
    let second = pair_request(&server, "ben");
    let third = pair_request(&server, "cat");
    let pair_one = granted_room(&first);
    assert_eq!(
        granted_room(&second),
        pair_one,
        "the second joins the first"
    );
    assert!(is_host(&first));
    assert!(!is_host(&second));
    let pair_two = granted_room(&third);
    assert_ne!(pair_two, pair_one, "the third waits in a room of its own");
    assert!(is_host(&third));
    // A full pair room takes no one else, even by name.
    assert_eq!(
        join(server.tcp, &pair_one, "dan").error_code().as_deref(),
        Some("room_full")
    );

    // Ben leaves; Ann is told and her room waits again, behind Cat's.
    let ann = V2Member::new(server.udp, &pair_one, &first.token());
    ann.register(None);
    let ben = V2Member::new(server.udp, &pair_one, &second.token());
    ben.register(None);
    ann.expect("ben joined", |event| {
        matches!(event, ServerV2::Joined { .. })
    });
    ben.send(&ClientV2::Leave);
    let (_, left) = ann.expect("ben left", |event| matches!(event, ServerV2::Left { .. }));
    assert_eq!(
        left,
        ServerV2::Left {
            name: "ben".into(),
            reason: LeaveReason::Leave
        }
    );

    let fourth = pair_request(&server, "dan");
    assert_eq!(
        granted_room(&fourth),
        pair_two,
        "the oldest waiting room first"
    );
    assert!(!is_host(&fourth));
    let fifth = pair_request(&server, "eve");
    assert_eq!(granted_room(&fifth), pair_one, "then the room Ben left");
    assert!(!is_host(&fifth));
    let eve = V2Member::new(server.udp, &pair_one, &fifth.token());
    let (names, host) = eve.register(None).members.expect("confirmed");
    assert_eq!(
        (names, host),
        (vec!["ann".into(), "eve".into()], "ann".into())
    );
    // Now no room waits: the next one starts a new room.
    let sixth = pair_request(&server, "fay");
    let pair_three = granted_room(&sixth);
    assert!(pair_three != pair_one && pair_three != pair_two);
    assert!(is_host(&sixth));
}

#[test]
fn the_room_list_counts_members_flags_private_rooms_and_hides_pair_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    assert_eq!(list_rooms(&server), serde_json::json!({"rooms": []}));
    create(server.tcp, "lobby", "alice").token();
    join(server.tcp, "lobby", "bob").token();
    join(server.tcp, "lobby", "carol").token();
    let private = handshake(
        server.tcp,
        1,
        "vault",
        br#"{"username":"dora","password":"pw"}"#,
    );
    assert_eq!(private.error_code(), None);
    // One full pair room, one waiting.
    for name in ["p1", "p2", "p3"] {
        pair_request(&server, name).token();
    }

    let list = list_rooms(&server);
    assert_eq!(
        list,
        serde_json::json!({"rooms": [
            {"name": "lobby", "members": 3, "private": false},
            {"name": "vault", "members": 1, "private": true},
        ]})
    );
}

#[test]
fn private_rooms_need_the_password_and_store_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let password = "correct horse battery staple";
    let payload = serde_json::json!({"username": "a", "password": password}).to_string();
    let host = handshake(server.tcp, 1, "vault", payload.as_bytes());
    assert_eq!(host.error_code(), None);

    for (what, payload) in [
        (
            "a wrong password",
            serde_json::json!({"username": "b", "password": "correct horse battery stapler"}),
        ),
        ("no password", serde_json::json!({"username": "b"})),
        ("the plain string form", serde_json::json!("b")),
    ] {
        let refused = handshake(server.tcp, 2, "vault", payload.to_string().as_bytes());
        assert_eq!(
            refused.error_code().as_deref(),
            Some("bad_password"),
            "{what}"
        );
        assert_eq!(refused.complete_json(), serde_json::json!({"token": ""}));
    }
    let guest = handshake(
        server.tcp,
        2,
        "vault",
        serde_json::json!({"username": "b", "password": password})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(guest.error_code(), None);
    // And the member is really in: the host hears from the guest.
    let a = V2Member::new(server.udp, "vault", &host.token());
    a.register(None);
    let b = V2Member::new(server.udp, "vault", &guest.token());
    b.register(None);
    assert_eq!(b.say(1, "let me in"), 1);
    assert_eq!(a.expect_msg(1).1.text, "let me in");

    // The grant is in the snapshot or in the journal after it, depending on when the writer
    // last took a snapshot; the hash must be on disk and the password nowhere.
    let mut state = std::fs::read_to_string(&server.state).unwrap();
    let mut journal = server.state.clone().into_os_string();
    journal.push(".journal");
    state.push_str(&std::fs::read_to_string(journal).unwrap_or_default());
    assert!(state.contains("$argon2id$"), "{state}");
    assert!(
        !state.contains(password),
        "the password is on disk: {state}"
    );
}

#[test]
fn silent_members_time_out_and_a_silent_host_closes_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--idle-timeout", "1"]);
    let members = v2_room(&server, "sleepy", &["alice", "bob", "carol"]);
    let [alice, _bob, carol] = &members[..] else {
        unreachable!()
    };
    for member in &members {
        member
            .udp
            .socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
    }

    // Bob stops pinging; alice and carol keep going.
    let bob_left = ServerV2::Left {
        name: "bob".into(),
        reason: LeaveReason::Timeout,
    };
    let seen = ping_until(&[alice, carol], |events| {
        events.iter().all(|events| events.contains(&bob_left))
    });
    assert!(
        seen.iter()
            .all(|events| events == std::slice::from_ref(&bob_left)),
        "{seen:?}"
    );
    // Bob is no longer a member: his name is free.
    assert_eq!(join(server.tcp, "sleepy", "bob").error_code(), None);

    // Now the host goes silent too.
    let closed = ServerV2::RoomClosed {
        reason: CloseReason::HostTimeout,
    };
    let seen = ping_until(&[carol], |events| events[0].contains(&closed));
    assert!(seen[0].ends_with(std::slice::from_ref(&closed)), "{seen:?}");
    assert_eq!(
        join(server.tcp, "sleepy", "dave").error_code().as_deref(),
        Some("room_not_found")
    );

    // Alice's token is dead: her register, ping and message are answered only with
    // `no_room`, nothing else. A member of another room that shares her socket registers
    // after them; its answer comes after those.
    let other = create(server.tcp, "elsewhere", "erin").token();
    let erin = same_socket(alice, server.udp, "elsewhere", &other);
    alice.send(&ClientV2::Register { last_id: None });
    alice.send(&ClientV2::Ping { last_id: None });
    alice.send_msg(1, "anyone?");
    erin.send(&ClientV2::Register { last_id: None });
    let (before, _) = erin.expect("erin's challenge", |event| {
        matches!(event, ServerV2::Challenge { .. })
    });
    assert!(
        !before.is_empty()
            && before.iter().all(|event| matches!(
                event,
                ServerV2::Error {
                    code: V2ErrorCode::NoRoom,
                    seq: None,
                    ..
                }
            )),
        "a closed room's token was answered: {before:?}"
    );
}

#[test]
fn kill_9_keeps_every_acked_message_and_ids_and_dedup_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--flood-rate", "0"];
    let server = ServerProcess::start_with(dir.path(), &flags);
    let members = v2_room(&server, "durable", &["alice", "bob"]);
    let [alice, bob] = &members[..] else {
        unreachable!()
    };
    let alice_texts = numbered("alice before the crash", 5);
    assert_eq!(say_all(alice, 1, &alice_texts), [1, 2, 3, 4, 5]);
    bob.expect_msg(5);
    assert_eq!(bob.say(1, "bob before the crash"), 6);
    alice.expect_msg(6);
    let (tcp, udp) = (server.tcp, server.udp);
    // The instant after the last ack.
    server.kill9();

    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &flags);
    // The restarted server may not know where they are: they register again, as clients do
    // after a silence, saying what they have.
    for member in [alice, bob] {
        let replay = member.register(Some(6));
        assert!(replay.messages.is_empty(), "{:?}", replay.messages);
        assert_eq!(replay.latest, 6);
    }
    // A newcomer gets the recent messages, from the database now.
    let carol = V2Member::new(
        server.udp,
        "durable",
        &join(server.tcp, "durable", "carol").token(),
    );
    assert_eq!(carol.register(None).ids(), [1, 2, 3, 4, 5, 6]);
    for member in [alice, bob] {
        member.expect("carol joined", |event| {
            matches!(event, ServerV2::Joined { .. })
        });
    }

    let (page, more, _) = alice.history(None, None);
    assert!(!more);
    let stored: Vec<(u64, &str, &str)> = page
        .iter()
        .map(|m| (m.id, m.from.as_str(), m.text.as_str()))
        .collect();
    let mut expected: Vec<(u64, &str, &str)> = alice_texts
        .iter()
        .enumerate()
        .map(|(i, text)| (i as u64 + 1, "alice", text.as_str()))
        .collect();
    expected.push((6, "bob", "bob before the crash"));
    assert_eq!(stored, expected);

    // Retransmissions of messages acked before the crash get their original ids.
    bob.send_msg(1, "bob before the crash");
    let (_, ack) = bob.expect("the ack", |event| matches!(event, ServerV2::Ack { .. }));
    assert_eq!(ack, ServerV2::Ack { seq: 1, id: 6 });
    alice.send_msg(3, &alice_texts[2]);
    let (_, ack) = alice.expect("the ack", |event| matches!(event, ServerV2::Ack { .. }));
    assert_eq!(ack, ServerV2::Ack { seq: 3, id: 3 });

    // The next message gets the next id, and nothing was relayed again before it.
    assert_eq!(alice.say(6, "alice after the restart"), 7);
    let (before, message) = bob.expect_msg(7);
    assert!(
        before.is_empty(),
        "relayed again after the restart: {before:?}"
    );
    assert_eq!(message.text, "alice after the restart");
    assert_eq!(bob.say(2, "bob after the restart"), 8);
    let (before, _) = alice.expect_msg(8);
    assert!(
        before.is_empty(),
        "relayed again after the restart: {before:?}"
    );

    let all = alice.whole_history(100);
    assert_eq!(ids_of(&all), (1..=8).collect::<Vec<_>>());
    drop(server);
}
