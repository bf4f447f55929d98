//! Promises kept under real conditions: a stalled server, a restart after refusals, a lost
//! history database, text that only fits version 1, pair rooms changing partners, a full disk
//! at shutdown. Each test is a defect found by trying to break the product (issue 9).

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{
    EVENT_TIMEOUT, Replies, ServerProcess, UdpMember, V2Member, create, handshake, join,
};

fn signal(server: &ServerProcess, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

/// A registered version-2 member of `room` (created by the first name, joined by the rest).
fn v2_members(server: &ServerProcess, room: &str, names: &[&str]) -> Vec<V2Member> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let grant = if i == 0 {
                create(server.tcp, room, name)
            } else {
                join(server.tcp, room, name)
            };
            let member = V2Member::new(server.udp, room, &grant.token());
            member.register(None);
            member
        })
        .collect()
}

#[test]
fn a_stalled_server_reads_the_pings_it_missed_before_timing_anyone_out() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--idle-timeout", "2"]);
    let rooms: Vec<Vec<V2Member>> = (0..4)
        .map(|room| {
            let names: Vec<String> = (0..4).map(|i| format!("member{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            v2_members(&server, &format!("steady{room}"), &names)
        })
        .collect();

    // SIGSTOP for three idle timeouts while everyone keeps pinging into the socket buffer.
    signal(&server, "STOP");
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(6) {
        for member in rooms.iter().flatten() {
            member.send(&ClientV2::Ping { last_id: None });
        }
        thread::sleep(Duration::from_millis(50));
    }
    signal(&server, "CONT");

    // Everyone is still a member: each host's message reaches the others, and nobody hears
    // of a timeout or a closed room.
    for members in &rooms {
        // Retransmitted as a client would: the first copy can meet a full socket buffer.
        let said = members[0].say_retrying(1, "after the stall");
        for member in &members[1..] {
            let (before, _) = member.expect_msg(said);
            for event in &before {
                assert!(
                    !matches!(event, ServerV2::RoomClosed { .. } | ServerV2::Left { .. }),
                    "the stall was taken for silence: {event:?}"
                );
            }
        }
    }
}

#[test]
fn a_message_after_refused_ones_is_acked_after_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flood = ["--flood-burst", "10", "--flood-rate", "0.01"];
    let server = ServerProcess::start_with(dir.path(), &flood);
    let members = v2_members(&server, "refusals", &["pat"]);
    let pat = &members[0];
    for seq in 1..=10 {
        pat.say(seq, &format!("line {seq}"));
    }
    for seq in 11..=15 {
        pat.send_msg(seq, &format!("line {seq}"));
        let (_, refused) = pat.expect(
            "a refusal",
            |event| matches!(event, ServerV2::Error { seq: Some(s), .. } if *s == seq),
        );
        assert!(
            matches!(
                refused,
                ServerV2::Error {
                    code: V2ErrorCode::RateLimited,
                    ..
                }
            ),
            "{refused:?}"
        );
    }
    let (tcp, udp) = (server.tcp, server.udp);
    assert!(server.terminate().success());
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    pat.register(Some(10));
    // Seq 16 follows refused ones nobody saved: it must not wait for 11 to 15 forever.
    // Retransmit as a client does, and wait well beyond every hold timeout.
    let acked = pat.say_retrying(16, "after the restart");
    assert_eq!(acked, 11, "seq 16 is acked as the room's next message");
    drop(server);
}

fn pair_request(server: &ServerProcess, name: &str) -> Replies {
    let payload = serde_json::to_string(name).expect("a name is JSON");
    handshake(server.tcp, 3, "", payload.as_bytes())
}

fn granted_room(replies: &Replies) -> String {
    replies.complete_json()["room"]
        .as_str()
        .expect("a grant names its room")
        .to_owned()
}

/// finn and gina chat in a pair room; `leaver` (0 = finn, who created it, 1 = gina) types
/// `/next`. The one who stays is told, keeps the room, and the next stranger who pairs lands
/// there with a fresh conversation: none of the earlier messages, live, replayed or paged.
fn a_pair_partner_moves_on(leaver: usize, crash_after_leave: bool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut server = ServerProcess::start(dir.path());
    let grants = [pair_request(&server, "finn"), pair_request(&server, "gina")];
    let room = granted_room(&grants[0]);
    assert_eq!(granted_room(&grants[1]), room, "finn and gina are paired");
    let pair: Vec<V2Member> = grants
        .iter()
        .map(|grant| {
            let member = V2Member::new(server.udp, &room, &grant.token());
            member.register(None);
            member
        })
        .collect();
    let first = pair[0].say(1, "our secret");
    pair[1].expect_msg(first);
    let second = pair[1].say(1, "keep it between us");
    pair[0].expect_msg(second);

    let stayer = &pair[1 - leaver];
    let leaver_name = ["finn", "gina"][leaver];
    pair[leaver].send(&ClientV2::Leave);
    let (before, _) = stayer.expect(
        "the partner's departure",
        |event| matches!(event, ServerV2::Left { name, .. } if name == leaver_name),
    );
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, ServerV2::RoomClosed { .. })),
        "the room stays open for the one who stayed: {before:?}"
    );
    if crash_after_leave {
        // The handover is journaled: it survives kill -9 (after the writer's next append).
        thread::sleep(Duration::from_secs(1));
        let (tcp, udp) = (server.tcp, server.udp);
        server.kill9();
        server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    }

    let hal = pair_request(&server, "hal");
    assert_eq!(
        granted_room(&hal),
        room,
        "the next stranger joins the one waiting"
    );
    let hal = V2Member::new(server.udp, &room, &hal.token());
    let registration = hal.register(None);
    assert!(
        registration.messages.is_empty(),
        "a newcomer is replayed nothing of the earlier conversation: {:?}",
        registration.messages
    );
    let (page, _, _) = hal.history(None, None);
    assert!(page.is_empty(), "nor paged: {page:?}");
    // The new conversation works, with ids that go on from the old ones.
    let hello = hal.say(1, "hello stranger");
    assert!(
        hello > second,
        "ids never go backwards ({hello} after {second})"
    );
    let (_, message) = stayer.expect_msg(hello);
    assert_eq!(message.text, "hello stranger");
}

#[test]
fn a_pair_room_shows_nothing_of_the_last_conversation_to_the_next_stranger() {
    a_pair_partner_moves_on(1, false);
}

#[test]
fn when_the_pair_rooms_creator_moves_on_the_partner_stays_and_waits() {
    a_pair_partner_moves_on(0, true);
}

#[test]
fn ids_never_go_backwards_when_the_history_database_is_lost() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let members = v2_members(&server, "keepsake", &["ivy", "jon"]);
    let mut newest = 0;
    for seq in 1..=3 {
        newest = members[0].say(seq, &format!("line {seq}"));
        members[1].expect_msg(newest);
    }
    let (tcp, udp) = (server.tcp, server.udp);
    assert!(server.terminate().success());
    // The obvious repair after a corrupt database: delete it, keep the state file.
    for name in [
        "chat-history.sqlite3",
        "chat-history.sqlite3-wal",
        "chat-history.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    members[1].register(Some(newest));
    let next = members[0].say(4, "after the repair");
    assert!(
        next > newest,
        "id {next} after {newest}: ids went backwards"
    );
    let (_, message) = members[1].expect_msg(next);
    assert_eq!(message.text, "after the repair");
    drop(server);
}

#[test]
fn version_one_text_too_long_for_a_version_two_frame_reaches_everyone_and_history() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path());
    let old = UdpMember::new(
        server.udp,
        "split",
        &create(server.tcp, "split", "old").token(),
    );
    old.register();
    let new = V2Member::new(
        server.udp,
        "split",
        &join(server.tcp, "split", "new").token(),
    );
    new.register(None);
    for seq in 1..=3 {
        new.say(seq, &format!("short {seq}"));
    }
    // Fits the version-1 frame (3,000 bytes), but JSON escaping makes it 4,500 bytes.
    let text = format!("{}{}", "\"".repeat(1500), "x".repeat(1500));
    old.send(text.as_bytes());

    let mut received = String::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while received.len() < text.len() && Instant::now() < deadline {
        if let Some(ServerV2::Msg(message)) = new.next_event_within(Duration::from_millis(200))
            && message.from == "old"
        {
            received.push_str(&message.text);
        }
    }
    assert_eq!(received, text, "a version-2 member reads all of it");

    // History holds all of it and paging back reaches the oldest message.
    let history = new.whole_history(100);
    let ids: Vec<u64> = history.iter().map(|m| m.id).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "every message, in order, with no gap");
    let stored: String = history
        .iter()
        .filter(|m| m.from == "old")
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(stored, text);
    // A page of one message always fits: the smallest pages still make progress.
    let (page, more, size) = new.history(None, Some(1));
    assert_eq!(page.len(), 1);
    assert!(more);
    assert!(size <= 4096);
}

/// A small tmpfs mounted for one test, unmounted when dropped; None where mounting is not
/// allowed (not root, or no mount namespace rights), and the test says so and skips.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).expect("a mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self {
            path: at.to_owned(),
        })
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path.join("filler")).expect("create filler");
        let block = vec![0u8; 4096];
        for _ in 0..100_000 {
            if filler.write_all(&block).is_err() {
                break;
            }
        }
        let _ = filler.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn sigterm_finishes_promptly_while_the_history_disk_is_full() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Some(disk) = SmallDisk::mount(&dir.path().join("history"), "2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let history = disk.path.join("chat-history.sqlite3");
    let history = history.to_str().expect("a UTF-8 path");
    let server = ServerProcess::start_with(dir.path(), &["--history", history]);
    let members = v2_members(&server, "fullness", &["kim"]);
    members[0].say(1, "stored before the disk filled");
    disk.fill();
    let long = "x".repeat(3000);
    for seq in 2..=20 {
        members[0].send_msg(seq, &long);
    }
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !server.log().contains("history write failed") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.log().contains("history write failed"),
        "the disk is full"
    );
    // Shutdown must end within its bound (terminate() waits EVENT_TIMEOUT at most), say what
    // it could not store, and still write the state file (which is on another disk).
    signal(&server, "TERM");
    let (status, log) = server.wait_exit();
    assert!(status.success(), "exits 0: {status:?}");
    assert!(log.contains("not stored"), "says what it could not store");
    assert!(log.contains("goodbye"), "and still writes the state file");
    drop(disk);
}

#[test]
fn sighup_and_sigquit_stop_gracefully_and_keep_every_room() {
    for name in ["HUP", "QUIT", "USR1"] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server = ServerProcess::start(dir.path());
        let token = create(server.tcp, "kept", "lee").token();
        let (tcp, udp) = (server.tcp, server.udp);
        signal(&server, name);
        if name == "USR1" {
            // A status line, and the server goes on.
            let deadline = Instant::now() + EVENT_TIMEOUT;
            while !server.log().contains("status") && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            assert!(
                server.log().contains("status"),
                "SIGUSR1 logs a status line"
            );
            assert_eq!(
                join(server.tcp, "kept", "lee").error_code().as_deref(),
                Some("name_taken")
            );
            continue;
        }
        let (status, log) = server.wait_exit();
        assert!(status.success(), "SIG{name} is a graceful stop: {status:?}");
        assert!(log.contains("goodbye"), "with the final state write");
        let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
        let member = V2Member::new(server.udp, "kept", &token);
        let registration = member.register(None);
        assert!(
            registration.members.is_some(),
            "the room and its token survived SIG{name}"
        );
    }
}
