//! `chat-server backup`, `restore` and `export`: the operator's commands on the state and
//! history files. Each runs as its own process, beside a running server or not.
//!
//! A backup must be consistent while the server writes. The history is copied with SQLite's
//! online backup API in one step, which reads one committed snapshot of the database (in WAL
//! mode the server keeps writing meanwhile). The state is a snapshot file plus a journal of
//! later changes that the server appends to and, now and then, folds into a new snapshot
//! (write the snapshot, then empty the journal). Copying the journal first and the snapshot
//! second always yields the state as of one `journal_seq`: the snapshot read second is at
//! least as new as every record read, so the records it does not include follow it without a
//! gap. A copy taken while the journal was being emptied can be torn or miss records in the
//! middle; loading it then fails (a gap in the seqs, or a bad line), and the copy is taken
//! again. The backup holds the loaded state as one snapshot file, with no journal.
//!
//! Everything acknowledged before `backup` starts is in it: a handshake is answered only once
//! its journal record is flushed, a message only once its history row is committed.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chat_protocol::v2::ChatMessage;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, params};
use thiserror::Error;

use crate::cli::ExportFormat;
use crate::config::Config;
use crate::engine::Engine;
use crate::engine::durable::PersistedState;
use crate::journal;
use crate::persist::StateError;

/// The state file's name in a backup directory.
pub const BACKUP_STATE: &str = "room_manager.json";
/// The history database's name in a backup directory.
pub const BACKUP_HISTORY: &str = "chat-history.sqlite3";

/// How many times the state is copied before giving up on a server that keeps folding its
/// journal while it is read: each fold takes milliseconds and happens at most every few
/// thousand changes, so a second copy almost always succeeds.
const STATE_COPY_ATTEMPTS: u32 = 50;
/// Pause between two copies of the state, and while SQLite is busy.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long the history copy waits for a lock before giving up.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// Why an operator command failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// A file or directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create the backup directory".
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The state (or the backup's state) cannot be loaded.
    #[error(transparent)]
    State(#[from] StateError),
    /// A database could not be opened, copied or read.
    #[error("history database {}: {source}", path.display())]
    Database {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The command was refused before it changed anything.
    #[error("{0}")]
    Refused(String),
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The `journal_seq` the state was captured at.
    pub journal_seq: u64,
    /// Rooms in the state.
    pub rooms: usize,
    /// Messages in the history.
    pub messages: u64,
}

/// Writes a consistent copy of the state and history into `dir` (created, mode 0700, if it
/// does not exist; it must not already hold a backup).
pub fn backup(config: &Config, dir: &Path) -> Result<BackupSummary, AdminError> {
    create_private_dir(dir)?;
    let state_target = dir.join(BACKUP_STATE);
    let history_target = dir.join(BACKUP_HISTORY);
    for target in [&state_target, &history_target] {
        if target.exists() {
            return Err(AdminError::Refused(format!(
                "{} already holds a backup ({} exists); choose a new directory",
                dir.display(),
                target.display()
            )));
        }
    }
    if !config.history.exists() {
        return Err(AdminError::Refused(format!(
            "there is no history database at {}; check --history (or --config)",
            config.history.display()
        )));
    }
    let state = capture_state(&config.state, dir)?;
    let history_temp = dir.join(format!(".{BACKUP_HISTORY}.tmp"));
    let _ = fs::remove_file(&history_temp);
    let copied = (|| {
        let source = open_existing(&config.history, false)?;
        let mut copy = open_new_private(&history_temp)?;
        copy_database(&source, &mut copy, &history_temp)?;
        // One self-contained file: no -wal beside it.
        copy.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|source| database_error(&history_temp, source))?;
        let messages = count_messages(&copy, &history_temp)?;
        drop(copy);
        sync_file(&history_temp)?;
        Ok(messages)
    })();
    let messages = match copied {
        Ok(messages) => messages,
        Err(error) => {
            let _ = fs::remove_file(&history_temp);
            return Err(error);
        }
    };
    fs::rename(&history_temp, &history_target).map_err(|source| AdminError::Io {
        what: "cannot put the history copy in place at",
        path: history_target.clone(),
        source,
    })?;
    write_private_atomic(&state_target, &state_bytes(&state)?)?;
    Ok(BackupSummary {
        journal_seq: state.journal_seq,
        rooms: state.rooms.len(),
        messages,
    })
}

/// Checks the backup in `dir` and puts it in place of `--state` and `--history`. The server
/// must be stopped. Existing files are replaced only with `force`.
pub fn restore(config: &Config, dir: &Path, force: bool) -> Result<BackupSummary, AdminError> {
    let state_source = dir.join(BACKUP_STATE);
    let history_source = dir.join(BACKUP_HISTORY);
    for source in [&state_source, &history_source] {
        if !source.is_file() {
            return Err(AdminError::Refused(format!(
                "{} is not a backup: {} is missing",
                dir.display(),
                source.display()
            )));
        }
    }
    // The same checks as a server starting on it, so that a restored server starts.
    let state = journal::load(&state_source)?.unwrap_or_else(|| PersistedState::new(Vec::new()));
    Engine::restore(
        state.clone(),
        config.limits(),
        config.flood_policy(),
        None,
        Instant::now(),
    )
    .map_err(|problem| {
        AdminError::Refused(format!(
            "the backup's state {} does not load: {problem}",
            state_source.display()
        ))
    })?;
    let source = open_existing(&history_source, true)?;
    let verdict: String = source
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|error| database_error(&history_source, error))?;
    if verdict != "ok" {
        return Err(AdminError::Refused(format!(
            "the backup's history {} is damaged: {verdict}",
            history_source.display()
        )));
    }
    let messages = count_messages(&source, &history_source)?;

    let journal = journal::journal_path(&config.state);
    if !force {
        for existing in [&config.state, &journal, &config.history] {
            if existing.exists() {
                return Err(AdminError::Refused(format!(
                    "{} exists; stop the server, then pass --force to replace it",
                    existing.display()
                )));
            }
        }
    }
    // The history through SQLite, which also deals with a -wal file the old one left.
    let mut target = Connection::open(&config.history)
        .map_err(|error| database_error(&config.history, error))?;
    copy_database(&source, &mut target, &config.history)?;
    drop(target);
    // Then the state, as a snapshot with an empty journal: the order the server writes them.
    write_private_atomic(&config.state, &state_bytes(&state)?)?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&journal)
        .and_then(|file| file.sync_all())
        .and_then(|()| sync_directory(&journal))
        .map_err(|source| AdminError::Io {
            what: "cannot empty the journal",
            path: journal.clone(),
            source,
        })?;
    Ok(BackupSummary {
        journal_seq: state.journal_seq,
        rooms: state.rooms.len(),
        messages,
    })
}

/// Writes the history of the room named `room`, oldest message first; the number written.
pub fn export(
    config: &Config,
    room: &str,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<u64, AdminError> {
    let scratch = std::env::temp_dir().join(format!(
        "chat-server-export-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    ));
    create_private_dir(&scratch)?;
    let state = capture_state(&config.state, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    let state = state?;
    let Some(found) = state.rooms.iter().find(|r| r.name == room) else {
        return Err(AdminError::Refused(format!(
            "there is no room named \"{}\" in {}",
            room.escape_debug(),
            config.state.display()
        )));
    };
    let history = open_existing(&config.history, false)?;
    let failed = |source| database_error(&config.history, source);
    let mut query = history
        .prepare("SELECT id, sender, text, ts FROM messages WHERE room_uid = ?1 ORDER BY id")
        .map_err(failed)?;
    // Stored bit-for-bit as SQLite's signed integers.
    let mut rows = query.query(params![found.uid as i64]).map_err(failed)?;
    let mut written = 0;
    let write_failed = |source| AdminError::Io {
        what: "cannot write the export of",
        path: PathBuf::from(room),
        source,
    };
    while let Some(row) = rows.next().map_err(failed)? {
        let message = ChatMessage {
            id: row.get::<_, i64>(0).map_err(failed)? as u64,
            from: row.get(1).map_err(failed)?,
            text: row.get(2).map_err(failed)?,
            ts: row.get::<_, i64>(3).map_err(failed)? as u64,
        };
        let line = match format {
            ExportFormat::Jsonl => {
                serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)
            }
            ExportFormat::Text => write!(out, "{}", text_line(&message)),
        }
        .and_then(|()| out.write_all(b"\n"));
        match line {
            Ok(()) => written += 1,
            // The reader stopped (`export ROOM | head`): that is the end, not a failure.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(written),
            Err(error) => return Err(write_failed(error)),
        }
    }
    match out.flush() {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(write_failed(error)),
        _ => Ok(written),
    }
}

/// `2026-12-01T10:00:00.000Z <alice> hello`, with control characters escaped so that one
/// message is one line and nobody's text can drive the reader's terminal.
pub fn text_line(message: &ChatMessage) -> String {
    let time = i64::try_from(message.ts)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("@{}ms", message.ts),
            |time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        );
    format!(
        "{time} <{}> {}",
        escape_controls(&message.from),
        escape_controls(&message.text)
    )
}

fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Loads the state as of one `journal_seq` while a server may be writing it: copies the
/// journal, then the snapshot, into `scratch`, and loads the copies (see the module
/// documentation for why that order is consistent).
fn capture_state(state: &Path, scratch: &Path) -> Result<PersistedState, AdminError> {
    let copy = scratch.join(".state-capture.json");
    let copy_journal = journal::journal_path(&copy);
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        let loaded = copy_if_present(&journal::journal_path(state), &copy_journal)
            .and_then(|()| copy_if_present(state, &copy))
            .and_then(|()| Ok(journal::load(&copy)?));
        match loaded {
            Ok(loaded) => break Ok(loaded.unwrap_or_else(|| PersistedState::new(Vec::new()))),
            // A copy torn by a fold of the journal: take it again.
            Err(AdminError::State(
                StateError::Inconsistent { .. } | StateError::CorruptJournal { .. },
            )) if attempt < STATE_COPY_ATTEMPTS => std::thread::sleep(RETRY_PAUSE),
            Err(error) => break Err(error),
        }
    };
    let _ = fs::remove_file(&copy);
    let _ = fs::remove_file(&copy_journal);
    result
}

/// Copies `from` to `to` (mode 0600); when `from` does not exist, removes `to`.
fn copy_if_present(from: &Path, to: &Path) -> Result<(), AdminError> {
    let bytes = match fs::read(from) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return match fs::remove_file(to) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(AdminError::Io {
                    what: "cannot remove",
                    path: to.to_owned(),
                    source: error,
                }),
                _ => Ok(()),
            };
        }
        Err(source) => {
            return Err(AdminError::Io {
                what: "cannot read",
                path: from.to_owned(),
                source,
            });
        }
    };
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .and_then(|mut file| file.write_all(&bytes))
        .map_err(|source| AdminError::Io {
            what: "cannot write",
            path: to.to_owned(),
            source,
        })
}

/// Copies every page of `source` into `target` in one step of the online backup API: one
/// read transaction, so one committed snapshot. Smaller steps would start over each time the
/// server commits in between.
fn copy_database(
    source: &Connection,
    target: &mut Connection,
    target_path: &Path,
) -> Result<(), AdminError> {
    let failed = |error| database_error(target_path, error);
    let backup = Backup::new(source, target).map_err(failed)?;
    let deadline = Instant::now() + DATABASE_WAIT;
    loop {
        match backup.step(-1).map_err(failed)? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked
                if Instant::now() < deadline =>
            {
                std::thread::sleep(RETRY_PAUSE);
            }
            _ => {
                return Err(AdminError::Refused(format!(
                    "the history database stayed locked for {} s; try again",
                    DATABASE_WAIT.as_secs()
                )));
            }
        }
    }
}

/// Opens a database that must already exist. Read-write even to only read: a reader of a
/// database in WAL mode writes its shared-memory index.
fn open_existing(path: &Path, read_only: bool) -> Result<Connection, AdminError> {
    let access = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let connection = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|error| database_error(path, error))?;
    connection
        .busy_timeout(DATABASE_WAIT)
        .map_err(|error| database_error(path, error))?;
    Ok(connection)
}

fn open_new_private(path: &Path) -> Result<Connection, AdminError> {
    // Created here first so that SQLite inherits mode 0600: the history is chat.
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AdminError::Io {
            what: "cannot create",
            path: path.to_owned(),
            source,
        })?;
    Connection::open(path).map_err(|error| database_error(path, error))
}

fn count_messages(connection: &Connection, path: &Path) -> Result<u64, AdminError> {
    connection
        .query_row("SELECT count(*) FROM messages", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|count| count as u64)
        .map_err(|error| database_error(path, error))
}

fn database_error(path: &Path, source: rusqlite::Error) -> AdminError {
    AdminError::Database {
        path: path.to_owned(),
        source,
    }
}

fn state_bytes(state: &PersistedState) -> Result<Vec<u8>, AdminError> {
    serde_json::to_vec_pretty(state)
        .map_err(|error| AdminError::Refused(format!("cannot encode the state: {error}")))
}

fn create_private_dir(dir: &Path) -> Result<(), AdminError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AdminError::Io {
            what: "cannot create the directory",
            path: dir.to_owned(),
            source,
        })
}

/// Replaces `path` atomically and durably with a file of mode 0600 (it holds tokens).
fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), AdminError> {
    let failed = |source| AdminError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(path.file_name().unwrap_or_default());
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| sync_directory(path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map_err(failed)
}

fn sync_file(path: &Path) -> Result<(), AdminError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .and_then(|()| sync_directory(path))
        .map_err(|source| AdminError::Io {
            what: "cannot flush",
            path: path.to_owned(),
            source,
        })
}

fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::durable::{JournalRecord, PersistedMember, PersistedRoom, StateChange};
    use crate::engine::{RoomKind, WireVersion};

    fn room(n: u64) -> PersistedRoom {
        PersistedRoom {
            name: format!("room-{n}"),
            uid: n,
            kind: RoomKind::Public,
            created_at_ms: n,
            members: vec![PersistedMember {
                username: "host".into(),
                uid: n,
                token: format!("{n:064x}"),
                host: true,
                addr: None,
                version: WireVersion::V1,
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
                room_uid: if id == 2 { 8 } else { 7 },
                member_uid: 7,
                seq: Some(id),
                message: ChatMessage {
                    id,
                    from: "host".into(),
                    text: format!("text {id}"),
                    ts: 1_764_583_200_000,
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
        };
        assert_eq!(
            text_line(&message),
            "2025-12-01T10:00:00.123Z <eve\\u{1b}[2J> two\\nlines \\\\ tab\\t"
        );
    }
}
