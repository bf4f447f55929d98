//! Direct messages (`/msg NAME TEXT`) through the real binaries: delivered to the recipient
//! alone, acked like any message, refused for a name that is not in the room, and readable
//! in replays and history by the two of them only (not by a later member of the same name).

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{ClientProcess, ServerProcess, V2Member, join};

/// Sends a direct message and waits for its ack; returns its id.
fn whisper(member: &V2Member, seq: u64, to: &str, text: &str) -> u64 {
    member.send(&ClientV2::Dm {
        seq,
        to: to.into(),
        text: text.into(),
    });
    let (_, ack) = member.expect(
        "the ack of a direct message",
        |event| matches!(event, ServerV2::Ack { seq: acked, .. } if *acked == seq),
    );
    let ServerV2::Ack { id, .. } = ack else {
        unreachable!()
    };
    id
}

#[test]
fn a_direct_message_is_shown_to_its_recipient_and_sender_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &[], "join", "lobby", "carol");
    let mut dave = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "dave");
    alice.wait_for_line("* dave joined");

    alice.send_line("/msg Bob psst, the cake is in the fridge");
    let line = "alice -> bob (private): psst, the cake is in the fridge";
    alice.wait_for_line(line);
    bob.wait_for_line(line);
    // The sender is shown the recipient's name as the room knows it, not as typed.
    // The next public line reaches everyone at once: a member that may not read the direct
    // message is not left waiting for its id.
    alice.send_line("lunch at noon");
    for member in [&mut bob, &mut carol, &mut dave] {
        member.wait_for_line("alice: lunch at noon");
    }
    for (member, who) in [(&carol, "carol"), (&dave, "dave")] {
        assert!(
            !member.seen.iter().any(|line| line.contains("psst")),
            "{who} saw a direct message to bob: {:#?}",
            member.seen
        );
    }

    // Version 1 has no direct messages: its member reads one as a notice.
    bob.send_line("/msg dave are you there?");
    dave.wait_for_line("* bob (to you): are you there?");
    bob.send_line("/msg carol and you?");
    carol.wait_for_line("bob -> carol (private): and you?");

    // Someone not in the room, or oneself: refused, and said so.
    for target in ["nobody", "alice"] {
        alice.send_line(&format!("/msg {target} hello?"));
        let refusal = alice.wait_for("the refusal", |line| line.contains("hello?"));
        assert!(
            refusal.contains("not sent") && refusal.contains("no other member of that name"),
            "{refusal}"
        );
    }
    alice.send_line("/msg bob");
    alice.wait_for("the usage of /msg", |line| line.contains("usage: /msg"));
}

#[test]
fn only_the_two_read_a_direct_message_in_replays_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let _alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let bob = V2Member::joined(&server, "lobby", "bob");
    let carol = V2Member::joined(&server, "lobby", "carol");
    let erin = V2Member::joined(&server, "lobby", "erin");

    let before = bob.say(1, "hello all");
    let secret = whisper(&bob, 2, "CAROL", "the secret");
    // A retransmission is acked with the same id and not delivered twice.
    assert_eq!(whisper(&bob, 2, "carol", "the secret"), secret);
    let after = bob.say(3, "bye all");
    let (_, message) = carol.expect_msg(secret);
    assert_eq!(message.to.as_deref(), Some("carol"));
    assert_eq!(
        (message.from.as_str(), message.text.as_str()),
        ("bob", "the secret")
    );
    carol.expect_msg(after);
    // Erin gets the id as a skip, between the two public messages.
    let (skipped, _) = erin.expect_msg(after);
    assert!(
        skipped
            .iter()
            .any(|event| matches!(event, ServerV2::Skip { id } if *id == secret)),
        "{skipped:?}"
    );
    assert!(
        !skipped
            .iter()
            .any(|event| matches!(event, ServerV2::Msg(m) if m.id == secret)),
        "{skipped:?}"
    );
    // Refused for a name not in the room, with the seq, and again for its retransmission.
    for _ in 0..2 {
        bob.send(&ClientV2::Dm {
            seq: 4,
            to: "nobody".into(),
            text: "hi".into(),
        });
        bob.expect("the refusal", |event| {
            matches!(
                event,
                ServerV2::Error {
                    code: V2ErrorCode::NoSuchMember,
                    seq: Some(4),
                    ..
                }
            )
        });
    }

    let page_ids = |member: &V2Member| -> Vec<u64> {
        let (page, _, _) = member.history(None, Some(50));
        page.iter().map(|m| m.id).collect()
    };
    assert_eq!(page_ids(&bob), [before, secret, after]);
    assert_eq!(page_ids(&carol), [before, secret, after]);
    assert_eq!(page_ids(&erin), [before, after], "a page leaves it out");

    // A replay (from memory, then after a crash from the database) gives it to the two and
    // a skip to the others.
    let replayed = |member: &V2Member| {
        let replay = member.register(Some(0));
        let skipped: Vec<u64> = replay
            .other
            .iter()
            .filter_map(|event| match event {
                ServerV2::Skip { id } => Some(*id),
                _ => None,
            })
            .collect();
        (replay.ids(), skipped)
    };
    assert_eq!(replayed(&carol), (vec![before, secret, after], vec![]));
    assert_eq!(replayed(&erin), (vec![before, after], vec![secret]));
    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    assert_eq!(replayed(&carol), (vec![before, secret, after], vec![]));
    assert_eq!(replayed(&erin), (vec![before, after], vec![secret]));

    // Carol leaves; someone else takes her name: the message was not for them.
    carol.send(&ClientV2::Leave);
    let mut joined = join(server.tcp, "lobby", "carol");
    for _ in 0..50 {
        if joined.error_code().is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        joined = join(server.tcp, "lobby", "carol");
    }
    let newcomer = V2Member::new(server.udp, "lobby", &joined.token());
    newcomer.register(None);
    assert_eq!(page_ids(&newcomer), [before, after]);
}
