//! The state file, `room_manager.json`: its format, loading it, and replacing it atomically.
//!
//! A reader of the file sees either the previous state or the new one, never a mix: the new
//! state goes to a temporary file in the same directory, is flushed to disk, renamed over the
//! old one, and the directory entry is flushed too. The file is a snapshot: the changes made
//! after it are in the journal next to it ([`crate::journal`]). The format itself is the
//! engine's ([`crate::engine::durable`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::durable::{PersistedState, STATE_FORMAT, StateProblem};
use crate::escape::clipped;

/// Why the state file could not be loaded.
#[derive(Debug, Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read the state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    // serde quotes what it could not parse, which may be a megabyte of hostile name.
    #[error("the state file {path} is corrupt: {}", clipped(&source.to_string()))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by an incompatible version.
    #[error("the state file {path} has format {found}; this server reads format {STATE_FORMAT}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The format number it declares.
        found: u32,
    },
    /// The file parses but breaks the room rules.
    #[error("the state file {path} is inconsistent: {problem}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: StateProblem,
    },
    /// A journal line other than the last is not a valid record (the last one may be torn by
    /// a crash, and is then ignored).
    #[error("the journal {path} is corrupt at line {line}: {}", clipped(reason))]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What the parser said.
        reason: String,
    },
}

/// Reads the state file; a missing file is an empty state. The file is only ever read here.
pub fn load(path: &Path) -> Result<Option<PersistedState>, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let state: PersistedState =
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
    if state.format != STATE_FORMAT {
        return Err(StateError::UnknownFormat {
            path: path.to_owned(),
            found: state.format,
        });
    }
    Ok(Some(state))
}

/// Replaces `path` with `contents` atomically and durably. On error the previous file is
/// untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let directory = directory_of(path);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the state path has no file name",
        )
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(".tmp");
    let temp_path = directory.join(temp_name);

    let result = (|| {
        // A temporary file left by a crash would keep its old mode through the truncation.
        match fs::remove_file(&temp_path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp_path, path)?;
        // The rename is durable only once the directory itself is flushed.
        sync_directory_of(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// Options that create a file readable and writable by its owner only (0600): the state, its
/// journal and the history hold tokens and chat. The mode is given to `open`, so the file never
/// exists with a wider one, not even for a moment; files that already exist keep theirs.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Flushes the directory holding `path`, which makes a rename or a new file there durable.
pub fn sync_directory_of(path: &Path) -> io::Result<()> {
    File::open(directory_of(path))?.sync_all()
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::durable::{PersistedMember, PersistedRoom};
    use crate::engine::{RoomKind, WireVersion};

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("none.json")).unwrap(), None);
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = PersistedState::new(vec![PersistedRoom {
            ids_reserved: 0,
            name: "lobby".into(),
            uid: 9,
            kind: RoomKind::Public,
            created_at_ms: 7,
            topic: None,
            banned: Vec::new(),
            members: vec![PersistedMember {
                username: "alice".into(),
                uid: 3,
                token: "ab".repeat(32),
                host: true,
                addr: Some("127.0.0.1:4000".parse().unwrap()),
                version: WireVersion::V2,
                sealed: None,
            }],
        }]);
        write_atomic(&path, &serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"format\":1,\"rooms\":[").unwrap();
        let error = load(&path).unwrap_err();
        assert!(matches!(error, StateError::Corrupt { .. }));
        assert!(error.to_string().contains("state.json"));
    }

    #[test]
    fn the_state_file_is_private_from_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // A world-readable temporary file left behind by a crash is not reused as it is.
        fs::write(dir.path().join(".state.json.tmp"), b"stale").unwrap();
        write_atomic(&path, b"{}").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "state file mode {mode:o}");
    }

    #[test]
    fn failed_write_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"previous").unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir(dir.path().join(".state.json.tmp")).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"previous");
    }
}
