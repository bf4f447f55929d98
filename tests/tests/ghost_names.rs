//! Ghost names: a client that goes away must not keep its name. Clients leave on SIGTERM and
//! SIGHUP; the server frees the name of a version-2 member whose pings stopped.

use std::time::Duration;

use chat_protocol::v2::{ClientV2, LeaveReason, ServerV2};
use chat_tests::{ClientProcess, ServerProcess, UdpMember, V2Member, create, join};

#[test]
fn clients_leave_on_sigterm_and_sighup_and_the_name_is_free_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut ana = ClientProcess::start(&server, &["create", "lobby", "--name", "ana"]);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });

    for (flags, signal) in [(&[][..], "TERM"), (&[][..], "HUP"), (&["--v1"][..], "TERM")] {
        let mut args = flags.to_vec();
        args.extend(["join", "lobby", "--name", "bob"]);
        let mut bob = ClientProcess::start(&server, &args);
        bob.wait_for("bob's welcome", |line| {
            line.starts_with("* welcome to lobby")
        });
        ana.wait_for_line("* bob joined");
        bob.signal(signal);
        // stdin stays open: the signal is what makes it leave.
        assert_eq!(bob.wait_exit_with_stdin_open().code(), Some(0));
        ana.wait_for_line("* bob left");
    }
    // Free at once, not after the idle timeout.
    assert!(join(server.tcp, "lobby", "bob").error_code().is_none());
}

#[test]
fn a_silent_version_2_member_frees_its_name_for_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--ghost-after", "2"]);
    // The host registers in version 2 and falls silent too: it is never evicted this way,
    // since its leaving would close the room.
    let host = V2Member::new(
        server.udp,
        "lobby",
        &create(server.tcp, "lobby", "ana").token(),
    );
    host.register(None);
    // bob registers in version 2 and then falls silent, as a killed client does.
    let ghost = V2Member::new(
        server.udp,
        "lobby",
        &join(server.tcp, "lobby", "bob").token(),
    );
    ghost.register(None);
    // pat registers in version 2 and keeps pinging; vic registers in version 1 (no
    // keepalive, so silence proves nothing).
    let pat = V2Member::new(
        server.udp,
        "lobby",
        &join(server.tcp, "lobby", "pat").token(),
    );
    pat.register(None);
    let vic = UdpMember::new(
        server.udp,
        "lobby",
        &join(server.tcp, "lobby", "vic").token(),
    );
    vic.register();

    // Well past --ghost-after, with pat's ping just before the joins.
    std::thread::sleep(Duration::from_millis(2500));
    pat.send(&ClientV2::Ping { last_id: None });
    pat.expect("pat's pong", |event| matches!(event, ServerV2::Pong { .. }));

    assert!(join(server.tcp, "lobby", "bob").error_code().is_none());
    pat.expect("bob timing out", |event| {
        matches!(
            event,
            ServerV2::Left { name, reason: LeaveReason::Timeout } if name == "bob"
        )
    });
    // pat pinged within --ghost-after (again, since waiting above took time).
    pat.send(&ClientV2::Ping { last_id: None });
    pat.expect("pat's pong", |event| matches!(event, ServerV2::Pong { .. }));
    for name in ["pat", "vic", "ana"] {
        assert_eq!(
            join(server.tcp, "lobby", name).error_code().as_deref(),
            Some("name_taken"),
            "{name}"
        );
    }
}

#[test]
fn a_killed_client_takes_its_place_back_with_its_saved_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let (ana_home, bob_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tcp = server.tcp.port();
    let create = ["create", "lobby", "--name", "ana"];
    let join = ["join", "lobby", "--name", "bob"];
    let mut ana = ClientProcess::start_with_data_dir(tcp, ana_home.path(), &create);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    let mut bob = ClientProcess::start_with_data_dir(tcp, bob_home.path(), &join);
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    ana.wait_for_line("* bob joined");

    // The saved token is private to its user.
    let saved = bob_home.path().join("chat-client/memberships.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // kill -9: no leave. The same command by the same user takes bob's place back.
    bob.kill9();
    let mut bob = ClientProcess::start_with_data_dir(tcp, bob_home.path(), &join);
    bob.wait_for("bob's return", |line| {
        line.contains("taking back your place")
    });
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    bob.send_line("back again");
    ana.wait_for_line("bob: back again");

    // The host too: its room stays open and it is host again.
    ana.kill9();
    let mut ana = ClientProcess::start_with_data_dir(tcp, ana_home.path(), &create);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby") && line.contains("ana (host)")
    });
    ana.send_line("still hosting");
    bob.wait_for_line("ana: still hosting");

    // A clean exit forgets the saved membership: the next run joins afresh.
    bob.send_line("/quit");
    assert_eq!(bob.wait_exit().code(), Some(0));
    let left = std::fs::read_to_string(&saved).unwrap();
    assert!(!left.contains("\"lobby\""), "{left}");
}
