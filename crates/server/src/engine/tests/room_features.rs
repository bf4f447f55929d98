//! Actions, direct messages, topics, the host's commands, away texts and search, as rules of
//! the engine.

use std::net::IpAddr;

use chat_protocol::v2::{ClientV2, LeaveReason, ServerV2, V2ErrorCode};

use super::*;
use crate::engine::StateChange;

/// Alice (host), bob and carol, registered at ports 1, 2 and 3.
fn room_of_three() -> (Engine, Vec<Membership>) {
    let (mut engine, members) = create_with_members(&["alice", "bob", "carol"]);
    for (member, port) in members.iter().zip(1..) {
        register_v2(&mut engine, member, addr(port));
    }
    (engine, members)
}

fn error_code(sent: &[(Endpoint, Vec<u8>)], to: Endpoint) -> Option<V2ErrorCode> {
    v2_events(sent, to)
        .into_iter()
        .find_map(|event| match event {
            ServerV2::Error { code, .. } => Some(code),
            _ => None,
        })
}

#[test]
fn a_direct_message_goes_to_its_recipient_and_a_skip_to_the_others() {
    let (mut engine, members) = room_of_three();
    let dm = ClientV2::Dm {
        seq: 1,
        to: "CAROL".into(),
        text: "psst".into(),
    };
    let handled = send(&mut engine, &members[1], addr(2), &v2(&dm));
    assert_eq!(handled.result, Ok(()));
    let to_carol = v2_events(&handled.sent, addr(3));
    assert!(
        matches!(&to_carol[..], [ServerV2::Msg(m)] if m.to.as_deref() == Some("carol") && m.text == "psst"),
        "{to_carol:?}"
    );
    let to_alice = v2_events(&handled.sent, addr(1));
    assert!(
        matches!(&to_alice[..], [ServerV2::Skip { .. }]),
        "{to_alice:?}"
    );
    let to_bob = v2_events(&handled.sent, addr(2));
    assert!(
        to_bob
            .iter()
            .any(|e| matches!(e, ServerV2::Ack { seq: 1, .. })),
        "{to_bob:?}"
    );
    // A name nobody else has is refused, with its seq.
    let nobody = ClientV2::Dm {
        seq: 2,
        to: "bob".into(),
        text: "to myself".into(),
    };
    let handled = send(&mut engine, &members[1], addr(2), &v2(&nobody));
    assert_eq!(
        error_code(&handled.sent, addr(2)),
        Some(V2ErrorCode::NoSuchMember)
    );
    assert!(v2_events(&handled.sent, addr(3)).is_empty());
}

#[test]
fn only_the_host_kicks_bans_and_hands_over() {
    let (mut engine, members) = room_of_three();
    let kick = v2(&ClientV2::Kick {
        name: "carol".into(),
    });
    let handled = send(&mut engine, &members[1], addr(2), &kick);
    assert_eq!(
        error_code(&handled.sent, addr(2)),
        Some(V2ErrorCode::NotHost)
    );
    assert_eq!(engine.member_count(), 3);

    let ban = v2(&ClientV2::Ban {
        name: "carol".into(),
    });
    let handled = send(&mut engine, &members[0], addr(1), &ban);
    assert!(
        matches!(&v2_events(&handled.sent, addr(3))[..], [ServerV2::Kicked { by, ban: true }] if by == "alice")
    );
    assert!(v2_events(&handled.sent, addr(2)).iter().any(|e| matches!(
        e,
        ServerV2::Left { name, reason: LeaveReason::Banned } if name == "carol"
    )));
    assert_eq!(engine.member_count(), 2);
    let home: IpAddr = [127, 0, 0, 1].into();
    assert!(engine.is_banned("LOBBY", home));
    assert!(!engine.is_banned("lobby", [10, 0, 0, 1].into()));
    let changes = engine.take_changes();
    assert!(
        changes
            .iter()
            .any(|r| matches!(&r.change, StateChange::AddressesBanned { addresses, .. } if addresses == &[home])),
        "{changes:?}"
    );

    let host = v2(&ClientV2::Host { name: "bob".into() });
    let handled = send(&mut engine, &members[0], addr(1), &host);
    for port in [1, 2] {
        assert!(
            v2_events(&handled.sent, addr(port))
                .iter()
                .any(|e| matches!(e, ServerV2::Host { name } if name == "bob"))
        );
    }
    let handled = send(&mut engine, &members[0], addr(1), &kick);
    assert_eq!(
        error_code(&handled.sent, addr(1)),
        Some(V2ErrorCode::NotHost)
    );
}

#[test]
fn topics_and_away_texts_are_bounded_and_shown_in_members() {
    let (mut engine, members) = room_of_three();
    engine.take_changes();
    let topic = v2(&ClientV2::Topic {
        text: " release day ".into(),
    });
    let handled = send(&mut engine, &members[2], addr(3), &topic);
    assert!(v2_events(&handled.sent, addr(1)).iter().any(
        |e| matches!(e, ServerV2::Topic { name, text } if name == "carol" && text == "release day")
    ));
    assert_eq!(engine.take_changes().len(), 1, "recorded once");
    // The same topic again: only the sender hears, nothing is recorded.
    let handled = send(&mut engine, &members[2], addr(3), &topic);
    assert!(v2_events(&handled.sent, addr(1)).is_empty());
    assert!(engine.take_changes().is_empty());
    assert_eq!(engine.list().rooms[0].topic.as_deref(), Some("release day"));

    let away = v2(&ClientV2::Away {
        text: "lunch".into(),
    });
    send(&mut engine, &members[1], addr(2), &away);
    let handled = send(&mut engine, &members[0], addr(1), &v2(&ClientV2::Who));
    let members_event = v2_events(&handled.sent, addr(1));
    assert!(
        matches!(&members_event[..], [ServerV2::Members { topic: Some(t), away, .. }]
            if t == "release day" && away.get("bob").map(String::as_str) == Some("lunch")),
        "{members_event:?}"
    );
    let long = v2(&ClientV2::Away {
        text: "x".repeat(101),
    });
    let handled = send(&mut engine, &members[1], addr(2), &long);
    assert_eq!(
        error_code(&handled.sent, addr(2)),
        Some(V2ErrorCode::TooLarge)
    );
}

#[test]
fn an_action_is_relayed_as_one_and_search_without_a_store_finds_nothing() {
    let (mut engine, members) = room_of_three();
    let me = v2(&ClientV2::Me {
        seq: 1,
        text: "waves".into(),
    });
    let handled = send(&mut engine, &members[0], addr(1), &me);
    assert!(
        matches!(&v2_events(&handled.sent, addr(2))[..], [ServerV2::Msg(m)] if m.me && m.text == "waves")
    );
    let search = v2(&ClientV2::Search {
        words: "waves".into(),
        before: None,
        limit: None,
    });
    let handled = send(&mut engine, &members[1], addr(2), &search);
    assert!(matches!(
        &v2_events(&handled.sent, addr(2))[..],
        [ServerV2::Found { messages, more: false, .. }] if messages.is_empty()
    ));
    let blank = v2(&ClientV2::Search {
        words: "  ".into(),
        before: None,
        limit: None,
    });
    let handled = send(&mut engine, &members[1], addr(2), &blank);
    assert_eq!(
        error_code(&handled.sent, addr(2)),
        Some(V2ErrorCode::Invalid)
    );
}
