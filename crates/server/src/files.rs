//! Files members share in a room: stored by content hash under `--files`, one directory per
//! room, with a per-room quota; they go when the room goes.
//!
//! Layout: `DIR/<room uid>/<sha256 hex>` holds the bytes and `DIR/<room uid>/index.json` what
//! members see (name, size, who, when). Every write is a temporary file, `fsync`, rename, with
//! mode 0600 (they hold chat). Only the HTTP front end calls this, on blocking threads, so the
//! relay never waits for it.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Hex digits of the hash that name a file to members (48 bits: collisions within one room
/// are refused, never silently merged).
pub const ID_LEN: usize = 12;
/// Longest file name kept, in bytes.
pub const MAX_NAME: usize = 255;
/// Most files one room keeps, whatever their size (the index is read whole).
pub const MAX_FILES_PER_ROOM: usize = 1000;

/// What members see of a shared file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    /// The first [`ID_LEN`] hex digits of its SHA-256.
    pub id: String,
    /// Its SHA-256, in hex, for the downloader to check.
    pub sha256: String,
    /// The name it was shared under, made safe (no path, no control characters).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Who shared it.
    pub from: String,
    /// When, in Unix milliseconds.
    pub ts: u64,
}

/// Why a file could not be stored or found.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file is over `--max-file-size`.
    #[error("the file is {size} bytes; files may be at most {limit} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The room's files would be over `--room-file-quota`, or it has the most files.
    #[error(
        "this room's shared files are full ({used} of {quota} bytes, {count} files); old files go when the room closes"
    )]
    QuotaFull {
        /// Bytes stored.
        used: u64,
        /// The quota.
        quota: u64,
        /// Files stored.
        count: usize,
    },
    /// An empty file, or an empty or unusable name.
    #[error("{0}")]
    Invalid(&'static str),
    /// No file with that id in the room.
    #[error("there is no file {0} in this room")]
    NotFound(String),
    /// The disk said no.
    #[error("the file could not be stored: {0}")]
    Io(#[from] io::Error),
    /// The index is not what this server writes.
    #[error("the room's file index is damaged: {0}")]
    Index(#[from] serde_json::Error),
}

/// The shared files of every room.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Largest file accepted.
    pub max_size: u64,
    /// Bytes one room may hold.
    pub room_quota: u64,
    /// Index updates one at a time (read, add, write back).
    index: Mutex<()>,
}

impl FileStore {
    /// The store under `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path, max_size: u64, room_quota: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_size,
            room_quota,
            index: Mutex::new(()),
        })
    }

    fn room_dir(&self, room_uid: u64) -> PathBuf {
        self.dir.join(room_uid.to_string())
    }

    /// Stores `bytes` as `name` in the room, shared by `from` at `ts`. The same bytes shared
    /// again are one file (the first sharing's name and sharer are kept).
    pub fn put(
        &self,
        room_uid: u64,
        name: &str,
        from: &str,
        bytes: &[u8],
        ts: u64,
    ) -> Result<SharedFile, FileError> {
        let size = bytes.len() as u64;
        if size > self.max_size {
            return Err(FileError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        if bytes.is_empty() {
            return Err(FileError::Invalid("the file is empty"));
        }
        let name = safe_name(name).ok_or(FileError::Invalid(
            "a file needs a name: letters, digits and punctuation, without / or control characters",
        ))?;
        let sha256 = hex(&Sha256::digest(bytes));
        let id = sha256[..ID_LEN].to_owned();
        let _index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = self.room_dir(room_uid);
        let mut files = read_index(&dir)?;
        if let Some(existing) = files.iter().find(|file| file.id == id) {
            if existing.sha256 == sha256 {
                return Ok(existing.clone());
            }
            return Err(FileError::Invalid(
                "another file in this room has the same id; rename nothing, try again later",
            ));
        }
        let used: u64 = files.iter().map(|file| file.size).sum();
        if used + size > self.room_quota || files.len() >= MAX_FILES_PER_ROOM {
            return Err(FileError::QuotaFull {
                used,
                quota: self.room_quota,
                count: files.len(),
            });
        }
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        write_atomically(&dir.join(&sha256), bytes)?;
        let shared = SharedFile {
            id,
            sha256,
            name,
            size,
            from: from.to_owned(),
            ts,
        };
        files.push(shared.clone());
        write_atomically(&dir.join("index.json"), &serde_json::to_vec(&files)?)?;
        Ok(shared)
    }

    /// The room's files, oldest first.
    pub fn list(&self, room_uid: u64) -> Result<Vec<SharedFile>, FileError> {
        let _index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        read_index(&self.room_dir(room_uid))
    }

    /// A file's description and where its bytes are.
    pub fn find(&self, room_uid: u64, id: &str) -> Result<(SharedFile, PathBuf), FileError> {
        let file = self
            .list(room_uid)?
            .into_iter()
            .find(|file| file.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| FileError::NotFound(crate::escape::quoted(id.as_bytes()).to_string()))?;
        let path = self.room_dir(room_uid).join(&file.sha256);
        Ok((file, path))
    }

    /// Removes the files of every room not in `live`. Returns how many rooms' files went.
    pub fn retain_rooms(&self, live: &HashSet<u64>) -> io::Result<usize> {
        let _index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(room_uid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            if !live.contains(&room_uid) {
                fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn read_index(dir: &Path) -> Result<Vec<SharedFile>, FileError> {
    match fs::read(dir.join("index.json")) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error.into()),
    }
}

/// Temporary file, `fsync`, rename, `fsync` of the directory: the file is whole or absent.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The name without any directory part, control or invisible characters, bounded; `None`
/// when nothing usable is left.
pub fn safe_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut safe = String::new();
    for c in base.chars() {
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        {
            continue;
        }
        if safe.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        safe.push(c);
    }
    let safe = safe.trim().to_owned();
    (!safe.is_empty() && safe != "." && safe != "..").then_some(safe)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths_and_control_characters() {
        assert_eq!(safe_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_name("C:\\x\\notes.txt").as_deref(), Some("notes.txt"));
        assert_eq!(safe_name("a\u{202e}b\nc.txt").as_deref(), Some("abc.txt"));
        assert_eq!(safe_name(".."), None);
        assert_eq!(safe_name("  "), None);
        assert_eq!(
            safe_name(&"x".repeat(1000)).map(|n| n.len()),
            Some(MAX_NAME)
        );
    }

    #[test]
    fn the_same_bytes_are_one_file_and_the_quota_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 10, 15).unwrap();
        let first = store.put(1, "a.txt", "ann", b"12345678", 1).unwrap();
        let again = store.put(1, "b.txt", "bob", b"12345678", 2).unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            store.put(1, "c.txt", "ann", b"abcdefgh", 3),
            Err(FileError::QuotaFull { used: 8, .. })
        ));
        assert!(matches!(
            store.put(2, "big", "ann", &[0; 11], 3),
            Err(FileError::TooLarge { size: 11, .. })
        ));
        let (found, path) = store.find(1, &first.id).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"12345678");
        assert_eq!(found.name, "a.txt");
        let mode = fs::metadata(dir.path().join("1").join(&first.sha256))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.retain_rooms(&HashSet::new()).unwrap(), 1);
        assert!(store.list(1).unwrap().is_empty());
    }
}
