//! The state journal from the outside: joins answered in a burst are durable through the
//! journal alone, and survive `kill -9`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use chat_tests::{EVENT_TIMEOUT, ServerProcess, UdpMember, V2Member, create, handshake, join};

/// Joins in the burst, and how many run at once.
const JOINS: usize = 200;
const JOINERS: usize = 32;

/// Registers `token` from a fresh address, resending as a client would, and returns the text
/// of the server's welcome notice (`welcome to ROOM, NAME; here now: ...`).
fn welcome(udp: std::net::SocketAddr, room: &str, token: &str) -> Option<String> {
    let member = UdpMember::new(udp, room, token);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        member.send(b"__REGISTER__");
        let attempt_ends = Instant::now() + Duration::from_secs(1);
        while Instant::now() < attempt_ends {
            if let Some(datagram) = member.recv_within(Duration::from_millis(100))
                && let Some(text) = datagram.strip_prefix(b"\x01*welcome to ")
            {
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}

#[test]
fn kill_9_after_a_burst_of_joins_keeps_every_answered_member() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--handshakes-per-ip", "0"];
    let server = ServerProcess::start_with(dir.path(), &flags);
    let host = create(server.tcp, "burst", "host").token();

    let answered = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for worker in 0..JOINERS {
            let (answered, tcp) = (&answered, server.tcp);
            scope.spawn(move || {
                for n in (worker..JOINS).step_by(JOINERS) {
                    let name = format!("m{n}");
                    let token = join(tcp, "burst", &name).token();
                    answered.lock().unwrap().push((name, token));
                }
            });
        }
    });
    let answered = answered.into_inner().unwrap();
    assert_eq!(answered.len(), JOINS);
    // No chance to write a snapshot on the way out: the joins are only in the journal.
    server.kill9();
    let journal = std::fs::read_to_string(dir.path().join("room_manager.json.journal")).unwrap();
    assert!(
        journal.lines().count() >= JOINS,
        "the joins were journaled: {journal}"
    );

    let server = ServerProcess::start_with(dir.path(), &flags);
    let list = handshake(server.tcp, 4, "", b"").complete_json();
    assert_eq!(
        list,
        serde_json::json!({"rooms": [{"name": "burst", "members": JOINS + 1, "private": false}]})
    );
    // Bound before the members register from short-lived sockets, so that none of theirs can
    // be given this port afterwards (the room's notices to that member would come here).
    let host = V2Member::new(server.udp, "burst", &host);
    for (name, token) in &answered {
        welcome(server.udp, "burst", token)
            .unwrap_or_else(|| panic!("{name}'s token does not register after the restart"));
    }
    // Everyone is in the room under the name they were granted: the version-1 welcome is cut
    // to a few names in a room this big, the version-2 member list holds them all.
    let (names, _) = host
        .register(None)
        .members
        .expect("the host's registration");
    let here: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = answered
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(["host"])
        .collect();
    assert_eq!(here, expected);
}
