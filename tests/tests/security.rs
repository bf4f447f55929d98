//! Hostile input aimed at people and operators rather than at the protocol: names that
//! deceive, log lines forged from the network, files others can read, password guessing that
//! exhausts memory, a room list flooded by one address, and a hostile state file.

use chat_tests::{Replies, ServerProcess, UdpMember, create, join};

/// A refusal with the given code and a sentence for the user.
fn assert_refused(replies: &Replies, code: &str) {
    let json = replies.compliance_json();
    assert_eq!(json["success"], 0, "{json}");
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

#[test]
fn rooms_that_look_the_same_are_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let host = create(server.tcp, "Lobby", "alice").token();
    assert_refused(&create(server.tcp, "LOBBY", "mallory"), "room_exists");
    assert_refused(
        &create(server.tcp, "lobby\u{200B}", "mallory"),
        "invalid_room_name",
    );
    assert_refused(
        &create(server.tcp, "l\u{43e}bby", "mallory"),
        "invalid_room_name",
    );

    // Joining by another case lands in the same room, under its stored name, and the member
    // chats there with datagrams naming the room as it typed it.
    let joined = join(server.tcp, "LOBBY", "bob");
    let bob_token = joined.token();
    assert_eq!(joined.complete_json()["room"], "Lobby");
    let alice = UdpMember::new(server.udp, "Lobby", &host);
    alice.register();
    let bob = UdpMember::new(server.udp, "LOBBY", &bob_token);
    bob.register();
    bob.send(b"hello");
    alice.expect_chat("bob", "hello");

    let rooms = chat_tests::handshake(server.tcp, 4, "", b"").complete_json();
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(1), "{rooms}");
}

#[test]
fn names_that_look_the_same_are_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    create(server.tcp, "den", "jos\u{e9}").token();
    assert_refused(&join(server.tcp, "den", "jose\u{301}"), "name_taken");
    assert_refused(&join(server.tcp, "den", "JOSÉ"), "name_taken");
    for deceiver in [
        "bob\u{200B}",
        "\u{200B}\u{200B}",
        "al\u{202E}ecila",
        "*",
        "* server",
        "alice (host)",
        "\u{430}lice",
    ] {
        assert_refused(&join(server.tcp, "den", deceiver), "invalid_username");
    }
    // Ordinary names are as they were.
    join(server.tcp, "den", "bob").token();
    join(server.tcp, "den", "Émilie").token();
}

#[test]
fn names_from_the_network_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let forged =
        "x\n2026-01-01T00:00:00Z  INFO FORGED handshake granted user=root host=true\x1b[2J";
    assert_refused(&create(server.tcp, forged, "alice"), "invalid_room_name");
    // A name with spaces is quoted, so it cannot pose as more fields either.
    create(server.tcp, "a user=root host=true", "bob").token();
    // Refusals and grants are logged before the reply is sent.
    let log = server.log();
    assert!(log.contains("handshake refused"), "{log}");
    assert!(log.contains("room=\"a user=root host=true\""), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("FORGED") || line.contains("handshake refused"),
            "{line}"
        );
        assert!(
            !line.contains('\x1b'),
            "an escape sequence reached the log: {line:?}"
        );
    }
    assert!(
        log.contains("\\n2026-01-01"),
        "the newline is shown escaped: {log}"
    );
}

/// Sends a join with a password, as our client does.
fn join_with_password(
    tcp: std::net::SocketAddr,
    room: &str,
    name: &str,
    password: &str,
) -> Replies {
    let payload = serde_json::json!({ "username": name, "password": password }).to_string();
    chat_tests::handshake(tcp, 2, room, payload.as_bytes())
}

#[test]
fn wrong_password_floods_neither_exhaust_memory_nor_go_unanswered() {
    // 120 wrong-password joins at once from one address (the load that took the server from
    // 7 MB to 2.2 GB resident). CHAT_PASSWORD_FLOOD changes the count for measurements.
    let joins: usize = std::env::var("CHAT_PASSWORD_FLOOD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--handshakes-per-ip", "0"]);
    let payload = serde_json::json!({ "username": "host", "password": "right" }).to_string();
    chat_tests::handshake(server.tcp, 1, "vault", payload.as_bytes()).token();
    // Cheap checks come before the password: a hopeless join never costs a hash, nor counts
    // as a wrong password.
    assert_refused(
        &join_with_password(server.tcp, "vault", "HOST", "wrong"),
        "name_taken",
    );
    assert_refused(
        &join_with_password(server.tcp, "vault\u{200B}", "x", "wrong"),
        "invalid_room_name",
    );
    let pid = server.pid();
    let baseline = chat_tests::proc_status_kb(pid, "VmRSS").unwrap_or(0);

    let tcp = server.tcp;
    let codes: Vec<String> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..joins)
            .map(|n| {
                scope.spawn(move || {
                    join_with_password(tcp, "vault", &format!("guess{n}"), "wrong")
                        .error_code()
                        .unwrap_or_default()
                })
            })
            .collect();
        guesses
            .into_iter()
            .map(|guess| guess.join().expect("a guessing thread"))
            .collect()
    });
    let peak = chat_tests::proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let count = |code: &str| codes.iter().filter(|c| *c == code).count();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    println!(
        "{joins} wrong-password joins: bad_password {}, too_many_attempts {}, server_busy {}; \
         server RSS {baseline} kB before, peak (VmHWM) {peak} kB; {cores} cores",
        count("bad_password"),
        count("too_many_attempts"),
        count("server_busy"),
    );
    // Every guess is answered with a refusal a client understands; none gets in.
    assert_eq!(
        count("bad_password") + count("too_many_attempts") + count("server_busy"),
        joins,
        "{codes:?}"
    );
    // Argon2 takes 19 MiB per check: about one check per core may run at once.
    let allowed_kb = 48 * 1024 + cores * 24 * 1024;
    assert!(
        peak < allowed_kb,
        "peak RSS {peak} kB, allowed {allowed_kb} kB"
    );
    // The address is now refused without a check, even with the right password.
    assert_refused(
        &join_with_password(server.tcp, "vault", "late", "right"),
        "too_many_attempts",
    );
}

/// A state file with `rooms` public rooms of `members` members each (the first one hosts).
fn hostile_state(rooms: usize, members: usize, username: impl Fn(usize) -> String) -> String {
    let rooms: Vec<serde_json::Value> = (0..rooms)
        .map(|r| {
            let members: Vec<serde_json::Value> = (0..members)
                .map(|m| {
                    serde_json::json!({
                        "username": username(m),
                        "uid": r * members + m + 1,
                        "token": format!("{:064x}", r * members + m + 1),
                        "host": m == 0,
                    })
                })
                .collect();
            serde_json::json!({
                "name": format!("room{r}"),
                "uid": r + 1,
                "kind": "public",
                "created_at_ms": 1,
                "members": members,
            })
        })
        .collect();
    serde_json::json!({ "format": 1, "rooms": rooms }).to_string()
}

#[test]
fn a_state_file_over_the_limits_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("room_manager.json");
    std::fs::write(&state, hostile_state(1, 300, |m| format!("user{m}"))).unwrap();
    let refused = ServerProcess::try_start(dir.path(), &[])
        .err()
        .expect("refused");
    assert!(refused.contains("room_manager.json"), "{refused}");
    assert!(refused.contains("more than its limit of 256"), "{refused}");

    std::fs::write(&state, hostile_state(3, 1, |_| "host".into())).unwrap();
    let refused = ServerProcess::try_start(dir.path(), &["--max-rooms", "2"])
        .err()
        .expect("refused");
    assert!(refused.contains("room_manager.json"), "{refused}");
    assert!(refused.contains("more than --max-rooms 2"), "{refused}");
    // Within the limits the same file loads.
    ServerProcess::start_with(dir.path(), &["--max-rooms", "3"]);
}

#[test]
fn a_huge_name_in_the_state_file_makes_a_short_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("room_manager.json");
    let huge = format!("{}\n\u{1b}[2J", "n".repeat(1 << 20));
    std::fs::write(
        &state,
        hostile_state(1, 2, |m| if m == 1 { huge.clone() } else { "host".into() }),
    )
    .unwrap();
    let refused = ServerProcess::try_start(dir.path(), &[])
        .err()
        .expect("refused");
    let printed = refused
        .lines()
        .filter(|line| line.contains("room_manager.json"))
        .collect::<Vec<_>>();
    assert_eq!(
        printed.len(),
        1,
        "one sentence naming the file: {refused:.2000}"
    );
    assert!(
        printed[0].len() < 1000,
        "the error is {} bytes: {:.2000}",
        printed[0].len(),
        printed[0]
    );
    assert!(
        !refused.contains('\u{1b}'),
        "an escape sequence reached the output"
    );
}

#[test]
fn a_room_of_many_members_restores_in_linear_time() {
    // 40,000 members took 22.8 s to restore, one name compared with every earlier one; the
    // harness waits 10 s for the server to start.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("room_manager.json");
    std::fs::write(&state, hostile_state(1, 40_000, |m| format!("user{m}"))).unwrap();
    let started = std::time::Instant::now();
    let server = ServerProcess::start_with(dir.path(), &["--max-members", "40001"]);
    println!(
        "40,000 members restored and listening after {:?}",
        started.elapsed()
    );
    assert_refused(&join(server.tcp, "room0", "USER39999"), "name_taken");
}

#[test]
fn one_address_cannot_bury_the_room_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--handshakes-per-ip", "0", "--rooms-per-ip", "5"],
    );
    // The attacker's junk rooms sort before the real one, and stop at the cap.
    let tokens: Vec<String> = (0..5)
        .map(|n| create(server.tcp, &format!("aaa junk {n:03}"), "spam").token())
        .collect();
    assert_refused(
        &create(server.tcp, "aaa junk 999", "spam"),
        "too_many_rooms",
    );

    // Paging reaches every room: one room per page here, following `next`.
    let list = |payload: &str| {
        let replies = chat_tests::handshake(server.tcp, 4, "", payload.as_bytes());
        assert_eq!(replies.error_code(), None);
        replies.complete_json()
    };
    let first = list(r#"{"limit":2}"#);
    assert_eq!(first["rooms"].as_array().map(Vec::len), Some(2), "{first}");
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let payload = match &after {
            Some(after) => serde_json::json!({ "after": after, "limit": 1 }).to_string(),
            None => r#"{"limit":1}"#.to_owned(),
        };
        let page = list(&payload);
        for room in page["rooms"].as_array().cloned().unwrap_or_default() {
            names.push(room["name"].as_str().unwrap_or("").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(names.len(), 5, "{names:?}");
    // The reference client's request (no payload) still gets the whole list, as before.
    let whole = list("");
    assert_eq!(whole["rooms"].as_array().map(Vec::len), Some(5), "{whole}");
    assert!(whole.get("next").is_none(), "{whole}");
    let bad = chat_tests::handshake(server.tcp, 4, "", br#"{"limit":0}"#);
    assert_refused(&bad, "invalid_request");

    // A closed room frees its place.
    let host = UdpMember::new(server.udp, "aaa junk 000", &tokens[0]);
    host.register();
    host.send(b"__LEAVE__");
    let deadline = std::time::Instant::now() + chat_tests::EVENT_TIMEOUT;
    while list("")["rooms"].as_array().map(Vec::len) != Some(4) {
        assert!(
            std::time::Instant::now() < deadline,
            "the room never closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    create(server.tcp, "zzz", "x").token();
}

/// Creates from one address race each other through the per-address room count and the room
/// table; every one must be answered (they once took those two locks in opposite orders, and
/// the server stopped answering anyone).
#[test]
fn concurrent_creates_from_one_address_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--handshakes-per-ip", "0", "--rooms-per-ip", "100000"],
    );
    let tcp = server.tcp;
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            std::thread::spawn(move || {
                (0..60)
                    .map(|n| create(tcp, &format!("race {worker} {n}"), "host").token())
                    .count()
            })
        })
        .collect();
    let created: usize = workers
        .into_iter()
        .map(|worker| worker.join().expect("every create answered"))
        .sum();
    assert_eq!(created, 8 * 60);
}
