//! Chat: ordering, deduplication, version interplay, replays, the history backlog and
//! flood control.

use std::time::Duration;

use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2};

use super::*;
use crate::engine::MAX_UNSTORED;
use crate::engine::room::REPLAY_BUDGET;
use crate::engine::seq_window::HOLD_TIMEOUT;

#[test]
fn a_retransmission_is_acked_with_the_same_id_and_relayed_once() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob) = (addr(1), addr(2));
    register_v2(&mut engine, &members[0], alice);
    register_v2(&mut engine, &members[1], bob);
    let msg = v2(&ClientV2::Msg {
        seq: 1,
        text: "hi".into(),
    });

    let Handled { result, sent, .. } = send(&mut engine, &members[0], alice, &msg);
    assert_eq!(result, Ok(()));
    assert_eq!(v2_events(&sent, alice), [ServerV2::Ack { seq: 1, id: 1 }]);
    assert!(matches!(
        v2_events(&sent, bob)[..],
        [ServerV2::Msg(ChatMessage { id: 1, .. })]
    ));

    let again = send(&mut engine, &members[0], alice, &msg);
    assert_eq!(
        v2_events(&again.sent, alice),
        [ServerV2::Ack { seq: 1, id: 1 }]
    );
    assert!(v2_events(&again.sent, bob).is_empty(), "relayed only once");
}

#[test]
fn version_one_and_two_members_read_each_other() {
    let (mut engine, members) = create_with_members(&["old", "new"]);
    let (old, new) = (addr(1), addr(2));
    send(&mut engine, &members[0], old, b"__REGISTER__");
    register_v2(&mut engine, &members[1], new);

    let Handled { sent, .. } = send(&mut engine, &members[0], old, b"plain text");
    let to_new = v2_events(&sent, new);
    assert!(
        matches!(&to_new[..], [ServerV2::Msg(m)] if m.text == "plain text" && m.from == "old"),
        "{to_new:?}"
    );

    let Handled { sent, .. } = send(
        &mut engine,
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
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob) = (addr(1), addr(2));
    register_v2(&mut engine, &members[0], alice);
    register_v2(&mut engine, &members[1], bob);
    for seq in 1..=300 {
        send(
            &mut engine,
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
        let Handled { sent, .. } = send(&mut engine, &members[1], bob, &ping);
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
fn chat_stops_being_taken_while_the_history_cannot_keep_up() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    engine.attach_history();
    let mut jobs = Vec::new();
    let alice = addr(1);
    register_v2(&mut engine, &members[0], alice);
    let say = |engine: &mut Engine, seq| {
        send(
            engine,
            &members[0],
            alice,
            &v2(&ClientV2::Msg {
                seq,
                text: "x".into(),
            }),
        )
    };
    for seq in 1..=MAX_UNSTORED as u64 {
        let said = say(&mut engine, seq);
        assert_eq!(said.result, Ok(()));
        jobs.extend(said.jobs);
    }
    let over = MAX_UNSTORED as u64 + 1;
    assert_eq!(
        say(&mut engine, over).result,
        Err(DropReason::HistoryBacklog)
    );
    // The history thread commits a batch: chat is taken again, the refused one included.
    let batch: Vec<PendingMessage> = jobs
        .drain(..10)
        .filter_map(|job| match job {
            HistoryJob::Store(pending) => Some(pending),
            _ => None,
        })
        .collect();
    engine.committed(&batch, &mut Effects::default());
    assert_eq!(say(&mut engine, over).result, Ok(()));
}

#[test]
fn who_and_history_requests_count_against_flood_control() {
    let mut engine = Engine::new(
        Limits::default(),
        FloodPolicy {
            burst: 3,
            rate: 0.001,
        },
    );
    let host = engine
        .create(ROOM, "alice", RoomKind::Public, now())
        .unwrap();
    let alice = addr(1);
    register_v2(&mut engine, &host, alice);
    let results: Vec<_> = (0..5)
        .map(|_| send(&mut engine, &host, alice, &v2(&ClientV2::Who)).result)
        .collect();
    assert_eq!(&results[..3], &[Ok(()), Ok(()), Ok(())]);
    assert_eq!(results[3], Err(DropReason::RateLimited));
    // A ping draws on a bucket of its own: requests do not starve keepalives.
    let ping = send(
        &mut engine,
        &host,
        alice,
        &v2(&ClientV2::Ping { last_id: None }),
    );
    assert_eq!(ping.result, Ok(()));
}

#[test]
fn registers_and_pings_count_against_a_budget_of_their_own() {
    let mut engine = Engine::new(
        Limits::default(),
        FloodPolicy {
            burst: 3,
            rate: 0.001,
        },
    );
    let host = engine
        .create(ROOM, "alice", RoomKind::Public, now())
        .unwrap();
    let alice = addr(1);
    register_v2(&mut engine, &host, alice);
    let ping = v2(&ClientV2::Ping { last_id: None });
    let results: Vec<_> = (0..4)
        .map(|_| send(&mut engine, &host, alice, &ping).result)
        .collect();
    // The register took one of three.
    assert_eq!(&results[..2], &[Ok(()), Ok(())]);
    assert_eq!(results[2], Err(DropReason::RateLimited));
    let register = v2(&ClientV2::Register { last_id: None });
    assert_eq!(
        send(&mut engine, &host, alice, &register).result,
        Err(DropReason::RateLimited)
    );
    // Chat has its own bucket, untouched.
    let said = send(
        &mut engine,
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
fn a_message_held_behind_a_gap_that_never_fills_is_accepted_by_the_tick() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let alice = addr(1);
    register_v2(&mut engine, &members[0], alice);
    let early = v2(&ClientV2::Msg {
        seq: 2,
        text: "two".into(),
    });
    let held = send(&mut engine, &members[0], alice, &early);
    assert!(v2_events(&held.sent, alice).is_empty(), "held for seq 1");
    // Seq 1 never comes and alice has nothing new to send: the tick lets seq 2 go.
    let mut fx = Effects::default();
    let period = Duration::from_secs(5);
    let later = at(HOLD_TIMEOUT + Duration::from_secs(1));
    engine.tick(later, period, &mut fx);
    let sent = sent_of(&fx);
    assert_eq!(v2_events(&sent, alice), [ServerV2::Ack { seq: 2, id: 1 }]);
}

/// Chat with loss and reordering, stored through a history store: alice's seq 2 is late, so 3
/// waits for it; a retransmission of 1 before it is stored starts nothing new. Nothing is
/// acked or relayed until the commit, which releases the acks to alice and the relays to bob
/// in order; a retransmission after it is acked again with the same id and not relayed.
#[test]
fn chat_with_loss_and_reordering_is_stored_once_in_order() {
    let (mut engine, members) = create_with_members(&["alice", "bob"]);
    let (alice, bob) = (addr(1), addr(2));
    register_v2(&mut engine, &members[0], alice);
    register_v2(&mut engine, &members[1], bob);
    engine.attach_history();
    let msg = |seq: u64| {
        v2(&ClientV2::Msg {
            seq,
            text: format!("line {seq}"),
        })
    };
    let mut stored = Vec::new();
    for seq in [1, 3, 2, 1] {
        let handled = send(&mut engine, &members[0], alice, &msg(seq));
        assert_eq!(handled.result, Ok(()));
        assert!(handled.sent.is_empty(), "nothing before the commit");
        stored.extend(handled.jobs.into_iter().map(|job| match job {
            HistoryJob::Store(pending) => pending,
            other => panic!("only chat to store: {other:?}"),
        }));
    }
    let order: Vec<(Option<u64>, u64)> = stored
        .iter()
        .map(|pending| (pending.stored.seq, pending.stored.message.id))
        .collect();
    assert_eq!(order, [(Some(1), 1), (Some(2), 2), (Some(3), 3)]);

    let mut fx = Effects::default();
    engine.committed(&stored, &mut fx);
    assert!(fx.history.is_empty());
    let sent = sent_of(&fx);
    assert_eq!(
        v2_events(&sent, alice),
        [
            ServerV2::Ack { seq: 1, id: 1 },
            ServerV2::Ack { seq: 2, id: 2 },
            ServerV2::Ack { seq: 3, id: 3 },
        ]
    );
    let relayed: Vec<(u64, String)> = v2_events(&sent, bob)
        .into_iter()
        .map(|event| match event {
            ServerV2::Msg(ChatMessage { id, text, .. }) => (id, text),
            other => panic!("only chat for bob: {other:?}"),
        })
        .collect();
    assert_eq!(
        relayed,
        [
            (1, "line 1".into()),
            (2, "line 2".into()),
            (3, "line 3".into())
        ]
    );

    let again = send(&mut engine, &members[0], alice, &msg(2));
    assert!(again.jobs.is_empty(), "stored once");
    assert_eq!(
        v2_events(&again.sent, alice),
        [ServerV2::Ack { seq: 2, id: 2 }]
    );
    assert!(v2_events(&again.sent, bob).is_empty(), "relayed once");
}
