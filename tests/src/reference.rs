//! The reference Python implementation, where a checkout has it: its server and client as
//! child processes answering their prompts.

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;

use crate::EVENT_TIMEOUT;
use crate::process::{merged_output, wait_for_line, wait_with_timeout};

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
        wait_for_line(
            &self.lines,
            &mut self.seen,
            "the reference program",
            what,
            wanted,
        )
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
