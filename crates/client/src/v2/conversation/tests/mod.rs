//! The conversation state machine, event by event, with the clock in the test's hands:
//! registration, delivery and keepalive here, commands and the room's events in [`commands`].

use std::time::Duration;

use chat_protocol::v2::V2ErrorCode;

use crate::ui::format::LineStyle;

use super::*;

mod commands;

fn setup() -> Setup {
    Setup {
        me: "alice".into(),
        room: "lobby".into(),
        pair: false,
        style: LineStyle::default(),
        typing_notices: false,
        bell: false,
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
        me: false,
        to: None,
    })
}

fn members(names: &[&str]) -> ServerV2 {
    ServerV2::Members {
        names: names.iter().map(|name| (*name).to_owned()).collect(),
        host: names[0].to_owned(),
        more: 0,
        topic: None,
        away: Default::default(),
    }
}

/// A conversation past its first registration in a room whose newest id is `latest`.
fn registered(setup: Setup, latest: u64, start: Instant) -> Conversation {
    let (mut conversation, _) = Conversation::start(setup, start);
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
    let (mut conversation, fx) = Conversation::start(setup(), start);
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
    let (mut conversation, _) = Conversation::start(setup(), start);
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
    let (mut conversation, _) = Conversation::start(setup(), start);
    let fx = conversation.on_line("early bird", start);
    assert!(sent_msgs(&fx).is_empty());
    conversation.on_server(members(&["alice"]), start);
    let fx = conversation.on_server(ServerV2::Pong { id: 0 }, start);
    assert_eq!(sent_msgs(&fx), [(1, "early bird".to_owned())]);
}

#[test]
fn own_messages_print_once_acked_in_id_order() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 5, start);
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
    let mut conversation = registered(setup(), 0, start);
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
    let mut conversation = registered(setup(), 3, start);
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
    let mut conversation = registered(setup(), 2, start);
    let fx = conversation.on_tick(start + Duration::from_secs(2));
    assert_eq!(fx.send, [ClientV2::Ping { last_id: Some(2) }]);
    let fx = conversation.on_tick(start + Duration::from_secs(4));
    assert_eq!(fx.send, [ClientV2::Register { last_id: Some(2) }]);
}

#[test]
fn a_silent_server_is_reported_once_and_its_return_too() {
    let start = Instant::now();
    let mut conversation = registered(setup(), 0, start);
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
