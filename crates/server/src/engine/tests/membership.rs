//! Membership: pairing, revoking, restoring, and timeouts on a fake clock.

use std::time::Duration;

use super::*;
use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::v2::LeaveReason;

use crate::engine::{JournalRecord, StateChange};

#[test]
fn pairing_fills_the_oldest_waiting_room_first() {
    let mut engine = engine();
    let clock = now();
    let first = engine.pair("ann", clock, &mut Effects::default()).unwrap();
    let second = engine.pair("ben", clock, &mut Effects::default()).unwrap();
    let third = engine.pair("cat", clock, &mut Effects::default()).unwrap();
    assert_eq!(first.room, second.room);
    assert!(first.host && !second.host);
    assert_ne!(third.room, first.room);
    let fourth = engine.pair("dan", clock, &mut Effects::default()).unwrap();
    assert_eq!(fourth.room, third.room);
    // A name already waiting in a room is not paired with itself.
    let lone = engine.pair("eve", clock, &mut Effects::default()).unwrap();
    let same_name = engine.pair("EVE", clock, &mut Effects::default()).unwrap();
    assert_ne!(lone.room, same_name.room);
}

#[test]
fn revoking_a_host_grant_removes_its_room() {
    let mut engine = engine();
    let host = engine
        .create(ROOM, "alice", RoomKind::Public, now())
        .unwrap();
    engine.revoke(&host.token, now().instant, &mut Effects::default());
    assert_eq!(engine.room_count(), 0);
    assert_eq!(engine.member_count(), 0);
    assert!(engine.create(ROOM, "bob", RoomKind::Public, now()).is_ok());
}

#[test]
fn a_snapshot_restores_to_the_same_rooms_and_tokens() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    send(&mut engine, &members[1], addr(9), b"__REGISTER__");
    let snapshot = engine.snapshot();
    let restored = Engine::restore(
        snapshot.clone(),
        Limits::default(),
        FloodPolicy::OFF,
        None,
        now().instant,
    )
    .unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.member_count(), 2);
}

#[test]
fn next_does_not_pair_you_back_with_the_partner_you_left() {
    let mut engine = engine();
    let clock = now();
    let ann = engine.pair("ann", clock, &mut Effects::default()).unwrap();
    let ben = engine.pair("ben", clock, &mut Effects::default()).unwrap();
    assert_eq!(ann.room, ben.room);
    // ben types /next: leaves, then pairs again.
    let ben_addr = addr(2);
    send(&mut engine, &ben, ben_addr, b"__REGISTER__");
    let left = send(&mut engine, &ben, ben_addr, b"__LEAVE__");
    assert_eq!(left.result, Ok(()));
    let ben_again = engine.pair("ben", clock, &mut Effects::default()).unwrap();
    assert_ne!(ben_again.room, ann.room, "ben waits for someone new");
    // Someone new takes the seat ben left: ann has been waiting longest.
    let cy = engine.pair("cy", clock, &mut Effects::default()).unwrap();
    assert_eq!(cy.room, ann.room);
}

#[test]
fn a_stalled_server_does_not_take_the_stall_for_its_members_silence() {
    let (mut engine, _members) = create_with_members(&["host", "guest"]);
    let start = now();
    let period = Duration::from_secs(5);
    let mut fx = Effects::default();
    engine.tick(start, period, &mut fx);
    // SIGSTOP for 65 s: the members kept pinging, into the socket buffer. The first tick
    // after SIGCONT runs 60 s late and must not time anyone out.
    let resumed = start.later(Duration::from_secs(65));
    engine.tick(resumed, period, &mut fx);
    engine.tick(resumed.later(Duration::from_millis(1)), period, &mut fx);
    assert_eq!(engine.room_count(), 1, "the room survives the stall");
    assert_eq!(engine.member_count(), 2);
    // Members that really stay silent still time out, on time after the stall.
    let mut clock = resumed;
    while clock.instant < resumed.instant + Duration::from_secs(62) {
        clock = clock.later(period);
        engine.tick(clock, period, &mut fx);
    }
    assert_eq!(
        engine.room_count(),
        0,
        "silence after the stall still counts"
    );
}

#[test]
fn a_full_room_of_long_names_fits_its_member_list_and_welcome_in_one_datagram() {
    let names: Vec<String> = (0..256)
        .map(|i| format!("{i:03}{}", "n".repeat(29)))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut engine, members) = create_with_members(&refs);
    let last = &members[255];
    let registered = register_v2(&mut engine, last, addr(9));
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
    let welcomed = send(&mut engine, &members[254], addr(10), register);
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

/// A timeout on a fake clock: alice keeps pinging, bob goes silent. Ticks up to the idle
/// timeout remove no one; the first tick past it removes bob, and alice (version 2) and carol
/// (version 1, whose own timeout is longer) are told he timed out.
#[test]
fn a_silent_member_times_out_on_the_fake_clock_and_the_others_are_told() {
    let (mut engine, members) = create_with_members(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (addr(1), addr(2), addr(3));
    register_v2(&mut engine, &members[0], alice);
    register_v2(&mut engine, &members[1], bob);
    assert_eq!(
        send(&mut engine, &members[2], carol, b"__REGISTER__").result,
        Ok(())
    );
    engine.take_changes();
    let timeout = Limits::default().idle_timeout;
    let period = Duration::from_secs(5);
    let ping = v2(&ClientV2::Ping { last_id: None });
    let mut fx = Effects::default();
    let mut elapsed = Duration::ZERO;
    while elapsed <= timeout {
        let pinged = send_at(&mut engine, &members[0], alice, &ping, at(elapsed));
        assert_eq!(pinged.result, Ok(()));
        engine.tick(at(elapsed), period, &mut fx);
        assert!(fx.is_empty(), "nobody times out by {elapsed:?}");
        assert_eq!(engine.member_count(), 3);
        elapsed += period;
    }

    engine.tick(at(elapsed), period, &mut fx);
    assert_eq!(engine.member_count(), 2, "bob is gone");
    let sent = sent_of(&fx);
    assert_eq!(
        v2_events(&sent, alice),
        [ServerV2::Left {
            name: "bob".into(),
            reason: LeaveReason::Timeout,
        }]
    );
    let to_carol: Vec<_> = sent.iter().filter(|(to, _)| *to == carol).collect();
    let [(_, frame)] = &to_carol[..] else {
        panic!("one notice for carol: {sent:?}");
    };
    assert!(matches!(
        ServerDatagram::decode(frame),
        Ok(ServerDatagram::Chat {
            sender: "*",
            text: "bob timed out"
        })
    ));
    assert!(
        sent.iter().all(|(to, _)| *to != bob),
        "bob is not there to hear it"
    );
    let changes = engine.take_changes();
    assert!(
        matches!(
            &changes[..],
            [JournalRecord {
                change: StateChange::MemberLeft { .. },
                ..
            }]
        ),
        "{changes:?}"
    );
}
