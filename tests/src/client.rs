//! `chat-client` as a child process: arguments in, typed lines to its stdin, its stdout and
//! stderr as lines to wait on, its exit status.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::EVENT_TIMEOUT;
use crate::process::{binary, merged_output, wait_for_line, wait_with_timeout};
use crate::server::ServerProcess;

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

    /// Starts `chat-client` in `room` as `name` with `operation` (`create`, `join`; extra
    /// flags such as `--v1` go first) and waits until the server's welcome is shown.
    pub fn enter(
        server: &ServerProcess,
        flags: &[&str],
        operation: &str,
        room: &str,
        name: &str,
    ) -> Self {
        let mut args = flags.to_vec();
        args.extend([operation, room, "--name", name]);
        let mut client = Self::start(server, &args);
        let welcome = format!("* welcome to {room}, {name}");
        client.wait_for("the welcome notice", |line| line.starts_with(&welcome));
        client
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
    /// saves its memberships (and `known_servers`): clients started with the same one are the
    /// same user. With `--trust-new-server`, so that a server met first (each test has a
    /// fresh data directory) is trusted without a terminal to ask on; a changed certificate
    /// is still refused.
    pub fn start_with_data_dir(tcp_port: u16, data_dir: &Path, args: &[&str]) -> Self {
        let mut trusting = vec!["--trust-new-server"];
        trusting.extend_from_slice(args);
        Self::start_exactly(tcp_port, data_dir, &trusting)
    }

    /// Starts `chat-client` with exactly these arguments after `--server` and `--tcp-port`
    /// (no `--trust-new-server`), with `data_dir` as its data directory.
    pub fn start_exactly(tcp_port: u16, data_dir: &Path, args: &[&str]) -> Self {
        let tcp_port = tcp_port.to_string();
        let mut all = vec!["--server", "127.0.0.1", "--tcp-port", &tcp_port];
        all.extend_from_slice(args);
        Self::spawn(&all, data_dir, None)
    }

    /// Starts `chat-client` with `--server SERVERS` (a comma-separated list, each
    /// `HOST[:TCP_PORT[:UDP_PORT]]`) and its own data directory, trusting each node on first
    /// contact (every node of a test has a certificate of its own).
    pub fn start_with_servers(servers: &str, args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("a data directory");
        let mut all = vec!["--server", servers, "--trust-new-server"];
        all.extend_from_slice(args);
        let path = data_dir.path().to_owned();
        Self::spawn(&all, &path, Some(data_dir))
    }

    /// Spawns `chat-client ARGS` with `data_dir` as its data directory, its output merged
    /// into lines; `owned` is kept for as long as the client (a temporary directory).
    fn spawn(args: &[&str], data_dir: &Path, owned: Option<tempfile::TempDir>) -> Self {
        let mut command = Command::new(binary("chat-client"));
        command
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
            _data_dir: owned,
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
        wait_for_line(&self.lines, &mut self.seen, "chat-client", what, wanted)
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

    /// Closes stdin, waits for the exit, and returns every line printed up to it (all of
    /// [`ClientProcess::seen`]) with the exit status.
    pub fn finish(mut self) -> (Vec<String>, ExitStatus) {
        self.close_stdin();
        self.finish_with_stdin_open()
    }

    /// [`ClientProcess::finish`] with stdin left open, so that end of input cannot be what
    /// ended it.
    pub fn finish_with_stdin_open(mut self) -> (Vec<String>, ExitStatus) {
        let status = self.wait_exit_with_stdin_open();
        // The last lines may still be on their way from the pipes, which close at the exit.
        self.lines_within(Duration::from_secs(2));
        (std::mem::take(&mut self.seen), status)
    }

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

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
