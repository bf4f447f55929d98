//! Child processes in general: where the workspace binaries are, their output as lines a test
//! can wait on, waiting for an exit, and what `/proc` says about them.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

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
pub(crate) fn line_channel(pipe: impl Read + Send + 'static) -> Receiver<String> {
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
pub(crate) fn merged_output(
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

/// A figure from `/proc/PID/status` in kB, e.g. `VmRSS` (resident now) or `VmHWM` (the peak
/// resident size so far); None when the process is gone or the field is missing.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Waits up to [`EVENT_TIMEOUT`](crate::EVENT_TIMEOUT) for a line from `lines` satisfying
/// `wanted`, keeping every line in `seen`; panics naming `what` and `program`, with everything
/// seen, on timeout.
pub fn wait_for_line(
    lines: &Receiver<String>,
    seen: &mut Vec<String>,
    program: &str,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + crate::EVENT_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            Err(_) => panic!(
                "timed out waiting for {what}; {program} printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}
