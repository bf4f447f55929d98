//! Hostile input aimed at people and operators rather than at the protocol: names that
//! deceive, log lines forged from the network, files others can read, password guessing that
//! exhausts memory, a room list flooded by one address, and a hostile state file.

use chat_tests::{Replies, ServerProcess, UdpMember, create, join};

/// A refusal with the given code and a sentence for the user.
fn assert_refused(replies: &Replies, code: &str) {
    let json = replies.compliance_json();
    assert_eq!(json["success"], 0, "{json}");
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

#[test]
fn rooms_that_look_the_same_are_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let host = create(server.tcp, "Lobby", "alice").token();
    assert_refused(&create(server.tcp, "LOBBY", "mallory"), "room_exists");
    assert_refused(
        &create(server.tcp, "lobby\u{200B}", "mallory"),
        "invalid_room_name",
    );
    assert_refused(
        &create(server.tcp, "l\u{43e}bby", "mallory"),
        "invalid_room_name",
    );

    // Joining by another case lands in the same room, under its stored name, and the member
    // chats there with datagrams naming the room as it typed it.
    let joined = join(server.tcp, "LOBBY", "bob");
    let bob_token = joined.token();
    assert_eq!(joined.complete_json()["room"], "Lobby");
    let alice = UdpMember::new(server.udp, "Lobby", &host);
    alice.register();
    let bob = UdpMember::new(server.udp, "LOBBY", &bob_token);
    bob.register();
    bob.send(b"hello");
    alice.expect_chat("bob", "hello");

    let rooms = chat_tests::handshake(server.tcp, 4, "", b"").complete_json();
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(1), "{rooms}");
}

#[test]
fn names_that_look_the_same_are_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    create(server.tcp, "den", "jos\u{e9}").token();
    assert_refused(&join(server.tcp, "den", "jose\u{301}"), "name_taken");
    assert_refused(&join(server.tcp, "den", "JOSÉ"), "name_taken");
    for deceiver in [
        "bob\u{200B}",
        "\u{200B}\u{200B}",
        "al\u{202E}ecila",
        "*",
        "* server",
        "alice (host)",
        "\u{430}lice",
    ] {
        assert_refused(&join(server.tcp, "den", deceiver), "invalid_username");
    }
    // Ordinary names are as they were.
    join(server.tcp, "den", "bob").token();
    join(server.tcp, "den", "Émilie").token();
}

#[test]
fn names_from_the_network_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let forged =
        "x\n2026-01-01T00:00:00Z  INFO FORGED handshake granted user=root host=true\x1b[2J";
    assert_refused(&create(server.tcp, forged, "alice"), "invalid_room_name");
    // A name with spaces is quoted, so it cannot pose as more fields either.
    create(server.tcp, "a user=root host=true", "bob").token();
    // Refusals and grants are logged before the reply is sent.
    let log = server.log();
    assert!(log.contains("handshake refused"), "{log}");
    assert!(log.contains("room=\"a user=root host=true\""), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("FORGED") || line.contains("handshake refused"),
            "{line}"
        );
        assert!(
            !line.contains('\x1b'),
            "an escape sequence reached the log: {line:?}"
        );
    }
    assert!(
        log.contains("\\n2026-01-01"),
        "the newline is shown escaped: {log}"
    );
}
