//! The conversation state machine, event by event, with the clock in the test's hands.

use chat_protocol::v2::{CloseReason, LeaveReason, V2ErrorCode};

use super::*;

fn settings() -> Settings {
    Settings {
        me: "alice".into(),
        room: "lobby".into(),
        pair: false,
        style: LineStyle::default(),
        typing_notices: false,
        message_capacity: 4000,
        timing: Timing::default(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn msg(id: u64, from: &str, text: &str) -> ServerV2 {
    ServerV2::Msg(ChatMessage {
        id,
        from: from.into(),
        text: text.into(),
        ts: 0,
    })
}

fn members(names: &[&str]) -> ServerV2 {
    ServerV2::Members {
        names: names.iter().map(|name| (*name).to_owned()).collect(),
        host: names[0].to_owned(),
        more: 0,
    }
}

/// A conversation past its first registration in a room whose newest id is `latest`.
fn registered(settings: Settings, latest: u64, start: Instant) -> Conversation {
    let (mut conversation, _) = Conversation::start(settings, start);
    conversation.on_server(members(&["alice", "bob"]), start);
    conversation.on_server(ServerV2::Pong { id: latest }, start);
    assert!(conversation.is_registered());
    conversation
}

fn sent_msgs(fx: &Effects) -> Vec<(u64, String)> {
    fx.send
        .iter()
        .filter_map(|message| match message {
            ClientV2::Msg { seq, text } => Some((*seq, text.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn registration_prints_the_welcome_then_the_join_history_in_order() {
    let start = Instant::now();
    let (mut conversation, fx) = Conversation::start(settings(), start);
    assert_eq!(fx.send, [ClientV2::Register { last_id: None }]);
    let mut lines = Vec::new();
    for event in [
        members(&["bob", "alice"]),
        msg(4, "bob", "second"),
        msg(3, "bob", "first"),
        ServerV2::Pong { id: 4 },
    ] {
        lines.extend(conversation.on_server(event, start).lines);
    }
    assert_eq!(
        lines,
        [
            "* welcome to lobby, alice; here now: bob (host), alice",
            "bob: first",
            "bob: second",
        ]
    );
}

#[test]
fn registration_is_retried_every_second_and_given_up_after_five_tries() {
    let start = Instant::now();
    let (mut conversation, _) = Conversation::start(settings(), start);
    // Members came but the pong was lost: the register is still repeated.
    conversation.on_server(members(&["alice"]), start);
    for attempt in 1..5u64 {
        let now = start + Duration::from_secs(attempt);
        assert_eq!(conversation.next_wakeup(), now);
        let fx = conversation.on_tick(now);
        assert_eq!(fx.send, [ClientV2::Register { last_id: None }]);
    }
    let fx = conversation.on_tick(start + Duration::from_secs(5));
    assert_eq!(fx.ending, Some(Ending::Unregistered { attempts: 5 }));
}

#[test]
fn lines_typed_before_registration_go_out_after_it_with_seq_1() {
    let start = Instant::now();
    let (mut conversation, _) = Conversation::start(settings(), start);
    let fx = conversation.on_line("early bird", start);
    assert!(sent_msgs(&fx).is_empty());
    conversation.on_server(members(&["alice"]), start);
    let fx = conversation.on_server(ServerV2::Pong { id: 0 }, start);
    assert_eq!(sent_msgs(&fx), [(1, "early bird".to_owned())]);
}

#[test]
fn own_messages_print_once_acked_in_id_order() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 5, start);
    let fx = conversation.on_line("mine", start);
    assert_eq!(sent_msgs(&fx), [(1, "mine".to_owned())]);
    assert!(fx.lines.is_empty(), "not shown before the server stored it");
    // Bob's message 7 overtakes the ack that puts ours at 6.
    assert!(
        conversation
            .on_server(msg(7, "bob", "his"), start)
            .lines
            .is_empty()
    );
    let fx = conversation.on_server(ServerV2::Ack { seq: 1, id: 6 }, start);
    assert_eq!(fx.lines, ["alice: mine", "bob: his"]);
    // A duplicate ack and a replay of the same id print nothing.
    assert!(
        conversation
            .on_server(ServerV2::Ack { seq: 1, id: 6 }, start)
            .lines
            .is_empty()
    );
    assert!(
        conversation
            .on_server(msg(6, "alice", "mine"), start)
            .lines
            .is_empty()
    );
}

#[test]
fn unacked_messages_are_retransmitted_and_refused_ones_stop() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 0, start);
    conversation.on_line("one", start);
    conversation.on_line("two", start);
    let fx = conversation.on_tick(start + ms(300));
    assert_eq!(
        sent_msgs(&fx),
        [(1, "one".to_owned()), (2, "two".to_owned())]
    );
    let fx = conversation.on_server(
        ServerV2::Error {
            code: V2ErrorCode::RateLimited,
            seq: Some(2),
            message: "slow down".into(),
        },
        start + ms(400),
    );
    assert_eq!(
        fx.problems,
        ["* not sent, you are sending too fast: \"two\""]
    );
    let fx = conversation.on_tick(start + ms(900));
    assert_eq!(sent_msgs(&fx), [(1, "one".to_owned())]);
}

#[test]
fn a_gap_brings_a_ping_with_the_last_contiguous_id_within_300_ms() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 3, start);
    conversation.on_server(msg(5, "bob", "later"), start + ms(100));
    assert_eq!(conversation.next_wakeup(), start + ms(300));
    let fx = conversation.on_tick(start + ms(300));
    assert_eq!(fx.send, [ClientV2::Ping { last_id: Some(3) }]);
    let fx = conversation.on_server(msg(4, "bob", "earlier"), start + ms(350));
    assert_eq!(fx.lines, ["bob: earlier", "bob: later"]);
}

#[test]
fn pings_every_two_seconds_and_registers_when_the_server_is_silent() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 2, start);
    let fx = conversation.on_tick(start + Duration::from_secs(2));
    assert_eq!(fx.send, [ClientV2::Ping { last_id: Some(2) }]);
    let fx = conversation.on_tick(start + Duration::from_secs(4));
    assert_eq!(fx.send, [ClientV2::Register { last_id: Some(2) }]);
}

#[test]
fn a_silent_server_is_reported_once_and_its_return_too() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 0, start);
    conversation.on_line("hello?", start);
    let mut notices = Vec::new();
    let mut now = start;
    while now < start + Duration::from_secs(15) {
        now += ms(100);
        notices.extend(conversation.on_tick(now).lines);
    }
    assert_eq!(notices, ["* no answer from the server; still trying…"]);
    let fx = conversation.on_server(ServerV2::Pong { id: 0 }, now);
    assert_eq!(fx.lines, ["* connection to the server restored"]);
    assert_eq!(
        sent_msgs(&fx),
        [(1, "hello?".to_owned())],
        "waiting messages are resent at once"
    );
}

#[test]
fn who_and_history_print_their_answers() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 30, start);
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
            },
            ChatMessage {
                id: 30,
                from: "bob".into(),
                text: "c".into(),
                ts: 0,
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
    let mut conversation = registered(settings(), 0, start);
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
    let mut conversation = registered(settings(), 0, start);
    let fx = conversation.on_line("/next", start);
    assert!(fx.ending.is_none());
    assert!(fx.lines[0].contains("only works in pair rooms"), "{fx:?}");

    let pair = Settings {
        pair: true,
        ..settings()
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
    let mut conversation = registered(settings(), 0, start);
    let fx = conversation.on_line("/dance", start);
    assert_eq!(
        fx.lines,
        ["* unknown command /dance; commands: /help, /who, /history [N], /next, /quit"]
    );
    assert!(fx.send.is_empty());
}

#[test]
fn quitting_waits_for_unacked_messages_then_leaves() {
    let start = Instant::now();
    let mut conversation = registered(settings(), 0, start);
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
    let mut conversation = registered(settings(), 0, start);
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
    let mut conversation = registered(settings(), 0, start);
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
    let mut plain = registered(settings(), 0, start);
    assert!(plain.on_server(typing.clone(), start).lines.is_empty());
    assert_eq!(plain.on_typing(Instant::now()).send, [ClientV2::Typing]);

    let terminal = Settings {
        typing_notices: true,
        ..settings()
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
    let small = Settings {
        message_capacity: 100,
        ..settings()
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
    let mut conversation = registered(settings(), 0, start);
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
    let (mut conversation, _) = Conversation::start(settings(), start);
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
    let mut conversation = registered(settings(), 7, start);
    let fx = conversation.on_server(ServerV2::Moved, start);
    assert_eq!(fx.send, [ClientV2::Register { last_id: Some(7) }]);
    assert!(fx.lines[0].contains("another address"), "{:?}", fx.lines);
}
