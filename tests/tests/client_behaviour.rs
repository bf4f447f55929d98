//! Client behaviour users tripped on: a missing password, an over-large /history, pasting
//! many lines at once, and leaving on signals.

use chat_tests::{ClientProcess, ServerProcess};

#[test]
fn a_private_room_joined_without_a_password_or_terminal_says_it_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut dana = ClientProcess::start(
        &server,
        &["create", "vault", "--name", "dana", "--password", "moby"],
    );
    dana.wait_for("dana's welcome", |line| {
        line.starts_with("* welcome to vault")
    });
    let mut eli = ClientProcess::start(&server, &["join", "vault", "--name", "eli"]);
    let line = eli.wait_for("the refusal", |line| line.contains("vault"));
    assert!(line.contains("needs a password"), "{line}");
    assert!(!line.contains("wrong"), "{line}");
    assert_eq!(eli.wait_exit().code(), Some(3));
}

#[test]
fn history_beyond_the_server_limit_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut ana = ClientProcess::start(&server, &["create", "lobby", "--name", "ana"]);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    ana.send_line("/history 500");
    ana.wait_for("the refusal", |line| {
        line.contains("/history [N]") && line.contains("1 to 100")
    });
}

/// Pastes 15 lines at once into `sender` and checks that `reader` gets every one of them.
fn pasted_lines_all_arrive(sender_flags: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let mut create = sender_flags.to_vec();
    create.extend(["create", "lobby", "--name", "ana"]);
    let mut ana = ClientProcess::start(&server, &create);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    let mut bob = ClientProcess::start(&server, &["join", "lobby", "--name", "bob"]);
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    ana.wait_for("bob joining", |line| line == "* bob joined");

    // More than the default burst of 10: without pacing, 5 of them are refused.
    for n in 1..=15 {
        ana.send_line(&format!("pasted line {n}"));
    }
    for n in 1..=15 {
        let expected = format!("ana: pasted line {n}");
        bob.wait_for(&expected, |line| line == expected);
    }
    let refused: Vec<&String> = ana
        .seen
        .iter()
        .chain(bob.seen.iter())
        .filter(|line| line.contains("too fast"))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn fifteen_pasted_lines_are_paced_not_lost() {
    pasted_lines_all_arrive(&[]);
}

#[test]
fn fifteen_pasted_lines_are_paced_not_lost_in_version_1() {
    pasted_lines_all_arrive(&["--v1"]);
}

#[test]
fn a_v1_client_tells_the_user_in_a_sentence_when_the_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // The default log level, whatever RUST_LOG says where the test runs.
    let args = [
        "--log-level",
        "warn",
        "--v1",
        "create",
        "lobby",
        "--name",
        "ana",
    ];
    let mut ana = ClientProcess::start(&server, &args);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    server.kill9();
    // Nothing listens on the UDP port any more: the kernel answers with an ICMP error.
    ana.send_line("hello?");
    ana.send_line("anyone?");
    let line = ana.wait_for("the sentence", |line| line.contains("nothing is listening"));
    assert!(line.starts_with("[stderr] * "), "{line}");
    let logs: Vec<&String> = ana
        .seen
        .iter()
        .filter(|line| line.contains("WARN"))
        .collect();
    assert!(logs.is_empty(), "log lines reached the chat: {logs:?}");
}
