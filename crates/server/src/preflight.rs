//! Checks made before the server serves anything.
//!
//! A handshake is answered only once its change is on disk, so a server that cannot write its
//! state would refuse every handshake while looking healthy. It refuses to start instead.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::journal::journal_path;

/// The state cannot be written where `--state` says.
#[derive(Debug, Error)]
#[error(
    "cannot write the state file {}: {source} (handshakes are answered only once they are on \
     disk, so the server does not start)",
    path.display()
)]
pub struct StateNotWritable {
    /// The file that could not be written.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: io::Error,
}

/// Checks that a state file and its journal can be written next to `state`, the way the state
/// writer does it: a new file in the same directory, flushed, then removed. The state file
/// itself is never touched.
pub fn check_state_writable(state: &Path) -> Result<(), StateNotWritable> {
    let failed = |path: &Path, source| StateNotWritable {
        path: path.to_owned(),
        source,
    };
    if state.is_dir() {
        return Err(failed(
            state,
            io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
        ));
    }
    let directory = match state.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut probe_name = std::ffi::OsString::from(".");
    probe_name.push(state.file_name().unwrap_or_default());
    probe_name.push(".probe");
    let probe = directory.join(probe_name);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut file| {
            file.write_all(b"probe")?;
            file.sync_all()
        });
    let _ = fs::remove_file(&probe);
    written.map_err(|source| failed(state, source))?;
    // An existing journal is appended to in place.
    let journal = journal_path(state);
    match OpenOptions::new().append(true).open(&journal) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(failed(&journal, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_passes_and_is_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        check_state_writable(&dir.path().join("state.json")).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_or_a_directory_as_state_fails() {
        let dir = tempfile::tempdir().unwrap();
        let error = check_state_writable(&dir.path().join("missing/state.json")).unwrap_err();
        assert!(error.to_string().contains("missing/state.json"), "{error}");
        assert!(check_state_writable(dir.path()).is_err());
    }
}
