//! Where the chat server under test lives: a process this tool spawned (and always kills,
//! through its `Child` handle, when the guard is dropped, including on error and panic paths)
//! or one already running on the loopback interface.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use chat_protocol::fingerprint::Fingerprint;
use tempfile::TempDir;

use crate::error::{BenchError, Result};
use crate::procfs::CpuSource;
use crate::tls::TlsClient;

/// How long a spawned server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The line prefix the server prints to stdout once its sockets are bound.
const LISTENING_PREFIX: &str = "chat-server listening ";
/// How long `chat-server --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(10);
/// Abuse limits that would measure the limiter instead of the server when every benchmark
/// connection comes from 127.0.0.1, with the value that turns each off. Passed only when the
/// binary's --help lists them, so older server builds still start.
const LIMITS_OFF: &[(&str, &str)] = &[
    ("--handshakes-per-ip", "0"),
    ("--rooms-per-ip", "0"),
    ("--websockets-per-ip", "0"),
];

/// The server the benchmark drives.
#[derive(Debug)]
pub struct ServerTarget {
    /// The TCRP (TCP) control address.
    pub tcp: SocketAddr,
    /// The UCRP (UDP) data address.
    pub udp: SocketAddr,
    /// The HTTP API and WebSocket gateway, when the server has one.
    pub http: Option<SocketAddr>,
    /// The server's PID when known (spawned, or given with --server-pid).
    pub pid: Option<u32>,
    /// The certificate fingerprint to pin (`--fingerprint`); without one, the first seen.
    pin: Option<Fingerprint>,
    /// TLS connections to its control port (version 3), made on first use.
    tls: OnceLock<TlsClient>,
    // Held only for its Drop, which kills the spawned server.
    _spawned: Option<SpawnedServer>,
}

#[derive(Debug)]
struct SpawnedServer {
    child: Child,
    // Held so that the state file's directory lives exactly as long as the server.
    _state_dir: TempDir,
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let pid = self.child.id();
        match self.child.try_wait() {
            Ok(Some(status)) => tracing::warn!(pid, %status, "chat-server had already exited"),
            _ => {
                if let Err(error) = self.child.kill() {
                    tracing::warn!(pid, %error, "could not kill chat-server");
                }
                let _ = self.child.wait();
                tracing::debug!(pid, "chat-server stopped");
            }
        }
    }
}

/// Accepts only loopback addresses: the tool never sends traffic anywhere else.
pub fn require_loopback(server: &str) -> Result<IpAddr> {
    let ip: IpAddr = server
        .parse()
        .map_err(|_| BenchError::NotLoopback(server.to_owned()))?;
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(ip),
        _ => Err(BenchError::NotLoopback(server.to_owned())),
    }
}

impl ServerTarget {
    /// A server someone else started.
    pub fn external(
        ip: IpAddr,
        tcp_port: u16,
        udp_port: u16,
        http_port: u16,
        pid: Option<u32>,
    ) -> Self {
        Self {
            tcp: SocketAddr::new(ip, tcp_port),
            udp: SocketAddr::new(ip, udp_port),
            http: Some(SocketAddr::new(ip, http_port)),
            pid,
            pin: None,
            tls: OnceLock::new(),
            _spawned: None,
        }
    }

    /// Starts `binary` on ephemeral loopback ports with a throwaway state file, flood control
    /// and per-address limits off, then each of the scenario's `settings` (a flag and its
    /// value) that the binary has and `extra_args` does not set, then `extra_args`; waits for
    /// its listening line.
    pub fn spawn(
        binary: &Path,
        settings: &[(&'static str, String)],
        extra_args: &[String],
    ) -> Result<Self> {
        if !binary.is_file() {
            return Err(BenchError::ServerBinaryMissing(
                binary.display().to_string(),
            ));
        }
        let state_dir = tempfile::Builder::new()
            .prefix("chat-bench-")
            .tempdir()
            .map_err(BenchError::SpawnFailed)?;
        let state_file = state_dir.path().join("room_manager.json");
        // The server runs inside the throwaway directory, so files it keeps at relative
        // default paths (the message history, say) vanish with it instead of landing in the
        // caller's working directory. The binary path must then be absolute.
        let binary = std::path::absolute(binary).map_err(BenchError::SpawnFailed)?;
        let help = help_text(&binary).unwrap_or_default();
        let mut child = Command::new(&binary)
            .current_dir(state_dir.path())
            .args([
                "--bind",
                "127.0.0.1",
                "--tcp-port",
                "0",
                "--udp-port",
                "0",
                "--http-port",
                "0",
            ])
            .arg("--state")
            .arg(&state_file)
            .args(["--flood-rate", "0", "--log-level", "warn"])
            .args(limits_off_args(&help))
            .args(setting_args(&help, settings, extra_args))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(BenchError::SpawnFailed)?;
        let pid = child.id();
        let stdout = child.stdout.take();
        // The guard owns the child from here on, so every early return below kills it.
        let guard = SpawnedServer {
            child,
            _state_dir: state_dir,
        };
        let stdout = stdout.ok_or_else(|| {
            BenchError::ServerDidNotStart("its stdout could not be captured".to_owned())
        })?;
        let Listening { tcp, udp, http } = wait_for_listening_line(stdout)?;
        tracing::info!(pid, %tcp, %udp, ?http, "spawned chat-server");
        Ok(Self {
            tcp,
            udp,
            http,
            pid: Some(pid),
            pin: None,
            tls: OnceLock::new(),
            _spawned: Some(guard),
        })
    }

    /// Pins this certificate fingerprint for every TLS connection to it.
    pub fn pinned(mut self, pin: Option<Fingerprint>) -> Self {
        self.pin = pin;
        self
    }

    /// The TLS client of its control port, every connection pinned to the same certificate.
    pub fn tls(&self) -> Result<&TlsClient> {
        if let Some(client) = self.tls.get() {
            return Ok(client);
        }
        let client = TlsClient::new(self.pin)?;
        Ok(self.tls.get_or_init(|| client))
    }

    /// Where the server's CPU time can be read.
    pub fn cpu_source(&self) -> CpuSource {
        self.pid.map_or(CpuSource::Unknown, CpuSource::Process)
    }
}

/// The `LIMITS_OFF` flags this server build understands, from its --help text.
fn limits_off_args(help: &str) -> Vec<&'static str> {
    LIMITS_OFF
        .iter()
        .filter(|(flag, _)| help.contains(flag))
        .flat_map(|&(flag, value)| [flag, value])
        .collect()
}

/// The scenario's `settings` that this server build has (by its --help text) and that
/// `extra_args` does not set itself, as arguments.
fn setting_args(
    help: &str,
    settings: &[(&'static str, String)],
    extra_args: &[String],
) -> Vec<String> {
    settings
        .iter()
        .filter(|(flag, _)| help.contains(flag))
        .filter(|(flag, _)| {
            !extra_args
                .iter()
                .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
        })
        .flat_map(|(flag, value)| [(*flag).to_owned(), value.clone()])
        .collect()
}

/// The output of `binary --help`, or `None` if it cannot be had within [`HELP_TIMEOUT`].
fn help_text(binary: &Path) -> Option<String> {
    let mut child = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let deadline = std::time::Instant::now() + HELP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    reader.join().ok()?.ok()
}

/// The default location of the server binary: next to this executable (same target dir).
pub fn default_server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(BenchError::SpawnFailed)?;
    let dir = exe.parent().ok_or_else(|| {
        BenchError::ServerBinaryMissing(format!("a directory next to {}", exe.display()))
    })?;
    Ok(dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX)))
}

/// Reads the server's stdout on a helper thread (which keeps draining it until the server
/// exits, so it can never block on a full pipe) and waits for the listening line.
fn wait_for_listening_line(stdout: std::process::ChildStdout) -> Result<Listening> {
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("server-stdout".to_owned())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more; keep draining silently.
                    continue;
                }
            }
        })
        .map_err(BenchError::SpawnFailed)?;
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(ports) = parse_listening_line(&line) {
                    return Ok(ports);
                }
                tracing::debug!(%line, "ignored chat-server stdout line");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(BenchError::ServerDidNotStart(format!(
                    "no listening line within {} s",
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(BenchError::ServerDidNotStart(
                    "it closed its stdout (exited?) before printing the listening line".to_owned(),
                ));
            }
        }
    }
}

/// The addresses a server's listening line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// TCRP.
    pub tcp: SocketAddr,
    /// UCRP.
    pub udp: SocketAddr,
    /// The HTTP listener, absent in builds without one or with it turned off.
    pub http: Option<SocketAddr>,
}

/// Parses `chat-server listening tcp=IP:PORT udp=IP:PORT [http=IP:PORT]`. Only the ports are
/// taken: the tool always addresses 127.0.0.1, whatever interface the server reports.
pub fn parse_listening_line(line: &str) -> Option<Listening> {
    let rest = line.trim().strip_prefix(LISTENING_PREFIX)?;
    let mut tcp = None;
    let mut udp = None;
    let mut http = None;
    for field in rest.split_whitespace() {
        if let Some(addr) = field.strip_prefix("tcp=") {
            tcp = Some(addr.parse::<SocketAddr>().ok()?.port());
        } else if let Some(addr) = field.strip_prefix("udp=") {
            udp = Some(addr.parse::<SocketAddr>().ok()?.port());
        } else if let Some(addr) = field.strip_prefix("http=") {
            http = Some(addr.parse::<SocketAddr>().ok()?.port());
        }
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Some(Listening {
        tcp: SocketAddr::new(loopback, tcp?),
        udp: SocketAddr::new(loopback, udp?),
        http: http.map(|port| SocketAddr::new(loopback, port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(require_loopback("127.0.0.1").is_ok());
        assert!(require_loopback("127.1.2.3").is_ok());
        assert!(require_loopback("10.0.0.1").is_err());
        assert!(require_loopback("0.0.0.0").is_err());
        assert!(require_loopback("localhost").is_err());
        assert!(require_loopback("8.8.8.8").is_err());
    }

    #[test]
    fn listening_line_gives_loopback_ports() {
        let listening =
            parse_listening_line("chat-server listening tcp=0.0.0.0:40001 udp=0.0.0.0:40002\n")
                .unwrap();
        assert_eq!(listening.tcp, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(listening.udp, "127.0.0.1:40002".parse().unwrap());
        assert_eq!(listening.http, None);
        let listening = parse_listening_line(
            "chat-server listening tcp=127.0.0.1:1 udp=127.0.0.1:2 http=0.0.0.0:40003",
        )
        .unwrap();
        assert_eq!(listening.http, Some("127.0.0.1:40003".parse().unwrap()));
        assert!(parse_listening_line("chat-server listening tcp=127.0.0.1:1").is_none());
        assert!(parse_listening_line("something else").is_none());
    }

    #[test]
    fn limits_are_turned_off_only_where_the_server_has_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, help: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\necho '{help}'\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let new = script(
            "new-server",
            "--flood-rate <N>\n--handshakes-per-ip <N>\n--http-port <N>\n--max-members <N>",
        );
        let help = help_text(&new).unwrap();
        assert_eq!(limits_off_args(&help), ["--handshakes-per-ip", "0"]);
        let settings = [
            ("--max-members", "2000".to_owned()),
            ("--max-rooms", "5".to_owned()),
        ];
        assert_eq!(
            setting_args(&help, &settings, &[]),
            ["--max-members", "2000"]
        );
        let own = ["--max-members=9".to_owned()];
        assert!(
            setting_args(&help, &settings, &own).is_empty(),
            "the caller's own wins"
        );
        let old = script("old-server", "--flood-rate <N>");
        let help = help_text(&old).unwrap();
        assert!(limits_off_args(&help).is_empty());
        assert!(setting_args(&help, &settings, &[]).is_empty());
    }

    #[test]
    fn a_missing_binary_is_reported_not_built() {
        let error =
            ServerTarget::spawn(Path::new("/nonexistent/chat-server"), &[], &[]).unwrap_err();
        assert!(matches!(error, BenchError::ServerBinaryMissing(_)));
    }
}
