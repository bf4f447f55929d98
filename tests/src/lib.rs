//! Test harness for end-to-end tests: start real `chat-server` and `chat-client` processes on
//! 127.0.0.1 with ephemeral ports, talk to them over real sockets, and wait on events with
//! generous timeouts (never on fixed sleeps: timing belongs in the benchmark).
//!
//! The binaries come from the same target directory as the test executable; `cargo test
//! --workspace` builds them before running any test.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::tcrp::{Frame, State};
use chat_protocol::ucrp::{Datagram, V2_MARKER};
use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2};

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

/// The lines of a child's stdout and stderr in one channel, stderr's prefixed `[stderr] `, so
/// that a test reads both in order and a failing one shows everything the child printed.
fn merged_output(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
) -> Receiver<String> {
    let stdout = line_channel(stdout);
    let stderr = line_channel(stderr);
    let (tx, merged) = mpsc::channel();
    let tx_err = tx.clone();
    thread::spawn(move || {
        for line in stdout {
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
    merged
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

    /// Waits (up to [`EVENT_TIMEOUT`]) for the process to exit after a signal sent otherwise;
    /// returns its status and everything it logged.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_with_timeout(&mut self.child, EVENT_TIMEOUT).expect("chat-server exits");
        (status, self.log())
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
    /// Only datagrams from the server count: tests run in parallel, and a port this socket got
    /// may have belonged a moment ago to another test's member, whose server still sends to it.
    pub fn recv_within(&self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) if from == self.server => return Some(buf[..len].to_vec()),
                Ok(_) | Err(_) => continue,
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
    /// Its own data directory (saved memberships), unless the test chose one.
    _data_dir: Option<tempfile::TempDir>,
}

impl ClientProcess {
    /// Starts `chat-client` against `server` with the given subcommand arguments.
    pub fn start(server: &ServerProcess, args: &[&str]) -> Self {
        Self::start_on_port(server.tcp.port(), args)
    }

    /// Starts `chat-client` against the control-plane port `tcp_port` on 127.0.0.1, whether or
    /// not a server listens there.
    pub fn start_on_port(tcp_port: u16, args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("a data directory");
        let mut client = Self::start_with_data_dir(tcp_port, data_dir.path(), args);
        client._data_dir = Some(data_dir);
        client
    }

    /// Starts `chat-client` with `data_dir` as its data directory (`XDG_DATA_HOME`), where it
    /// saves its memberships: clients started with the same one are the same user.
    pub fn start_with_data_dir(tcp_port: u16, data_dir: &Path, args: &[&str]) -> Self {
        let tcp_port = tcp_port.to_string();
        let mut command = Command::new(binary("chat-client"));
        command
            .args(["--server", "127.0.0.1", "--tcp-port", &tcp_port])
            .args(args)
            .env("XDG_DATA_HOME", data_dir)
            // The user's own client configuration must not change what a test runs.
            .env("XDG_CONFIG_HOME", "/nonexistent/chat-tests")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn chat-client");
        let stdin = child.stdin.take();
        let merged = merged_output(
            child.stdout.take().expect("piped stdout"),
            child.stderr.take().expect("piped stderr"),
        );
        Self {
            child,
            stdin,
            lines: merged,
            seen: Vec::new(),
            _data_dir: None,
        }
    }

    /// `kill -9`: the client gets no chance to leave.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    /// The next stdout (or `[stderr] `) line, if one arrives before `deadline`; it is added
    /// to [`ClientProcess::seen`] too.
    pub fn next_line_before(&mut self, deadline: Instant) -> Option<String> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        self.seen.push(line.clone());
        Some(line)
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

/// A version-2 member on the data plane: sends `0xFF` + JSON in its envelope and reads the
/// server's `0xFF` + JSON replies as [`ServerV2`] events.
pub struct V2Member {
    /// The raw member underneath (socket, room, token).
    pub udp: UdpMember,
    /// Datagrams that arrived while waiting for something else (an ack, a history page),
    /// handed out again, in arrival order, before anything newer.
    set_aside: RefCell<VecDeque<Vec<u8>>>,
}

/// What a version-2 `register` (or `ping`) was answered with.
#[derive(Debug)]
pub struct Replay {
    /// The `members` confirmation (register only).
    pub members: Option<(Vec<String>, String)>,
    /// Replayed messages, in the order they arrived.
    pub messages: Vec<ChatMessage>,
    /// The newest stored id the closing `pong` announced.
    pub latest: u64,
    /// Any other event that arrived before the `pong`.
    pub other: Vec<ServerV2>,
}

impl Replay {
    /// The ids of the replayed messages.
    pub fn ids(&self) -> Vec<u64> {
        self.messages.iter().map(|message| message.id).collect()
    }
}

/// Decodes a datagram the server sent a version-2 member; panics on anything else, which is
/// what a version-2 member must never receive.
pub fn decode_v2(datagram: &[u8]) -> ServerV2 {
    let Some((&V2_MARKER, json)) = datagram.split_first() else {
        panic!(
            "a version-2 member received a datagram without the 0xFF marker: {:?}",
            String::from_utf8_lossy(datagram)
        );
    };
    serde_json::from_slice(json).unwrap_or_else(|error| {
        panic!(
            "undecodable version-2 datagram ({error}): {}",
            String::from_utf8_lossy(json)
        )
    })
}

impl V2Member {
    /// A member with a fresh socket (not registered yet).
    pub fn new(server: SocketAddr, room: &str, token: &str) -> Self {
        Self::from_udp(UdpMember::new(server, room, token))
    }

    /// A version-2 member over an existing raw member (e.g. one sharing another's socket).
    pub fn from_udp(udp: UdpMember) -> Self {
        Self {
            udp,
            set_aside: RefCell::default(),
        }
    }

    /// Sends a version-2 message.
    pub fn send(&self, message: &ClientV2) {
        let json = serde_json::to_vec(message).expect("client messages encode");
        self.send_json_bytes(&json);
    }

    /// Sends arbitrary JSON after the `0xFF` marker.
    pub fn send_json_bytes(&self, json: &[u8]) {
        let mut body = vec![V2_MARKER];
        body.extend_from_slice(json);
        self.udp.send(&body);
    }

    /// Sends a chat message without waiting for anything.
    pub fn send_msg(&self, seq: u64, text: &str) {
        self.send(&ClientV2::Msg {
            seq,
            text: text.to_owned(),
        });
    }

    /// The next datagram within `limit`, as raw bytes (set-aside ones first).
    pub fn recv_raw_within(&self, limit: Duration) -> Option<Vec<u8>> {
        if let Some(datagram) = self.set_aside.borrow_mut().pop_front() {
            return Some(datagram);
        }
        self.udp.recv_within(limit)
    }

    /// Puts datagrams back in front of everything not yet handed out, in the given order.
    fn set_aside(&self, datagrams: Vec<Vec<u8>>) {
        let mut queue = self.set_aside.borrow_mut();
        for datagram in datagrams.into_iter().rev() {
            queue.push_front(datagram);
        }
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for a datagram satisfying `wanted`, setting aside the
    /// others for later reads.
    fn wait_setting_aside(&self, what: &str, wanted: impl Fn(&ServerV2) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut others = Vec::new();
        while Instant::now() < deadline {
            if let Some(datagram) = self.recv_raw_within(Duration::from_millis(200)) {
                if wanted(&decode_v2(&datagram)) {
                    self.set_aside(others);
                    return datagram;
                }
                others.push(datagram);
            }
        }
        let others: Vec<ServerV2> = others.iter().map(|d| decode_v2(d)).collect();
        panic!("timed out waiting for {what}; received instead: {others:?}");
    }

    /// The next event within `limit`.
    pub fn next_event_within(&self, limit: Duration) -> Option<ServerV2> {
        self.recv_raw_within(limit)
            .map(|datagram| decode_v2(&datagram))
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) for an event satisfying `wanted`; returns the events
    /// that came before it and the event itself. Panics with what came instead on timeout.
    pub fn expect(
        &self,
        what: &str,
        wanted: impl Fn(&ServerV2) -> bool,
    ) -> (Vec<ServerV2>, ServerV2) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut before = Vec::new();
        while Instant::now() < deadline {
            if let Some(event) = self.next_event_within(Duration::from_millis(200)) {
                if wanted(&event) {
                    return (before, event);
                }
                before.push(event);
            }
        }
        panic!("timed out waiting for {what}; received instead: {before:?}");
    }

    /// Registers (optionally with `last_id`) and collects the answer up to its `pong`.
    pub fn register(&self, last_id: Option<u64>) -> Replay {
        self.send(&ClientV2::Register { last_id });
        self.collect_until_pong("the pong that ends a registration")
    }

    /// Pings (optionally with `last_id`) and collects the answer up to its `pong`.
    pub fn ping(&self, last_id: Option<u64>) -> Replay {
        self.send(&ClientV2::Ping { last_id });
        self.collect_until_pong("the pong that answers a ping")
    }

    /// Collects events up to the `pong`, answering a `challenge` on the way as a client
    /// does: an address the server has not bound yet must echo one first.
    fn collect_until_pong(&self, what: &str) -> Replay {
        let mut before = Vec::new();
        let mut latest = None;
        for _ in 0..8 {
            let (mut earlier, event) = self.expect(what, |event| {
                matches!(event, ServerV2::Pong { .. } | ServerV2::Challenge { .. })
            });
            before.append(&mut earlier);
            match event {
                ServerV2::Challenge { nonce } => self.send(&ClientV2::Echo { nonce }),
                ServerV2::Pong { id } => {
                    latest = Some(id);
                    break;
                }
                _ => unreachable!("matched a pong or a challenge"),
            }
        }
        let latest = latest.unwrap_or_else(|| panic!("challenged again and again: {what}"));
        let mut replay = Replay {
            members: None,
            messages: Vec::new(),
            latest,
            other: Vec::new(),
        };
        for event in before {
            match event {
                ServerV2::Members { names, host, .. } if replay.members.is_none() => {
                    replay.members = Some((names, host));
                }
                ServerV2::Msg(message) => replay.messages.push(message),
                other => replay.other.push(other),
            }
        }
        replay
    }

    /// Sends a chat message and waits for its ack; returns the room id it was stored as.
    /// Other events that arrive meanwhile are kept for later reads.
    pub fn say(&self, seq: u64, text: &str) -> u64 {
        self.send_msg(seq, text);
        let ack = self.wait_setting_aside(
            &format!("the ack of seq {seq}"),
            |event| matches!(event, ServerV2::Ack { seq: acked, .. } if *acked == seq),
        );
        let ServerV2::Ack { id, .. } = decode_v2(&ack) else {
            unreachable!("matched an ack")
        };
        id
    }

    /// Sends a message as a client does, again every second until it is acked (for up to twice
    /// [`EVENT_TIMEOUT`]: the first copy can meet a full socket buffer), and returns its id.
    /// Events other than the ack are dropped.
    pub fn say_retrying(&self, seq: u64, text: &str) -> u64 {
        let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
        while Instant::now() < deadline {
            self.send_msg(seq, text);
            let until = Instant::now() + Duration::from_secs(1);
            while let Some(event) =
                self.next_event_within(until.saturating_duration_since(Instant::now()))
            {
                if let ServerV2::Ack { seq: acked, id } = event
                    && acked == seq
                {
                    return id;
                }
            }
        }
        panic!("seq {seq} was never acked");
    }

    /// Waits for the live `msg` event with this id; returns it and the events before it.
    pub fn expect_msg(&self, id: u64) -> (Vec<ServerV2>, ChatMessage) {
        let (before, event) = self.expect(
            &format!("message {id}"),
            |event| matches!(event, ServerV2::Msg(message) if message.id == id),
        );
        let ServerV2::Msg(message) = event else {
            unreachable!("matched a msg")
        };
        (before, message)
    }

    /// One `history` page: its messages, `more`, and the datagram's size in bytes. Other
    /// events that arrive meanwhile are kept for later reads.
    pub fn history(
        &self,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> (Vec<ChatMessage>, bool, usize) {
        self.send(&ClientV2::History { before, limit });
        let datagram = self.wait_setting_aside("a history page", |event| {
            matches!(event, ServerV2::History { .. })
        });
        let ServerV2::History { messages, more } = decode_v2(&datagram) else {
            unreachable!("matched a history page")
        };
        (messages, more, datagram.len())
    }

    /// Walks `history` back from the newest message to the oldest reachable one, `limit` per
    /// page; returns every message oldest first. Each page is checked to fit in a datagram.
    pub fn whole_history(&self, limit: u32) -> Vec<ChatMessage> {
        let mut all: Vec<ChatMessage> = Vec::new();
        let mut before = None;
        for _ in 0..10_000 {
            let (page, more, size) = self.history(before, Some(limit));
            assert!(size <= MAX_DATAGRAM, "a history page of {size} bytes");
            if let Some(first) = page.first() {
                before = Some(first.id);
            }
            let mut page = page;
            page.append(&mut all);
            all = page;
            if !more {
                return all;
            }
            assert!(before.is_some(), "an empty page that says there is more");
        }
        panic!("history never ended");
    }
}

/// Which faults a [`LossProxy`] injects, in percent of datagrams, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Datagrams dropped.
    pub loss_percent: u32,
    /// Datagrams forwarded twice.
    pub duplicate_percent: u32,
    /// Datagrams held back and released after the next one (or after the proxy's reorder
    /// hold, [`REORDER_HOLD`] by default, when no next one comes).
    pub reorder_percent: u32,
}

impl Faults {
    /// A perfect network.
    pub const NONE: Self = Self {
        loss_percent: 0,
        duplicate_percent: 0,
        reorder_percent: 0,
    };
}

/// Longest time a held-back datagram waits for a successor before it is released anyway.
pub const REORDER_HOLD: Duration = Duration::from_millis(100);

/// How often the proxy's threads look at their stop flag.
const PROXY_POLL: Duration = Duration::from_millis(20);

/// What a [`LossProxy`] did, over all its links and both directions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Of those, datagrams received from clients (on their way to the server).
    pub from_clients: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams sent after their successor.
    pub reordered: AtomicU64,
}

impl ProxyStats {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        format!(
            "{} datagrams, {} dropped, {} duplicated, {} reordered",
            self.received.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed),
            self.reordered.load(Ordering::Relaxed),
        )
    }
}

/// xorshift64*: small, fast and deterministic, so a proxy's decisions replay from its seed.
#[derive(Debug, Clone)]
pub struct XorShift64Star(u64);

impl XorShift64Star {
    /// A generator from any seed (spread with splitmix64, so nearby seeds differ; never zero).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && (self.next_u64() >> 32) % 100 < u64::from(percent)
    }
}

/// A UDP proxy between clients and the server that loses, duplicates and reorders datagrams,
/// deterministically from its seed, in both directions.
///
/// Each client gets its own link: a socket on 127.0.0.1 that the client uses as the server's
/// UDP port, and an upstream socket that talks to the real server. Replies from the server go
/// back to the address the client last sent from. Threads stop when the proxy is dropped.
pub struct LossProxy {
    upstream: SocketAddr,
    seed: u64,
    reorder_hold: Duration,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    links: u64,
    /// What the proxy did so far.
    pub stats: Arc<ProxyStats>,
}

impl LossProxy {
    /// A proxy towards the server's data plane at `upstream`, with no links yet.
    pub fn new(upstream: SocketAddr, faults: Faults, seed: u64) -> Self {
        Self {
            upstream,
            seed,
            reorder_hold: REORDER_HOLD,
            faults: Arc::new(Mutex::new(faults)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            links: 0,
            stats: Arc::new(ProxyStats::default()),
        }
    }

    /// Sets how long a held-back datagram waits for a successor before it goes anyway (for
    /// links opened from now on). A long hold makes the order of what arrives depend on the
    /// order of what was sent alone, never on timing.
    pub fn with_reorder_hold(mut self, hold: Duration) -> Self {
        self.reorder_hold = hold;
        self
    }

    /// Changes the faults of every link from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Opens a link for one more client; returns the UDP port the client must send to.
    pub fn open_link(&mut self) -> u16 {
        let downstream = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's client side");
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's server side");
        for socket in [&downstream, &upstream] {
            socket
                .set_read_timeout(Some(PROXY_POLL))
                .expect("set timeout");
        }
        let port = downstream.local_addr().expect("bound").port();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let link = self.links;
        self.links += 1;
        let to_server = Direction {
            from: downstream.try_clone().expect("clone socket"),
            to: upstream.try_clone().expect("clone socket"),
            rng: XorShift64Star::new(self.seed ^ (link << 1)),
            towards_server: true,
            hold: self.reorder_hold,
        };
        let to_client = Direction {
            from: upstream,
            to: downstream,
            rng: XorShift64Star::new(self.seed ^ ((link << 1) | 1)),
            towards_server: false,
            hold: self.reorder_hold,
        };
        let server = self.upstream;
        let shared = (
            Arc::clone(&self.faults),
            Arc::clone(&self.stop),
            Arc::clone(&self.stats),
        );
        let client_in = Arc::clone(&client);
        let (faults, stop, stats) = shared.clone();
        self.threads.push(thread::spawn(move || {
            to_server.run(&faults, &stop, &stats, |source| {
                // Whatever the client sends from is where replies go (it may rebind).
                *client_in.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
                Some(server)
            });
        }));
        let (faults, stop, stats) = shared;
        self.threads.push(thread::spawn(move || {
            to_client.run(&faults, &stop, &stats, |source| {
                if source != server {
                    return None;
                }
                *client.lock().unwrap_or_else(PoisonError::into_inner)
            });
        }));
        port
    }
}

impl Drop for LossProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction of one proxy link.
struct Direction {
    from: UdpSocket,
    to: UdpSocket,
    rng: XorShift64Star,
    towards_server: bool,
    hold: Duration,
}

impl Direction {
    /// Forwards until `stop`; `destination` says where a datagram from a source goes (None
    /// drops it).
    fn run(
        mut self,
        faults: &Mutex<Faults>,
        stop: &AtomicBool,
        stats: &ProxyStats,
        mut destination: impl FnMut(SocketAddr) -> Option<SocketAddr>,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut held: Option<(Vec<u8>, SocketAddr, Instant)> = None;
        while !stop.load(Ordering::Relaxed) {
            let received = self.from.recv_from(&mut buf);
            let Ok((len, source)) = received else {
                if let Some((datagram, to, since)) = held.take() {
                    if since.elapsed() >= self.hold {
                        let _ = self.to.send_to(&datagram, to);
                    } else {
                        held = Some((datagram, to, since));
                    }
                }
                continue;
            };
            let Some(to) = destination(source) else {
                continue;
            };
            let faults = *faults.lock().unwrap_or_else(PoisonError::into_inner);
            // Every decision draws from the generator, so the sequence of decisions depends
            // only on the seed and the sequence of datagrams.
            let lose = self.rng.chance(faults.loss_percent);
            let duplicate = self.rng.chance(faults.duplicate_percent);
            let reorder = self.rng.chance(faults.reorder_percent);
            // Counted once decided, so that a reader of the counters knows the faults then in
            // force applied to every datagram counted.
            stats.received.fetch_add(1, Ordering::Relaxed);
            if self.towards_server {
                stats.from_clients.fetch_add(1, Ordering::Relaxed);
            }
            if lose {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let datagram = &buf[..len];
            if duplicate {
                stats.duplicated.fetch_add(1, Ordering::Relaxed);
                let _ = self.to.send_to(datagram, to);
            }
            if reorder && held.is_none() {
                stats.reordered.fetch_add(1, Ordering::Relaxed);
                held = Some((datagram.to_vec(), to, Instant::now()));
                continue;
            }
            let _ = self.to.send_to(datagram, to);
            if let Some((earlier, earlier_to, _)) = held.take() {
                let _ = self.to.send_to(&earlier, earlier_to);
            }
        }
    }
}

/// One TCRP exchange that may fail, for tests that kill or stop the server mid-burst: the two
/// reply frames, or None when the connection failed or closed before both arrived.
pub fn try_handshake(
    tcp: SocketAddr,
    operation: u8,
    room: &str,
    payload: &[u8],
) -> Option<Replies> {
    let request = Frame::new(operation, State::Request, room, payload.to_vec())
        .encode()
        .expect("encodable request");
    let mut stream = TcpStream::connect_timeout(&tcp, EVENT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).ok()?;
    stream.write_all(&request).ok()?;
    let mut reply = Vec::new();
    // A reset after the replies still leaves them in `reply`.
    let _ = stream.read_to_end(&mut reply);
    let (compliance, used) = Frame::decode(&reply).ok()??;
    let (complete, _) = Frame::decode(&reply[used..]).ok()??;
    (compliance.state == State::Compliance && complete.state == State::Complete).then_some(
        Replies {
            compliance,
            complete,
        },
    )
}

/// A figure from `/proc/PID/status` in kB, e.g. `VmRSS` (resident now) or `VmHWM` (the peak
/// resident size so far); None when the process is gone or the field is missing.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

impl ClientProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) to this client only.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

/// Where the reference Python implementation lives: `../shared/reference/online-chat-messenger`
/// from the repository root. `None` (and a note on stderr) when it or `python3` is missing,
/// so that a checkout without it still runs the rest of the suite.
pub fn reference_dir() -> Option<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/online-chat-messenger");
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if dir.join("server/server.py").exists() && python {
        Some(dir)
    } else {
        eprintln!(
            "skipped: the reference implementation ({}) or python3 is missing",
            dir.display()
        );
        None
    }
}

/// A free port on 127.0.0.1 for `kind` (`"tcp"` or `"udp"`), found by binding port 0; the
/// reference server cannot pick its own.
pub fn free_port(kind: &str) -> u16 {
    let addr = if kind == "tcp" {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind a TCP port")
    } else {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("bind a UDP port")
    };
    addr.port()
}

/// A process of the reference implementation (`python3 -u`, so its prints arrive at once),
/// answering its prompts from a stdin that stays open (it spins on end of input). Killed by
/// PID when dropped.
pub struct PythonProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Every line it printed so far.
    pub seen: Vec<String>,
    _workdir: tempfile::TempDir,
}

impl PythonProcess {
    /// Starts `script` (relative to the reference directory) in a fresh working directory
    /// (the reference server writes its state file there) and types `answers`, one per line.
    pub fn start(reference: &Path, script: &str, answers: &[String]) -> Self {
        let workdir = tempfile::tempdir().expect("a working directory");
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(reference.join(script))
            .current_dir(workdir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let lines = merged_output(
            child.stdout.take().expect("piped stdout"),
            child.stderr.take().expect("piped stderr"),
        );
        let stdin = child.stdin.take().expect("piped stdin");
        let mut process = Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            _workdir: workdir,
        };
        for answer in answers {
            process.send_line(answer);
        }
        process
    }

    /// The reference server on `tcp` and `udp`, once it says both are bound.
    pub fn server(reference: &Path, tcp: u16, udp: u16) -> Self {
        let answers = ["127.0.0.1".to_owned(), tcp.to_string(), udp.to_string()];
        let mut server = Self::start(reference, "server/server.py", &answers);
        server.wait_for("the reference server to start", |line| {
            line.contains("UDP server bound")
        });
        server
    }

    /// Types a line.
    pub fn send_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to python3");
        self.stdin.flush().expect("flush python3 stdin");
    }

    /// Waits for a printed line satisfying `wanted`; panics with everything seen on timeout.
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
                Err(_) => panic!(
                    "timed out waiting for {what}; the reference program printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Lines printed within `limit`, to check that something did not happen.
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

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        wait_with_timeout(&mut self.child, EVENT_TIMEOUT)
    }
}

impl Drop for PythonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
