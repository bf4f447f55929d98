//! The control plane under malformed, hostile and slow clients: every request that got as far
//! as a header is refused with the contract's code and a sentence, nothing a client does holds
//! up anyone else, and concurrent handshakes each get their own durable token.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Instant;

use chat_protocol::tcrp::{Frame, State};
use chat_tests::{
    EVENT_TIMEOUT, Replies, ServerProcess, UdpMember, create, decode_frames, handshake, join,
};

/// The State 2 payload of every refusal.
const FAILED_GRANT: &[u8] = br#"{"token":""}"#;

/// A 32-byte header with a raw 29-byte size field.
fn header(room_len: u8, operation: u8, state: u8, size: [u8; 29]) -> Vec<u8> {
    let mut bytes = vec![room_len, operation, state];
    bytes.extend_from_slice(&size);
    bytes
}

/// The 29-byte size field for `size`.
fn size_field(size: u64) -> [u8; 29] {
    let mut field = [0u8; 29];
    field[21..].copy_from_slice(&size.to_be_bytes());
    field
}

/// A request with raw bytes for the room name, which the harness's encoder would refuse.
fn raw_request(operation: u8, state: u8, room: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(
        u8::try_from(room.len()).expect("a room name of at most 255 bytes"),
        operation,
        state,
        size_field(payload.len() as u64),
    );
    bytes.extend_from_slice(room);
    bytes.extend_from_slice(payload);
    bytes
}

/// Sends `bytes` without ever closing the sending side and reads until the server closes. A
/// server that waited for more would leave this read to time out, which fails the test.
fn exchange_until_server_closes(tcp: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(tcp).expect("connect to the control plane");
    stream
        .set_read_timeout(Some(EVENT_TIMEOUT))
        .expect("set a read timeout");
    stream.write_all(bytes).expect("send the request");
    read_until_closed(&mut stream)
}

fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => reply,
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!(
                "the server neither answered nor closed the connection (got {} bytes)",
                reply.len()
            )
        }
        Err(error) => panic!(
            "reading the reply failed: {error} (got {} bytes)",
            reply.len()
        ),
    }
}

/// The two reply frames of a raw exchange.
fn replies(bytes: &[u8]) -> Replies {
    let frames = decode_frames(bytes);
    assert_eq!(frames.len(), 2, "exactly two reply frames: {frames:?}");
    let [compliance, complete]: [Frame; 2] = frames.try_into().expect("two frames, checked above");
    assert_eq!(compliance.state, State::Compliance);
    assert_eq!(complete.state, State::Complete);
    Replies {
        compliance,
        complete,
    }
}

/// A refusal as the contract words it: `success` 0, the code, a sentence for a person, and an
/// empty token in the second frame.
fn assert_refused(replies: &Replies, code: &str) {
    let json = replies.compliance_json();
    assert_eq!(json["success"], 0, "{json}");
    assert_eq!(json["error"], code, "{json}");
    let message = json["message"].as_str().unwrap_or("");
    assert!(
        !message.trim().is_empty(),
        "a refusal explains itself: {json}"
    );
    assert_eq!(
        replies.complete.payload,
        FAILED_GRANT,
        "the State 2 payload of a refusal: {}",
        String::from_utf8_lossy(&replies.complete.payload)
    );
}

/// A refusal whose frames echo the operation and room name of the request.
fn assert_refused_echoing(replies: &Replies, code: &str, operation: u8, room: &str) {
    assert_refused(replies, code);
    for frame in [&replies.compliance, &replies.complete] {
        assert_eq!(frame.operation, operation, "the operation is echoed");
        assert_eq!(frame.room_name, room, "the room name is echoed");
    }
}

/// The rooms the server lists (operation 4), with their member counts.
fn room_list(tcp: SocketAddr) -> Vec<(String, u64)> {
    let replies = handshake(tcp, 4, "", b"");
    assert_eq!(replies.compliance_json()["success"], 1);
    let list = replies.complete_json();
    list["rooms"]
        .as_array()
        .expect("a list of rooms")
        .iter()
        .map(|room| {
            let name = room["name"].as_str().expect("a room name");
            (name.to_owned(), room["members"].as_u64().expect("a count"))
        })
        .collect()
}

/// Registers `token` from a fresh socket and returns the text of the server's welcome notice,
/// then leaves, so that the server has no address left to send to once the socket is closed.
fn welcome_then_leave(udp: SocketAddr, room: &str, token: &str) -> String {
    let member = UdpMember::new(udp, room, token);
    member.send(b"__REGISTER__");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        // Only the server's datagrams count: a reused port may still hear from another test.
        if let Ok((len, from)) = member.socket.recv_from(&mut buf)
            && from == udp
            && let Some(text) = buf[..len].strip_prefix(b"\x01*")
            && text.starts_with(b"welcome to ")
        {
            member.send(b"__LEAVE__");
            return String::from_utf8_lossy(text).into_owned();
        }
    }
    panic!("no welcome for a token of {room}");
}

fn username(name: &str) -> Vec<u8> {
    serde_json::to_vec(name).expect("a string serializes")
}

#[test]
fn a_short_header_then_close_leaves_the_server_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for cut in [1, 10, 31] {
        let mut stream = TcpStream::connect(server.tcp).unwrap();
        stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        stream
            .write_all(&raw_request(1, 0, b"lobby", b"\"alice\"")[..cut])
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        // No header, nothing to answer: the server just closes.
        assert!(read_until_closed(&mut stream).is_empty());
    }
    // A header and part of the body, then close.
    let mut stream = TcpStream::connect(server.tcp).unwrap();
    stream
        .write_all(&raw_request(1, 0, b"lobby", b"\"alice\"")[..34])
        .unwrap();
    drop(stream);

    let grant = create(server.tcp, "lobby", "alice");
    assert_eq!(grant.token().len(), 64);
    assert_eq!(
        join(server.tcp, "lobby", "bob").complete_json()["host"],
        false
    );
}

#[test]
fn an_absurd_payload_size_is_refused_from_the_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut huge = [0u8; 29];
    huge[0] = 0x01;
    let mut all_ones = [0xffu8; 29];
    all_ones[28] = 0xfe;
    let sizes = [
        ("2^224 bytes", huge),
        ("all bits set", all_ones),
        ("16 KiB + 1", size_field(16 * 1024 + 1)),
    ];
    for (what, size) in sizes {
        // Only the header: the body is never sent, so the reply cannot be waiting for it.
        let reply = exchange_until_server_closes(server.tcp, &header(5, 1, 0, size));
        let replies = replies(&reply);
        assert_refused(&replies, "payload_too_large");
        assert_eq!(replies.compliance.operation, 1, "{what}");
    }
    // Exactly at the limit the payload is read and judged on its merits: a 16 KiB username.
    let at_limit = vec![b'x'; 16 * 1024];
    let reply = exchange_until_server_closes(server.tcp, &raw_request(1, 0, b"lobby", &at_limit));
    assert_refused_echoing(&replies(&reply), "invalid_username", 1, "lobby");
}

#[test]
fn invalid_utf8_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // In the room name: the frame itself is unreadable, so no room name can be echoed.
    let reply =
        exchange_until_server_closes(server.tcp, &raw_request(1, 0, b"lo\xffby", b"\"alice\""));
    assert_refused(&replies(&reply), "invalid_request");
    // In the username, in each payload form.
    for payload in [
        &b"\"al\xffice\""[..],
        b"al\xc3ice",
        b"{\"username\":\"al\xffice\"}",
    ] {
        let reply = exchange_until_server_closes(server.tcp, &raw_request(1, 0, b"lobby", payload));
        assert_refused_echoing(&replies(&reply), "invalid_request", 1, "lobby");
    }
    // Nothing was created by any of them.
    assert_eq!(create(server.tcp, "lobby", "alice").error_code(), None);
}

#[test]
fn an_unknown_operation_is_unsupported_and_echoes_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for operation in [0u8, 9, 255] {
        let replies = handshake(server.tcp, operation, "lobby", b"\"alice\"");
        assert_refused_echoing(&replies, "unsupported_operation", operation, "lobby");
    }
    assert_eq!(
        join(server.tcp, "lobby", "bob").error_code().as_deref(),
        Some("room_not_found")
    );
}

#[test]
fn a_request_whose_state_is_not_zero_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for state in [State::Compliance, State::Complete] {
        let request = Frame::new(1, state, "lobby", username("alice"))
            .encode()
            .unwrap();
        let reply = exchange_until_server_closes(server.tcp, &request);
        assert_refused_echoing(&replies(&reply), "invalid_request", 1, "lobby");
    }
    // A state the contract does not define at all.
    let reply =
        exchange_until_server_closes(server.tcp, &raw_request(1, 7, b"lobby", b"\"alice\""));
    assert_refused(&replies(&reply), "invalid_request");
    // None of them created the room.
    assert_eq!(create(server.tcp, "lobby", "alice").error_code(), None);
}

#[test]
fn invalid_room_names_and_usernames_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    create(server.tcp, "lobby", "host").token();

    let bad_rooms = [
        String::new(),
        "r".repeat(65),
        // 33 characters but 66 bytes: the limit is in bytes.
        "é".repeat(33),
        " lobby".into(),
        "lobby ".into(),
        "lob\nby".into(),
        "lob\u{0}by".into(),
    ];
    for room in &bad_rooms {
        for operation in [1, 2] {
            let replies = handshake(server.tcp, operation, room, &username("alice"));
            assert_refused_echoing(&replies, "invalid_room_name", operation, room);
        }
    }
    let bad_names = [
        String::new(),
        "u".repeat(33),
        "é".repeat(17),
        "bo\nb".into(),
        "bob\t".into(),
        " bob".into(),
        "bob\u{1b}[2J".into(),
    ];
    for name in &bad_names {
        let replies = handshake(server.tcp, 1, "new room", &username(name));
        assert_refused_echoing(&replies, "invalid_username", 1, "new room");
        let replies = handshake(server.tcp, 2, "lobby", &username(name));
        assert_refused_echoing(&replies, "invalid_username", 2, "lobby");
    }

    // The limits themselves are allowed, counted in bytes.
    for (room, name) in [
        ("r".repeat(64), "u".repeat(32)),
        ("é".repeat(32), "é".repeat(16)),
    ] {
        let grant = create(server.tcp, &room, &name);
        assert_eq!(grant.complete_json()["room"], room.as_str());
        assert_eq!(grant.complete_json()["username"], name.as_str());
    }
    // The bad requests left no trace: only the rooms granted above exist, and the bad joins
    // added no one to the lobby.
    let mut listed = room_list(server.tcp);
    listed.sort();
    let mut expected = vec![
        ("lobby".to_owned(), 1),
        ("r".repeat(64), 1),
        ("é".repeat(32), 1),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn conflicting_requests_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    create(server.tcp, "lobby", "Alice").token();
    join(server.tcp, "lobby", "émilie").token();

    assert_refused_echoing(
        &create(server.tcp, "lobby", "someone"),
        "room_exists",
        1,
        "lobby",
    );
    assert_refused_echoing(
        &join(server.tcp, "nowhere", "bob"),
        "room_not_found",
        2,
        "nowhere",
    );
    // Room names compare by key: another case is the same room, so it cannot be created.
    assert_refused_echoing(
        &create(server.tcp, "LOBBY", "bob"),
        "room_exists",
        1,
        "LOBBY",
    );
    for taken in ["Alice", "alice", "ALICE", "Émilie", "ÉMILIE"] {
        assert_refused_echoing(&join(server.tcp, "lobby", taken), "name_taken", 2, "lobby");
    }
    // The same names are free in another room.
    create(server.tcp, "other", "alice").token();
    join(server.tcp, "other", "ÉMILIE").token();
}

#[test]
fn stalled_clients_do_not_block_others_and_are_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--handshake-timeout", "1"]);
    // Enough stalled clients that a server serving them one after another would keep the
    // honest ones waiting longer than the harness's timeout.
    let request = raw_request(1, 0, b"lobby", b"\"alice\"");
    let mut stalled: Vec<TcpStream> = (0..15)
        .map(|_| {
            let mut stream = TcpStream::connect(server.tcp).unwrap();
            stream.write_all(&request[..16]).unwrap();
            stream
        })
        .collect();

    create(server.tcp, "busy", "host").token();
    for i in 0..19 {
        join(server.tcp, "busy", &format!("guest{i}")).token();
    }

    for stream in &mut stalled {
        stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let reply = read_until_closed(stream);
        assert!(
            reply.is_empty(),
            "half a header gets no reply, only a close: {reply:?}"
        );
    }
}

#[test]
fn half_a_body_is_refused_as_invalid_when_the_deadline_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--handshake-timeout", "1"]);
    let request = raw_request(2, 0, b"lobby", b"\"alice\"");
    let mut stream = TcpStream::connect(server.tcp).unwrap();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    stream.write_all(&request[..32 + 5 + 2]).unwrap();
    let replies = replies(&read_until_closed(&mut stream));
    assert_refused(&replies, "invalid_request");
    assert_eq!(replies.compliance.operation, 2);
}

#[test]
fn a_hundred_simultaneous_joins_each_get_a_durable_token() {
    let dir = tempfile::tempdir().unwrap();
    // One address makes every request here; the per-address limit is not under test.
    let flags = ["--handshakes-per-ip", "0"];
    let server = ServerProcess::start_with(dir.path(), &flags);
    let host_token = create(server.tcp, "crowd", "host").token();
    let tcp = server.tcp;
    let granted: Vec<(String, String)> = thread::scope(|scope| {
        let joins: Vec<_> = (0..100)
            .map(|i| {
                scope.spawn(move || {
                    let name = format!("member-{i:03}");
                    let replies = join(tcp, "crowd", &name);
                    let grant = replies.complete_json();
                    assert_eq!(grant["username"], name.as_str());
                    assert_eq!(grant["host"], false);
                    (name, replies.token())
                })
            })
            .collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });

    let mut tokens: HashSet<&str> = HashSet::from([host_token.as_str()]);
    for (name, token) in &granted {
        assert_eq!(token.len(), 64, "{name}: {token}");
        assert!(
            token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{name}: {token}"
        );
        assert!(tokens.insert(token), "{name} got a token someone else has");
    }
    assert_eq!(room_list(server.tcp), vec![("crowd".to_owned(), 101)]);

    // Every reply was durable when sent: a crash right after the last one loses no one.
    server.kill9();
    let server = ServerProcess::start_with(dir.path(), &flags);
    assert_eq!(room_list(server.tcp), vec![("crowd".to_owned(), 101)]);
    for (name, token) in &granted {
        let welcome = welcome_then_leave(server.udp, "crowd", token);
        assert!(
            welcome.starts_with(&format!("welcome to crowd, {name};")),
            "{name}'s token still names {name}: {welcome}"
        );
    }
    let welcome = welcome_then_leave(server.udp, "crowd", &host_token);
    assert!(welcome.starts_with("welcome to crowd, host;"), "{welcome}");
}

#[test]
fn simultaneous_joins_under_one_name_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--handshakes-per-ip", "0"]);
    create(server.tcp, "duel", "host").token();
    let tcp = server.tcp;
    let spellings = ["twin", "Twin", "TWIN", "tWIN", "twiN"];
    let outcomes: Vec<Option<String>> = thread::scope(|scope| {
        let joins: Vec<_> = (0..20)
            .map(|i| {
                scope.spawn(move || join(tcp, "duel", spellings[i % spellings.len()]).error_code())
            })
            .collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });
    let admitted = outcomes.iter().filter(|outcome| outcome.is_none()).count();
    assert_eq!(admitted, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().flatten().all(|code| code == "name_taken"),
        "every other join is name_taken: {outcomes:?}"
    );
}
