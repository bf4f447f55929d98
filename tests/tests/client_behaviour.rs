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
