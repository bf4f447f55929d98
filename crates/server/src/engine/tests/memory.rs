//! The memory budget: replay caches, held-back messages and the history backlog.

use super::*;
use crate::engine::room::Room;

fn engine_with_budget(bytes: usize) -> Engine {
    Engine::new(
        Limits {
            memory_budget: bytes,
            ..Limits::default()
        },
        FloodPolicy::OFF,
    )
}

/// A registered version-2 host of a new room.
fn v2_host(engine: &mut Engine, room: &str, port: u16) -> Membership {
    let host = engine
        .create(room, "host", RoomKind::Public, now())
        .unwrap();
    register_v2(engine, &host, addr(port));
    host
}

#[test]
fn replay_caches_across_rooms_stay_within_their_share_of_the_budget() {
    let mut engine = engine_with_budget(64 * 1024);
    let text = "c".repeat(1000);
    for room in 0..20u16 {
        let host = v2_host(&mut engine, &format!("room{room}"), 100 + room);
        for seq in 1..=20 {
            let msg = v2(&ClientV2::Msg {
                seq,
                text: text.clone(),
            });
            assert_eq!(
                send(&mut engine, &host, addr(100 + room), &msg).result,
                Ok(())
            );
        }
    }
    let memory = engine.memory();
    assert!(memory.cached > 0);
    assert!(
        memory.cached <= memory.cache_limit(),
        "{} cached bytes over a share of {}",
        memory.cached,
        memory.cache_limit()
    );
    let actually_cached: usize = engine.rooms.values().map(Room::cached_bytes).sum();
    assert_eq!(actually_cached, memory.cached, "the accounting matches");
}

#[test]
fn held_back_messages_across_members_stay_within_their_share_of_the_budget() {
    let mut engine = engine_with_budget(64 * 1024);
    let text = "h".repeat(1000);
    for room in 0..4u16 {
        let host = v2_host(&mut engine, &format!("held{room}"), 200 + room);
        // Seq 1 never comes: everything after it is held, up to each member's own cap.
        for seq in 2..=40 {
            let msg = v2(&ClientV2::Msg {
                seq,
                text: text.clone(),
            });
            send(&mut engine, &host, addr(200 + room), &msg);
        }
    }
    let memory = engine.memory().clone();
    assert!(memory.held > 0);
    assert!(memory.held <= 16 * 1024, "{} held bytes", memory.held);
    // Closing the rooms gives it all back.
    for room in 0..4 {
        let host = engine
            .rooms
            .values()
            .find(|r| r.name == format!("held{room}"))
            .map(|r| r.members[&r.host].token)
            .unwrap();
        engine.revoke(&host, now().instant, &mut Effects::default());
    }
    assert_eq!(engine.memory().held, 0);
}

#[test]
fn the_history_backlog_stays_within_its_share_of_the_budget() {
    let mut engine = engine_with_budget(1 << 20);
    engine.attach_history();
    let host = v2_host(&mut engine, "backlog", 300);
    let text = "b".repeat(3000);
    let mut refused = None;
    for seq in 1..=1000 {
        let msg = v2(&ClientV2::Msg {
            seq,
            text: text.clone(),
        });
        if send(&mut engine, &host, addr(300), &msg).result == Err(DropReason::HistoryBacklog) {
            refused = Some(seq);
            break;
        }
    }
    assert!(refused.is_some(), "a stalled disk stops taking chat");
    assert!(engine.memory().unstored <= (1 << 20) / 2);
}
