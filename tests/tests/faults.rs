//! Faults the server must survive: `kill -9` in the middle of handshakes and of acked chat, a
//! state file that cannot be written, members and hosts that vanish, and SIGTERM with
//! handshakes in flight.
//!
//! The kill loops here are short; `scripts/kill-loop.sh` runs the long versions (the ignored
//! tests at the end) and prints their figures.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::v2::{CloseReason, LeaveReason, ServerV2};
use chat_tests::{
    EVENT_TIMEOUT, Replies, ServerProcess, UdpMember, V2Member, create, join, try_handshake,
};

/// Flags of the kill loops: many handshakes and rooms from one address, and no one timed out while the
/// loop runs (hosts of the burst rooms never register).
const KILL_LOOP_FLAGS: &[&str] = &[
    "--handshakes-per-ip",
    "0",
    "--rooms-per-ip",
    "0",
    "--idle-timeout",
    "3600",
    "--max-members",
    "10000",
    "--flood-rate",
    "0",
    "--history-limit",
    "1000000",
];

/// Joiners running at once during a burst.
const JOINERS: usize = 8;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The journal next to a state file (see docs/architecture.md, "Durability").
fn journal_of(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    name.into()
}

/// Tokens in the saved state: the state file, which must parse (a torn or partial file would
/// not), with the changes its journal records after it. Only the journal's last line may be
/// torn.
fn tokens_in_state_file(path: &Path) -> HashSet<String> {
    let bytes = std::fs::read(path).expect("the state file exists");
    let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "the state file is torn or partial ({error}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let text = |value: &serde_json::Value| value.as_str().expect("a string").to_owned();
    // Members by (room, uid), as the journal names them.
    let mut members: BTreeMap<(String, u64), String> = BTreeMap::new();
    let add_room = |members: &mut BTreeMap<_, _>, room: &serde_json::Value| {
        for member in room["members"].as_array().expect("members") {
            let key = (text(&room["name"]), member["uid"].as_u64().unwrap_or(0));
            members.insert(key, text(&member["token"]));
        }
    };
    for room in state["rooms"].as_array().expect("rooms") {
        add_room(&mut members, room);
    }
    let included = state["journal_seq"].as_u64().unwrap_or(0);
    let journal = std::fs::read_to_string(journal_of(path)).unwrap_or_default();
    let lines: Vec<&str> = journal.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            assert_eq!(
                index + 1,
                lines.len(),
                "a bad journal line before the last: {line}"
            );
            break;
        };
        if record["seq"].as_u64().expect("seq") <= included {
            continue;
        }
        let uid = |value: &serde_json::Value| value.as_u64().expect("uid");
        match record["change"].as_str().expect("change") {
            "room_created" => add_room(&mut members, &record["room"]),
            "member_joined" => {
                let key = (text(&record["room"]), uid(&record["member"]["uid"]));
                members.insert(key, text(&record["member"]["token"]));
            }
            "member_left" => {
                members.remove(&(text(&record["room"]), uid(&record["uid"])));
            }
            "room_closed" => members.retain(|(room, _), _| *room != text(&record["room"])),
            _ => {}
        }
    }
    members.into_values().collect()
}

/// Whether `token` registers in `room` from a fresh address: the server's welcome notice
/// arrives (the register is resent a few times, as a client would).
fn registers(udp: SocketAddr, room: &str, token: &str) -> bool {
    let member = UdpMember::new(udp, room, token);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        member.send(b"__REGISTER__");
        let attempt_ends = Instant::now() + Duration::from_secs(1);
        while Instant::now() < attempt_ends {
            if let Some(datagram) = member.recv_within(Duration::from_millis(100))
                && datagram.starts_with(b"\x01*welcome to ")
            {
                return true;
            }
        }
    }
    false
}

/// One answered handshake.
#[derive(Debug, Clone)]
struct Answered {
    room: String,
    token: String,
}

/// What a kill loop over handshakes found.
#[derive(Debug, Default)]
struct StateLoopFigures {
    iterations: u64,
    answered: usize,
    verified_after_restart: usize,
    lost: Vec<String>,
}

/// Joins `room` as fast as `JOINERS` threads can until `stop` (or the server is gone), and
/// records every join that was answered with a token.
fn burst_of_joins(
    tcp: SocketAddr,
    room: &str,
    stop: &AtomicBool,
    answered: &Mutex<Vec<Answered>>,
    count: &AtomicUsize,
) {
    thread::scope(|scope| {
        for worker in 0..JOINERS {
            scope.spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("m{worker}-{n}");
                    let payload = serde_json::to_vec(&name).expect("a name encodes as JSON");
                    let Some(replies) = try_handshake(tcp, 2, room, &payload) else {
                        // The server is gone: this request was not answered.
                        break;
                    };
                    if replies.error_code().is_none() {
                        answered
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Answered {
                                room: room.to_owned(),
                                token: replies.token(),
                            });
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
}

/// Creates `room` (retrying briefly: a loaded machine may refuse a connection now and then)
/// and returns the host's token, or what went wrong.
fn create_host(tcp: SocketAddr, room: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match try_handshake(tcp, 1, room, br#""host""#) {
            Some(replies) if replies.error_code().is_none() => return Ok(replies.token()),
            Some(replies) => last = format!("create refused: {}", replies.compliance_json()),
            None => last = "create got no reply".to_owned(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// `iterations` times: a burst of concurrent joins, `kill -9` in the middle of it, a restart,
/// and every token that was answered must still be in the state file and register. Stops early
/// (and says so in the figures) at `time_limit`.
fn state_kill_loop(iterations: u64, time_limit: Duration) -> StateLoopFigures {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut figures = StateLoopFigures::default();
    let mut all: Vec<Answered> = Vec::new();
    let mut server = ServerProcess::start_with(dir.path(), KILL_LOOP_FLAGS);
    for iteration in 0..iterations {
        if started.elapsed() > time_limit {
            break;
        }
        let room = format!("burst-{iteration}");
        let host = create_host(server.tcp, &room)
            .unwrap_or_else(|why| panic!("iteration {iteration}: {why}"));
        let answered = Mutex::new(vec![Answered {
            room: room.clone(),
            token: host,
        }]);
        let count = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // Vary the instant of the kill from one iteration to the next.
        let kill_after = 3 + usize::try_from(iteration * 7 % 40).expect("below 40");
        let tcp = server.tcp;
        thread::scope(|scope| {
            scope.spawn(|| burst_of_joins(tcp, &room, &stop, &answered, &count));
            let deadline = Instant::now() + EVENT_TIMEOUT;
            while count.load(Ordering::Relaxed) < kill_after && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            // Joins are being written right now: the other joiners are mid-handshake.
            server.kill9();
            stop.store(true, Ordering::Relaxed);
        });
        let answered = answered
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        figures.answered += answered.len();
        all.extend(answered.iter().cloned());

        let on_disk = tokens_in_state_file(&dir.path().join("room_manager.json"));
        server = ServerProcess::start_with(dir.path(), KILL_LOOP_FLAGS);
        for grant in &all {
            if !on_disk.contains(&grant.token) {
                figures
                    .lost
                    .push(format!("{} (not in the state file)", &grant.token[..8]));
            }
        }
        for grant in &answered {
            if registers(server.udp, &grant.room, &grant.token) {
                figures.verified_after_restart += 1;
            } else {
                figures
                    .lost
                    .push(format!("{} (does not register)", &grant.token[..8]));
            }
        }
        figures.iterations += 1;
    }
    // Once more at the end, every token of every iteration, after all the kills.
    for grant in &all {
        if !registers(server.udp, &grant.room, &grant.token) {
            figures.lost.push(format!(
                "{} (does not register at the end)",
                &grant.token[..8]
            ));
        }
    }
    figures
}

/// What a kill loop over acked chat found.
#[derive(Debug, Default)]
struct HistoryLoopFigures {
    iterations: u64,
    acked: usize,
    stored: usize,
    lost: Vec<String>,
}

/// `iterations` times: a version-2 member sends as fast as it may with up to 16 messages
/// unacked, `kill -9` right after an ack, a restart, the unacked ones resent (as a client
/// does), and every acked message must be in the history exactly once with the id it was acked
/// with.
fn history_kill_loop(iterations: u64, time_limit: Duration) -> HistoryLoopFigures {
    const WINDOW: usize = 16;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut figures = HistoryLoopFigures::default();
    let mut server = ServerProcess::start_with(dir.path(), KILL_LOOP_FLAGS);
    let token = create(server.tcp, "log", "alice").token();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_seq = 1;
    let mut unacked: BTreeSet<u64> = BTreeSet::new();
    let text = |seq: u64| format!("message {seq}");
    for iteration in 0..iterations {
        if started.elapsed() > time_limit {
            break;
        }
        let alice = V2Member::new(server.udp, "log", &token);
        alice.register(None);
        // Resend what was never acked: stored or not, each is acked now, and only once stored.
        for &seq in &unacked {
            alice.send_msg(seq, &text(seq));
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while !unacked.is_empty() && Instant::now() < deadline {
            if let Some(ServerV2::Ack { seq, id }) =
                alice.next_event_within(Duration::from_millis(50))
                && unacked.remove(&seq)
            {
                acked.insert(seq, id);
            }
        }
        assert!(
            unacked.is_empty(),
            "resent messages were never acked: {unacked:?}"
        );

        let kill_after = 5 + usize::try_from(iteration * 13 % 60).expect("below 60");
        let mut acked_now = 0;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while acked_now < kill_after && Instant::now() < deadline {
            while unacked.len() < WINDOW {
                alice.send_msg(next_seq, &text(next_seq));
                unacked.insert(next_seq);
                next_seq += 1;
            }
            if let Some(ServerV2::Ack { seq, id }) =
                alice.next_event_within(Duration::from_millis(5))
                && unacked.remove(&seq)
            {
                acked.insert(seq, id);
                acked_now += 1;
            }
        }
        // Messages are being committed right now: up to WINDOW of them are in flight.
        server.kill9();
        server = ServerProcess::start_with(dir.path(), KILL_LOOP_FLAGS);
        let alice = V2Member::new(server.udp, "log", &token);
        alice.register(None);
        let history = alice.whole_history(100);
        let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for message in &history {
            stored
                .entry(message.text.clone())
                .or_default()
                .push(message.id);
        }
        for (&seq, &id) in &acked {
            match stored.get(&text(seq)).map(Vec::as_slice) {
                Some([stored_id]) if *stored_id == id => {}
                Some(ids) => figures
                    .lost
                    .push(format!("seq {seq} acked as {id}, stored as {ids:?}")),
                None => figures
                    .lost
                    .push(format!("seq {seq} acked as {id} is missing")),
            }
        }
        let duplicated: Vec<&String> = stored
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(text, _)| text)
            .collect();
        assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
        figures.stored = history.len();
        figures.iterations += 1;
    }
    figures.acked = acked.len();
    figures
}

#[test]
fn kill_9_during_a_burst_of_joins_never_loses_an_answered_token() {
    let figures = state_kill_loop(5, Duration::from_secs(120));
    eprintln!("state kill loop: {figures:?}");
    assert_eq!(figures.iterations, 5);
    assert!(figures.answered >= 5 * 4, "{figures:?}");
    assert!(figures.lost.is_empty(), "lost tokens: {:?}", figures.lost);
}

#[test]
fn kill_9_while_chat_is_acked_never_loses_an_acked_message() {
    let figures = history_kill_loop(5, Duration::from_secs(120));
    eprintln!("history kill loop: {figures:?}");
    assert_eq!(figures.iterations, 5);
    assert!(figures.acked >= 5 * 5, "{figures:?}");
    assert!(figures.lost.is_empty(), "lost messages: {:?}", figures.lost);
}

/// Makes writing the state file and its journal in `state_dir` fail, and returns how to undo
/// it. Read-only permissions are the real thing, but root ignores them; then directories where
/// the temporary file and the journal must go make every write fail the same way.
fn break_state_writes(state_dir: &Path, state_file_name: &str) -> Box<dyn FnOnce()> {
    use std::os::unix::fs::PermissionsExt;
    let journal = journal_of(&state_dir.join(state_file_name));
    let set_mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("change a mode");
    };
    set_mode(state_dir, 0o555);
    let probe = state_dir.join("probe");
    if std::fs::write(&probe, b"x").is_err() {
        // The journal exists already: only its own mode stops appends to it.
        set_mode(&journal, 0o444);
        eprintln!("state directory and journal made read-only (chmod 0555, 0444)");
        let dir = state_dir.to_owned();
        return Box::new(move || {
            set_mode(&journal, 0o644);
            set_mode(&dir, 0o755);
        });
    }
    let _ = std::fs::remove_file(&probe);
    set_mode(state_dir, 0o755);
    let aside = state_dir.join("journal-aside");
    std::fs::rename(&journal, &aside).expect("move the journal aside");
    std::fs::create_dir(&journal).expect("create a directory where the journal goes");
    let blocker = state_dir.join(format!(".{state_file_name}.tmp"));
    std::fs::create_dir(&blocker).expect("create the blocking directory");
    eprintln!("running as root: directories block the temporary file and the journal instead");
    Box::new(move || {
        std::fs::remove_dir(&blocker).expect("remove the blocking directory");
        std::fs::remove_dir(&journal).expect("remove the directory in the journal's place");
        std::fs::rename(&aside, &journal).expect("put the journal back");
    })
}

#[test]
fn an_unwritable_state_file_refuses_handshakes_and_keeps_relaying() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("room_manager.json");
    let state_arg = state.display().to_string();
    let server = ServerProcess::start_with(dir.path(), &["--state", &state_arg]);
    let alice_grant = create(server.tcp, "den", "alice");
    let bob_grant = join(server.tcp, "den", "bob");
    let alice = UdpMember::new(server.udp, "den", &alice_grant.token());
    let bob = UdpMember::new(server.udp, "den", &bob_grant.token());
    alice.register();
    bob.register();
    alice.expect_chat("*", "bob joined");
    // Registering is saved in the background (in the journal); wait until it has settled.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !std::fs::read_to_string(journal_of(&state))
        .unwrap()
        .matches("\"addr\"")
        .count()
        .eq(&2)
    {
        assert!(
            Instant::now() < deadline,
            "the registrations were never saved"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read(&state).unwrap();

    let repair = break_state_writes(&state_dir, "room_manager.json");
    for refused in [
        create(server.tcp, "other", "carol"),
        join(server.tcp, "den", "carol"),
        handshake_pair(&server, "dave"),
    ] {
        assert_eq!(
            refused.error_code().as_deref(),
            Some("server_busy"),
            "{}",
            refused.compliance_json()
        );
        let message = refused.compliance_json()["message"].to_string();
        assert!(message.contains("cannot save"), "says why: {message}");
    }
    // Listing needs no write.
    assert_eq!(
        chat_tests::handshake(server.tcp, 4, "", b"").error_code(),
        None
    );
    // Chat is relayed both ways all the while.
    alice.send(b"the disk is unhappy");
    bob.expect_chat("alice", "the disk is unhappy");
    bob.send(b"chat does not care");
    alice.expect_chat("bob", "chat does not care");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the previous file is intact"
    );

    repair();
    // The next handshake succeeds, and the refused ones left no trace (carol is free).
    create(server.tcp, "other", "carol").token();
    join(server.tcp, "den", "carol").token();
    let tokens = tokens_in_state_file(&state);
    assert_eq!(tokens.len(), 4, "alice, bob, and carol twice");
    assert!(server.log().contains("state file write failed"));
}

fn handshake_pair(server: &ServerProcess, name: &str) -> Replies {
    chat_tests::handshake(
        server.tcp,
        3,
        "",
        &serde_json::to_vec(name).expect("a name encodes as JSON"),
    )
}

/// Pings as version 2 every 200 ms (so that only the others go silent) until an event
/// satisfying `wanted` arrives.
fn keep_alive_until(member: &V2Member, what: &str, wanted: impl Fn(&ServerV2) -> bool) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        member.send(&chat_protocol::v2::ClientV2::Ping { last_id: None });
        let ping_due = Instant::now() + Duration::from_millis(200);
        while Instant::now() < ping_due {
            if let Some(event) = member.next_event_within(Duration::from_millis(50)) {
                if wanted(&event) {
                    return;
                }
                seen.push(event);
            }
        }
    }
    let seen: Vec<&ServerV2> = seen
        .iter()
        .filter(|event| !matches!(event, ServerV2::Pong { .. }))
        .collect();
    panic!("timed out waiting for {what}; received {seen:?}");
}

#[test]
fn members_and_hosts_that_vanish_are_removed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(
        dir.path(),
        &["--idle-timeout", "1", "--v1-idle-timeout", "1"],
    );
    let alice = V2Member::new(
        server.udp,
        "den",
        &create(server.tcp, "den", "alice").token(),
    );
    alice.register(None);
    // Bob (version 1) and carol (version 2) register, then vanish without a word.
    let bob = UdpMember::new(server.udp, "den", &join(server.tcp, "den", "bob").token());
    bob.register();
    let carol = V2Member::new(server.udp, "den", &join(server.tcp, "den", "carol").token());
    carol.register(None);
    let timed_out = Mutex::new(Vec::new());
    for name in ["bob", "carol"] {
        keep_alive_until(&alice, &format!("{name} timing out"), |event| match event {
            ServerV2::Left {
                name: left,
                reason: LeaveReason::Timeout,
            } => {
                timed_out.lock().unwrap().push(left.clone());
                true
            }
            _ => false,
        });
    }
    let mut timed_out = timed_out.into_inner().unwrap();
    timed_out.sort();
    assert_eq!(timed_out, ["bob", "carol"]);
    // Their tokens are dead and their names are free again: the old bob's register is
    // handled before the new bob's, so any answer to it would be there by the new welcome.
    // The only answer a dead token gets is that its room no longer exists.
    bob.drain(Duration::from_millis(100));
    bob.send(b"__REGISTER__");
    let new_bob = UdpMember::new(server.udp, "den", &join(server.tcp, "den", "bob").token());
    new_bob.register();
    let to_old_bob = bob.drain(Duration::from_millis(100));
    assert!(
        to_old_bob.iter().all(|d| d == b"__ROOM_CLOSED__"),
        "a dead token was answered: {to_old_bob:?}"
    );

    // A host that vanishes closes the room for whoever is still there.
    let dave = V2Member::new(
        server.udp,
        "lair",
        &create(server.tcp, "lair", "dave").token(),
    );
    dave.register(None);
    let erin = V2Member::new(
        server.udp,
        "lair",
        &join(server.tcp, "lair", "erin").token(),
    );
    erin.register(None);
    keep_alive_until(&erin, "the room closing", |event| {
        matches!(
            event,
            ServerV2::RoomClosed {
                reason: CloseReason::HostTimeout
            }
        )
    });
    assert_eq!(
        join(server.tcp, "lair", "frank").error_code().as_deref(),
        Some("room_not_found")
    );
}

#[test]
fn sigterm_with_handshakes_in_flight_exits_zero_promptly_and_loses_none() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A long request timeout: a shutdown that waited for stalled clients would take 30 s.
    let server = ServerProcess::start_with(
        dir.path(),
        &["--handshakes-per-ip", "0", "--handshake-timeout", "30"],
    );
    create(server.tcp, "busy", "host").token();
    let mut stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(server.tcp).unwrap();
            stream.write_all(&[4, 2, 0, 0]).unwrap();
            stream
        })
        .collect();
    let answered = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let tcp = server.tcp;
    let state = server.state.clone();
    let (status, took) = thread::scope(|scope| {
        scope.spawn(|| burst_of_joins(tcp, "busy", &stop, &answered, &count));
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while count.load(Ordering::Relaxed) < 30 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let sent = Instant::now();
        let status = server.terminate();
        let took = sent.elapsed();
        stop.store(true, Ordering::Relaxed);
        (status, took)
    });
    eprintln!("SIGTERM to exit with handshakes in flight: {took:?}");
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert!(took < EVENT_TIMEOUT, "took {took:?}");

    // The stalled clients were told to come back rather than left hanging.
    for stream in &mut stalled {
        stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("server_busy"), "{text}");
        assert!(text.contains("shutting down"), "{text}");
    }
    let answered = answered.into_inner().unwrap();
    assert!(answered.len() >= 30, "{}", answered.len());
    let on_disk = tokens_in_state_file(&state);
    let missing: Vec<&str> = answered
        .iter()
        .filter(|grant| !on_disk.contains(&grant.token))
        .map(|grant| &grant.token[..8])
        .collect();
    assert!(missing.is_empty(), "answered but not saved: {missing:?}");
}

/// The long version of the handshake kill loop, for `scripts/kill-loop.sh`.
#[test]
#[ignore = "long; run by scripts/kill-loop.sh"]
fn long_kill_loop_state() {
    let iterations = env_number("KILL_LOOP_ITERATIONS", 50);
    let seconds = env_number("KILL_LOOP_SECONDS", 600);
    let figures = state_kill_loop(iterations, Duration::from_secs(seconds));
    println!(
        "\nFIGURES state file: iterations survived {} of {iterations}; answered tokens {}; \
         registered after their restart {}; lost {}",
        figures.iterations,
        figures.answered,
        figures.verified_after_restart,
        figures.lost.len()
    );
    assert!(figures.lost.is_empty(), "lost tokens: {:?}", figures.lost);
}

/// The long version of the history kill loop, for `scripts/kill-loop.sh`.
#[test]
#[ignore = "long; run by scripts/kill-loop.sh"]
fn long_kill_loop_history() {
    let iterations = env_number("KILL_LOOP_ITERATIONS", 50);
    let seconds = env_number("KILL_LOOP_SECONDS", 600);
    let figures = history_kill_loop(iterations, Duration::from_secs(seconds));
    println!(
        "\nFIGURES history: iterations survived {} of {iterations}; acked messages checked {}; \
         stored messages {}; lost {}",
        figures.iterations,
        figures.acked,
        figures.stored,
        figures.lost.len()
    );
    assert!(figures.lost.is_empty(), "lost messages: {:?}", figures.lost);
}
