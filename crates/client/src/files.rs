//! Sharing files: `/send PATH` uploads over the server's HTTP API, `/get ID [PATH]` downloads
//! and checks the SHA-256 before the file is put in place. Blocking calls: the event loop runs
//! them on a blocking thread, so chat goes on meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_protocol::fingerprint::Fingerprint;
use serde::Deserialize;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, TcpConnector};

use crate::secure::https::PinnedTls;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest a transfer may take before it is given up.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest file read for upload or accepted on download (the server's own cap is usually
/// lower, and it answers with its own limit).
pub const MAX_FILE: u64 = 256 << 20;

/// Where the room's files are: the server's HTTP API, the room and the member's token.
#[derive(Debug, Clone)]
pub struct FileLink {
    /// `http://HOST:PORT`.
    pub base: String,
    /// The room.
    pub room: String,
    /// The member's token.
    pub token: String,
    /// In an encrypted conversation: the server's host and certificate, to which every
    /// request goes inside TLS (the server serves TLS on its HTTP port too).
    pub pinned: Option<(String, Fingerprint)>,
}

/// A shared file as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SharedFile {
    /// What `/get` takes.
    pub id: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its name.
    pub name: String,
    /// Bytes.
    pub size: u64,
}

/// Why a transfer failed, in words for the user.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The server could not be reached or did not answer.
    #[error("the server's file service cannot be reached ({0})")]
    Unreachable(String),
    /// The server refused, with its own sentence.
    #[error("{0}")]
    Refused(String),
    /// What arrived is not what was shared.
    #[error("the download of {name} does not match its checksum; nothing was saved")]
    Corrupt {
        /// The file's name.
        name: String,
    },
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl FileLink {
    fn agent(&self) -> Result<ureq::Agent, TransferError> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TRANSFER_TIMEOUT))
            .build();
        let Some((host, fingerprint)) = &self.pinned else {
            return Ok(config.into());
        };
        // Encrypted conversation: the token goes inside TLS to the pinned server only.
        let tls = PinnedTls::new(host, *fingerprint).map_err(TransferError::Unreachable)?;
        Ok(ureq::Agent::with_parts(
            config,
            TcpConnector::default().chain(tls),
            DefaultResolver::default(),
        ))
    }

    fn files_url(&self) -> String {
        format!("{}/api/rooms/{}/files", self.base, percent(&self.room))
    }

    /// Uploads the file at `path` into the room; the server tells the room.
    pub fn upload(&self, path: &Path) -> Result<SharedFile, TransferError> {
        let local = |source| TransferError::Local {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(local)?;
        let size = file.metadata().map_err(local)?.len();
        if size > MAX_FILE {
            return Err(TransferError::Refused(format!(
                "{} is {size} bytes; too large to share",
                path.display()
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_FILE).read_to_end(&mut bytes).map_err(local)?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        let url = format!("{}?name={}", self.files_url(), percent(&name));
        let mut response = self
            .agent()?
            .post(url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        if status != 201 {
            return Err(refusal(status, &body));
        }
        serde_json::from_str(&body).map_err(|error| TransferError::Unreachable(error.to_string()))
    }

    /// Downloads file `id` to `to` (or, when `None`, to its shared name in `dir`), checking
    /// its checksum first; never overwrites an existing file. Returns where it was saved.
    pub fn download(
        &self,
        id: &str,
        to: Option<&Path>,
        dir: &Path,
    ) -> Result<(SharedFile, PathBuf), TransferError> {
        let listed = self.list()?;
        let file = listed
            .into_iter()
            .find(|file| file.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| TransferError::Refused(format!("there is no file {id} in this room")))?;
        let mut response = self
            .agent()?
            .get(format!("{}/{}", self.files_url(), percent(&file.id)))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(refusal(status, &body));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_FILE)
            .read_to_vec()
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        if bytes.len() as u64 != file.size || hex(&Sha256::digest(&bytes)) != file.sha256 {
            return Err(TransferError::Corrupt { name: file.name });
        }
        let target = match to {
            Some(path) => path.to_path_buf(),
            None => dir.join(local_name(&file.name)),
        };
        save_new(&target, &bytes).map_err(|source| TransferError::Local {
            path: target.clone(),
            source,
        })?;
        Ok((file, target))
    }

    /// The room's files.
    pub fn list(&self) -> Result<Vec<SharedFile>, TransferError> {
        #[derive(Deserialize)]
        struct Listed {
            files: Vec<SharedFile>,
        }
        let mut response = self
            .agent()?
            .get(self.files_url())
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|error| TransferError::Unreachable(error.to_string()))?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        serde_json::from_str::<Listed>(&body)
            .map(|listed| listed.files)
            .map_err(|error| TransferError::Unreachable(error.to_string()))
    }
}

fn refusal(status: u16, body: &str) -> TransferError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(error) => TransferError::Refused(error.message),
        Err(_) => TransferError::Refused(format!("the server answered HTTP {status}")),
    }
}

/// A shared name made safe for this machine's file system: no directory part, no leading
/// dot (no hidden or `..` files), no control characters.
pub fn local_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_owned();
    if cleaned.is_empty() {
        "download".to_owned()
    } else {
        cleaned
    }
}

/// Writes a new file whole (temporary file, `fsync`, then a link that fails if the name is
/// taken), so neither a half file nor an overwritten one is ever left.
fn save_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file with that name exists; give /get a path to save it elsewhere",
        ));
    }
    let temporary = path.with_extension("part");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    let placed = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    placed
}

/// Percent-encoding for a path segment or query value.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_cannot_escape_the_directory_or_hide() {
        assert_eq!(local_name("../../.bashrc"), "bashrc");
        assert_eq!(local_name("..."), "download");
        assert_eq!(local_name("a\u{7}b.txt"), "ab.txt");
        assert_eq!(local_name("notes v2.pdf"), "notes v2.pdf");
    }

    #[test]
    fn a_download_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        save_new(&path, b"one").unwrap();
        assert!(save_new(&path, b"two").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert!(!dir.path().join("x.part").exists());
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent("a b/c"), "a%20b%2Fc");
    }
}
