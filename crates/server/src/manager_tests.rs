//! Unit tests of the room manager's rules, with history committed synchronously (no thread).

use super::*;
use chat_protocol::ucrp::{ServerDatagram, V2_MARKER};

const ROOM: &str = "lobby";

fn manager() -> RoomManager {
    RoomManager::new(Limits::default(), FloodPolicy::OFF)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v2(message: &ClientV2) -> Vec<u8> {
    let mut bytes = vec![V2_MARKER];
    bytes.extend(serde_json::to_vec(message).unwrap());
    bytes
}

/// What the manager made of one datagram.
struct Handled {
    result: Result<(), DropReason>,
    /// Every queued frame with its destination.
    sent: Vec<(SocketAddr, Vec<u8>)>,
}

/// Sends one message body and returns what the manager queued, with recipients.
fn send(manager: &mut RoomManager, member: &Membership, from: SocketAddr, body: &[u8]) -> Handled {
    let mut out = Outbox::default();
    let result = manager.handle_datagram(
        &member.room,
        member.token.to_hex().as_bytes(),
        body,
        from,
        Instant::now(),
        &mut out,
    );
    let sent = out
        .datagrams()
        .map(|(frame, to)| (to, frame.to_vec()))
        .collect();
    Handled { result, sent }
}

/// Registers a version-2 member at `from` the way a client does: register, then echo the
/// challenge from the same address. Returns what the echo was answered with.
fn register_v2(manager: &mut RoomManager, member: &Membership, from: SocketAddr) -> Handled {
    let asked = send(
        manager,
        member,
        from,
        &v2(&ClientV2::Register { last_id: None }),
    );
    let nonce = v2_events(&asked.sent, from)
        .into_iter()
        .find_map(|event| match event {
            ServerV2::Challenge { nonce } => Some(nonce),
            _ => None,
        })
        .expect("an unbound address is challenged");
    send(manager, member, from, &v2(&ClientV2::Echo { nonce }))
}

fn v2_events(sent: &[(SocketAddr, Vec<u8>)], to: SocketAddr) -> Vec<ServerV2> {
    sent.iter()
        .filter(|(addr, _)| *addr == to)
        .filter_map(|(_, frame)| match ServerDatagram::decode(frame) {
            Ok(ServerDatagram::V2(event)) => Some(event),
            _ => None,
        })
        .collect()
}

fn create_with_members(names: &[&str]) -> (RoomManager, Vec<Membership>) {
    let mut manager = manager();
    let now = Instant::now();
    let mut members = vec![
        manager
            .create(ROOM, names[0], RoomKind::Public, 0, now)
            .unwrap(),
    ];
    for name in &names[1..] {
        members.push(manager.join(ROOM, name, None, now).unwrap());
    }
    (manager, members)
}

#[test]
fn a_retransmission_is_acked_with_the_same_id_and_relayed_once() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob) = (addr(1), addr(2));
    register_v2(&mut manager, &members[0], alice);
    register_v2(&mut manager, &members[1], bob);
    let msg = v2(&ClientV2::Msg {
        seq: 1,
        text: "hi".into(),
    });

    let Handled { result, sent } = send(&mut manager, &members[0], alice, &msg);
    assert_eq!(result, Ok(()));
    assert_eq!(v2_events(&sent, alice), [ServerV2::Ack { seq: 1, id: 1 }]);
    assert!(matches!(
        v2_events(&sent, bob)[..],
        [ServerV2::Msg(ChatMessage { id: 1, .. })]
    ));

    let again = send(&mut manager, &members[0], alice, &msg);
    assert_eq!(
        v2_events(&again.sent, alice),
        [ServerV2::Ack { seq: 1, id: 1 }]
    );
    assert!(v2_events(&again.sent, bob).is_empty(), "relayed only once");
}

#[test]
fn version_one_and_two_members_read_each_other() {
    let (mut manager, members) = create_with_members(&["old", "new"]);
    let (old, new) = (addr(1), addr(2));
    send(&mut manager, &members[0], old, b"__REGISTER__");
    register_v2(&mut manager, &members[1], new);

    let Handled { sent, .. } = send(&mut manager, &members[0], old, b"plain text");
    let to_new = v2_events(&sent, new);
    assert!(
        matches!(&to_new[..], [ServerV2::Msg(m)] if m.text == "plain text" && m.from == "old"),
        "{to_new:?}"
    );

    let Handled { sent, .. } = send(
        &mut manager,
        &members[1],
        new,
        &v2(&ClientV2::Msg {
            seq: 1,
            text: "json text".into(),
        }),
    );
    let to_old: Vec<_> = sent.iter().filter(|(to, _)| *to == old).collect();
    assert_eq!(to_old.len(), 1);
    assert_eq!(to_old[0].1, b"\x03newjson text");
}

#[test]
fn replays_are_bounded_by_the_members_budget() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob) = (addr(1), addr(2));
    register_v2(&mut manager, &members[0], alice);
    register_v2(&mut manager, &members[1], bob);
    for seq in 1..=300 {
        send(
            &mut manager,
            &members[0],
            alice,
            &v2(&ClientV2::Msg {
                seq,
                text: format!("m{seq}"),
            }),
        );
    }
    // The cache holds the newest 256; asking from 100 is answered from memory, 200 at most.
    let ping = v2(&ClientV2::Ping { last_id: Some(100) });
    let mut replayed = 0;
    for _ in 0..20 {
        let Handled { sent, .. } = send(&mut manager, &members[1], bob, &ping);
        replayed += v2_events(&sent, bob)
            .iter()
            .filter(|event| matches!(event, ServerV2::Msg(_)))
            .count();
    }
    assert!(
        replayed <= usize::try_from(REPLAY_BUDGET.burst).unwrap() + 10,
        "a member cannot pull unbounded replays: {replayed}"
    );
    assert!(replayed >= 200, "but a real gap is filled: {replayed}");
}

#[test]
fn pairing_fills_the_oldest_waiting_room_first() {
    let mut manager = manager();
    let now = Instant::now();
    let first = manager.pair("ann", 0, now).unwrap();
    let second = manager.pair("ben", 0, now).unwrap();
    let third = manager.pair("cat", 0, now).unwrap();
    assert_eq!(first.room, second.room);
    assert!(first.host && !second.host);
    assert_ne!(third.room, first.room);
    let fourth = manager.pair("dan", 0, now).unwrap();
    assert_eq!(fourth.room, third.room);
    // A name already waiting in a room is not paired with itself.
    let lone = manager.pair("eve", 0, now).unwrap();
    let same_name = manager.pair("EVE", 0, now).unwrap();
    assert_ne!(lone.room, same_name.room);
}

#[test]
fn revoking_a_host_grant_removes_its_room() {
    let mut manager = manager();
    let host = manager
        .create(ROOM, "alice", RoomKind::Public, 0, Instant::now())
        .unwrap();
    manager.revoke(&host.token);
    assert_eq!(manager.room_count(), 0);
    assert_eq!(manager.member_count(), 0);
    assert!(
        manager
            .create(ROOM, "bob", RoomKind::Public, 0, Instant::now())
            .is_ok()
    );
}

#[test]
fn a_snapshot_restores_to_the_same_rooms_and_tokens() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    send(&mut manager, &members[1], addr(9), b"__REGISTER__");
    let snapshot = manager.snapshot();
    let restored = RoomManager::restore(
        snapshot.clone(),
        Limits::default(),
        FloodPolicy::OFF,
        None,
        Instant::now(),
    )
    .unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.member_count(), 2);
}

#[test]
fn next_does_not_pair_you_back_with_the_partner_you_left() {
    let mut manager = manager();
    let now = Instant::now();
    let ann = manager.pair("ann", 0, now).unwrap();
    let ben = manager.pair("ben", 0, now).unwrap();
    assert_eq!(ann.room, ben.room);
    // ben types /next: leaves, then pairs again.
    let ben_addr = addr(2);
    send(&mut manager, &ben, ben_addr, b"__REGISTER__");
    let left = send(&mut manager, &ben, ben_addr, b"__LEAVE__");
    assert_eq!(left.result, Ok(()));
    let ben_again = manager.pair("ben", 0, now).unwrap();
    assert_ne!(ben_again.room, ann.room, "ben waits for someone new");
    // Someone new takes the seat ben left: ann has been waiting longest.
    let cy = manager.pair("cy", 0, now).unwrap();
    assert_eq!(cy.room, ann.room);
}

#[test]
fn chat_stops_being_taken_while_the_history_cannot_keep_up() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let (jobs, queue) = std::sync::mpsc::channel();
    manager.attach_history(jobs);
    let alice = addr(1);
    register_v2(&mut manager, &members[0], alice);
    let say = |manager: &mut RoomManager, seq| {
        send(
            manager,
            &members[0],
            alice,
            &v2(&ClientV2::Msg {
                seq,
                text: "x".into(),
            }),
        )
        .result
    };
    for seq in 1..=MAX_UNSTORED as u64 {
        assert_eq!(say(&mut manager, seq), Ok(()));
    }
    let over = MAX_UNSTORED as u64 + 1;
    assert_eq!(say(&mut manager, over), Err(DropReason::HistoryBacklog));
    // The history thread commits a batch: chat is taken again, the refused one included.
    let batch: Vec<PendingMessage> = queue
        .try_iter()
        .take(10)
        .filter_map(|job| match job {
            HistoryJob::Store(pending) => Some(pending),
            _ => None,
        })
        .collect();
    manager.committed(&batch, &mut Outbox::default());
    assert_eq!(say(&mut manager, over), Ok(()));
}

#[test]
fn who_and_history_requests_count_against_flood_control() {
    let mut manager = RoomManager::new(
        Limits::default(),
        FloodPolicy {
            burst: 3,
            rate: 0.001,
        },
    );
    let host = manager
        .create(ROOM, "alice", RoomKind::Public, 0, Instant::now())
        .unwrap();
    let alice = addr(1);
    register_v2(&mut manager, &host, alice);
    let results: Vec<_> = (0..5)
        .map(|_| send(&mut manager, &host, alice, &v2(&ClientV2::Who)).result)
        .collect();
    assert_eq!(&results[..3], &[Ok(()), Ok(()), Ok(())]);
    assert_eq!(results[3], Err(DropReason::RateLimited));
    // A ping draws on a bucket of its own: requests do not starve keepalives.
    let ping = send(
        &mut manager,
        &host,
        alice,
        &v2(&ClientV2::Ping { last_id: None }),
    );
    assert_eq!(ping.result, Ok(()));
}

#[test]
fn a_stalled_server_does_not_take_the_stall_for_its_members_silence() {
    let (mut manager, _members) = create_with_members(&["host", "guest"]);
    let start = Instant::now();
    let period = Duration::from_secs(5);
    let mut out = Outbox::default();
    manager.sweep_idle(start, period, &mut out);
    // SIGSTOP for 65 s: the members kept pinging, into the socket buffer. The first sweep
    // after SIGCONT runs 60 s late and must not time anyone out.
    let resumed = start + Duration::from_secs(65);
    manager.sweep_idle(resumed, period, &mut out);
    manager.sweep_idle(resumed + Duration::from_millis(1), period, &mut out);
    assert_eq!(manager.room_count(), 1, "the room survives the stall");
    assert_eq!(manager.member_count(), 2);
    // Members that really stay silent still time out, on time after the stall.
    let mut now = resumed;
    while now < resumed + Duration::from_secs(62) {
        now += period;
        manager.sweep_idle(now, period, &mut out);
    }
    assert_eq!(
        manager.room_count(),
        0,
        "silence after the stall still counts"
    );
}

#[test]
fn a_message_held_behind_a_gap_that_never_fills_is_accepted_by_the_sweep() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let alice = addr(1);
    register_v2(&mut manager, &members[0], alice);
    let early = v2(&ClientV2::Msg {
        seq: 2,
        text: "two".into(),
    });
    let held = send(&mut manager, &members[0], alice, &early);
    assert!(v2_events(&held.sent, alice).is_empty(), "held for seq 1");
    // Seq 1 never comes and alice has nothing new to send: the sweep lets seq 2 go.
    let mut out = Outbox::default();
    let period = Duration::from_secs(5);
    let later = Instant::now() + crate::seq_window::HOLD_TIMEOUT + Duration::from_secs(1);
    manager.sweep_idle(later, period, &mut out);
    let sent: Vec<(SocketAddr, Vec<u8>)> = out
        .datagrams()
        .map(|(frame, to)| (to, frame.to_vec()))
        .collect();
    assert_eq!(v2_events(&sent, alice), [ServerV2::Ack { seq: 2, id: 1 }]);
}

fn manager_with_budget(bytes: usize) -> RoomManager {
    RoomManager::new(
        Limits {
            memory_budget: bytes,
            ..Limits::default()
        },
        FloodPolicy::OFF,
    )
}

/// A registered version-2 host of a new room.
fn v2_host(manager: &mut RoomManager, room: &str, port: u16) -> Membership {
    let host = manager
        .create(room, "host", RoomKind::Public, 0, Instant::now())
        .unwrap();
    register_v2(manager, &host, addr(port));
    host
}

#[test]
fn replay_caches_across_rooms_stay_within_their_share_of_the_budget() {
    let mut manager = manager_with_budget(64 * 1024);
    let text = "c".repeat(1000);
    for room in 0..20u16 {
        let host = v2_host(&mut manager, &format!("room{room}"), 100 + room);
        for seq in 1..=20 {
            let msg = v2(&ClientV2::Msg {
                seq,
                text: text.clone(),
            });
            assert_eq!(
                send(&mut manager, &host, addr(100 + room), &msg).result,
                Ok(())
            );
        }
    }
    let memory = manager.memory();
    assert!(memory.cached > 0);
    assert!(
        memory.cached <= memory.cache_limit(),
        "{} cached bytes over a share of {}",
        memory.cached,
        memory.cache_limit()
    );
    let actually_cached: usize = manager.rooms.values().map(Room::cached_bytes).sum();
    assert_eq!(actually_cached, memory.cached, "the accounting matches");
}

#[test]
fn held_back_messages_across_members_stay_within_their_share_of_the_budget() {
    let mut manager = manager_with_budget(64 * 1024);
    let text = "h".repeat(1000);
    for room in 0..4u16 {
        let host = v2_host(&mut manager, &format!("held{room}"), 200 + room);
        // Seq 1 never comes: everything after it is held, up to each member's own cap.
        for seq in 2..=40 {
            let msg = v2(&ClientV2::Msg {
                seq,
                text: text.clone(),
            });
            send(&mut manager, &host, addr(200 + room), &msg);
        }
    }
    let memory = manager.memory().clone();
    assert!(memory.held > 0);
    assert!(memory.held <= 16 * 1024, "{} held bytes", memory.held);
    // Closing the rooms gives it all back.
    for room in 0..4 {
        let host = manager
            .rooms
            .values()
            .find(|r| r.name == format!("held{room}"))
            .map(|r| r.members[&r.host].token)
            .unwrap();
        manager.revoke(&host);
    }
    assert_eq!(manager.memory().held, 0);
}

#[test]
fn the_history_backlog_stays_within_its_share_of_the_budget() {
    let mut manager = manager_with_budget(1 << 20);
    let (jobs, _queue) = std::sync::mpsc::channel();
    manager.attach_history(jobs);
    let host = v2_host(&mut manager, "backlog", 300);
    let text = "b".repeat(3000);
    let mut refused = None;
    for seq in 1..=1000 {
        let msg = v2(&ClientV2::Msg {
            seq,
            text: text.clone(),
        });
        if send(&mut manager, &host, addr(300), &msg).result == Err(DropReason::HistoryBacklog) {
            refused = Some(seq);
            break;
        }
    }
    assert!(refused.is_some(), "a stalled disk stops taking chat");
    assert!(manager.memory().unstored <= (1 << 20) / 2);
}

#[test]
fn registers_and_pings_count_against_a_budget_of_their_own() {
    let mut manager = RoomManager::new(
        Limits::default(),
        FloodPolicy {
            burst: 3,
            rate: 0.001,
        },
    );
    let host = manager
        .create(ROOM, "alice", RoomKind::Public, 0, Instant::now())
        .unwrap();
    let alice = addr(1);
    register_v2(&mut manager, &host, alice);
    let ping = v2(&ClientV2::Ping { last_id: None });
    let results: Vec<_> = (0..4)
        .map(|_| send(&mut manager, &host, alice, &ping).result)
        .collect();
    // The register took one of three.
    assert_eq!(&results[..2], &[Ok(()), Ok(())]);
    assert_eq!(results[2], Err(DropReason::RateLimited));
    let register = v2(&ClientV2::Register { last_id: None });
    assert_eq!(
        send(&mut manager, &host, alice, &register).result,
        Err(DropReason::RateLimited)
    );
    // Chat has its own bucket, untouched.
    let said = send(
        &mut manager,
        &host,
        alice,
        &v2(&ClientV2::Msg {
            seq: 1,
            text: "still here".into(),
        }),
    );
    assert_eq!(said.result, Ok(()));
}

#[test]
fn an_address_is_bound_only_once_it_echoes_the_challenge_sent_there() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob, mallory) = (addr(1), addr(2), addr(666));
    register_v2(&mut manager, &members[0], alice);
    register_v2(&mut manager, &members[1], bob);
    for seq in 1..=30 {
        let text = "x".repeat(1000);
        send(
            &mut manager,
            &members[0],
            alice,
            &v2(&ClientV2::Msg { seq, text }),
        );
    }

    // A register from an address that is not bound: a challenge and nothing else, smaller
    // than the register, to that address only.
    let register = v2(&ClientV2::Register { last_id: Some(0) });
    let asked = send(&mut manager, &members[0], mallory, &register);
    assert_eq!(asked.result, Ok(()));
    let [(to, frame)] = &asked.sent[..] else {
        panic!("one datagram expected: {:?}", asked.sent);
    };
    assert_eq!(*to, mallory);
    assert!(frame.len() < register.len() + 2 + ROOM.len() + 64);
    let [ServerV2::Challenge { nonce }] = &v2_events(&asked.sent, mallory)[..] else {
        panic!("a challenge expected");
    };

    // The echo from another address, or with another nonce, binds nothing; the host's leave
    // from the unproven address closes nothing.
    let echo = v2(&ClientV2::Echo {
        nonce: nonce.clone(),
    });
    let wrong_nonce = v2(&ClientV2::Echo {
        nonce: "0".repeat(32),
    });
    assert_eq!(
        send(&mut manager, &members[0], addr(667), &echo).result,
        Err(DropReason::WrongAddress)
    );
    assert_eq!(
        send(&mut manager, &members[0], mallory, &wrong_nonce).result,
        Err(DropReason::WrongAddress)
    );
    let leave = send(&mut manager, &members[0], mallory, &v2(&ClientV2::Leave));
    assert_eq!(leave.result, Err(DropReason::WrongAddress));
    assert!(leave.sent.is_empty());
    assert_eq!(manager.room_count(), 1);
    let said = send(
        &mut manager,
        &members[1],
        bob,
        &v2(&ClientV2::Msg {
            seq: 1,
            text: "still the room".into(),
        }),
    );
    assert!(
        v2_events(&said.sent, alice)
            .iter()
            .any(|event| matches!(event, ServerV2::Msg(m) if m.text == "still the room"))
    );

    // The echo from the challenged address moves the binding; the old address is told.
    let proven = send(&mut manager, &members[0], mallory, &echo);
    assert_eq!(proven.result, Ok(()));
    assert_eq!(v2_events(&proven.sent, alice), [ServerV2::Moved]);
    assert!(
        v2_events(&proven.sent, mallory)
            .iter()
            .any(|event| matches!(event, ServerV2::Members { .. }))
    );
    // A nonce is good once.
    assert_eq!(
        send(&mut manager, &members[0], addr(1), &echo).result,
        Err(DropReason::WrongAddress)
    );
}

#[test]
fn a_version_1_member_registers_only_from_the_handshake_ip() {
    let (mut manager, members) = create_with_members(&["alice", "bob"]);
    let home = "127.0.0.1".parse().unwrap();
    manager.set_home_ip(&members[1].token, home);
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 2));
    let refused = send(&mut manager, &members[1], elsewhere, b"__REGISTER__");
    assert_eq!(refused.result, Err(DropReason::WrongAddress));
    assert!(refused.sent.is_empty());
    assert_eq!(
        send(&mut manager, &members[1], addr(2), b"__REGISTER__").result,
        Ok(())
    );
    // Another port of the same IP may take over (the reference client cannot prove
    // anything); the old port is told. Another IP may not.
    let moved = send(&mut manager, &members[1], addr(3), b"__REGISTER__");
    assert_eq!(moved.result, Ok(()));
    let notice = moved.sent.iter().find(|(to, _)| *to == addr(2));
    let Some((_, frame)) = notice else {
        panic!("the old address is told: {:?}", moved.sent);
    };
    assert!(matches!(
        ServerDatagram::decode(frame),
        Ok(ServerDatagram::Chat { sender: "*", text }) if text.contains("another address")
    ));
    let refused = send(&mut manager, &members[1], elsewhere, b"__REGISTER__");
    assert_eq!(refused.result, Err(DropReason::WrongAddress));
}

#[test]
fn a_full_room_of_long_names_fits_its_member_list_and_welcome_in_one_datagram() {
    let names: Vec<String> = (0..256)
        .map(|i| format!("{i:03}{}", "n".repeat(29)))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut manager, members) = create_with_members(&refs);
    let last = &members[255];
    let registered = register_v2(&mut manager, last, addr(9));
    let listed = registered
        .sent
        .iter()
        .find_map(|(to, frame)| match ServerDatagram::decode(frame) {
            Ok(ServerDatagram::V2(ServerV2::Members { names, more, .. })) if *to == addr(9) => {
                Some((frame.len(), names.len(), more))
            }
            _ => None,
        })
        .expect("the member list is sent");
    assert!(listed.0 <= MAX_DATAGRAM, "{} bytes", listed.0);
    assert_eq!(listed.1 as u64 + listed.2, 256);
    assert!(listed.2 > 0);
    // Version 1: the welcome is sent, within the reply budget.
    let register = b"__REGISTER__";
    let welcomed = send(&mut manager, &members[254], addr(10), register);
    let frame = welcomed
        .sent
        .iter()
        .find(|(to, _)| *to == addr(10))
        .map(|(_, frame)| frame.clone())
        .expect("the welcome is sent");
    let received = 2 + ROOM.len() + 64 + register.len();
    assert!(frame.len() <= 4 * received, "{} bytes", frame.len());
    let Ok(ServerDatagram::Chat { text, .. }) = ServerDatagram::decode(&frame) else {
        panic!("a notice");
    };
    assert!(text.starts_with("welcome to lobby, 254"), "{text}");
    assert!(text.ends_with(" more"), "{text}");
}
