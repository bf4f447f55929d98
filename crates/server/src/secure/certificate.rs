//! The server's TLS identity: a certificate and key, made self-signed on first start (clients
//! pin its fingerprint, so no authority is needed) or given by the operator, and the rustls
//! configuration built from them: TLS 1.3 only, no client certificates.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chat_protocol::fingerprint::Fingerprint;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::persist;

/// Why the TLS identity could not be loaded or made.
#[derive(Debug, Error)]
pub enum CertificateError {
    /// Reading or writing a certificate or key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The file holds no PEM certificate, or no PEM private key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        what: String,
    },
    /// Only one of `--tls-cert` and `--tls-key` was given.
    #[error("--tls-cert and --tls-key go together: give both, or neither for a self-signed one")]
    HalfGiven,
    /// rcgen could not make the certificate.
    #[error("making a self-signed certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (a key that does not match, an unsupported
    /// algorithm).
    #[error("the certificate and key are not usable for TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the certificate and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// Whether the operator named them (`--tls-cert`/`--tls-key`): then they must exist.
    pub given: bool,
}

impl CertificatePaths {
    /// The operator's files when given, else `tls-cert.pem` and `tls-key.pem` next to the
    /// state file.
    pub fn new(
        state: &Path,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self, CertificateError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Self {
                cert,
                key,
                given: true,
            }),
            (None, None) => {
                let directory = match state.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                Ok(Self {
                    cert: directory.join("tls-cert.pem"),
                    key: directory.join("tls-key.pem"),
                    given: false,
                })
            }
            _ => Err(CertificateError::HalfGiven),
        }
    }
}

/// The certificate, its fingerprint and the TLS configuration.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// What clients pin.
    pub fingerprint: Fingerprint,
    /// For tokio-rustls's acceptor.
    pub config: Arc<ServerConfig>,
    /// Whether the certificate was made just now (the first start).
    pub created: bool,
}

impl ServerIdentity {
    /// Loads the identity, making a self-signed one first when there is none yet (and none
    /// was given).
    pub fn load_or_create(paths: &CertificatePaths) -> Result<Self, CertificateError> {
        let created = if !paths.given && !paths.cert.exists() && !paths.key.exists() {
            create(paths)?;
            true
        } else {
            false
        };
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| CertificateError::Io { path, source }
        };
        let cert_pem = fs::read(&paths.cert).map_err(io_error(&paths.cert))?;
        let key_pem = fs::read(&paths.key).map_err(io_error(&paths.key))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::Pem {
                path: paths.cert.clone(),
                what: e.to_string(),
            })?;
        let leaf = chain.first().ok_or_else(|| CertificateError::Pem {
            path: paths.cert.clone(),
            what: "no certificate in the file".into(),
        })?;
        let fingerprint = Fingerprint::of_certificate(leaf.as_ref());
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertificateError::Pem {
            path: paths.key.clone(),
            what: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // No client resumes (each handshake makes fresh keys), so tickets would be work and
        // bytes for nothing.
        config.send_tls13_tickets = 0;
        Ok(Self {
            fingerprint,
            config: Arc::new(config),
            created,
        })
    }
}

/// Makes a self-signed certificate (ECDSA P-256, the names a LAN host is reached by) and
/// writes both files atomically, mode 0600.
fn create(paths: &CertificatePaths) -> Result<(), CertificateError> {
    let mut names = vec!["localhost".to_owned(), "chat-server".to_owned()];
    if let Ok(host) = nix_hostname() {
        names.push(host);
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    let write = |path: &Path, contents: &[u8]| {
        persist::write_atomic(path, contents).map_err(|source| CertificateError::Io {
            path: path.to_owned(),
            source,
        })
    };
    // The key first: a certificate without its key would be refused at the next start, a
    // key without its certificate is replaced.
    write(&paths.key, certified.signing_key.serialize_pem().as_bytes())?;
    write(&paths.cert, certified.cert.pem().as_bytes())?;
    Ok(())
}

/// This host's name, for the certificate's names (clients pin the fingerprint, so it is a
/// courtesy to tools that show it).
fn nix_hostname() -> Result<String, io::Error> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")?;
    let name = name.trim();
    if name.is_empty() || !name.is_ascii() {
        return Err(io::Error::other("no usable host name"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_start_makes_a_private_certificate_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertificatePaths::new(&dir.path().join("state.json"), None, None).unwrap();
        let first = ServerIdentity::load_or_create(&paths).unwrap();
        assert!(first.created);
        for path in [&paths.cert, &paths.key] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let again = ServerIdentity::load_or_create(&paths).unwrap();
        assert!(!again.created);
        assert_eq!(again.fingerprint, first.fingerprint);
    }

    #[test]
    fn given_files_must_exist_and_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        assert!(matches!(
            CertificatePaths::new(&state, Some("a".into()), None),
            Err(CertificateError::HalfGiven)
        ));
        let paths = CertificatePaths::new(
            &state,
            Some(dir.path().join("c")),
            Some(dir.path().join("k")),
        )
        .unwrap();
        assert!(matches!(
            ServerIdentity::load_or_create(&paths),
            Err(CertificateError::Io { .. })
        ));
    }
}
