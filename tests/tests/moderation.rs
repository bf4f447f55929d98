//! The host's powers through the real binaries: `/kick`, `/ban` (the address is refused for
//! the room's life, across a crash), `/host`, refusals for everyone else, and `/ignore`, which
//! only hides lines on one screen.

use chat_tests::{ClientProcess, ServerProcess, create, join};

const NOT_HOST: &str =
    "* the server refused a request: only the host can kick, ban or hand over the room";
const NO_SUCH_MEMBER: &str =
    "* the server refused a request: there is no other member of that name in this room";

#[test]
fn the_host_kicks_a_member_who_is_told_and_may_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &[], "join", "lobby", "carol");
    let mut dave = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "dave");
    alice.wait_for_line("* dave joined");

    bob.send_line("/kick carol");
    bob.wait_for_line(NOT_HOST);
    alice.send_line("/kick nobody");
    alice.wait_for_line(NO_SUCH_MEMBER);

    alice.send_line("/kick Carol");
    carol.wait_for_line("* you were kicked out of this room by alice");
    assert_eq!(carol.wait_exit_with_stdin_open().code(), Some(0));
    for member in [&mut alice, &mut bob, &mut dave] {
        member.wait_for_line("* carol was kicked out by the host");
    }
    // A version-1 member hears it as a notice, then that its room is gone.
    alice.send_line("/kick dave");
    dave.wait_for_line("* you were kicked out of lobby by alice");
    assert_eq!(dave.wait_exit_with_stdin_open().code(), Some(0));
    bob.wait_for_line("* dave was kicked out by the host");
    // A kick is not a ban.
    assert_eq!(join(server.tcp, "lobby", "carol").error_code(), None);
}

#[test]
fn a_ban_refuses_the_address_for_the_rooms_life_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    alice.wait_for_line("* bob joined");

    bob.send_line("/ban alice");
    bob.wait_for_line(NOT_HOST);
    alice.send_line("/ban bob");
    bob.wait_for_line("* you were banned from this room by alice");
    assert_eq!(bob.wait_exit_with_stdin_open().code(), Some(0));
    alice.wait_for_line("* bob was banned by the host");

    // Every test client comes from 127.0.0.1: a join under any name is refused now.
    let refusal = join(server.tcp, "lobby", "mallory").compliance_json();
    assert_eq!(refusal["error"], "banned");
    assert!(refusal["message"].as_str().unwrap().contains("banned"));
    let mut client = ClientProcess::start(&server, &["join", "lobby", "--name", "bobby"]);
    let shown = client.wait_for("the refusal", |line| line.starts_with("[stderr] "));
    assert!(shown.contains("banned"), "{shown}");
    assert_eq!(client.wait_exit_with_stdin_open().code(), Some(3));
    // The host stays, and other rooms are not affected.
    alice.send_line("still here");
    alice.wait_for_line("alice: still here");
    // (This create waited for the state file, which now holds the ban too.)
    assert_eq!(create(server.tcp, "elsewhere", "bob").error_code(), None);

    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    assert_eq!(
        join(server.tcp, "lobby", "mallory").error_code().as_deref(),
        Some("banned")
    );
    assert_eq!(join(server.tcp, "elsewhere", "carol").error_code(), None);
}

#[test]
fn the_host_hands_the_room_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &["--v1"], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    alice.send_line("/host bob");
    for member in [&mut alice, &mut bob, &mut carol] {
        member.wait_for_line("* bob is now the host");
    }
    alice.send_line("/kick carol");
    alice.wait_for_line(NOT_HOST);
    bob.send_line("/who");
    bob.wait_for_line("* here now: alice, bob (host), carol");
    // The old host leaving no longer closes the room.
    alice.send_line("/quit");
    assert_eq!(alice.wait_exit_with_stdin_open().code(), Some(0));
    bob.wait_for_line("* alice left");
    bob.send_line("/kick carol");
    carol.wait_for_line("* you were kicked out of lobby by bob");
}

#[test]
fn ignore_hides_a_members_lines_on_one_screen_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "lobby", "bob");
    let mut carol = ClientProcess::enter(&server, &[], "join", "lobby", "carol");
    alice.wait_for_line("* carol joined");

    bob.send_line("/ignore Alice");
    bob.wait_for("the confirmation", |line| {
        line.starts_with("* ignoring Alice")
    });
    alice.send_line("something bob will not see");
    alice.send_line("/me shouts");
    carol.wait_for_line("* alice shouts");
    carol.send_line("visible");
    bob.wait_for_line("carol: visible");
    bob.send_line("/ignore");
    bob.wait_for_line("* ignored: Alice");
    bob.send_line("/unignore alice");
    bob.wait_for_line("* no longer ignoring alice");
    alice.send_line("back");
    bob.wait_for_line("alice: back");
    assert!(
        !bob.seen
            .iter()
            .any(|line| line.contains("will not see") || line.contains("shouts")),
        "{:#?}",
        bob.seen
    );
    // Nobody else is affected.
    carol.wait_for_line("alice: back");
    assert!(
        carol
            .seen
            .iter()
            .any(|l| l == "alice: something bob will not see")
    );
}
