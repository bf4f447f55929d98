//! Commands, leaving, and what the server and other members do to a registered conversation.

use chat_protocol::v2::{CloseReason, LeaveReason};

use super::*;

#[test]
fn who_and_history_print_their_answers() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 30, start);
    let fx = conversation.on_line("/who", start);
    assert_eq!(fx.send, [ClientV2::Who]);
    let fx = conversation.on_server(members(&["alice", "bob"]), start);
    assert_eq!(fx.lines, ["* here now: alice (host), bob"]);

    let fx = conversation.on_line("/history 2", start);
    assert_eq!(
        fx.send,
        [ClientV2::History {
            before: Some(31),
            limit: Some(2)
        }]
    );
    let page = ServerV2::History {
        messages: vec![
            ChatMessage {
                id: 29,
                from: "bob".into(),
                text: "b".into(),
                ts: 0,
                me: false,
                to: None,
            },
            ChatMessage {
                id: 30,
                from: "bob".into(),
                text: "c".into(),
                ts: 0,
                me: false,
                to: None,
            },
        ],
        more: true,
    };
    let fx = conversation.on_server(page, start);
    assert_eq!(
        fx.lines,
        [
            "* earlier messages:",
            "bob: b",
            "bob: c",
            "* (more: /history again)"
        ]
    );
    let fx = conversation.on_line("/history", start);
    assert_eq!(
        fx.send,
        [ClientV2::History {
            before: Some(29),
            limit: Some(20)
        }]
    );
    let last = ServerV2::History {
        messages: vec![],
        more: false,
    };
    assert_eq!(
        conversation.on_server(last, start).lines,
        ["* no earlier messages"]
    );
}

#[test]
fn an_unanswered_request_is_retried_then_reported() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    conversation.on_line("/who", start);
    let mut sent = 0;
    let mut lines = Vec::new();
    for second in 1..=3 {
        let fx = conversation.on_tick(start + Duration::from_secs(second));
        sent += fx.send.iter().filter(|m| **m == ClientV2::Who).count();
        lines.extend(fx.lines);
    }
    assert_eq!(sent, 2);
    assert_eq!(lines, ["* no answer to /who; try again"]);
}

#[test]
fn next_only_works_in_pair_rooms() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    let fx = conversation.on_line("/next", start);
    assert!(fx.ending.is_none());
    assert!(fx.lines[0].contains("only works in pair rooms"), "{fx:?}");

    let pair = Setup {
        pair: true,
        ..setup()
    };
    let mut conversation = registered(pair, 0, start);
    let fx = conversation.on_server(
        ServerV2::Left {
            name: "bob".into(),
            reason: LeaveReason::Leave,
        },
        start,
    );
    assert_eq!(fx.lines, ["* bob left; type /next to meet someone new"]);
    assert_eq!(
        conversation.on_line("/next", start).ending,
        Some(Ending::Next)
    );
}

#[test]
fn unknown_commands_list_the_real_ones() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    let fx = conversation.on_line("/dance", start);
    assert_eq!(
        fx.lines,
        ["* unknown command /dance; commands: /help, /who, /history [N], /status, /next, /quit"]
    );
    assert!(fx.send.is_empty());
}

#[test]
fn quitting_waits_for_unacked_messages_then_leaves() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    conversation.on_line("last words", start);
    let fx = conversation.on_line("/quit", start);
    assert_eq!(fx.ending, None);
    let fx = conversation.on_server(ServerV2::Ack { seq: 1, id: 1 }, start + ms(10));
    assert_eq!(fx.lines, ["alice: last words"]);
    assert_eq!(fx.ending, Some(Ending::Quit));
}

#[test]
fn quitting_gives_up_on_unacked_messages_after_a_while() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    conversation.on_line("into the void", start);
    conversation.on_end_of_input(start);
    let deadline = start + Timing::default().leave_drain;
    assert_eq!(conversation.on_tick(deadline - ms(1)).ending, None);
    let fx = conversation.on_tick(deadline);
    assert_eq!(fx.ending, Some(Ending::Quit));
    assert!(
        fx.lines[0].contains("1 message(s) were not confirmed"),
        "{fx:?}"
    );
}

#[test]
fn a_closed_room_ends_the_conversation_with_its_reason() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    let fx = conversation.on_server(
        ServerV2::RoomClosed {
            reason: CloseReason::HostTimeout,
        },
        start,
    );
    assert_eq!(fx.lines, ["* the room was closed: the host timed out"]);
    assert_eq!(fx.ending, Some(Ending::Closed));
    assert_eq!(
        conversation.on_server(msg(1, "bob", "late"), start),
        Effects::default()
    );
}

#[test]
fn typing_indicators_show_only_where_wanted_and_paced() {
    let start = Instant::now();
    let typing = ServerV2::Typing { name: "bob".into() };
    let mut plain = registered(setup(), 0, start);
    assert!(plain.on_server(typing.clone(), start).lines.is_empty());
    assert_eq!(plain.on_typing(Instant::now()).send, [ClientV2::Typing]);

    let terminal = Setup {
        typing_notices: true,
        ..setup()
    };
    let mut conversation = registered(terminal, 0, start);
    assert_eq!(
        conversation.on_server(typing.clone(), start).lines,
        ["* bob is typing…"]
    );
    assert!(
        conversation
            .on_server(typing.clone(), start + ms(500))
            .lines
            .is_empty()
    );
    assert_eq!(
        conversation
            .on_server(typing, start + Duration::from_secs(3))
            .lines,
        ["* bob is typing…"]
    );
}

#[test]
fn messages_too_long_for_a_datagram_are_refused_locally() {
    let start = Instant::now();
    let small = Setup {
        message_capacity: 100,
        ..setup()
    };
    let mut conversation = registered(small, 0, start);
    let fx = conversation.on_line(&"x".repeat(100), start);
    assert!(fx.send.is_empty());
    assert!(fx.problems[0].contains("too long"), "{fx:?}");
    assert_eq!(conversation.unacked(), 0);
}

#[test]
fn joins_and_leaves_are_announced() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
    let fx = conversation.on_server(
        ServerV2::Joined {
            name: "carol".into(),
        },
        start,
    );
    assert_eq!(fx.lines, ["* carol joined"]);
    let fx = conversation.on_server(
        ServerV2::Left {
            name: "carol".into(),
            reason: LeaveReason::Timeout,
        },
        start,
    );
    assert_eq!(fx.lines, ["* carol timed out"]);
}

#[test]
fn a_challenge_is_echoed_at_once_and_a_big_room_says_how_many_more() {
    let start = Instant::now();
    let (mut conversation, _) = Conversation::start(setup(), start);
    let fx = conversation.on_server(
        ServerV2::Challenge {
            nonce: "00ff".into(),
        },
        start,
    );
    assert_eq!(
        fx.send,
        [ClientV2::Echo {
            nonce: "00ff".into()
        }]
    );
    let big = ServerV2::Members {
        names: vec!["bob".into(), "alice".into()],
        host: "bob".into(),
        more: 254,
        topic: None,
        away: Default::default(),
    };
    conversation.on_server(big, start);
    let fx = conversation.on_server(ServerV2::Pong { id: 0 }, start);
    assert_eq!(
        fx.lines,
        ["* welcome to lobby, alice; here now: bob (host), alice and 254 more"]
    );
}

#[test]
fn told_its_address_moved_it_registers_again_from_here() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 7, start);
    let fx = conversation.on_server(ServerV2::Moved, start);
    assert_eq!(fx.send, [ClientV2::Register { last_id: Some(7) }]);
    assert!(fx.lines[0].contains("another address"), "{:?}", fx.lines);
}

#[test]
fn a_terminal_dates_each_new_day_once_and_marks_where_new_messages_begin() {
    let start = Instant::now();
    let terminal = Setup {
        style: LineStyle { clock: true },
        ..setup()
    };
    let (mut conversation, _) = Conversation::start(terminal, start);
    conversation.on_server(members(&["alice", "bob"]), start);
    let day = 86_400_000;
    let at = |id: u64, ts: u64| {
        ServerV2::Msg(ChatMessage {
            id,
            from: "bob".into(),
            text: format!("message {id}"),
            ts,
            me: false,
            to: None,
        })
    };
    let mut lines = conversation.on_server(at(1, day + 1), start).lines;
    lines.extend(conversation.on_server(at(2, day + 2), start).lines);
    lines.extend(
        conversation
            .on_server(ServerV2::Pong { id: 2 }, start)
            .lines,
    );
    lines.extend(conversation.on_server(at(3, 3 * day + 3), start).lines);
    let dates: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with("* ") && line.contains(" 1970"))
        .collect();
    assert_eq!(dates.len(), 2, "two days, two date lines: {lines:#?}");
    let marker = lines
        .iter()
        .position(|line| line == crate::ui::format::NEW_MESSAGES_MARKER)
        .expect("a marker");
    assert!(lines[marker - 1].ends_with("bob: message 2"), "{lines:#?}");
    assert!(
        lines.last().unwrap().ends_with("bob: message 3"),
        "{lines:#?}"
    );
}
