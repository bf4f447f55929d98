//! `chat-client` in a real terminal (a detached tmux session): what a person typing sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use chat_tests::{ClientProcess, EVENT_TIMEOUT, ServerProcess, binary};

/// A detached tmux session on a tmux server of its own, killed (server and all) when dropped,
/// so that a failing test leaves nothing running.
struct TmuxSession {
    /// The server's socket, in the test's temporary directory so that it goes with it.
    socket: PathBuf,
    name: &'static str,
}

impl TmuxSession {
    /// Starts `command` (run by the shell) in a `width` x `height` terminal. The pane stays on
    /// screen after the command exits, so that a failure shows what it printed.
    fn start(dir: &Path, name: &'static str, width: u16, height: u16, command: &str) -> Self {
        let session = Self {
            socket: dir.join(format!("tmux-{name}.sock")),
            name,
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

    /// Types `text` literally, without pressing Enter.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", self.name, "-l", text]);
    }

    /// Presses one key, such as `Enter`.
    fn press(&self, key: &str) {
        self.tmux(&["send-keys", "-t", self.name, key]);
    }

    /// The visible screen, one string per row, trailing blank rows dropped.
    fn screen(&self) -> Vec<String> {
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
    fn wait_for_screen(&self, what: &str, wanted: impl Fn(&[String]) -> bool) -> Vec<String> {
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
}

impl Drop for TmuxSession {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `text` quoted for the shell that tmux runs the command with.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The client's saved memberships go to `data_dir`, never to the real home directory.
fn client_command(client: &Path, data_dir: &Path, tcp_port: u16, args: &[&str]) -> String {
    let mut words = vec![
        "env".into(),
        shell_quote(&format!("XDG_DATA_HOME={}", data_dir.display())),
        shell_quote(&client.display().to_string()),
        "--server".into(),
        "127.0.0.1".into(),
        "--tcp-port".into(),
        tcp_port.to_string(),
    ];
    words.extend(args.iter().map(|arg| shell_quote(arg)));
    words.join(" ")
}

#[test]
fn a_message_arriving_while_typing_leaves_the_typed_text_intact() {
    if !tmux_installed() {
        println!("skipped: tmux is not installed, and this test needs a real terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::start(&server, &["create", "lobby", "--name", "alice"]);
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });

    let command = client_command(
        &binary("chat-client"),
        dir.path(),
        server.tcp.port(),
        &["join", "lobby", "--name", "bob"],
    );
    let bob = TmuxSession::start(dir.path(), "bob", 120, 30, &command);
    bob.wait_for_screen("bob's welcome and prompt", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with("* welcome to lobby, bob"))
            && screen.last().is_some_and(|row| row == ">")
    });
    alice.wait_for_line("* bob joined");

    bob.type_text("half typed");
    bob.wait_for_screen("the half-typed line", |screen| {
        screen.last().is_some_and(|row| row == "> half typed")
    });
    alice.send_line("hello bob");
    let screen = bob.wait_for_screen("alice's message", |screen| {
        screen.iter().any(|row| row.ends_with("alice: hello bob"))
    });
    let message_row = screen
        .iter()
        .position(|row| row.ends_with("alice: hello bob"))
        .expect("the message is on screen");
    assert!(
        screen[message_row].starts_with('['),
        "a terminal shows the time: {screen:#?}"
    );
    assert_eq!(
        screen.last().map(String::as_str),
        Some("> half typed"),
        "the typed text is still on the line being edited, below the message: {screen:#?}"
    );
    assert_eq!(
        screen.len() - 1,
        message_row + 1,
        "the message sits right above the line being edited: {screen:#?}"
    );

    // Still being edited, not just still drawn: finishing the line sends all of it.
    bob.type_text(" and done");
    bob.press("Enter");
    alice.wait_for_line("bob: half typed and done");
    bob.wait_for_screen("bob's own message, once the server stored it", |screen| {
        screen
            .iter()
            .any(|row| row.starts_with('[') && row.ends_with("bob: half typed and done"))
    });
}
