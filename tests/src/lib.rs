//! Test harness for end-to-end tests: start real `chat-server` and `chat-client` processes on
//! 127.0.0.1 with ephemeral ports, talk to them over real sockets, and wait on events with
//! generous timeouts (never on fixed sleeps: timing belongs in the benchmark).
//!
//! The binaries come from the same target directory as the test executable; `cargo test
//! --workspace` builds them before running any test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::tcrp::{Frame, State};
use chat_protocol::ucrp::Datagram;

/// How long any single expected event may take before a test fails. Generous on purpose: CI
/// machines are slow and shared; a correct server answers in milliseconds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a workspace binary next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Reads lines from a child's pipe on a thread, so tests can wait for them with a timeout.
fn line_channel(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `chat-server` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The control-plane address.
    pub tcp: SocketAddr,
    /// The data-plane address.
    pub udp: SocketAddr,
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
                    if let Some((tcp, udp)) = parse_listening(&line) {
                        return Ok(Self {
                            child,
                            tcp,
                            udp,
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

    /// Restarts on the same ports and state file, after the old process is gone.
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

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("chat-server listening ")?;
    let mut tcp = None;
    let mut udp = None;
    for part in rest.split_whitespace() {
        if let Some(addr) = part.strip_prefix("tcp=") {
            tcp = addr.parse().ok();
        } else if let Some(addr) = part.strip_prefix("udp=") {
            udp = addr.parse().ok();
        }
    }
    Some((tcp?, udp?))
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

/// Waits for a child to exit, killing it if it takes longer than `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The two reply frames of one TCRP exchange, as JSON.
#[derive(Debug)]
pub struct Replies {
    /// State 1 frame.
    pub compliance: Frame,
    /// State 2 frame.
    pub complete: Frame,
}

impl Replies {
    /// The compliance payload as JSON.
    pub fn compliance_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.compliance.payload).expect("compliance payload is JSON")
    }

    /// The complete payload as JSON.
    pub fn complete_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.complete.payload).expect("complete payload is JSON")
    }

    /// The error code of a refusal, or None when accepted.
    pub fn error_code(&self) -> Option<String> {
        let json = self.compliance_json();
        (json["success"] != 1).then(|| json["error"].as_str().unwrap_or("").to_owned())
    }

    /// The token of a grant (panics on a refusal, with the server's message).
    pub fn token(&self) -> String {
        let json = self.compliance_json();
        assert_eq!(json["success"], 1, "handshake refused: {json}");
        self.complete_json()["token"]
            .as_str()
            .expect("grant has a token")
            .to_owned()
    }
}

/// Sends raw bytes as a TCRP request and reads everything the server answers until it closes.
pub fn raw_exchange(tcp: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(tcp).expect("connect to the control plane");
    stream
        .set_read_timeout(Some(EVENT_TIMEOUT))
        .expect("set timeout");
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// Decodes the frames in a reply stream.
pub fn decode_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(Some((frame, used))) = Frame::decode(bytes) {
        frames.push(frame);
        bytes = &bytes[used..];
    }
    assert!(
        bytes.is_empty(),
        "trailing bytes after the reply frames: {bytes:?}"
    );
    frames
}

/// One TCRP exchange with an arbitrary payload.
pub fn handshake(tcp: SocketAddr, operation: u8, room: &str, payload: &[u8]) -> Replies {
    let request = Frame::new(operation, State::Request, room, payload.to_vec())
        .encode()
        .expect("encodable request");
    let mut frames = decode_frames(&raw_exchange(tcp, &request)).into_iter();
    let compliance = frames.next().expect("a State 1 reply");
    let complete = frames.next().expect("a State 2 reply");
    assert_eq!(compliance.state, State::Compliance);
    assert_eq!(complete.state, State::Complete);
    Replies {
        compliance,
        complete,
    }
}

/// Create, with the reference client's JSON-string payload.
pub fn create(tcp: SocketAddr, room: &str, username: &str) -> Replies {
    handshake(
        tcp,
        1,
        room,
        serde_json::to_string(username).expect("json").as_bytes(),
    )
}

/// Join, with the reference client's JSON-string payload.
pub fn join(tcp: SocketAddr, room: &str, username: &str) -> Replies {
    handshake(
        tcp,
        2,
        room,
        serde_json::to_string(username).expect("json").as_bytes(),
    )
}

/// A member on the data plane, speaking raw UCRP from its own UDP socket.
pub struct UdpMember {
    /// The socket (bound to 127.0.0.1, ephemeral port).
    pub socket: UdpSocket,
    /// The server's data-plane address.
    pub server: SocketAddr,
    /// The room.
    pub room: String,
    /// The token.
    pub token: String,
}

impl UdpMember {
    /// A member with a fresh socket.
    pub fn new(server: SocketAddr, room: &str, token: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set timeout");
        Self {
            socket,
            server,
            room: room.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Sends a message body in this member's envelope.
    pub fn send(&self, message: &[u8]) {
        let datagram = Datagram {
            room: &self.room,
            token: self.token.as_bytes(),
            message,
        }
        .encode()
        .expect("encodable datagram");
        self.send_raw(&datagram);
    }

    /// Sends arbitrary bytes to the server.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.server)
            .expect("send datagram");
    }

    /// Registers (version 1) and waits for the server's welcome notice.
    pub fn register(&self) -> Vec<u8> {
        self.send(b"__REGISTER__");
        self.recv_matching(|d| d.starts_with(b"\x01*welcome to "))
            .expect("the server welcomes a registered member")
    }

    /// The next datagram within `limit`, if any.
    pub fn recv_within(&self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match self.socket.recv_from(&mut buf) {
                Ok((len, _)) => return Some(buf[..len].to_vec()),
                Err(_) => continue,
            }
        }
        None
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for a datagram satisfying `wanted`, discarding others.
    pub fn recv_matching(&self, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(datagram) = self.recv_within(Duration::from_millis(200))
                && wanted(&datagram)
            {
                return Some(datagram);
            }
        }
        None
    }

    /// Waits for the version-1 chat frame `[len][sender][text]`.
    pub fn expect_chat(&self, sender: &str, text: &str) {
        let expected = v1_frame(sender, text);
        assert!(
            self.recv_matching(|d| d == expected.as_slice()).is_some(),
            "expected {sender}: {text}"
        );
    }

    /// Receives everything that arrives within `limit` (to check that something did not).
    pub fn drain(&self, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut all = Vec::new();
        while let Some(datagram) =
            self.recv_within(deadline.saturating_duration_since(Instant::now()))
        {
            all.push(datagram);
        }
        all
    }
}

/// The version-1 frame the server sends for chat from `sender`.
pub fn v1_frame(sender: &str, text: &str) -> Vec<u8> {
    let mut frame = vec![u8::try_from(sender.len()).expect("short sender")];
    frame.extend_from_slice(sender.as_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// A running `chat-client` process with piped stdin and stdout, killed when dropped.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
}

impl ClientProcess {
    /// Starts `chat-client` against `server` with the given subcommand arguments.
    pub fn start(server: &ServerProcess, args: &[&str]) -> Self {
        Self::start_on_port(server.tcp.port(), args)
    }

    /// Starts `chat-client` against the control-plane port `tcp_port` on 127.0.0.1, whether or
    /// not a server listens there.
    pub fn start_on_port(tcp_port: u16, args: &[&str]) -> Self {
        let tcp_port = tcp_port.to_string();
        let mut command = Command::new(binary("chat-client"));
        command
            .args(["--server", "127.0.0.1", "--tcp-port", &tcp_port])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn chat-client");
        let stdin = child.stdin.take();
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        // stderr goes into the same channel, prefixed, so a failing test shows it.
        let stderr = line_channel(child.stderr.take().expect("piped stderr"));
        let (tx, merged) = mpsc::channel();
        let tx_err = tx.clone();
        thread::spawn(move || {
            for line in lines {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        thread::spawn(move || {
            for line in stderr {
                if tx_err.send(format!("[stderr] {line}")).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines: merged,
            seen: Vec::new(),
        }
    }

    /// Types a line.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to chat-client");
        stdin.flush().expect("flush chat-client stdin");
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line satisfying `wanted`; panics with everything seen on timeout.
    pub fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!(
                        "timed out waiting for {what}; chat-client printed:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for exactly this stdout line.
    pub fn wait_for_line(&mut self, expected: &str) {
        self.wait_for(&format!("the line {expected:?}"), |line| line == expected);
    }

    /// Lines that arrive within `limit`, for checking that something did not happen.
    pub fn lines_within(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            lines.push(line);
        }
        lines
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.stdin = None;
        wait_with_timeout(&mut self.child, EVENT_TIMEOUT).expect("chat-client exits in time")
    }

    /// Waits for the process to exit on its own, with stdin still open, so that end of input
    /// cannot be what ended it.
    pub fn wait_exit_with_stdin_open(&mut self) -> ExitStatus {
        wait_with_timeout(&mut self.child, EVENT_TIMEOUT).expect("chat-client exits in time")
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
