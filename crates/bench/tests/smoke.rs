//! Smoke tests of the chat-bench binary: it runs, exits 0 and reports deliveries. No figure
//! is asserted beyond "something was delivered": these machines are not benchmark rigs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A smoke run must never hang the suite; far above what a 1-second run needs.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn bench() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chat-bench"))
}

/// Where `chat-bench --spawn` looks for the server: next to itself, in the same target dir.
fn server_binary() -> PathBuf {
    bench().with_file_name(format!("chat-server{}", std::env::consts::EXE_SUFFIX))
}

/// Runs chat-bench to completion (killing it, by its handle, if it overstays) and returns
/// its exit status, stdout and stderr.
fn run_bench(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(bench())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chat-bench starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("chat-bench can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chat-bench {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader
        .join()
        .expect("stdout reader does not panic")
        .expect("chat-bench writes UTF-8 to stdout");
    let stderr = err_reader
        .join()
        .expect("stderr reader does not panic")
        .expect("chat-bench writes UTF-8 to stderr");
    (status, stdout, stderr)
}

/// The JSON rows of `scenario` for `target`.
fn rows<'a>(
    stdout: &'a str,
    scenario: &'a str,
    target: &'a str,
) -> impl Iterator<Item = Value> + 'a {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(move |row| row["scenario"] == scenario && row["target"] == target)
}

#[test]
fn baseline_relays_datagrams() {
    let (status, stdout, stderr) = run_bench(&[
        "baseline",
        "--duration",
        "1",
        "--rate",
        "200",
        "--members",
        "3",
        "--json",
    ]);
    assert!(status.success(), "chat-bench baseline failed: {stderr}");
    let row = rows(&stdout, "baseline", "baseline")
        .next()
        .unwrap_or_else(|| panic!("no baseline row in {stdout:?}"));
    assert!(
        row["delivered"].as_u64().unwrap() > 0,
        "nothing delivered: {row}"
    );
}

#[test]
fn relay_drives_a_spawned_server() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench relay --spawn` needs the chat-server binary at {}; this test builds \
         nothing, so build it first with `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "relay",
        "--spawn",
        "--duration",
        "1",
        "--rate",
        "200",
        "--members",
        "3",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench relay --spawn failed: {stderr}"
    );
    let row = rows(&stdout, "relay", "server")
        .next()
        .unwrap_or_else(|| panic!("no server row in {stdout:?}"));
    assert!(
        row["delivered"].as_u64().unwrap() > 0,
        "nothing delivered: {row}"
    );
}

#[test]
fn relay_drives_a_spawned_server_in_version_2() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench relay --spawn` needs the chat-server binary at {}; this test builds \
         nothing, so build it first with `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "relay",
        "--spawn",
        "--protocol",
        "v2",
        "--duration",
        "1",
        "--rate",
        "200",
        "--members",
        "3",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench relay --spawn --protocol v2 failed: {stderr}"
    );
    let row = rows(&stdout, "relay", "server-v2")
        .next()
        .unwrap_or_else(|| panic!("no server-v2 row in {stdout:?}"));
    assert!(
        row["delivered"].as_u64().unwrap() > 0,
        "nothing delivered: {row}"
    );
}

#[test]
fn refuses_to_address_anything_but_loopback() {
    let (status, _, stderr) = run_bench(&["relay", "--server", "192.0.2.1", "--duration", "1"]);
    assert!(!status.success());
    assert!(stderr.contains("127.0.0.1"), "unexpected message: {stderr}");
}

#[test]
fn refuses_a_server_it_did_not_start_unless_told_target_live() {
    // Nothing needs to listen: the refusal comes before any traffic.
    let (status, _, stderr) = run_bench(&["handshake", "--tcp-port", "9", "--udp-port", "9"]);
    assert!(!status.success());
    assert!(
        stderr.contains("--target-live"),
        "unexpected message: {stderr}"
    );
}
