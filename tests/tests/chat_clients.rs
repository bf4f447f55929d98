//! The `chat-client` binary as people use it: type lines, read `NAME: TEXT` and `* notice`
//! lines, leave with `/quit`, and get a clear exit code when the server says no or is absent.
//!
//! The client speaks version 2 by default, where a sender's own message is shown once the
//! server has stored it (its delivery confirmation); `--v1` speaks the reference protocol,
//! where a sender is never shown its own message.

use std::net::TcpListener;

use chat_tests::{ClientProcess, ServerProcess, join};

/// The line the client prints when its host closes the room.
/// What the version-2 client prints when the host closes the room.
const ROOM_CLOSED_LINE: &str = "* the room was closed by its host";
/// What the version-1 client prints then: `__ROOM_CLOSED__` is also its word for a room the
/// server no longer has.
const V1_ROOM_CLOSED_LINE: &str = "* the room was closed: this room no longer exists";

/// Waits until `client` has shown every line in `lines`, in any order.
fn wait_for_all(client: &mut ClientProcess, lines: &[&str]) {
    for line in lines {
        if !client.seen.iter().any(|seen| seen == line) {
            client.wait_for_line(line);
        }
    }
}

/// How many times `client` has shown exactly `line` so far.
fn times_shown(client: &ClientProcess, line: &str) -> usize {
    client.seen.iter().filter(|seen| *seen == line).count()
}

/// Asserts that every line in `lines` was shown exactly once by `client`.
fn assert_each_shown_once(client: &ClientProcess, who: &str, lines: &[&str]) {
    for line in lines {
        assert_eq!(
            times_shown(client, line),
            1,
            "{who} shows {line:?} exactly once; it printed {:#?}",
            client.seen
        );
    }
}

/// Asserts that `client` never showed a chat line from `name`.
fn assert_never_shown_from(client: &ClientProcess, name: &str) {
    let own = format!("{name}: ");
    let shown: Vec<&String> = client
        .seen
        .iter()
        .filter(|line| line.starts_with(&own))
        .collect();
    assert!(
        shown.is_empty(),
        "{name} was shown its own messages: {shown:?}"
    );
}

#[test]
fn two_members_chat_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    alice.send_line("hello bob");
    bob.wait_for_line("alice: hello bob");
    bob.send_line("hello alice, how are you?");
    alice.wait_for_line("bob: hello alice, how are you?");
    alice.send_line("fine, thanks");
    bob.wait_for_line("alice: fine, thanks");
    // Bob's own last line is his proof that the server has it; after it, nothing is pending.
    bob.send_line("bye");
    bob.wait_for_line("bob: bye");
    alice.wait_for_line("bob: bye");

    let conversation = [
        "alice: hello bob",
        "bob: hello alice, how are you?",
        "alice: fine, thanks",
        "bob: bye",
    ];
    assert_each_shown_once(&alice, "alice", &conversation);
    assert_each_shown_once(&bob, "bob", &conversation);
}

#[test]
fn three_members_see_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "trio", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "trio", "bob");
    let mut carol = ClientProcess::enter(&server, &[], "join", "trio", "carol");
    alice.wait_for_line("* carol joined");
    bob.wait_for_line("* carol joined");

    let said = [
        "alice: one from alice",
        "bob: two from bob",
        "carol: three from carol",
    ];
    alice.send_line("one from alice");
    bob.send_line("two from bob");
    carol.send_line("three from carol");
    // They spoke at once, so each may see the three lines in any order.
    for member in [&mut alice, &mut bob, &mut carol] {
        wait_for_all(member, &said);
    }
    // A last round, so that a late duplicate of the first would have shown by now.
    alice.send_line("done");
    for member in [&mut alice, &mut bob, &mut carol] {
        member.wait_for_line("alice: done");
    }
    for (member, who) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        assert_each_shown_once(member, who, &said);
    }
}

#[test]
fn v1_clients_never_see_their_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let v1 = ["--v1"];
    let mut alice = ClientProcess::enter(&server, &v1, "create", "trio", "alice");
    let mut bob = ClientProcess::enter(&server, &v1, "join", "trio", "bob");
    let mut carol = ClientProcess::enter(&server, &v1, "join", "trio", "carol");
    alice.wait_for_line("* carol joined");
    bob.wait_for_line("* carol joined");

    // Each speaks only after the previous message reached everyone, so an echo of a message
    // would be printed before the next one.
    alice.send_line("one from alice");
    bob.wait_for_line("alice: one from alice");
    carol.wait_for_line("alice: one from alice");
    bob.send_line("two from bob");
    alice.wait_for_line("bob: two from bob");
    carol.wait_for_line("bob: two from bob");
    carol.send_line("three from carol");
    alice.wait_for_line("carol: three from carol");
    bob.wait_for_line("carol: three from carol");
    alice.send_line("done");
    carol.wait_for_line("alice: done");
    bob.wait_for_line("alice: done");

    assert_never_shown_from(&alice, "alice");
    assert_never_shown_from(&bob, "bob");
    assert_never_shown_from(&carol, "carol");
}

#[test]
fn v1_and_v2_clients_chat_in_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut modern = ClientProcess::enter(&server, &[], "create", "mixed", "modern");
    let mut classic = ClientProcess::enter(&server, &["--v1"], "join", "mixed", "classic");
    modern.wait_for_line("* classic joined");

    modern.send_line("hello from version 2 ✓");
    classic.wait_for_line("modern: hello from version 2 ✓");
    classic.send_line("hello from version 1 ✓");
    modern.wait_for_line("classic: hello from version 1 ✓");
    classic.send_line("/quit");
    assert_eq!(classic.wait_exit_with_stdin_open().code(), Some(0));
    modern.wait_for_line("* classic left");
}

#[test]
fn utf8_text_and_names_arrive_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut host = ClientProcess::enter(&server, &[], "create", "café ☕", "émilie");
    let mut guest = ClientProcess::enter(&server, &[], "join", "café ☕", "Jürgen 🎸");
    host.wait_for_line("* Jürgen 🎸 joined");

    let text = "ça va? 👋 — 日本語のテキスト, Ελληνικά, עברית ✓\ttab";
    host.send_line(text);
    guest.wait_for_line(&format!("émilie: {text}"));
    guest.send_line("très bien 😀");
    host.wait_for_line("Jürgen 🎸: très bien 😀");
}

#[test]
fn a_line_too_long_for_a_datagram_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    // More than a whole datagram: it cannot fit, whatever the framing.
    alice.send_line(&"y".repeat(4097));
    let complaint = alice.wait_for("a notice that it was not sent", |line| {
        line.contains("not sent")
    });
    assert!(
        complaint.contains("too long"),
        "says why it was not sent: {complaint}"
    );

    // A long line that does fit goes through whole, and nothing came before it.
    let long: String = "é✓-".chars().cycle().take(1600).collect();
    assert_eq!(long.len(), 3200);
    alice.send_line(&long);
    bob.wait_for_line(&format!("alice: {long}"));
    let from_alice: Vec<&String> = bob
        .seen
        .iter()
        .filter(|line| line.starts_with("alice: "))
        .collect();
    assert_eq!(from_alice.len(), 1, "only the line that fits was sent");
}

#[test]
fn a_v1_client_refuses_a_line_one_byte_over_the_datagram_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let v1 = ["--v1"];
    let mut alice = ClientProcess::enter(&server, &v1, "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &v1, "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    // What fits beside the envelope: 2 size bytes, the room name and the 64-character token.
    let capacity = 4096 - 2 - "lobby".len() - 64;
    alice.send_line(&"y".repeat(capacity + 1));
    let complaint = alice.wait_for("a complaint on stderr", |line| {
        line.starts_with("[stderr] ")
    });
    assert!(
        complaint.contains("not sent"),
        "says the message was not sent: {complaint}"
    );
    assert!(
        complaint.contains(&(capacity + 1).to_string()),
        "says how long it was: {complaint}"
    );

    // The longest line that fits goes through whole, and nothing came before it.
    let mut fits: String = "é✓-"
        .chars()
        .cycle()
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= capacity).then_some(c)
        })
        .collect();
    fits.push_str(&"z".repeat(capacity - fits.len()));
    assert_eq!(fits.len(), capacity);
    alice.send_line(&fits);
    bob.wait_for_line(&format!("alice: {fits}"));
    let from_alice: Vec<&String> = bob
        .seen
        .iter()
        .filter(|line| line.starts_with("alice: "))
        .collect();
    assert_eq!(from_alice.len(), 1, "only the line that fits was sent");
}

#[test]
fn quit_exits_zero_and_the_others_see_the_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &[], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    bob.send_line("/quit");
    let status = bob.wait_exit_with_stdin_open();
    assert_eq!(status.code(), Some(0), "/quit is a normal end");
    alice.wait_for_line("* bob left");
    carol.wait_for_line("* bob left");
    // The room goes on without bob.
    carol.send_line("still here");
    alice.wait_for_line("carol: still here");
    // And his name is free again.
    assert_eq!(join(server.tcp, "lobby", "bob").error_code(), None);
}

#[test]
fn end_of_input_leaves_like_quit() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    bob.close_stdin();
    assert_eq!(bob.wait_exit_with_stdin_open().code(), Some(0));
    alice.wait_for_line("* bob left");
}

#[test]
fn when_the_host_quits_the_others_are_told_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    alice.send_line("/quit");
    assert_eq!(alice.wait_exit_with_stdin_open().code(), Some(0));
    for (guest, line) in [
        (&mut bob, ROOM_CLOSED_LINE),
        (&mut carol, V1_ROOM_CLOSED_LINE),
    ] {
        guest.wait_for_line(line);
        // Their stdin is still open: the room closing is what ends them.
        assert_eq!(guest.wait_exit_with_stdin_open().code(), Some(0));
    }
    // The room is gone.
    assert_eq!(
        join(server.tcp, "lobby", "dave").error_code().as_deref(),
        Some("room_not_found")
    );
}

#[test]
fn a_refused_join_exits_3_with_the_servers_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let _alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let _bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");

    // (room, name, the code the server gives)
    for (room, name, code) in [
        ("nowhere", "carol", "room_not_found"),
        ("lobby", "Bob", "name_taken"),
    ] {
        // What the server says to this request, so the client can be checked against it.
        let refusal = join(server.tcp, room, name).compliance_json();
        assert_eq!(refusal["error"], code);
        let message = refusal["message"].as_str().unwrap().to_owned();

        let mut client = ClientProcess::start(&server, &["join", room, "--name", name]);
        let shown = client.wait_for("the refusal on stderr", |line| {
            line.starts_with("[stderr] ")
        });
        assert!(shown.contains(code), "names the code {code}: {shown}");
        assert!(
            shown.contains(&message),
            "shows the server's message {message:?}: {shown}"
        );
        assert_eq!(
            client.wait_exit_with_stdin_open().code(),
            Some(3),
            "{room}/{name}"
        );
        assert!(
            !client.seen.iter().any(|line| line.starts_with("* welcome")),
            "a refused client never enters: {:?}",
            client.seen
        );
    }
}

#[test]
fn no_server_listening_exits_4() {
    // A port that was free a moment ago and that nothing listens on now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut client = ClientProcess::start_on_port(port, &["join", "lobby", "--name", "alice"]);
    let shown = client.wait_for("an explanation on stderr", |line| {
        line.starts_with("[stderr] ")
    });
    assert!(
        shown.contains(&format!("127.0.0.1:{port}")),
        "names the address it tried: {shown}"
    );
    assert_eq!(client.wait_exit_with_stdin_open().code(), Some(4));
}
