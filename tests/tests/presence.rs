//! What a person notices in the room: `/away` texts in `/who`, and in a real terminal (a
//! detached tmux session) lines that name them highlighted with a bell (or without one, with
//! `--no-bell`), the date before the first message of the day, and a marker between the
//! messages replayed on entering and new ones.

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::tmux::{TmuxSession, client_command, tmux_installed};
use chat_tests::{ClientProcess, ServerProcess, V2Member, join};

#[test]
fn away_texts_are_shown_beside_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    bob.send_line("/away at lunch");
    bob.wait_for_line("* you are marked away: at lunch");
    alice.send_line("/who");
    alice.wait_for_line("* here now: alice (host), bob (away: at lunch)");
    let carol = ClientProcess::start(&server, &["join", "lobby", "--name", "carol"]);
    let mut carol = carol;
    carol.wait_for_line(
        "* welcome to lobby, carol; here now: alice (host), bob (away: at lunch), carol",
    );
    alice.send_line("/away");
    alice.wait_for_line("* you are marked away");
    bob.send_line("/back");
    bob.wait_for_line("* you are back");
    bob.send_line("/who");
    bob.wait_for_line("* here now: alice (host) (away), bob, carol");

    // Bounded, one line.
    let token = join(server.tcp, "lobby", "dave").token();
    let dave = V2Member::new(server.udp, "lobby", &token);
    dave.register(None);
    for (text, code) in [
        ("x".repeat(101), V2ErrorCode::TooLarge),
        ("a\tb".to_owned(), V2ErrorCode::Invalid),
    ] {
        dave.send(&ClientV2::Away { text });
        dave.expect(
            "the refusal",
            |event| matches!(event, ServerV2::Error { code: got, seq: None, .. } if *got == code),
        );
    }
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

#[test]
fn a_terminal_marks_the_day_new_messages_and_lines_that_name_you() {
    if !tmux_installed() {
        println!("skipped: tmux is not installed, and this test needs a real terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    alice.send_line("said before anyone came");
    alice.wait_for_line("alice: said before anyone came");

    let bob = TmuxSession::shell(dir.path(), "bob");
    bob.run(&format!(
        "exec {}",
        client_command(
            dir.path(),
            server.tcp.port(),
            &["join", "lobby", "--name", "bob"],
        )
    ));
    let screen = bob.wait_for_screen("the replayed message and the marker", |screen| {
        screen.iter().any(|row| row == "* ---- new messages ----")
    });
    let at = |wanted: &dyn Fn(&str) -> bool| screen.iter().position(|row| wanted(row));
    let day = at(&|row| {
        row.starts_with("* ") && WEEKDAYS.iter().any(|d| row.starts_with(&format!("* {d} ")))
    });
    let replayed = at(&|row| row.ends_with("] alice: said before anyone came"));
    let marker = at(&|row| row == "* ---- new messages ----");
    assert!(
        day.is_some() && day < replayed && replayed < marker,
        "the date, the replayed message, then the marker: {screen:#?}"
    );
    alice.wait_for_line("* bob joined");

    alice.send_line("hey Bob, look at this");
    bob.wait_for_screen("the line that names bob", |screen| {
        screen
            .iter()
            .any(|row| row.ends_with("alice: hey Bob, look at this"))
    });
    let raw = bob.wait_for_raw("alice: hey Bob, look at this");
    assert!(
        raw.contains("\u{7}\u{1b}[7m") && raw.contains("alice: hey Bob, look at this\u{1b}[0m"),
        "rang the bell and highlighted the line: {raw:?}"
    );
    alice.send_line("bobby is someone else");
    bob.wait_for_screen("a line that does not name bob", |screen| {
        screen
            .iter()
            .any(|row| row.ends_with("alice: bobby is someone else"))
    });
    assert_eq!(
        bob.wait_for_raw("alice: bobby is someone else")
            .matches('\u{7}')
            .count(),
        1,
        "one bell: {:?}",
        bob.raw()
    );
    assert_eq!(
        bob.screen()
            .iter()
            .filter(|row| WEEKDAYS.iter().any(|d| row.starts_with(&format!("* {d} "))))
            .count(),
        1,
        "one date line for one day"
    );

    // With --no-bell, highlighted but silent.
    let carol = TmuxSession::shell(dir.path(), "carol");
    carol.run(&format!(
        "exec {}",
        client_command(
            dir.path(),
            server.tcp.port(),
            &["--no-bell", "join", "lobby", "--name", "carol"],
        )
    ));
    carol.wait_for_screen("carol's prompt", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with("* ---- new messages"))
    });
    alice.wait_for_line("* carol joined");
    alice.send_line("@carol welcome");
    carol.wait_for_screen("the line that names carol", |screen| {
        screen
            .iter()
            .any(|row| row.ends_with("alice: @carol welcome"))
    });
    let raw = carol.wait_for_raw("alice: @carol welcome");
    assert!(raw.contains("\u{1b}[7m"), "highlighted: {raw:?}");
    assert!(!raw.contains('\u{7}'), "no bell: {raw:?}");
}

#[test]
fn tab_completes_commands_and_member_names() {
    if !tmux_installed() {
        println!("skipped: tmux is not installed, and this test needs a real terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut carol = ClientProcess::enter(&server, &[], "join", "lobby", "Caroline");
    let bob = TmuxSession::shell(dir.path(), "bob");
    bob.run(&format!(
        "exec {}",
        client_command(
            dir.path(),
            server.tcp.port(),
            &["join", "lobby", "--name", "bob"],
        )
    ));
    bob.wait_for_screen("bob's welcome", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with("* welcome to lobby, bob"))
            && screen.last().is_some_and(|row| row == ">")
    });
    alice.wait_for_line("* bob joined");

    bob.type_text("/to");
    bob.press("Tab");
    bob.wait_for_screen("the completed command", |screen| {
        screen.last().is_some_and(|row| row == "> /topic")
    });
    bob.type_text("release day");
    bob.press("Enter");
    carol.wait_for_line("* bob set the topic: release day");

    bob.type_text("thanks @car");
    bob.press("Tab");
    bob.wait_for_screen("the completed name", |screen| {
        screen.last().is_some_and(|row| row == "> thanks @Caroline")
    });
    bob.press("Enter");
    alice.wait_for_line("bob: thanks @Caroline");
    // Someone who joins later is completed too.
    let _dave = ClientProcess::enter(&server, &[], "join", "lobby", "dave");
    bob.wait_for_screen("dave's arrival", |screen| {
        screen.iter().any(|row| row == "* dave joined")
    });
    bob.type_text("/msg da");
    bob.press("Tab");
    bob.wait_for_screen("the completed name", |screen| {
        screen.last().is_some_and(|row| row == "> /msg dave")
    });
}
