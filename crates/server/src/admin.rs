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

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use thiserror::Error;

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

mod export;
mod files;

pub use export::{export, text_line};

/// The fingerprint of the server's TLS certificate, as clients pin it (`SHA256:...`); makes
/// the self-signed certificate first when there is none, as the server's first start would.
pub fn fingerprint(
    config: &Config,
) -> Result<chat_protocol::fingerprint::Fingerprint, crate::secure::certificate::CertificateError> {
    let paths = crate::secure::certificate::CertificatePaths::new(
        &config.state,
        config.tls_cert.clone(),
        config.tls_key.clone(),
    )?;
    Ok(crate::secure::ServerIdentity::load_or_create(&paths)?.fingerprint)
}
use files::{
    copy_database, copy_if_present, count_messages, create_private_dir, database_error,
    open_existing, open_new_private, state_bytes, sync_directory, sync_file, write_private_atomic,
};

#[cfg(test)]
mod tests;
