//! Promises kept under real conditions: a stalled server, a restart after refusals, a lost
//! history database, text that only fits version 1, pair rooms changing partners, a full disk
//! at shutdown. Each test is a defect found by trying to break the product (issue 9).

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use chat_tests::{EVENT_TIMEOUT, ServerProcess, V2Member, create, join};

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

/// Sends a message as the client does, again every second until it is acked (for up to twice
/// [`EVENT_TIMEOUT`]), and returns its id. Events other than the ack are dropped.
fn say_retrying(member: &V2Member, seq: u64, text: &str) -> u64 {
    let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
    while Instant::now() < deadline {
        member.send_msg(seq, text);
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(event) =
            member.next_event_within(until.saturating_duration_since(Instant::now()))
        {
            if let ServerV2::Ack { seq: acked, id } = event
                && acked == seq
            {
                return id;
            }
        }
    }
    panic!("seq {seq} was never acked");
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
        let said = say_retrying(&members[0], 1, "after the stall");
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
    let acked = say_retrying(pat, 16, "after the restart");
    assert_eq!(acked, 11, "seq 16 is acked as the room's next message");
    drop(server);
}
