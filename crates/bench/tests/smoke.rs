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

/// The one JSON row of `scenario` for `target`, or a failure naming what was printed.
fn row(stdout: &str, scenario: &str, target: &str) -> Value {
    rows(stdout, scenario, target)
        .next()
        .unwrap_or_else(|| panic!("no {scenario} row for {target} in {stdout:?}"))
}

/// Asserts that a per-transport row of `web` saw its members receive and its senders' acks.
fn assert_heard(row: &Value, members: u64) {
    assert_eq!(row["members"].as_u64(), Some(members), "{row}");
    let (delivered, expected) = (row["delivered"].as_u64(), row["expected"].as_u64());
    assert!(
        delivered.is_some_and(|delivered| delivered > 0) && delivered <= expected,
        "nothing (or more than expected) delivered: {row}"
    );
    assert!(
        row["acks"].as_u64().is_some_and(|acks| acks > 0),
        "no acks: {row}"
    );
    assert!(row["p99_us"].as_f64().is_some(), "no latency: {row}");
}

#[test]
fn web_drives_udp_and_websocket_members_in_one_room() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench web --spawn` needs the chat-server binary at {}; build it first with \
         `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "web",
        "--spawn",
        "--udp-members",
        "3",
        "--ws-members",
        "3",
        "--senders",
        "4",
        "--rate",
        "100",
        "--duration",
        "1",
        "--settle-ms",
        "0",
        "--json",
    ]);
    assert!(status.success(), "chat-bench web --spawn failed: {stderr}");
    let (udp, ws) = (row(&stdout, "web", "udp"), row(&stdout, "web", "ws"));
    assert_heard(&udp, 3);
    assert_heard(&ws, 3);
    // Senders alternate (UDP, WS, UDP, WS): each message is owed to the other members of the
    // room, on both transports, never to its sender.
    let sent = |row: &Value| row["sent"].as_u64().unwrap_or(0);
    let (by_udp, by_ws) = (sent(&udp), sent(&ws));
    assert!(by_udp > 0 && by_ws > 0, "both transports send: {udp} {ws}");
    assert_eq!(
        udp["expected"].as_u64(),
        Some(2 * by_udp + 3 * by_ws),
        "{udp}"
    );
    assert_eq!(
        ws["expected"].as_u64(),
        Some(3 * by_udp + 2 * by_ws),
        "{ws}"
    );
    let all = row(&stdout, "web", "all");
    assert_eq!(all["ws_closed"].as_u64(), Some(0), "{all}");
    assert!(all["cpu_s"].as_f64().is_some(), "no server CPU: {all}");
    assert!(
        rows(&stdout, "web", "ws/udp").next().is_some(),
        "no ratio row"
    );
    let memory = row(&stdout, "web-memory", "server");
    assert_eq!(memory["ws_members"].as_u64(), Some(3), "{memory}");
}

#[test]
fn web_with_websocket_members_alone_reports_memory_per_member() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench web --spawn` needs the chat-server binary at {}; build it first with \
         `cargo build -p chat-server`",
        server.display()
    );
    // The first WebSocket member creates the room through the HTTP API.
    let (status, stdout, stderr) = run_bench(&[
        "web",
        "--spawn",
        "--udp-members",
        "0",
        "--ws-members",
        "20",
        "--senders",
        "2",
        "--rate",
        "50",
        "--duration",
        "1",
        "--settle-ms",
        "100",
        "--json",
    ]);
    assert!(status.success(), "chat-bench web --spawn failed: {stderr}");
    assert_heard(&row(&stdout, "web", "ws"), 20);
    assert!(
        rows(&stdout, "web", "udp").next().is_none(),
        "no UDP member, no UDP row"
    );
    let memory = row(&stdout, "web-memory", "server");
    assert_eq!(memory["ws_members"].as_u64(), Some(20), "{memory}");
    let (before, after) = (
        memory["rss_before_kib"].as_u64(),
        memory["rss_after_kib"].as_u64(),
    );
    assert!(
        before.is_some_and(|before| before > 0) && after >= before,
        "no memory figures: {memory}"
    );
    assert!(memory["kib_per_ws_member"].as_f64().is_some(), "{memory}");
}

/// Asserts that the server row `target` of `scenario` saw deliveries and its senders' acks.
fn assert_delivered_and_acked(stdout: &str, scenario: &str, target: &str) -> Value {
    let row = row(stdout, scenario, target);
    assert!(
        row["delivered"]
            .as_u64()
            .is_some_and(|delivered| delivered > 0),
        "nothing delivered: {row}"
    );
    assert!(
        row["acks"].as_u64().is_some_and(|acks| acks > 0),
        "no acks: {row}"
    );
    assert!(row["p99_us"].as_f64().is_some(), "no latency: {row}");
    row
}

#[test]
fn relay_compares_version_3_over_udp_and_the_tunnel_with_version_2() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench relay --spawn` needs the chat-server binary at {}; build it first with \
         `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "relay",
        "--spawn",
        "--protocol",
        "v3",
        "--compare-v2",
        "--transport",
        "both",
        "--compare-baseline",
        "false",
        "--duration",
        "1",
        "--rate",
        "100",
        "--members",
        "3",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench relay --protocol v3 --compare-v2 --transport both failed: {stderr}"
    );
    assert_delivered_and_acked(&stdout, "relay", "server-v2");
    let udp = assert_delivered_and_acked(&stdout, "relay", "server-v3");
    assert_eq!(udp["protocol"], "v3", "{udp}");
    let tunnel = assert_delivered_and_acked(&stdout, "relay", "server-v3-tunnel");
    assert_eq!(tunnel["protocol"], "v3-tunnel", "{tunnel}");
    let ratio = row(&stdout, "relay", "v3/v2");
    assert!(
        ratio["cpu_s_per_m"].as_f64().is_some(),
        "no CPU ratio: {ratio}"
    );
    row(&stdout, "relay", "v3-tunnel/v2");
    let paths = row(&stdout, "relay", "v3-tunnel/v3");
    assert!(paths["p99_us"].as_f64().is_some(), "no p99 ratio: {paths}");
}

#[test]
fn ramp_compares_version_3_with_version_2() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench ramp --spawn` needs the chat-server binary at {}; build it first with \
         `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "ramp",
        "--spawn",
        "--protocol",
        "v3",
        "--compare-v2",
        "--compare-baseline",
        "false",
        "--members",
        "3",
        "--start-rate",
        "100",
        "--max-rate",
        "200",
        "--step-duration",
        "0.5",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench ramp --protocol v3 --compare-v2 failed: {stderr}"
    );
    for target in ["server-v2", "server-v3"] {
        let summary = row(&stdout, "ramp", target);
        assert!(
            summary["max_lossless_per_s"].as_f64().is_some() || summary["steps"].as_u64() > Some(0),
            "no ramp summary: {summary}"
        );
        assert!(
            rows(&stdout, "ramp-step", target).next().is_some(),
            "no steps for {target}"
        );
    }
    row(&stdout, "ramp", "v3/v2");
}

#[test]
fn handshake_measures_tls_beside_plain_tcrp() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench handshake --spawn` needs the chat-server binary at {}; build it first \
         with `cargo build -p chat-server`",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "handshake",
        "--spawn",
        "--tls",
        "--connections",
        "2",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench handshake --tls failed: {stderr}"
    );
    let all = |target: &str| {
        rows(&stdout, "handshake", target)
            .find(|row| row["operation"] == "all")
            .unwrap_or_else(|| panic!("no `all` row for {target} in {stdout:?}"))
    };
    for target in ["server", "server-tls"] {
        let row = all(target);
        assert!(
            row["ok"].as_u64().is_some_and(|ok| ok > 0),
            "no handshake succeeded: {row}"
        );
        assert_eq!(row["failed"].as_u64(), Some(0), "{row}");
        assert!(row["server_cpu_us_per_op"].as_f64().is_some(), "{row}");
    }
    assert!(all("tls/plain")["ops_per_s"].as_f64().is_some());
}

#[test]
fn nodes_spreads_one_room_over_three_nodes_sharing_a_redis() {
    let server = server_binary();
    assert!(
        server.is_file(),
        "`chat-bench nodes` needs the chat-server binary at {}; build it first",
        server.display()
    );
    let (status, stdout, stderr) = run_bench(&[
        "nodes",
        "--spawn",
        "--duration",
        "1",
        "--rate",
        "200",
        "--members",
        "6",
        "--json",
    ]);
    assert!(
        status.success(),
        "chat-bench nodes failed (redis-server comes from scripts/install-redis.sh): {stderr}"
    );
    for target in ["one-node", "redis-x1", "redis-nodes"] {
        let row = row(&stdout, "nodes", target);
        let (delivered, expected) = (row["delivered"].as_u64(), row["expected"].as_u64());
        assert!(
            delivered.is_some_and(|delivered| delivered > 0) && delivered <= expected,
            "nothing (or more than expected) delivered: {row}"
        );
    }
}
