//! Binding addresses: challenges for version 2, the handshake's IP for version 1.

use super::*;
use crate::engine::{JournalRecord, StateChange, WireVersion};

#[test]
fn an_address_is_bound_only_once_it_echoes_the_challenge_sent_there() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob, mallory) = (addr(1), addr(2), addr(666));
    register_v2(&mut engine, &members[0], alice);
    register_v2(&mut engine, &members[1], bob);
    for seq in 1..=30 {
        let text = "x".repeat(1000);
        send(
            &mut engine,
            &members[0],
            alice,
            &v2(&ClientV2::Msg { seq, text }),
        );
    }

    // A register from an address that is not bound: a challenge and nothing else, smaller
    // than the register, to that address only.
    let register = v2(&ClientV2::Register { last_id: Some(0) });
    let asked = send(&mut engine, &members[0], mallory, &register);
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
        send(&mut engine, &members[0], addr(667), &echo).result,
        Err(DropReason::WrongAddress)
    );
    assert_eq!(
        send(&mut engine, &members[0], mallory, &wrong_nonce).result,
        Err(DropReason::WrongAddress)
    );
    let leave = send(&mut engine, &members[0], mallory, &v2(&ClientV2::Leave));
    assert_eq!(leave.result, Err(DropReason::WrongAddress));
    assert!(leave.sent.is_empty());
    assert_eq!(engine.room_count(), 1);
    let said = send(
        &mut engine,
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
    let proven = send(&mut engine, &members[0], mallory, &echo);
    assert_eq!(proven.result, Ok(()));
    assert_eq!(v2_events(&proven.sent, alice), [ServerV2::Moved]);
    assert!(
        v2_events(&proven.sent, mallory)
            .iter()
            .any(|event| matches!(event, ServerV2::Members { .. }))
    );
    // A nonce is good once.
    assert_eq!(
        send(&mut engine, &members[0], addr(1), &echo).result,
        Err(DropReason::WrongAddress)
    );
}

#[test]
fn a_version_1_member_registers_only_from_the_handshake_ip() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let home = "127.0.0.1".parse().unwrap();
    engine.set_home_ip(&members[1].token, home);
    let elsewhere = Endpoint::Udp(SocketAddr::from(([127, 0, 0, 2], 2)));
    let refused = send(&mut engine, &members[1], elsewhere, b"__REGISTER__");
    assert_eq!(refused.result, Err(DropReason::WrongAddress));
    assert!(refused.sent.is_empty());
    assert_eq!(
        send(&mut engine, &members[1], addr(2), b"__REGISTER__").result,
        Ok(())
    );
    // Another port of the same IP may take over (the reference client cannot prove
    // anything); the old port is told. Another IP may not.
    let moved = send(&mut engine, &members[1], addr(3), b"__REGISTER__");
    assert_eq!(moved.result, Ok(()));
    let notice = moved.sent.iter().find(|(to, _)| *to == addr(2));
    let Some((_, frame)) = notice else {
        panic!("the old address is told: {:?}", moved.sent);
    };
    assert!(matches!(
        ServerDatagram::decode(frame),
        Ok(ServerDatagram::Chat { sender: "*", text }) if text.contains("another address")
    ));
    let refused = send(&mut engine, &members[1], elsewhere, b"__REGISTER__");
    assert_eq!(refused.result, Err(DropReason::WrongAddress));
}

/// A handshake with no socket: create and join, then a version-2 register from bob's address
/// is answered with a challenge only, and the echo binds it: bob gets the member list and a
/// `pong`, alice hears that bob joined, and the binding is a change for the journal.
#[test]
fn a_handshake_and_an_echoed_challenge_bind_a_member() {
    let mut engine = engine();
    let mut fx = Effects::default();
    let host = engine
        .create(ROOM, "alice", RoomKind::Public, now())
        .unwrap();
    assert!(host.host);
    let (alice, bob_at) = (addr(1), addr(2));
    register_v2(&mut engine, &host, alice);
    let bob = engine.join(ROOM, "bob", None, now(), &mut fx).unwrap();
    assert!(!bob.host);
    assert!(fx.is_empty(), "a join sends nothing until bob registers");
    assert_eq!(engine.journal_seq(), 3, "created, alice bound, bob joined");
    assert_eq!(engine.take_changes().len(), 3);

    let register = v2(&ClientV2::Register { last_id: None });
    let asked = send(&mut engine, &bob, bob_at, &register);
    assert_eq!(asked.result, Ok(()));
    let [(to, _)] = &asked.sent[..] else {
        panic!("one datagram expected: {:?}", asked.sent);
    };
    assert_eq!(*to, bob_at);
    let [ServerV2::Challenge { nonce }] = &v2_events(&asked.sent, bob_at)[..] else {
        panic!("a challenge expected");
    };
    assert!(engine.take_changes().is_empty(), "nothing is bound yet");

    let echo = v2(&ClientV2::Echo {
        nonce: nonce.clone(),
    });
    let echoed = send(&mut engine, &bob, bob_at, &echo);
    assert_eq!(echoed.result, Ok(()));
    assert!(echoed.jobs.is_empty());
    let to_bob = v2_events(&echoed.sent, bob_at);
    assert!(
        matches!(
            &to_bob[..],
            [ServerV2::Members { names, host, more: 0, .. }, ServerV2::Pong { id: 0 }]
                if names == &["alice", "bob"] && host == "alice"
        ),
        "{to_bob:?}"
    );
    assert_eq!(
        v2_events(&echoed.sent, alice),
        [ServerV2::Joined { name: "bob".into() }]
    );
    let changes = engine.take_changes();
    let [
        JournalRecord {
            seq: 4,
            change:
                StateChange::MemberRegistered {
                    addr,
                    version: WireVersion::V2,
                    ..
                },
        },
    ] = &changes[..]
    else {
        panic!("one registration expected: {changes:?}");
    };
    assert_eq!(addr.map(Endpoint::Udp), Some(bob_at));
}
