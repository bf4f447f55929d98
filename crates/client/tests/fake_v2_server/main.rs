//! The `chat-client` binary against a scripted version-2 server on 127.0.0.1: the test plays
//! the server's side of the handshake and of the datagrams, including loss, duplicates and
//! reordering, and checks what the user sees and what reaches the server.

mod fake_server;

use std::process::ExitStatus;
use std::time::Instant;

use chat_protocol::tcrp::{Compliance, ErrorCode, Grant, RoomList, RoomSummary};
use chat_protocol::tcrp::{UserRequest, to_json_payload};
use chat_protocol::ucrp::{ClientMessage, Datagram};
use chat_protocol::v2::{ChatMessage, ClientV2, CloseReason, ServerV2, V2ErrorCode};
use chat_tests::{ClientProcess, EVENT_TIMEOUT};
use fake_server::FakeServer;

fn chat(id: u64, from: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id,
        from: from.into(),
        text: text.into(),
        ts: 1_700_000_000_000,
        me: false,
        to: None,
    }
}

fn is_msg(message: &ClientV2) -> bool {
    matches!(message, ClientV2::Msg { .. })
}

#[test]
fn prints_every_message_once_in_id_order_despite_loss_reordering_and_duplicates() {
    let mut server = FakeServer::new();
    let mut client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    let request = server.grant("bob");
    assert_eq!(
        UserRequest::parse(&request.payload).unwrap().username,
        "bob"
    );
    server.welcome(
        &["alice", "bob"],
        &[chat(1, "alice", "old one"), chat(2, "alice", "old two")],
        2,
    );
    client.wait_for_line("* welcome to lobby, bob; here now: alice (host), bob");
    client.wait_for_line("alice: old two");

    client.send_line("hello");
    assert_eq!(
        server.next_matching(is_msg),
        ClientV2::Msg {
            seq: 1,
            text: "hello".into()
        }
    );
    // That copy is "lost": no ack. The retransmission gets one.
    assert_eq!(
        server.next_matching(is_msg),
        ClientV2::Msg {
            seq: 1,
            text: "hello".into()
        }
    );
    // Alice's 4 overtakes the ack that puts bob's message at 3, and arrives twice.
    server.send(&ServerV2::Msg(chat(4, "alice", "after you")));
    server.send(&ServerV2::Ack { seq: 1, id: 3 });
    server.send(&ServerV2::Msg(chat(4, "alice", "after you")));
    // 6 arrives, 5 is lost: the client must ask with its last contiguous id.
    server.send(&ServerV2::Msg(chat(6, "alice", "six")));
    server.next_matching(|m| *m == ClientV2::Ping { last_id: Some(4) });
    server.send(&ServerV2::Msg(chat(5, "alice", "five")));
    server.send(&ServerV2::Msg(chat(6, "alice", "six")));
    server.send(&ServerV2::Pong { id: 6 });
    client.wait_for_line("alice: six");

    let (lines, status) = client.finish();
    assert!(status.success(), "{status:?}\n{}", lines.join("\n"));
    let chat_lines: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|line| !line.starts_with('*'))
        .collect();
    assert_eq!(
        chat_lines,
        [
            "alice: old one",
            "alice: old two",
            "bob: hello",
            "alice: after you",
            "alice: five",
            "alice: six"
        ]
    );
    // End of input leaves, three times in case one is lost.
    let mut leaves = 0;
    while leaves < 3 {
        if server.next() == ClientV2::Leave {
            leaves += 1;
        }
    }
}

#[test]
fn refused_messages_are_reported_and_not_retransmitted() {
    let mut server = FakeServer::new();
    let mut client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    server.grant("bob");
    server.welcome(&["alice", "bob"], &[], 0);
    client.wait_for_line("* welcome to lobby, bob; here now: alice (host), bob");
    client.send_line("spam");
    let ClientV2::Msg { seq, .. } = server.next_matching(is_msg) else {
        unreachable!()
    };
    server.send(&ServerV2::Error {
        code: V2ErrorCode::RateLimited,
        seq: Some(seq),
        message: "slow down".into(),
    });
    client.wait_for_line("[stderr] * not sent, you are sending too fast: \"spam\"");
    client.send_line("calm");
    let next = server.next_matching(is_msg);
    assert_eq!(
        next,
        ClientV2::Msg {
            seq: seq + 1,
            text: "calm".into()
        },
        "the refused seq is not sent again"
    );
}

#[test]
fn a_closed_room_ends_the_client_with_exit_0() {
    let mut server = FakeServer::new();
    let mut client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    server.grant("bob");
    server.welcome(&["alice", "bob"], &[], 0);
    client.wait_for_line("* welcome to lobby, bob; here now: alice (host), bob");
    server.send(&ServerV2::Left {
        name: "carol".into(),
        reason: chat_protocol::v2::LeaveReason::Timeout,
    });
    client.wait_for_line("* carol timed out");
    server.send(&ServerV2::RoomClosed {
        reason: CloseReason::HostLeft,
    });
    client.wait_for_line("* the room was closed by its host");
    let (lines, status) = client.finish();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
}

#[test]
fn commands_ask_the_server_and_print_its_answers() {
    let mut server = FakeServer::new();
    let mut client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    server.grant("bob");
    server.welcome(&["alice", "bob"], &[chat(9, "alice", "latest")], 9);
    client.wait_for_line("alice: latest");
    client.send_line("/who");
    server.next_matching(|m| *m == ClientV2::Who);
    server.send(&ServerV2::Members {
        names: vec!["alice".into(), "bob".into()],
        host: "alice".into(),
        more: 0,
        topic: None,
        away: Default::default(),
    });
    client.wait_for_line("* here now: alice (host), bob");
    client.send_line("/history 2");
    let request = server.next_matching(|m| matches!(m, ClientV2::History { .. }));
    assert_eq!(
        request,
        ClientV2::History {
            before: Some(9),
            limit: Some(2)
        }
    );
    server.send(&ServerV2::History {
        messages: vec![chat(7, "alice", "seven"), chat(8, "alice", "eight")],
        more: false,
    });
    client.wait_for_line("* earlier messages:");
    client.wait_for_line("alice: seven");
    client.wait_for_line("alice: eight");
    client.wait_for_line("* end of earlier messages");
    client.send_line("/next");
    client.wait_for_line(
        "* /next only works in pair rooms (start one with: chat-client pair --name NAME)",
    );
    client.send_line("/quit");
    let (lines, status) = client.finish();
    assert!(status.success(), "{}", lines.join("\n"));
}

#[test]
fn a_server_that_never_confirms_registration_exits_4() {
    let server = FakeServer::new();
    let client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    server.grant("bob");
    let (lines, status) = finish_after_registration_attempts(client, &server);
    assert_eq!(status.code(), Some(4), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|line| line.contains("did not answer")),
        "{}",
        lines.join("\n")
    );
}

/// Counts the registers a silent server receives until the client gives up.
fn finish_after_registration_attempts(
    client: ClientProcess,
    server: &FakeServer,
) -> (Vec<String>, ExitStatus) {
    let mut registers = 0;
    let mut buffer = [0u8; 8192];
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while registers < 5 && Instant::now() < deadline {
        if let Ok((len, _)) = server.udp.recv_from(&mut buffer) {
            let datagram =
                Datagram::decode(&buffer[..len]).expect("the client sends well-formed envelopes");
            if let Ok(ClientMessage::V2(ClientV2::Register { .. })) =
                ClientMessage::decode(datagram.message)
            {
                registers += 1;
            }
        }
    }
    assert_eq!(registers, 5);
    client.finish_with_stdin_open()
}

#[test]
fn rooms_prints_the_list_as_a_table() {
    let server = FakeServer::new();
    let client = ClientProcess::start_on_port(server.tcp_port(), &["--v2", "rooms"]);
    let list = RoomList {
        rooms: vec![RoomSummary {
            name: "lobby".into(),
            members: 2,
            private: true,
            topic: None,
        }],
    };
    let request = server.answer_handshake(&Compliance::accepted(), to_json_payload(&list));
    assert_eq!(request.operation, 4);
    assert_eq!(request.room_name, "");
    let (lines, status) = client.finish();
    assert!(status.success(), "{}", lines.join("\n"));
    assert_eq!(
        lines,
        ["ROOM   MEMBERS  ACCESS", "lobby        2  password"]
    );
}

#[test]
fn a_missing_password_without_a_terminal_says_the_room_needs_one() {
    let server = FakeServer::new();
    let client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v2", "join", "lobby", "--name", "bob"],
    );
    let refusal = Compliance::refused(ErrorCode::BadPassword, "the password is wrong");
    server.answer_handshake(&refusal, to_json_payload(&Grant::failed()));
    let (lines, status) = client.finish();
    assert_eq!(status.code(), Some(3), "{}", lines.join("\n"));
    assert_eq!(
        lines,
        [
            "[stderr] refused: bad_password: the room \"lobby\" is private and needs a \
             password: give it with --password PW"
        ]
    );
}

#[test]
fn a_wrong_password_is_a_refusal_in_the_servers_words() {
    let server = FakeServer::new();
    let client = ClientProcess::start_on_port(
        server.tcp_port(),
        &[
            "--v2",
            "join",
            "lobby",
            "--name",
            "bob",
            "--password",
            "nope",
        ],
    );
    let refusal = Compliance::refused(ErrorCode::BadPassword, "the password is wrong");
    server.answer_handshake(&refusal, to_json_payload(&Grant::failed()));
    let (lines, status) = client.finish();
    assert_eq!(status.code(), Some(3), "{}", lines.join("\n"));
    assert_eq!(
        lines,
        ["[stderr] refused: bad_password: the password is wrong"]
    );
}

#[test]
fn version_1_is_spoken_with_the_v1_flag() {
    let mut server = FakeServer::new();
    let mut client = ClientProcess::start_on_port(
        server.tcp_port(),
        &["--v1", "join", "lobby", "--name", "bob"],
    );
    server.grant("bob");
    let mut buffer = [0u8; 8192];
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let from = loop {
        assert!(Instant::now() < deadline, "no register");
        if let Ok((len, from)) = server.udp.recv_from(&mut buffer) {
            assert_eq!(
                Datagram::decode(&buffer[..len]).unwrap().message,
                b"__REGISTER__"
            );
            break from;
        }
    };
    server.client = Some(from);
    server
        .udp
        .send_to(b"\x01*welcome to lobby, bob", from)
        .unwrap();
    client.wait_for_line("* welcome to lobby, bob");
    server.udp.send_to(b"\x05alicehi bob", from).unwrap();
    client.wait_for_line("alice: hi bob");
    client.send_line("hello");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no chat");
        if let Ok((len, _)) = server.udp.recv_from(&mut buffer) {
            let message = Datagram::decode(&buffer[..len]).unwrap().message;
            // A slow machine can make the client register again before the welcome arrived.
            if message != b"__REGISTER__" {
                assert_eq!(message, b"hello");
                break;
            }
        }
    }
    let (lines, status) = client.finish();
    assert!(status.success(), "{}", lines.join("\n"));
}
