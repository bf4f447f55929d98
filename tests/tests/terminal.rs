//! `chat-client` in a real terminal (a detached tmux session): what a person typing sees.

use chat_tests::tmux::{TmuxSession, client_command, tmux_installed};
use chat_tests::{ClientProcess, ServerProcess};

#[test]
fn a_message_arriving_while_typing_leaves_the_typed_text_intact() {
    if !tmux_installed() {
        println!("skipped: tmux is not installed, and this test needs a real terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::start(&server, &["create", "lobby", "--name", "alice"]);
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });

    let command = client_command(
        dir.path(),
        server.tcp.port(),
        &["join", "lobby", "--name", "bob"],
    );
    let bob = TmuxSession::start(dir.path(), "bob", 120, 30, &command);
    bob.wait_for_screen("bob's welcome and prompt", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with("* welcome to lobby, bob"))
            && screen.last().is_some_and(|row| row == ">")
    });
    alice.wait_for_line("* bob joined");

    bob.type_text("half typed");
    bob.wait_for_screen("the half-typed line", |screen| {
        screen.last().is_some_and(|row| row == "> half typed")
    });
    alice.send_line("hello bob");
    let screen = bob.wait_for_screen("alice's message", |screen| {
        screen.iter().any(|row| row.ends_with("alice: hello bob"))
    });
    let message_row = screen
        .iter()
        .position(|row| row.ends_with("alice: hello bob"))
        .expect("the message is on screen");
    assert!(
        screen[message_row].starts_with('['),
        "a terminal shows the time: {screen:#?}"
    );
    assert_eq!(
        screen.last().map(String::as_str),
        Some("> half typed"),
        "the typed text is still on the line being edited, below the message: {screen:#?}"
    );
    assert_eq!(
        screen.len() - 1,
        message_row + 1,
        "the message sits right above the line being edited: {screen:#?}"
    );

    // Still being edited, not just still drawn: finishing the line sends all of it.
    bob.type_text(" and done");
    bob.press("Enter");
    alice.wait_for_line("bob: half typed and done");
    bob.wait_for_screen("bob's own message, once the server stored it", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with('[') && row.ends_with("bob: half typed and done"))
    });
}
