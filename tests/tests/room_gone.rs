//! A room the server no longer has (it restarted from another directory, or the room
//! expired): its members are told "this room no longer exists" and stop, and the answer to an
//! unknown token can be used for neither amplification nor a flood.

use std::time::Duration;

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{ClientProcess, ServerProcess, UdpMember, V2Member, decode_v2};

const UNKNOWN_TOKEN: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

#[test]
fn both_clients_are_told_the_room_no_longer_exists_after_a_restart_elsewhere() {
    let first_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(first_dir.path());
    let (tcp, udp) = (server.tcp, server.udp);
    // Plaintext version 2: a version-3 client would meet another certificate here and refuse
    // it (encryption_client.rs has that, and the same certificate's answer).
    let mut ana = ClientProcess::start(&server, &["--v2", "create", "lobby", "--name", "ana"]);
    ana.wait_for("ana's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });
    let mut ben = ClientProcess::start(&server, &["--v1", "join", "lobby", "--name", "ben"]);
    ben.wait_for("ben's welcome", |line| {
        line.starts_with("* welcome to lobby")
    });

    // The same ports, another state file: the tokens are unknown there.
    server.kill9();
    let other_dir = tempfile::tempdir().unwrap();
    let _server = ServerProcess::restart_same_ports(other_dir.path(), tcp, udp, &[]);

    // Version 2 pings on its own and hears it; stdin stays open, so that is what ends it.
    ana.wait_for_line("* this room no longer exists");
    assert_eq!(ana.wait_exit_with_stdin_open().code(), Some(0));
    // Version 1 sends only what the user types; its next line is answered.
    ben.send_line("anyone here?");
    ben.wait_for_line("* the room was closed: this room no longer exists");
    assert_eq!(ben.wait_exit_with_stdin_open().code(), Some(0));
}

#[test]
fn unknown_tokens_get_a_small_rate_limited_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--no-room-replies", "5"]);
    let v2 = V2Member::new(server.udp, "lobby", UNKNOWN_TOKEN);
    let v1 = UdpMember::new(server.udp, "lobby", UNKNOWN_TOKEN);

    v2.send(&ClientV2::Ping { last_id: None });
    let answer = v2
        .udp
        .recv_matching(|_| true)
        .expect("an unknown token is answered");
    let ping_len = 2 + "lobby".len() + UNKNOWN_TOKEN.len() + 1 + br#"{"t":"ping"}"#.len();
    assert!(answer.len() <= ping_len, "{} > {ping_len}", answer.len());
    assert!(matches!(
        decode_v2(&answer),
        ServerV2::Error {
            code: V2ErrorCode::NoRoom,
            seq: None,
            ..
        }
    ));
    v1.send(b"hello?");
    assert_eq!(
        v1.recv_matching(|_| true).as_deref(),
        Some(&b"__ROOM_CLOSED__"[..])
    );

    // A flood of unknown tokens gets at most the budget: 5 a second (plus the burst).
    for _ in 0..200 {
        v1.send(b"x");
    }
    let answers = v1.drain(Duration::from_millis(1500));
    assert!(!answers.is_empty());
    assert!(answers.len() <= 5 + 10, "{} answers", answers.len());
    // A datagram shorter than the answer gets none: never more bytes out than in.
    let tiny = UdpMember::new(server.udp, "r", "");
    tiny.send(b"x");
    assert!(tiny.drain(Duration::from_millis(1500)).is_empty());
}
