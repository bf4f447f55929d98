//! `chat-client` in a real terminal: a detached tmux session on a tmux server of its own,
//! read back as the screen a person would see (and, for a shell session, as the raw bytes
//! written to the terminal, escapes and bells included).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::EVENT_TIMEOUT;
use crate::process::binary;

/// A detached tmux session, killed (server and all) when dropped, so that a failing test
/// leaves nothing running.
pub struct TmuxSession {
    /// The server's socket, in the test's temporary directory so that it goes with it.
    socket: PathBuf,
    name: &'static str,
    /// Where a shell session's output is copied raw.
    raw: Option<PathBuf>,
}

impl TmuxSession {
    /// Starts `command` (run by the shell) in a `width` x `height` terminal. The pane stays on
    /// screen after the command exits, so that a failure shows what it printed.
    pub fn start(dir: &Path, name: &'static str, width: u16, height: u16, command: &str) -> Self {
        let session = Self {
            socket: dir.join(format!("tmux-{name}.sock")),
            name,
            raw: None,
        };
        let (width, height) = (width.to_string(), height.to_string());
        let started = session.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width,
            "-y",
            &height,
            command,
            ";",
            "set-option",
            "-t",
            name,
            "remain-on-exit",
            "on",
        ]);
        assert!(
            started.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        session
    }

    /// Starts a shell in a 120 x 30 terminal whose output is also copied raw (see
    /// [`TmuxSession::raw`]); commands are typed into it with [`TmuxSession::run`].
    pub fn shell(dir: &Path, name: &'static str) -> Self {
        let mut session = Self::start(dir, name, 120, 30, "sh");
        let raw = dir.join(format!("{name}.raw"));
        let pipe = format!("cat >> '{}'", raw.display());
        let piped = session.tmux(&["pipe-pane", "-o", "-t", name, &pipe]);
        assert!(piped.status.success(), "{piped:?}");
        session.raw = Some(raw);
        session
    }

    fn tmux(&self, args: &[&str]) -> Output {
        // `-f /dev/null`: the user's tmux configuration must not change what the test sees.
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Types a command line and presses Enter.
    pub fn run(&self, line: &str) {
        self.type_text(line);
        self.press("Enter");
    }

    /// Types `text` literally, without pressing Enter.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", self.name, "-l", text]);
    }

    /// Presses one key, such as `Enter` or `Tab`.
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", "-t", self.name, key]);
    }

    /// The visible screen, one string per row, trailing blank rows dropped.
    pub fn screen(&self) -> Vec<String> {
        let captured = self.tmux(&["capture-pane", "-p", "-t", self.name]);
        let mut rows: Vec<String> = String::from_utf8_lossy(&captured.stdout)
            .lines()
            .map(|row| row.trim_end().to_owned())
            .collect();
        while rows.last().is_some_and(String::is_empty) {
            rows.pop();
        }
        rows
    }

    /// Waits until the screen satisfies `wanted`; panics with the screen on timeout.
    pub fn wait_for_screen(&self, what: &str, wanted: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the terminal shows:\n{}",
                screen.join("\n")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything a shell session's terminal was sent so far, escapes and bells included.
    pub fn raw(&self) -> String {
        let bytes = self
            .raw
            .as_ref()
            .and_then(|raw| std::fs::read(raw).ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the raw copy (which trails the screen a little) contains `text`.
    pub fn wait_for_raw(&self, text: &str) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let raw = self.raw();
            if raw.contains(text) {
                return raw;
            }
            assert!(
                Instant::now() < deadline,
                "never written: {text:?}; got {raw:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TmuxSession {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// Whether tmux can be run here (tests that need a real terminal are skipped without it).
pub fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `text` quoted for the shell that tmux runs commands with.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The shell command that runs `chat-client` against the server at `tcp_port` on 127.0.0.1
/// with `args`; its saved memberships go to `data_dir` and no user configuration is read.
/// With `--trust-new-server`, as [`crate::ClientProcess`] does, so that no fingerprint
/// question stands between the test and its chat.
pub fn client_command(data_dir: &Path, tcp_port: u16, args: &[&str]) -> String {
    let mut trusting = vec!["--trust-new-server"];
    trusting.extend_from_slice(args);
    client_command_exactly(data_dir, tcp_port, &trusting)
}

/// [`client_command`] without `--trust-new-server`: the client asks on first contact.
pub fn client_command_exactly(data_dir: &Path, tcp_port: u16, args: &[&str]) -> String {
    let mut words = vec![
        "env".into(),
        shell_quote(&format!("XDG_DATA_HOME={}", data_dir.display())),
        "XDG_CONFIG_HOME=/nonexistent".into(),
        shell_quote(&binary("chat-client").display().to_string()),
        "--server".into(),
        "127.0.0.1".into(),
        "--tcp-port".into(),
        tcp_port.to_string(),
    ];
    words.extend(args.iter().map(|arg| shell_quote(arg)));
    words.join(" ")
}
