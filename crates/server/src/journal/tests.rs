//! Unit tests of the journal: appends, compaction, torn lines, and the records an engine
//! makes rebuilding its snapshot.

use std::fs;
use std::net::SocketAddr;

use chat_protocol::ucrp::Datagram;

use super::*;
use crate::engine::{Effects, Endpoint, Engine, Limits, Now, RoomKind, WireVersion};
use crate::flood::FloodPolicy;

fn member(name: &str, uid: u64, host: bool) -> PersistedMember {
    PersistedMember {
        username: name.into(),
        uid,
        token: format!("{uid:064x}"),
        host,
        addr: None,
        version: WireVersion::V1,
        sealed: None,
    }
}

fn room_created(seq: u64, name: &str, host_uid: u64) -> JournalRecord {
    JournalRecord {
        seq,
        change: StateChange::RoomCreated {
            room: PersistedRoom {
                ids_reserved: 0,
                name: name.into(),
                uid: seq,
                kind: RoomKind::Public,
                created_at_ms: 5,
                topic: None,
                banned: Vec::new(),
                members: vec![member("host", host_uid, true)],
            },
        },
    }
}

fn joined(seq: u64, room: &str, name: &str, uid: u64) -> JournalRecord {
    JournalRecord {
        seq,
        change: StateChange::MemberJoined {
            room: room.into(),
            member: member(name, uid, false),
        },
    }
}

/// A state file and its journal in a fresh directory.
struct Files {
    _dir: tempfile::TempDir,
    state: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        Self { _dir: dir, state }
    }

    fn journal(&self) -> PathBuf {
        journal_path(&self.state)
    }

    fn write_journal(&self, bytes: &[u8]) {
        fs::write(self.journal(), bytes).unwrap();
    }
}

fn lines(records: &[JournalRecord]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend(serde_json::to_vec(record).unwrap());
        bytes.push(b'\n');
    }
    bytes
}

fn names(state: &PersistedState, room: &str) -> Vec<String> {
    let room = state.rooms.iter().find(|r| r.name == room).unwrap();
    room.members.iter().map(|m| m.username.clone()).collect()
}

#[test]
fn a_record_is_one_json_line_with_its_seq_and_kind() {
    let line = serde_json::to_string(&JournalRecord {
        seq: 7,
        change: StateChange::MemberLeft {
            room: "lobby".into(),
            uid: 3,
            reason: None,
        },
    })
    .unwrap();
    assert_eq!(
        line,
        r#"{"seq":7,"change":"member_left","room":"lobby","uid":3}"#
    );
}

#[test]
fn the_state_file_and_journal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let files = Files::new();
    compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
    for path in [files.state.clone(), journal_path(&files.state)] {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn appended_records_round_trip_through_the_files() {
    let files = Files::new();
    compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
    let registered = JournalRecord {
        seq: 3,
        change: StateChange::MemberRegistered {
            room: "den".into(),
            uid: 20,
            addr: Some("127.0.0.1:4000".parse().unwrap()),
            version: WireVersion::V2,
        },
    };
    append(
        &files.state,
        &[room_created(1, "den", 10), joined(2, "den", "bob", 20)],
    )
    .unwrap();
    append(&files.state, std::slice::from_ref(&registered)).unwrap();
    append(
        &files.state,
        &[
            room_created(4, "attic", 30),
            joined(5, "attic", "eve", 40),
            JournalRecord {
                seq: 6,
                change: StateChange::RoomClosed {
                    room: "attic".into(),
                    uid: None,
                },
            },
            joined(7, "den", "carol", 50),
            JournalRecord {
                seq: 8,
                change: StateChange::MemberLeft {
                    room: "den".into(),
                    uid: 50,
                    reason: None,
                },
            },
        ],
    )
    .unwrap();

    let state = load(&files.state).unwrap().unwrap();
    assert_eq!(state.journal_seq, 8);
    assert_eq!(state.rooms.len(), 1, "the attic was closed");
    assert_eq!(names(&state, "den"), ["host", "bob"]);
    let bob = &state.rooms[0].members[1];
    assert_eq!(bob.addr, Some("127.0.0.1:4000".parse().unwrap()));
    assert_eq!(bob.version, WireVersion::V2);

    // A snapshot of that state empties the journal and loads the same.
    compact(&files.state, &state).unwrap();
    assert!(fs::read(files.journal()).unwrap().is_empty());
    assert_eq!(load(&files.state).unwrap(), Some(state));
}

#[test]
fn the_changes_an_engine_records_rebuild_its_snapshot() {
    let mut engine = Engine::new(Limits::default(), FloodPolicy::OFF);
    let now = Now {
        instant: std::time::Instant::now(),
        unix_ms: 1,
    };
    let at = |unix_ms| Now { unix_ms, ..now };
    let mut fx = Effects::default();
    let before = engine.snapshot();
    let host = engine
        .create("den", "alice", RoomKind::Public, now)
        .unwrap();
    let bob = engine.join("den", "bob", None, now, &mut fx).unwrap();
    let carol = engine.join("den", "carol", None, now, &mut fx).unwrap();
    for (member, port) in [(&bob, 4001), (&carol, 4002), (&carol, 4003)] {
        let hex = member.token.to_hex();
        let from = Endpoint::Udp(SocketAddr::from(([127, 0, 0, 1], port)));
        let datagram = Datagram {
            room: "den",
            token: hex.as_bytes(),
            message: b"__REGISTER__",
        };
        engine.datagram(&datagram, from, now, &mut fx).unwrap();
    }
    engine.revoke(&bob.token, now.instant, &mut fx);
    let pair = engine.pair("dave", at(2), &mut fx).unwrap();
    engine
        .create("attic", "erin", RoomKind::Public, at(3))
        .unwrap();
    let middle = engine.snapshot();
    let first = engine.take_changes();
    assert_eq!(first.len(), 9, "one record per change: {first:?}");

    engine.revoke(&pair.token, now.instant, &mut fx);
    engine.join("den", "frank", None, now, &mut fx).unwrap();
    engine.revoke(&host.token, now.instant, &mut fx);
    let second = engine.take_changes();
    assert!(engine.take_changes().is_empty(), "drained");

    let mut replay = Replay::new(before).unwrap();
    for record in first {
        replay.apply(record).unwrap();
    }
    assert_eq!(replay.finish(), middle);
    let mut replay = Replay::new(middle).unwrap();
    for record in second {
        replay.apply(record).unwrap();
    }
    assert_eq!(replay.finish(), engine.snapshot());
}

#[test]
fn a_torn_last_line_is_ignored() {
    let files = Files::new();
    compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
    let mut bytes = lines(&[room_created(1, "den", 10), joined(2, "den", "bob", 20)]);
    let whole = lines(&[joined(3, "den", "carol", 30)]);
    bytes.extend_from_slice(&whole[..whole.len() / 2]);
    files.write_journal(&bytes);

    let state = load(&files.state).unwrap().unwrap();
    assert_eq!(state.journal_seq, 2);
    assert_eq!(names(&state, "den"), ["host", "bob"]);
    assert_eq!(fs::read(files.journal()).unwrap(), bytes, "only read");
}

#[test]
fn a_bad_line_before_the_last_refuses_the_state() {
    let files = Files::new();
    compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
    let mut bytes = lines(&[room_created(1, "den", 10)]);
    bytes.extend_from_slice(b"{\"seq\":2,\"chan\n");
    bytes.extend(lines(&[joined(3, "den", "carol", 30)]));
    files.write_journal(&bytes);

    let error = load(&files.state).unwrap_err();
    assert!(matches!(error, StateError::CorruptJournal { line: 2, .. }));
    let message = error.to_string();
    assert!(message.contains("state.json.journal"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert_eq!(fs::read(files.journal()).unwrap(), bytes, "left as it was");
}

#[test]
fn records_the_snapshot_already_has_are_skipped() {
    // A crash after the new snapshot was renamed into place, before the journal was
    // emptied: every record is in the snapshot already, and applying them again would
    // create the room twice.
    let files = Files::new();
    let records = [room_created(1, "den", 10), joined(2, "den", "bob", 20)];
    let mut replay = Replay::new(PersistedState::new(Vec::new())).unwrap();
    for record in records.clone() {
        replay.apply(record).unwrap();
    }
    let snapshot = replay.finish();
    persist::write_atomic(&files.state, &serde_json::to_vec(&snapshot).unwrap()).unwrap();
    files.write_journal(&lines(&records));
    assert_eq!(load(&files.state).unwrap(), Some(snapshot.clone()));

    // The same, with later records appended after a restart's snapshot: only those apply.
    let mut bytes = lines(&records);
    bytes.extend(lines(&[joined(3, "den", "carol", 30)]));
    files.write_journal(&bytes);
    let state = load(&files.state).unwrap().unwrap();
    assert_eq!(state.journal_seq, 3);
    assert_eq!(names(&state, "den"), ["host", "bob", "carol"]);
}

#[test]
fn records_that_do_not_apply_refuse_the_state_naming_the_line() {
    let cases: [(&[JournalRecord], &str); 4] = [
        (
            &[joined(1, "nowhere", "bob", 20)],
            "no room named \"nowhere\"",
        ),
        (
            &[room_created(1, "den", 10), joined(2, "den", "bob", 10)],
            "joins twice",
        ),
        (
            &[room_created(1, "den", 10), room_created(2, "attic", 10)],
            "reuses a token",
        ),
        (
            &[room_created(1, "den", 10), joined(3, "den", "bob", 20)],
            "expected seq 2, found 3",
        ),
    ];
    for (records, expected) in cases {
        let files = Files::new();
        compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
        files.write_journal(&lines(records));
        let error = load(&files.state).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, StateError::Inconsistent { .. }),
            "{message}"
        );
        assert!(message.contains("state.json.journal"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn seqs_must_increase() {
    let files = Files::new();
    compact(&files.state, &PersistedState::new(Vec::new())).unwrap();
    files.write_journal(&lines(&[
        room_created(2, "den", 10),
        joined(2, "den", "bob", 20),
    ]));
    let message = load(&files.state).unwrap_err().to_string();
    assert!(message.contains("seq 2 does not follow seq 2"), "{message}");
}

#[test]
fn a_journal_without_its_snapshot_is_refused() {
    let files = Files::new();
    files.write_journal(&lines(&[joined(41, "den", "bob", 20)]));
    let message = load(&files.state).unwrap_err().to_string();
    assert!(message.contains("expected seq 1, found 41"), "{message}");
}

#[test]
fn the_example_state_file_loads_without_a_journal() {
    let files = Files::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../room_manager.json.example");
    fs::copy(example, &files.state).unwrap();
    let state = load(&files.state).unwrap().unwrap();
    assert_eq!(state.journal_seq, 0);
    assert!(state.rooms.iter().any(|room| room.name == "lobby"));
}

#[test]
fn a_failed_append_leaves_the_journal_as_it_was() {
    let files = Files::new();
    // No journal yet (no snapshot was written): appending must not create one.
    assert!(append(&files.state, &[room_created(1, "den", 10)]).is_err());
    assert!(!files.journal().exists());
}
