//! The file work under the operator's commands: private files and directories, atomic
//! writes, flushes, and SQLite copies.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{AdminError, DATABASE_WAIT, RETRY_PAUSE};
use crate::engine::durable::PersistedState;

/// Copies `from` to `to` (mode 0600); when `from` does not exist, removes `to`.
pub(super) fn copy_if_present(from: &Path, to: &Path) -> Result<(), AdminError> {
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
pub(super) fn copy_database(
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
pub(super) fn open_existing(path: &Path, read_only: bool) -> Result<Connection, AdminError> {
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

pub(super) fn open_new_private(path: &Path) -> Result<Connection, AdminError> {
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

pub(super) fn count_messages(connection: &Connection, path: &Path) -> Result<u64, AdminError> {
    connection
        .query_row("SELECT count(*) FROM messages", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|count| count as u64)
        .map_err(|error| database_error(path, error))
}

pub(super) fn database_error(path: &Path, source: rusqlite::Error) -> AdminError {
    AdminError::Database {
        path: path.to_owned(),
        source,
    }
}

pub(super) fn state_bytes(state: &PersistedState) -> Result<Vec<u8>, AdminError> {
    serde_json::to_vec_pretty(state)
        .map_err(|error| AdminError::Refused(format!("cannot encode the state: {error}")))
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), AdminError> {
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
pub(super) fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), AdminError> {
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

pub(super) fn sync_file(path: &Path) -> Result<(), AdminError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .and_then(|()| sync_directory(path))
        .map_err(|source| AdminError::Io {
            what: "cannot flush",
            path: path.to_owned(),
            source,
        })
}

pub(super) fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}
