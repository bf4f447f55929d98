//! `/me` actions and room topics, through the real binaries: what each kind of member sees,
//! what is stored, and what survives a restart.

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{ClientProcess, ServerProcess, V2Member};

#[test]
fn an_action_is_shown_as_one_to_everyone_and_stored_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    alice.send_line("/me waves at everyone");
    // The sender sees it once the server stored it; version 2 and version 1 alike read it
    // as an action.
    alice.wait_for_line("* alice waves at everyone");
    bob.wait_for_line("* alice waves at everyone");
    carol.wait_for_line("* alice waves at everyone");
    alice.send_line("back to normal");
    bob.wait_for_line("alice: back to normal");
    assert!(
        !bob.seen.iter().any(|line| line.contains("alice: waves")),
        "an action is not shown as a line: {:#?}",
        bob.seen
    );

    // /me without text is explained, not sent.
    bob.send_line("/me");
    bob.wait_for("the usage of /me", |line| line.contains("usage: /me"));

    // Stored as an action: a newcomer's join history and a history page both say so.
    let mut dave = ClientProcess::enter(&server, &[], "join", "lobby", "dave");
    dave.wait_for_line("* alice waves at everyone");
    let reader = V2Member::joined(&server, "lobby", "erin");
    let (page, _, _) = reader.history(None, Some(10));
    let action = page
        .iter()
        .find(|message| message.text == "waves at everyone")
        .expect("the action is in the history");
    assert!(action.me, "stored as an action: {action:?}");
    assert!(page.iter().any(|m| m.text == "back to normal" && !m.me));
}

#[test]
fn an_action_is_acked_and_deduplicated_like_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let _alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let sender = V2Member::joined(&server, "lobby", "bob");
    let reader = V2Member::joined(&server, "lobby", "carol");

    let me = ClientV2::Me {
        seq: 1,
        text: "nods".into(),
    };
    sender.send(&me);
    let (_, ack) = sender.expect("the ack of the action", |event| {
        matches!(event, ServerV2::Ack { seq: 1, .. })
    });
    let ServerV2::Ack { id, .. } = ack else {
        unreachable!()
    };
    // A retransmission is acked again with the same id and not relayed twice.
    sender.send(&me);
    sender.expect(
        "the same ack again",
        |event| matches!(event, ServerV2::Ack { seq: 1, id: again } if *again == id),
    );
    let (_, message) = reader.expect_msg(id);
    assert!(message.me && message.from == "bob" && message.text == "nods");
    let second = sender.say(2, "and a line");
    let (skipped, _) = reader.expect_msg(second);
    assert!(
        !skipped
            .iter()
            .any(|event| matches!(event, ServerV2::Msg(_))),
        "the action came once: {skipped:?}"
    );
    // An empty action is refused like an empty message.
    sender.send(&ClientV2::Me {
        seq: 3,
        text: String::new(),
    });
    sender.expect("the refusal of an empty action", |event| {
        matches!(
            event,
            ServerV2::Error {
                code: V2ErrorCode::Invalid,
                seq: Some(3),
                ..
            }
        )
    });
}

#[test]
fn a_topic_is_announced_shown_on_entering_listed_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    bob.send_line("/topic");
    bob.wait_for_line("* no topic is set (set one with /topic TEXT)");
    // Any member may set it; everyone is told, version 1 as a notice.
    bob.send_line("/topic release day ✓");
    for member in [&mut alice, &mut bob, &mut carol] {
        member.wait_for_line("* bob set the topic: release day ✓");
    }
    alice.send_line("/topic");
    alice.wait_for_line("* topic: release day ✓");
    alice.send_line("/who");
    alice.wait_for_line("* here now: alice (host), bob, carol");
    alice.wait_for_line("* topic: release day ✓");

    // A newcomer is shown it right after the welcome.
    let mut dave = ClientProcess::enter(&server, &[], "join", "lobby", "dave");
    let welcome = dave
        .seen
        .iter()
        .position(|line| line.starts_with("* welcome to lobby, dave"))
        .unwrap();
    dave.wait_for_line("* topic: release day ✓");
    let topic = dave
        .seen
        .iter()
        .position(|line| line == "* topic: release day ✓")
        .unwrap();
    assert_eq!(topic, welcome + 1, "{:#?}", dave.seen);

    // The room list carries it.
    let mut rooms = ClientProcess::start(&server, &["rooms"]);
    rooms.wait_for("the lobby's row with its topic", |line| {
        line.starts_with("lobby") && line.ends_with("release day ✓")
    });

    // It is kept in the durable state: after a crash, a newcomer still sees it. (Dave's join
    // waited for the state file, so the topic, recorded before it, is on disk: killed with
    // -9, the server restores it from the journal, not from a snapshot written at shutdown.)
    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    let mut erin = ClientProcess::enter(&server, &[], "join", "lobby", "erin");
    erin.wait_for_line("* topic: release day ✓");

    // Clearing it.
    erin.send_line("/topic -");
    erin.wait_for_line("* erin cleared the topic");
    let mut frank = ClientProcess::enter(&server, &[], "join", "lobby", "frank");
    frank.send_line("/topic");
    frank.wait_for_line("* no topic is set (set one with /topic TEXT)");
}

#[test]
fn a_topic_that_breaks_the_rules_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let raw = V2Member::joined(&server, "lobby", "bob");

    for (text, code) in [
        ("x".repeat(201), V2ErrorCode::TooLarge),
        ("two\nlines".to_owned(), V2ErrorCode::Invalid),
    ] {
        raw.send(&ClientV2::Topic { text });
        let (_, refusal) = raw.expect("the refusal", |event| {
            matches!(event, ServerV2::Error { .. })
        });
        let ServerV2::Error {
            code: got,
            seq,
            message,
        } = refusal
        else {
            unreachable!()
        };
        assert_eq!((got, seq), (code, None), "{message}");
        assert!(message.contains("topic"), "{message}");
    }
    // At the limit it is fine.
    raw.send(&ClientV2::Topic {
        text: "é".repeat(100),
    });
    raw.expect(
        "the topic event",
        |event| matches!(event, ServerV2::Topic { name, .. } if name == "bob"),
    );
    // The client refuses an over-long topic itself.
    alice.send_line(&format!("/topic {}", "y".repeat(201)));
    alice.wait_for("the local refusal", |line| {
        line.contains("a topic is at most 200 bytes")
    });
}
