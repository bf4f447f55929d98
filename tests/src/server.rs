//! `chat-server` as a child process: started on ephemeral ports with its state in a test's
//! directory, restarted on the same ports, stopped by signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::EVENT_TIMEOUT;
use crate::process::{binary, line_channel, wait_with_timeout};

/// A running `chat-server` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The control-plane address.
    pub tcp: SocketAddr,
    /// The data-plane address.
    pub udp: SocketAddr,
    /// The HTTP listener's address (page, API, WebSocket), unless started with `--no-http`.
    pub http: Option<SocketAddr>,
    /// The state file it uses.
    pub state: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts a server on ephemeral ports with its state file in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts a server with extra flags (which may override the defaults chosen here).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        Self::try_start(dir, extra).unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Starts a server, or returns what it printed when it refused to start.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Self, String> {
        let state = dir.join("room_manager.json");
        let log = dir.join(format!("server-{}.log", unique_suffix()));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--tcp-port".into(),
            "0".into(),
            "--udp-port".into(),
            "0".into(),
            "--http-port".into(),
            "0".into(),
            "--state".into(),
            state.display().to_string(),
            "--history".into(),
            dir.join("chat-history.sqlite3").display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let mut child = Command::new(binary("chat-server"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn chat-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = line_channel(stdout);
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some((tcp, udp, http)) = parse_listening(&line) {
                        return Ok(Self {
                            child,
                            tcp,
                            udp,
                            http,
                            state,
                            log,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let printed = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "chat-server did not start (status {status:?}); it printed:\n{printed}"
                    ));
                }
            }
        }
    }

    /// Restarts on the same TCP and UDP ports and state file, after the old process is gone
    /// (pass `--http-port` in `extra` to keep the HTTP port too).
    pub fn restart_same_ports(
        dir: &Path,
        tcp: SocketAddr,
        udp: SocketAddr,
        extra: &[&str],
    ) -> Self {
        let tcp_port = tcp.port().to_string();
        let udp_port = udp.port().to_string();
        let mut args = vec!["--tcp-port", &tcp_port, "--udp-port", &udp_port];
        args.extend_from_slice(extra);
        // The old socket can linger for a moment after a kill; retry briefly.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            match Self::try_start(dir, &args) {
                Ok(server) => return server,
                Err(failure) if Instant::now() < deadline => {
                    let _ = failure;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_with_timeout(&mut self.child, EVENT_TIMEOUT).expect("chat-server exits after SIGTERM")
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for the process to exit after a signal sent otherwise;
    /// returns its status and everything it logged.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_with_timeout(&mut self.child, EVENT_TIMEOUT).expect("chat-server exits");
        (status, self.log())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let rest = line.strip_prefix("chat-server listening ")?;
    let mut tcp = None;
    let mut udp = None;
    let mut http = None;
    for part in rest.split_whitespace() {
        if let Some(addr) = part.strip_prefix("tcp=") {
            tcp = addr.parse().ok();
        } else if let Some(addr) = part.strip_prefix("udp=") {
            udp = addr.parse().ok();
        } else if let Some(addr) = part.strip_prefix("http=") {
            http = addr.parse().ok();
        }
    }
    Some((tcp?, udp?, http))
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
