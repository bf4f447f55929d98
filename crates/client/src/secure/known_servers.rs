//! The servers this user trusts, pinned like SSH's `known_hosts`: one line per server,
//! `host:port SHA256:<64 hex>`, in `$XDG_DATA_HOME/chat-client/known_servers` (else
//! `$HOME/.local/share/chat-client/known_servers`), mode 0600, replaced atomically.
//!
//! Keyed by the server as given on the command line (`--server` and `--tcp-port`), so that
//! each server of a list has its own line. Lines that are blank, start with `#` or do not
//! parse are kept as they are and otherwise ignored: the file is the user's to edit.
//!
//! [`decide`] is the trust decision, without I/O.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use chat_protocol::fingerprint::Fingerprint;

/// A file larger than this is not read (it cannot be one a person keeps by hand).
pub const MAX_FILE_LEN: u64 = 1024 * 1024;

/// `host:port`, with an IPv6 address in brackets: the key of a server's line.
pub fn server_key(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The user's `known_servers` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The user's file, or `None` when there is no data directory to keep it in.
    pub fn for_user() -> Option<Self> {
        Some(Self::at(
            crate::private_file::data_dir()?.join("known_servers"),
        ))
    }

    /// A file of its own (tests).
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where the file is, for the sentences that tell the user to edit it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned fingerprint of `server` (a [`server_key`]), if any.
    pub fn find(&self, server: &str) -> Option<Fingerprint> {
        parse(&self.read()).into_iter().find_map(|line| match line {
            Line::Server { key, fingerprint } if key == server => Some(fingerprint),
            _ => None,
        })
    }

    /// Pins `server` to `fingerprint`, replacing its line if it had one.
    pub fn pin(&self, server: &str, fingerprint: Fingerprint) -> io::Result<()> {
        let text = self.read();
        let mut out = String::new();
        let mut replaced = false;
        for line in text.lines() {
            match parse_line(line) {
                Line::Server { key, .. } if key == server => {
                    if !replaced {
                        out.push_str(&format!("{server} {fingerprint}\n"));
                        replaced = true;
                    }
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if !replaced {
            out.push_str(&format!("{server} {fingerprint}\n"));
        }
        self.store(out.as_bytes())
    }

    fn read(&self) -> String {
        let read = || -> io::Result<Vec<u8>> {
            let file = File::open(&self.path)?;
            let mut bytes = Vec::new();
            file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        match read() {
            Ok(bytes) if bytes.len() as u64 <= MAX_FILE_LEN => {
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "known_servers is too large; ignored");
                String::new()
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(%error, path = %self.path.display(), "cannot read known_servers");
                }
                String::new()
            }
        }
    }

    /// Replaced whole, mode 0600 ([`crate::private_file::write_atomic`]).
    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        crate::private_file::write_atomic(&self.path, bytes)
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `host:port SHA256:...`.
    Server {
        /// The [`server_key`].
        key: String,
        /// Its pinned fingerprint.
        fingerprint: Fingerprint,
    },
    /// Blank, a comment, or something this client does not understand (kept as it is).
    Other,
}

/// Reads one line: the key, whitespace, the fingerprint; anything after is a comment.
pub fn parse_line(line: &str) -> Line {
    let line = line.trim();
    if line.starts_with('#') {
        return Line::Other;
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<Fingerprint>)) {
        (Some(key), Some(Ok(fingerprint))) => Line::Server {
            key: key.to_owned(),
            fingerprint,
        },
        _ => Line::Other,
    }
}

/// Every line of a file.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines().map(parse_line).collect()
}

/// What to do with the certificate a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pinned key: carry on silently.
    Known,
    /// Trusted (by `--trust-new-server` or a matching `--fingerprint`): pin it and carry on.
    Pin,
    /// First contact in a terminal: show the fingerprint and ask.
    Ask,
    /// Refused: nothing may be sent.
    Refuse(Distrust),
}

/// Why a server's certificate is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Its key is not the one pinned for it.
    Changed {
        /// The pinned one.
        known: Fingerprint,
        /// The one it presented.
        presented: Fingerprint,
    },
    /// `--fingerprint` names another key.
    NotThePin {
        /// `--fingerprint`.
        pin: Fingerprint,
        /// The one it presented.
        presented: Fingerprint,
    },
    /// First contact, and no terminal to ask on and no flag that says to trust it.
    Unknown {
        /// The one it presented.
        presented: Fingerprint,
    },
    /// The user answered no.
    Declined,
}

/// The trust decision, like SSH's: a `--fingerprint` given decides alone (it is how a user
/// accepts a changed key after checking it); else a pinned key must match; else first
/// contact is trusted with `--trust-new-server`, asked about in a terminal, refused
/// otherwise.
pub fn decide(
    known: Option<Fingerprint>,
    pin: Option<Fingerprint>,
    presented: Fingerprint,
    trust_new: bool,
    interactive: bool,
) -> Verdict {
    match (pin, known) {
        (Some(pin), _) if pin != presented => {
            Verdict::Refuse(Distrust::NotThePin { pin, presented })
        }
        (Some(_), Some(known)) if known == presented => Verdict::Known,
        (Some(_), _) => Verdict::Pin,
        (None, Some(known)) if known == presented => Verdict::Known,
        (None, Some(known)) => Verdict::Refuse(Distrust::Changed { known, presented }),
        (None, None) if trust_new => Verdict::Pin,
        (None, None) if interactive => Verdict::Ask,
        (None, None) => Verdict::Refuse(Distrust::Unknown { presented }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fp(byte: u8) -> Fingerprint {
        Fingerprint([byte; 32])
    }

    #[test]
    fn keys_bracket_ipv6_addresses() {
        assert_eq!(server_key("127.0.0.1", 9090), "127.0.0.1:9090");
        assert_eq!(server_key("chat.lan", 1), "chat.lan:1");
        assert_eq!(server_key("::1", 9090), "[::1]:9090");
    }

    #[test]
    fn lines_parse_and_junk_is_other() {
        let text = format!(
            "# comment\n\n127.0.0.1:9090 {}\nchat.lan:9090 SHA256:zz\nlonely\n[::1]:9 {} trailing words\n",
            fp(1),
            fp(2)
        );
        let lines = parse(&text);
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[2],
            Line::Server {
                key: "127.0.0.1:9090".into(),
                fingerprint: fp(1)
            }
        );
        assert_eq!(lines[3], Line::Other);
        assert_eq!(lines[4], Line::Other);
        assert_eq!(
            lines[5],
            Line::Server {
                key: "[::1]:9".into(),
                fingerprint: fp(2)
            }
        );
    }

    #[test]
    fn pinning_adds_replaces_and_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::at(dir.path().join("sub/known_servers"));
        assert_eq!(known.find("a:1"), None);
        known.pin("a:1", fp(1)).unwrap();
        known.pin("b:2", fp(2)).unwrap();
        assert_eq!(known.find("a:1"), Some(fp(1)));
        let mut text = fs::read_to_string(known.path()).unwrap();
        text.insert_str(0, "# mine\n");
        fs::write(known.path(), &text).unwrap();
        known.pin("a:1", fp(3)).unwrap();
        assert_eq!(known.find("a:1"), Some(fp(3)));
        assert_eq!(known.find("b:2"), Some(fp(2)));
        let text = fs::read_to_string(known.path()).unwrap();
        assert_eq!(text, format!("# mine\na:1 {}\nb:2 {}\n", fp(3), fp(2)));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_no_temporary_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::at(dir.path().join("chat-client/known_servers"));
        known.pin("a:1", fp(1)).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(known.path()), 0o600);
        assert_eq!(mode(known.path().parent().unwrap()), 0o700);
        let names: Vec<_> = fs::read_dir(known.path().parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("known_servers")]);
    }

    #[test]
    fn the_decision_table() {
        let (a, b) = (fp(1), fp(2));
        // Same key: silent, whatever the flags.
        assert_eq!(decide(Some(a), None, a, false, false), Verdict::Known);
        assert_eq!(decide(Some(a), None, a, true, true), Verdict::Known);
        // Changed key: refused, even with --trust-new-server or a terminal.
        for (trust, interactive) in [(false, false), (true, false), (false, true)] {
            assert_eq!(
                decide(Some(a), None, b, trust, interactive),
                Verdict::Refuse(Distrust::Changed {
                    known: a,
                    presented: b
                })
            );
        }
        // First contact.
        assert_eq!(decide(None, None, a, true, false), Verdict::Pin);
        assert_eq!(decide(None, None, a, false, true), Verdict::Ask);
        assert_eq!(
            decide(None, None, a, false, false),
            Verdict::Refuse(Distrust::Unknown { presented: a })
        );
        // A pin decides alone: it accepts a changed key, refuses any other.
        assert_eq!(decide(None, Some(a), a, false, false), Verdict::Pin);
        assert_eq!(decide(Some(b), Some(a), a, false, false), Verdict::Pin);
        assert_eq!(decide(Some(a), Some(a), a, false, false), Verdict::Known);
        assert_eq!(
            decide(Some(a), Some(b), a, true, true),
            Verdict::Refuse(Distrust::NotThePin {
                pin: b,
                presented: a
            })
        );
    }
}
