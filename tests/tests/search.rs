//! `/search WORDS` through the real binaries: full-text search of the room's history (SQLite
//! FTS5 on the server), paged, without others' direct messages, bounded and flood controlled,
//! and still there after a crash.

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{ClientProcess, ServerProcess, V2Member};

/// One `found` answer: the ids and whether more remain.
fn search(member: &V2Member, words: &str, before: Option<u64>, limit: u32) -> (Vec<u64>, bool) {
    member.send(&ClientV2::Search {
        words: words.into(),
        before,
        limit: Some(limit),
    });
    let (_, found) = member.expect("the search results", |event| {
        matches!(event, ServerV2::Found { .. })
    });
    let ServerV2::Found {
        words: echoed,
        messages,
        more,
    } = found
    else {
        unreachable!()
    };
    assert_eq!(echoed, words);
    (messages.iter().map(|m| m.id).collect(), more)
}

#[test]
fn search_finds_every_word_pages_back_and_shows_in_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");
    for line in [
        "the cake is in the fridge",
        "no cake today",
        "Fridge door is open",
        "CAKE and FRIDGE again",
    ] {
        alice.send_line(line);
        bob.wait_for_line(&format!("alice: {line}"));
    }
    bob.send_line("/msg alice secret cake in the fridge");
    alice.wait_for_line("bob -> alice (private): secret cake in the fridge");

    bob.send_line("/search fridge CAKE");
    bob.wait_for_line("* messages matching \"fridge CAKE\":");
    bob.wait_for_line("alice: the cake is in the fridge");
    bob.wait_for_line("alice: CAKE and FRIDGE again");
    bob.wait_for_line("bob -> alice (private): secret cake in the fridge");
    bob.wait_for_line("* end of matches");
    bob.send_line("/search nothing-like-this");
    bob.wait_for_line("* no messages match \"nothing-like-this\"");

    // A third member finds the public matches only, and pages back through them.
    let carol = V2Member::joined(&server, "lobby", "carol");
    let (newest, more) = search(&carol, "cake", None, 2);
    assert_eq!((newest.len(), more), (2, true), "{newest:?}");
    let (older, more) = search(&carol, "cake", Some(newest[0]), 2);
    assert_eq!((older.len(), more), (1, false), "{older:?}");
    let all: Vec<u64> = older.iter().chain(&newest).copied().collect();
    let (page, _, _) = carol.history(None, Some(50));
    let public_cake: Vec<u64> = page
        .iter()
        .filter(|m| m.text.to_lowercase().contains("cake") && m.to.is_none())
        .map(|m| m.id)
        .collect();
    assert_eq!(all, public_cake, "every public match, no direct message");

    // Bounded and refused with a reason.
    for (words, code) in [
        ("x".repeat(201), V2ErrorCode::TooLarge),
        ("   ".to_owned(), V2ErrorCode::Invalid),
    ] {
        carol.send(&ClientV2::Search {
            words,
            before: None,
            limit: None,
        });
        carol.expect(
            "the refusal",
            |event| matches!(event, ServerV2::Error { code: got, seq: None, .. } if *got == code),
        );
    }

    // The index is in the database: after a crash, the same search finds the same.
    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    carol.register(None);
    assert_eq!(search(&carol, "cake", None, 10), (all, false));
    drop(server);
}

#[test]
fn searches_count_against_flood_control() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-burst", "3", "--flood-rate", "0.001"]);
    let _alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let bob = V2Member::joined(&server, "lobby", "bob");
    for _ in 0..3 {
        search(&bob, "anything", None, 5);
    }
    bob.send(&ClientV2::Search {
        words: "anything".into(),
        before: None,
        limit: None,
    });
    // Dropped: nothing comes back, while a ping (not counted) still does.
    bob.send(&ClientV2::Ping { last_id: None });
    let (before, _) = bob.expect("the pong", |event| matches!(event, ServerV2::Pong { .. }));
    assert!(
        !before
            .iter()
            .any(|event| matches!(event, ServerV2::Found { .. })),
        "{before:?}"
    );
}
