//! Binding addresses: challenges for version 2, the handshake's IP for version 1.

use super::*;

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
