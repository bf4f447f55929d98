//! Unit tests of backup, restore and export.

use std::io::Write;

use chat_protocol::v2::ChatMessage;

use super::*;
use crate::cli::ExportFormat;
use crate::engine::durable::{JournalRecord, PersistedMember, PersistedRoom, StateChange};
use crate::engine::{RoomKind, WireVersion};

fn room(n: u64) -> PersistedRoom {
    PersistedRoom {
        name: format!("room-{n}"),
        uid: n,
        kind: RoomKind::Public,
        created_at_ms: n,
        topic: None,
        banned: Vec::new(),
        members: vec![PersistedMember {
            username: "host".into(),
            uid: n,
            token: format!("{n:064x}"),
            host: true,
            addr: None,
            version: WireVersion::V1,
            sealed: None,
        }],
        ids_reserved: 0,
    }
}

/// A writer appends one room per record and folds the journal into a snapshot every few
/// records, as the server does, while the state is captured again and again: every
/// capture must be the state exactly as of its journal_seq, never older than the last.
#[test]
fn captures_are_consistent_while_the_journal_is_folded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    journal::compact(&state, &PersistedState::new(Vec::new())).unwrap();
    let writer_state = state.clone();
    let writer = std::thread::spawn(move || {
        let mut snapshot = PersistedState::new(Vec::new());
        for n in 1..=600u64 {
            let record = JournalRecord {
                seq: n,
                change: StateChange::RoomCreated { room: room(n) },
            };
            journal::append(&writer_state, &[record]).unwrap();
            snapshot.rooms.push(room(n));
            snapshot.journal_seq = n;
            if n % 7 == 0 {
                journal::compact(&writer_state, &snapshot).unwrap();
            }
        }
    });
    let mut last_seq = 0;
    let mut captures = 0;
    while !writer.is_finished() || captures == 0 {
        let captured = capture_state(&state, &scratch).unwrap();
        let seq = captured.journal_seq;
        assert!(seq >= last_seq, "seq {seq} after {last_seq}");
        let mut names: Vec<String> = captured.rooms.iter().map(|r| r.name.clone()).collect();
        names.sort();
        let mut expected: Vec<String> = (1..=seq).map(|n| format!("room-{n}")).collect();
        expected.sort();
        assert_eq!(names, expected, "the capture at seq {seq}");
        last_seq = seq;
        captures += 1;
    }
    writer.join().unwrap();
    assert!(captures > 1, "{captures}");
}

/// A reader that has gone away, as `export ROOM | head -1` leaves it.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
}

#[test]
fn export_writes_a_rooms_history_and_stops_quietly_when_the_reader_goes() {
    use clap::Parser;

    use crate::engine::StoredMessage;
    use crate::history::HistoryStore;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let history = dir.path().join("history.sqlite3");
    journal::compact(&state, &PersistedState::new(vec![room(7), room(8)])).unwrap();
    let stored: Vec<StoredMessage> = (1..=3)
        .map(|id| StoredMessage {
            recipient_uid: None,
            room_uid: if id == 2 { 8 } else { 7 },
            member_uid: 7,
            seq: Some(id),
            message: ChatMessage {
                id,
                from: "host".into(),
                text: format!("text {id}"),
                ts: 1_764_583_200_000,
                me: false,
                to: None,
            },
        })
        .collect();
    HistoryStore::open(&history)
        .unwrap()
        .store(&stored, 100)
        .unwrap();
    let config = Config::parse_from([
        "chat-server",
        "--state",
        state.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
    ]);
    let mut out = Vec::new();
    assert_eq!(
        export(&config, "room-7", ExportFormat::Jsonl, &mut out).unwrap(),
        2
    );
    let lines: Vec<ChatMessage> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        [stored[0].message.clone(), stored[2].message.clone()]
    );
    assert_eq!(
        export(&config, "room-7", ExportFormat::Text, &mut ClosedPipe).unwrap(),
        0
    );
    assert!(matches!(
        export(&config, "room-9", ExportFormat::Text, &mut Vec::new()),
        Err(AdminError::Refused(_))
    ));
}

#[test]
fn text_lines_are_one_line_and_escaped() {
    let message = ChatMessage {
        id: 1,
        from: "eve\u{1b}[2J".into(),
        text: "two\nlines \\ tab\t".into(),
        ts: 1_764_583_200_123,
        me: false,
        to: None,
    };
    assert_eq!(
        text_line(&message),
        "2025-12-01T10:00:00.123Z <eve\\u{1b}[2J> two\\nlines \\\\ tab\\t"
    );
}
