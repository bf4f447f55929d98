//! Scale-out: two engines standing for two nodes, the changes of one applied to the other as
//! the follower does, and committed messages relayed as the subscriber does.

use std::time::Duration;

use chat_protocol::v2::{ChatMessage, ServerV2};

use super::*;
use crate::engine::{SharedMessage, SharedOutcome, StateChange, StoredMessage};

/// Two clustered engines; `a`'s changes so far applied to `b`.
fn nodes() -> (Engine, Engine) {
    let mut a = engine();
    let mut b = engine();
    a.attach_cluster();
    b.attach_cluster();
    (a, b)
}

fn replicate(from: &mut Engine, to: &mut Engine) -> Effects {
    let mut fx = Effects::default();
    for record in from.take_changes() {
        to.apply_remote(record.change, now(), &mut fx);
    }
    fx
}

/// A browser page's WebSocket, numbered `conn`.
fn web(conn: u64) -> Endpoint {
    Endpoint::Web {
        conn,
        ip: "127.0.0.1".parse().unwrap(),
    }
}

fn shared(engine: &Engine, id: u64, text: &str) -> SharedMessage {
    let room = engine.local_rooms()[0];
    SharedMessage {
        stored: StoredMessage {
            room_uid: room.uid,
            member_uid: 1,
            seq: None,
            recipient_uid: None,
            message: ChatMessage {
                id,
                from: "zed".into(),
                text: text.into(),
                ts: 0,
                me: false,
                to: None,
            },
        },
        v1_relayed: false,
        from_here: false,
    }
}

#[test]
fn a_token_granted_by_one_node_works_on_the_other_and_applying_twice_changes_nothing() {
    let (mut a, mut b) = nodes();
    let host = a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    let records = a.take_changes();
    let mut fx = Effects::default();
    for record in records.iter().chain(records.iter()) {
        b.apply_remote(record.change.clone(), now(), &mut fx);
    }
    assert_eq!((b.room_count(), b.member_count()), (1, 1));
    // Nothing applied is journaled again on the other node.
    assert!(b.take_changes().is_empty());
    // The member, remote on b, registers there (failover) and is served by b from now on.
    let handled = register_v2(&mut b, &host, addr(7000));
    assert!(
        v2_events(&handled.sent, addr(7000))
            .iter()
            .any(|e| matches!(e, ServerV2::Members { .. }))
    );
    assert_eq!(b.local_rooms().len(), 1);
    assert!(
        b.take_changes()
            .iter()
            .any(|r| matches!(r.change, StateChange::MemberRegistered { .. })),
        "the move is journaled, for the other nodes"
    );
}

#[test]
fn a_page_that_fails_over_over_a_websocket_is_recorded_as_served_by_the_new_node() {
    let (mut a, mut b) = nodes();
    let host = a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    replicate(&mut a, &mut b);
    // A WebSocket is a connection: its register binds at once, no challenge.
    let page = web(1);
    let handled = send(
        &mut b,
        &host,
        page,
        &v2(&ClientV2::Register { last_id: None }),
    );
    assert!(
        v2_events(&handled.sent, page)
            .iter()
            .any(|e| matches!(e, ServerV2::Members { .. }))
    );
    let changes = b.take_changes();
    assert!(
        changes
            .iter()
            .any(|r| matches!(r.change, StateChange::MemberRegistered { addr: None, .. })),
        "the move is journaled without an address, so the other nodes stop counting the \
         member as the old node's: {changes:?}"
    );
    // The same page reconnecting to the node that serves it changes nothing durable.
    let again = web(2);
    send(
        &mut b,
        &host,
        again,
        &v2(&ClientV2::Register { last_id: None }),
    );
    assert!(b.take_changes().is_empty());
}

#[test]
fn a_page_registering_on_one_node_is_heard_joining_on_the_others() {
    let (mut a, mut b) = nodes();
    let host = a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    let mut fx = Effects::default();
    let bob = a.join(ROOM, "bob", None, now(), &mut fx).unwrap();
    replicate(&mut a, &mut b);
    // The host is served by b.
    register_v2(&mut b, &host, addr(7000));
    replicate(&mut b, &mut a);
    let page = web(1);
    send(
        &mut a,
        &bob,
        page,
        &v2(&ClientV2::Register { last_id: None }),
    );
    let fx = replicate(&mut a, &mut b);
    assert!(
        v2_events(&sent_of(&fx), addr(7000)).contains(&ServerV2::Joined { name: "bob".into() }),
        "the host on the other node hears bob join: {:?}",
        sent_of(&fx)
    );
}

#[test]
fn a_member_that_fails_over_has_its_next_seq_taken_at_once() {
    let (mut a, mut b) = nodes();
    let host = a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    replicate(&mut a, &mut b);
    // Seqs 1 to 3 went to node a; b never saw them.
    let page = web(1);
    send(
        &mut b,
        &host,
        page,
        &v2(&ClientV2::Register { last_id: None }),
    );
    let handled = send(
        &mut b,
        &host,
        page,
        &v2(&ClientV2::Msg {
            seq: 4,
            text: "after the move".into(),
        }),
    );
    let events = v2_events(&handled.sent, page);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerV2::Ack { seq: 4, .. })),
        "seq 4 is taken now, not held behind a gap only node a could fill: {events:?}"
    );
}

#[test]
fn remote_members_are_not_timed_out_but_a_dead_nodes_are_reaped() {
    let (mut a, mut b) = nodes();
    a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    let mut fx = Effects::default();
    let bob = a.join(ROOM, "bob", None, now(), &mut fx).unwrap();
    replicate(&mut a, &mut b);
    b.tick(
        at(Duration::from_secs(61)),
        Duration::from_secs(61),
        &mut fx,
    );
    b.tick(
        at(Duration::from_secs(122)),
        Duration::from_secs(61),
        &mut fx,
    );
    assert_eq!(b.member_count(), 2, "b does not time out a's members");
    let uid = a.snapshot().rooms[0]
        .members
        .iter()
        .find(|m| m.username == bob.username)
        .unwrap()
        .uid;
    assert_eq!(b.reap_remote(&[uid], now().instant, &mut fx), 1);
    assert_eq!(b.member_count(), 1);
    assert!(
        b.take_changes()
            .iter()
            .any(|r| matches!(r.change, StateChange::MemberLeft { .. })),
        "a reaped member is journaled, so that every node hears it"
    );
}

#[test]
fn shared_messages_are_relayed_once_in_id_order_and_a_gap_is_reported() {
    let (mut a, _) = nodes();
    let host = a.create(ROOM, "ann", RoomKind::Public, now()).unwrap();
    register_v2(&mut a, &host, addr(7000));
    let room = a.local_rooms()[0];
    let mut fx = Effects::default();
    assert_eq!(
        a.relay_shared(room.id, &shared(&a, 1, "one"), false, &mut fx),
        SharedOutcome::Relayed
    );
    assert_eq!(
        a.relay_shared(room.id, &shared(&a, 1, "one"), false, &mut fx),
        SharedOutcome::Duplicate
    );
    assert_eq!(
        a.relay_shared(room.id, &shared(&a, 3, "three"), false, &mut fx),
        SharedOutcome::Gap(1)
    );
    assert_eq!(
        a.relay_shared(room.id, &shared(&a, 2, "two"), false, &mut fx),
        SharedOutcome::Relayed
    );
    assert_eq!(
        a.relay_shared(room.id, &shared(&a, 3, "three"), false, &mut fx),
        SharedOutcome::Relayed
    );
    let ids: Vec<u64> = v2_events(&sent_of(&fx), addr(7000))
        .into_iter()
        .filter_map(|e| match e {
            ServerV2::Msg(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}
