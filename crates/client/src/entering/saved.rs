//! Memberships this client holds, saved so that a client that crashed (killed, terminal gone
//! without SIGHUP) can take its place back: `join ROOM --name N` (or `create`) first tries the
//! token it saved for that server, room and name, and only asks for a new one when the server
//! no longer knows it.
//!
//! The file is `$XDG_DATA_HOME/chat-client/memberships.json` (else
//! `$HOME/.local/share/chat-client/memberships.json`), mode 0600 in a 0700 directory because it
//! holds tokens, replaced atomically (temporary file, fsync, rename). An entry is written once
//! the handshake succeeds and removed when the session ends in any way short of a crash. A
//! missing, unreadable or corrupt file is treated as empty: resuming is a convenience.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;

use chat_protocol::names::username_key;
use chat_protocol::tcrp::Grant;
use serde::{Deserialize, Serialize};

use crate::entering::handshake::Membership;

/// Most memberships kept; the oldest goes first.
pub const MAX_SAVED: usize = 32;
/// A file larger than this is not read (it cannot be one this client wrote).
pub const MAX_FILE_LEN: u64 = 64 * 1024;

/// Which membership: the server as given on the command line, the room and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `--server` as given.
    pub server: String,
    /// `--tcp-port`.
    pub tcp_port: u16,
    /// The room's name.
    pub room: String,
    /// The username.
    pub username: String,
}

/// One saved membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    server: String,
    tcp_port: u16,
    room: String,
    username: String,
    /// The TCP address that granted it (its IP is where datagrams go).
    answered_by: SocketAddr,
    grant: Grant,
    /// The client process that holds it: while it runs, the membership is not left behind
    /// and must not be taken from it.
    pid: u32,
}

impl Saved {
    fn matches(&self, key: &Key) -> bool {
        self.server == key.server
            && self.tcp_port == key.tcp_port
            && self.room == key.room
            && username_key(&self.username) == username_key(&key.username)
    }

    /// Whether the client that saved it is gone (so its place may be taken back).
    pub fn holder_is_gone(&self) -> bool {
        !process_exists(self.pid)
    }

    /// The membership as the handshake had granted it.
    pub fn membership(&self) -> Membership {
        Membership {
            server: self.answered_by,
            grant: self.grant.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedFile {
    memberships: Vec<Saved>,
}

/// The saved memberships of this user.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The user's store, or `None` when there is no data directory to keep it in.
    pub fn for_user() -> Option<Self> {
        Some(Self::at(
            crate::private_file::data_dir()?.join("memberships.json"),
        ))
    }

    /// A store in a file of its own (tests).
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved membership for `key`, if any.
    pub fn find(&self, key: &Key) -> Option<Saved> {
        self.load()
            .memberships
            .into_iter()
            .find(|saved| saved.matches(key))
    }

    /// Saves the membership `membership` granted for `key`, replacing an older one.
    pub fn save(&self, key: &Key, membership: &Membership) -> io::Result<()> {
        let mut file = self.load();
        file.memberships.retain(|saved| !saved.matches(key));
        file.memberships.push(Saved {
            server: key.server.clone(),
            tcp_port: key.tcp_port,
            room: key.room.clone(),
            username: key.username.clone(),
            answered_by: membership.server,
            grant: membership.grant.clone(),
            pid: std::process::id(),
        });
        let excess = file.memberships.len().saturating_sub(MAX_SAVED);
        file.memberships.drain(..excess);
        self.store(&file)
    }

    /// Forgets the membership for `key`.
    pub fn forget(&self, key: &Key) -> io::Result<()> {
        let mut file = self.load();
        let before = file.memberships.len();
        file.memberships.retain(|saved| !saved.matches(key));
        if file.memberships.len() == before {
            return Ok(());
        }
        self.store(&file)
    }

    fn load(&self) -> SavedFile {
        let read = || -> io::Result<Vec<u8>> {
            let file = File::open(&self.path)?;
            let mut bytes = Vec::new();
            file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        match read() {
            Ok(bytes) if bytes.len() as u64 <= MAX_FILE_LEN => serde_json::from_slice(&bytes)
                .unwrap_or_else(|error| {
                    tracing::debug!(%error, path = %self.path.display(), "ignoring a corrupt file");
                    SavedFile::default()
                }),
            Ok(_) => SavedFile::default(),
            Err(error) => {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(%error, path = %self.path.display(), "cannot read");
                }
                SavedFile::default()
            }
        }
    }

    /// Replaced whole, mode 0600 ([`crate::private_file::write_atomic`]): it holds tokens.
    fn store(&self, file: &SavedFile) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
        crate::private_file::write_atomic(&self.path, &bytes)
    }
}

/// Whether a process with this id runs (signal 0 checks without sending anything; a process
/// of another user still counts as running).
#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn key(room: &str, username: &str) -> Key {
        Key {
            server: "127.0.0.1".into(),
            tcp_port: 9090,
            room: room.into(),
            username: username.into(),
        }
    }

    fn membership(token: &str) -> Membership {
        Membership {
            server: SocketAddr::from(([127, 0, 0, 1], 9090)),
            grant: Grant {
                token: token.into(),
                room: Some("lobby".into()),
                username: Some("bob".into()),
                host: Some(false),
                udp_port: Some(9091),
                send_burst: None,
                send_interval_ms: None,
                http_port: None,
                key_id: None,
            },
        }
    }

    #[test]
    fn saved_memberships_are_found_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("sub/memberships.json"));
        assert_eq!(store.find(&key("lobby", "bob")), None);
        store.save(&key("lobby", "bob"), &membership("aa")).unwrap();
        store.save(&key("lobby", "bob"), &membership("bb")).unwrap();
        store.save(&key("den", "bob"), &membership("cc")).unwrap();
        let found = store.find(&key("lobby", "Bob")).unwrap();
        assert_eq!(found.membership().grant.token, "bb");
        store.forget(&key("lobby", "bob")).unwrap();
        assert_eq!(store.find(&key("lobby", "bob")), None);
        assert!(store.find(&key("den", "bob")).is_some());
    }

    #[test]
    fn only_a_gone_holder_leaves_its_place_to_take_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("memberships.json"));
        store.save(&key("lobby", "bob"), &membership("aa")).unwrap();
        let mut found = store.find(&key("lobby", "bob")).unwrap();
        // This test's own process runs.
        assert!(!found.holder_is_gone());
        found.pid = u32::MAX;
        assert!(found.holder_is_gone());
    }

    #[cfg(unix)]
    #[test]
    fn the_file_and_its_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat-client/memberships.json");
        Store::at(path.clone())
            .save(&key("lobby", "bob"), &membership("aa"))
            .unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn at_most_a_bounded_number_are_kept_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memberships.json");
        let store = Store::at(path.clone());
        for n in 0..MAX_SAVED + 5 {
            store
                .save(&key(&format!("room{n}"), "bob"), &membership("aa"))
                .unwrap();
        }
        assert_eq!(store.find(&key("room0", "bob")), None);
        assert!(
            store
                .find(&key(&format!("room{}", MAX_SAVED + 4), "bob"))
                .is_some()
        );
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(store.find(&key("room40", "bob")), None);
        store.save(&key("lobby", "bob"), &membership("aa")).unwrap();
        assert!(store.find(&key("lobby", "bob")).is_some());
    }
}
