//! Version 3 from the client's side, end to end: pinning the server like SSH (first contact,
//! same key, changed key, a pin given, no terminal), the tunnel when UDP is blocked and the
//! way back to UDP, `/status`, a server restart, and the plaintext fallback (or its refusal)
//! with the reference server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_tests::{
    ClientProcess, EVENT_TIMEOUT, Faults, LossProxy, PythonProcess, ServerProcess, binary,
    free_port, reference_dir,
};

/// What `chat-server fingerprint` prints for this server.
fn fingerprint_of(server: &ServerProcess) -> String {
    let output = Command::new(binary("chat-server"))
        .arg("--state")
        .arg(&server.state)
        .arg("fingerprint")
        .output()
        .expect("run chat-server fingerprint");
    assert!(output.status.success(), "{output:?}");
    let print = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    assert!(print.starts_with("SHA256:"), "{print}");
    print
}

fn known_servers(data_dir: &Path) -> PathBuf {
    data_dir.join("chat-client/known_servers")
}

fn key(server: &ServerProcess) -> String {
    format!("127.0.0.1:{}", server.tcp.port())
}

/// Types `/status` until a status line says `wanted`, within the event timeout; each try
/// waits for the status line it asked for.
fn wait_for_path(client: &mut ClientProcess, wanted: &str) -> String {
    let deadline = Instant::now() + 3 * EVENT_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        client.send_line("/status");
        last = client.wait_for("the /status path line", |line| {
            line.starts_with("* protocol version")
        });
        if last.contains(&format!("path: {wanted}")) {
            return last;
        }
        // Not there yet: the path moves within seconds; ask again after the next event.
        let _ = client.lines_within(Duration::from_millis(500));
    }
    panic!("the path never became {wanted:?}; last status: {last}");
}

#[test]
fn first_contact_with_trust_new_server_pins_it_and_the_same_key_passes_silently() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let print = fingerprint_of(&server);
    let data = tempfile::tempdir().unwrap();
    let port = server.tcp.port();

    let mut alice = ClientProcess::start_exactly(
        port,
        data.path(),
        &["--trust-new-server", "create", "lobby", "--name", "alice"],
    );
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    let text = std::fs::read_to_string(known_servers(data.path())).expect("known_servers");
    assert_eq!(text, format!("{} {print}\n", key(&server)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(known_servers(data.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The same user again, without any flag and without a terminal: the pinned key passes
    // silently.
    let mut bob =
        ClientProcess::start_exactly(port, data.path(), &["join", "lobby", "--name", "bob"]);
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to lobby, bob")
    });
    bob.send_line("/status");
    let status = bob.wait_for("the status", |line| line.starts_with("* protocol version"));
    assert_eq!(status, "* protocol version 3, path: udp");
    bob.wait_for("the server line of the status", |line| {
        line.starts_with("* server:") && line.contains(&print)
    });
    bob.send_line("hello alice");
    alice.wait_for("bob's message", |line| line == "bob: hello alice");
    let (lines, status) = bob.finish();
    assert!(status.success(), "{lines:?}");
    assert!(
        !lines.iter().any(|line| line.starts_with("[stderr]")),
        "a known server is silent: {lines:?}"
    );
    assert_eq!(
        std::fs::read_to_string(known_servers(data.path())).unwrap(),
        text
    );
}

#[test]
fn first_contact_without_a_terminal_or_a_pin_is_refused_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let print = fingerprint_of(&server);
    let data = tempfile::tempdir().unwrap();
    let client = ClientProcess::start_exactly(
        server.tcp.port(),
        data.path(),
        &["create", "lobby", "--name", "alice"],
    );
    let (lines, status) = client.finish_with_stdin_open();
    assert_eq!(status.code(), Some(5), "{lines:?}");
    let said = lines.join("\n");
    for needle in [
        "--trust-new-server",
        "--fingerprint",
        print.as_str(),
        "nothing was sent",
    ] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    assert!(!known_servers(data.path()).exists());
    // Nothing was sent: the room it asked for was never created.
    let mut carol = ClientProcess::start(&server, &["create", "lobby", "--name", "carol"]);
    carol.wait_for("carol's welcome (the room was free)", |line| {
        line.starts_with("* welcome to lobby, carol")
    });
}

#[test]
fn a_fingerprint_that_does_not_match_is_refused_and_the_right_one_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let print = fingerprint_of(&server);
    let wrong = format!("SHA256:{}", "0".repeat(64));
    let data = tempfile::tempdir().unwrap();
    let port = server.tcp.port();

    let refused = ClientProcess::start_exactly(
        port,
        data.path(),
        &[
            "--fingerprint",
            &wrong,
            "create",
            "lobby",
            "--name",
            "alice",
        ],
    );
    let (lines, status) = refused.finish_with_stdin_open();
    assert_eq!(status.code(), Some(5), "{lines:?}");
    let said = lines.join("\n");
    assert!(said.contains("not the one --fingerprint names"), "{said}");
    assert!(said.contains(&print) && said.contains(&wrong), "{said}");
    assert!(!known_servers(data.path()).exists());

    let mut alice = ClientProcess::start_exactly(
        port,
        data.path(),
        &[
            "--fingerprint",
            &print,
            "create",
            "lobby",
            "--name",
            "alice",
        ],
    );
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    assert_eq!(
        std::fs::read_to_string(known_servers(data.path())).unwrap(),
        format!("{} {print}\n", key(&server))
    );
}

#[test]
fn a_changed_certificate_is_refused_loudly_until_the_user_accepts_it() {
    let first_dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(first_dir.path());
    let (tcp, udp) = (first.tcp, first.udp);
    let old_print = fingerprint_of(&first);
    let data = tempfile::tempdir().unwrap();
    let mut alice = ClientProcess::start_with_data_dir(
        tcp.port(),
        data.path(),
        &["create", "lobby", "--name", "alice"],
    );
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    alice.close_stdin();
    assert!(alice.wait_exit().success());
    first.kill9();

    // Another server (another state, so another certificate) on the same ports.
    let second_dir = tempfile::tempdir().unwrap();
    let second = ServerProcess::restart_same_ports(second_dir.path(), tcp, udp, &[]);
    let new_print = fingerprint_of(&second);
    assert_ne!(old_print, new_print);

    // --trust-new-server (the harness's default) does not accept a changed key.
    let refused = ClientProcess::start_with_data_dir(
        tcp.port(),
        data.path(),
        &["create", "lobby", "--name", "alice"],
    );
    let (lines, status) = refused.finish_with_stdin_open();
    assert_eq!(status.code(), Some(5), "{lines:?}");
    let said = lines.join("\n");
    for needle in [
        "WARNING",
        "CHANGED",
        old_print.as_str(),
        new_print.as_str(),
        "chat-server fingerprint",
        "--fingerprint",
        "known_servers",
        "Nothing was sent",
    ] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    assert!(
        std::fs::read_to_string(known_servers(data.path()))
            .unwrap()
            .contains(&old_print),
        "the old pin stays until the user changes it"
    );

    // Checked with `chat-server fingerprint`, the user accepts it with --fingerprint.
    let mut again = ClientProcess::start_with_data_dir(
        tcp.port(),
        data.path(),
        &[
            "--fingerprint",
            &new_print,
            "create",
            "lobby",
            "--name",
            "alice",
        ],
    );
    again.wait_for("the welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    assert_eq!(
        std::fs::read_to_string(known_servers(data.path())).unwrap(),
        format!("{} {new_print}\n", key(&second))
    );
}

/// Two clients whose UDP goes through `proxy`, each on a link of its own.
fn through_proxy(
    server: &ServerProcess,
    proxy: &mut LossProxy,
    flags: &[&str],
) -> (ClientProcess, ClientProcess) {
    let alice_port = proxy.open_link().to_string();
    let bob_port = proxy.open_link().to_string();
    let mut alice_flags = vec!["--udp-port", alice_port.as_str()];
    alice_flags.extend_from_slice(flags);
    let mut bob_flags = vec!["--udp-port", bob_port.as_str()];
    bob_flags.extend_from_slice(flags);
    let alice = ClientProcess::enter(server, &alice_flags, "create", "lobby", "alice");
    let bob = ClientProcess::enter(server, &bob_flags, "join", "lobby", "bob");
    (alice, bob)
}

/// Chat lines (`name: text`) seen by a plain client, in order.
fn chat_lines(seen: &[String], from: &str) -> Vec<String> {
    let prefix = format!("{from}: ");
    seen.iter()
        .filter(|line| line.starts_with(&prefix))
        .cloned()
        .collect()
}

#[test]
fn with_udp_blocked_the_chat_goes_through_the_tunnel_and_comes_back_to_udp() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let blocked = Faults {
        loss_percent: 100,
        ..Faults::NONE
    };
    let mut proxy = LossProxy::new(server.udp, blocked, 11);
    // Both get in although no datagram ever gets through: the tunnel carries the welcome.
    let (mut alice, mut bob) = through_proxy(&server, &mut proxy, &[]);
    wait_for_path(&mut alice, "tunnel (UDP blocked)");
    wait_for_path(&mut bob, "tunnel (UDP blocked)");
    for n in 1..=5 {
        alice.send_line(&format!("over the tunnel {n}"));
    }
    bob.wait_for_line("alice: over the tunnel 5");
    bob.send_line("heard you");
    alice.wait_for_line("bob: heard you");

    // UDP works again: both move back (their probes get challenges), nothing lost.
    proxy.set_faults(Faults::NONE);
    wait_for_path(&mut alice, "udp");
    wait_for_path(&mut bob, "udp");
    let before = proxy.stats.from_clients.load(Ordering::Relaxed);
    for n in 1..=5 {
        alice.send_line(&format!("over udp {n}"));
    }
    bob.wait_for_line("alice: over udp 5");
    assert!(
        proxy.stats.from_clients.load(Ordering::Relaxed) >= before + 5,
        "the messages went over UDP"
    );
    // Settle, then check: every message once, in order, across both switches.
    let _ = bob.lines_within(Duration::from_secs(1));
    let expected: Vec<String> = (1..=5)
        .map(|n| format!("alice: over the tunnel {n}"))
        .chain((1..=5).map(|n| format!("alice: over udp {n}")))
        .collect();
    assert_eq!(chat_lines(&bob.seen, "alice"), expected, "{:?}", bob.seen);
    assert_eq!(chat_lines(&alice.seen, "bob"), ["bob: heard you"]);
}

#[test]
fn with_tcp_the_tunnel_is_used_from_the_start_and_udp_never() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut proxy = LossProxy::new(server.udp, Faults::NONE, 12);
    let (mut alice, mut bob) = through_proxy(&server, &mut proxy, &["--tcp"]);
    alice.send_line("/status");
    alice.wait_for_line("* protocol version 3, path: tunnel (--tcp)");
    alice.send_line("by tcp");
    bob.wait_for_line("alice: by tcp");
    assert_eq!(proxy.stats.from_clients.load(Ordering::Relaxed), 0);
}

#[test]
fn encrypted_members_carry_on_across_a_server_restart_without_joining_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let (tcp, udp) = (server.tcp, server.udp);
    // The clients' info log says when their tunnel comes back (attached, fresh keys).
    let logged = ["--log-level", "chat_client=info"];
    let mut alice = ClientProcess::enter(&server, &logged, "create", "lobby", "alice");
    let mut bob = ClientProcess::enter(&server, &logged, "join", "lobby", "bob");
    alice.send_line("before");
    bob.wait_for_line("alice: before");

    let _ = server.terminate();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    for client in [&mut alice, &mut bob] {
        client.wait_for("the tunnel attached again", |line| {
            line.starts_with("[stderr]") && line.contains("the tunnel is back")
        });
    }
    alice.send_line("after");
    bob.wait_for_line("alice: after");
    bob.send_line("still here");
    alice.wait_for_line("bob: still here");
    for client in [&alice, &bob] {
        let welcomes = client
            .seen
            .iter()
            .filter(|line| line.starts_with("* welcome to lobby"))
            .count();
        assert_eq!(welcomes, 1, "no new join: {:?}", client.seen);
    }
    assert_eq!(
        chat_lines(&bob.seen, "alice"),
        ["alice: before", "alice: after"]
    );
    drop(server);
}

#[test]
fn a_server_without_encryption_is_used_in_plaintext_unless_pinned_or_required() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let (tcp, udp) = (free_port("tcp"), free_port("udp"));
    let _server = PythonProcess::server(&reference, tcp, udp);
    let udp = udp.to_string();

    // Not known: one warning line, and the version-1 fallback goes on as before.
    let mut jo =
        ClientProcess::start_on_port(tcp, &["--udp-port", &udp, "create", "den", "--name", "jo"]);
    jo.wait_for("the warning", |line| {
        line == "[stderr] * the server does not offer encryption; this conversation is not encrypted"
    });
    jo.wait_for("the version-1 notice", |line| {
        line.contains("speaks only version 1")
    });

    // --require-encryption: no fallback.
    let strict = ClientProcess::start_on_port(
        tcp,
        &[
            "--require-encryption",
            "--udp-port",
            &udp,
            "create",
            "strict",
            "--name",
            "kim",
        ],
    );
    let (lines, status) = strict.finish_with_stdin_open();
    assert_eq!(status.code(), Some(5), "{lines:?}");
    assert!(
        lines.join("\n").contains("--require-encryption"),
        "{lines:?}"
    );

    // Pinned before (it offered TLS once): plaintext now is a downgrade, refused.
    let data = tempfile::tempdir().unwrap();
    let pinned = known_servers(data.path());
    std::fs::create_dir_all(pinned.parent().unwrap()).unwrap();
    std::fs::write(
        &pinned,
        format!("127.0.0.1:{tcp} SHA256:{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let downgraded = ClientProcess::start_with_data_dir(
        tcp,
        data.path(),
        &["--udp-port", &udp, "create", "pinned", "--name", "lee"],
    );
    let (lines, status) = downgraded.finish_with_stdin_open();
    assert_eq!(status.code(), Some(5), "{lines:?}");
    let said = lines.join("\n");
    assert!(said.contains("did not offer encryption"), "{said}");
    assert!(said.contains("downgrading"), "{said}");
}

/// Relays one client's TCP connections and UDP datagrams to the server, keeping a copy of
/// every byte either way: what someone on the network would see.
struct Capture {
    tcp_port: u16,
    udp_port: u16,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    udp_datagrams: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Most bytes a capture keeps (the test's chat is a few kilobytes).
const CAPTURE_LIMIT: usize = 4 << 20;

impl Capture {
    fn start(server: &ServerProcess) -> Self {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        use std::thread;

        let stop = Arc::new(AtomicBool::new(false));
        let bytes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let udp_datagrams: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let keep = |store: &Arc<Mutex<Vec<Vec<u8>>>>, chunk: &[u8]| {
            let mut store = store.lock().expect("the capture");
            if store.iter().map(Vec::len).sum::<usize>() < CAPTURE_LIMIT {
                store.push(chunk.to_vec());
            }
        };

        let listener = TcpListener::bind("127.0.0.1:0").expect("the capture");
        listener.set_nonblocking(true).expect("the capture");
        let tcp_port = listener.local_addr().expect("the capture").port();
        let upstream_tcp = server.tcp;
        let (stop_tcp, bytes_tcp) = (Arc::clone(&stop), Arc::clone(&bytes));
        thread::spawn(move || {
            // Bounded: a test opens a handful of connections.
            for _ in 0..10_000 {
                if stop_tcp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).expect("the capture");
                let server = TcpStream::connect(upstream_tcp).expect("the capture");
                for (from, to) in [
                    (
                        client.try_clone().expect("the capture"),
                        server.try_clone().expect("the capture"),
                    ),
                    (server, client),
                ] {
                    let (stop, bytes) = (Arc::clone(&stop_tcp), Arc::clone(&bytes_tcp));
                    thread::spawn(move || copy(from, to, &stop, &bytes, keep));
                }
            }
        });

        let downstream = UdpSocket::bind("127.0.0.1:0").expect("the capture");
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("the capture");
        upstream.connect(server.udp).expect("the capture");
        for socket in [&downstream, &upstream] {
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("the capture");
        }
        let udp_port = downstream.local_addr().expect("the capture").port();
        let client_addr: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        let (down, up) = (
            downstream.try_clone().expect("the capture"),
            upstream.try_clone().expect("the capture"),
        );
        let (stop_up, seen_up, client_up) = (
            Arc::clone(&stop),
            Arc::clone(&udp_datagrams),
            Arc::clone(&client_addr),
        );
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop_up.load(Ordering::Relaxed) {
                if let Ok((len, from)) = down.recv_from(&mut buf) {
                    *client_up.lock().expect("the capture") = Some(from);
                    keep(&seen_up, &buf[..len]);
                    let _ = up.send(&buf[..len]);
                }
            }
        });
        let (stop_down, seen_down) = (Arc::clone(&stop), Arc::clone(&udp_datagrams));
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop_down.load(Ordering::Relaxed) {
                if let Ok(len) = upstream.recv(&mut buf) {
                    keep(&seen_down, &buf[..len]);
                    if let Some(client) = *client_addr.lock().expect("the capture") {
                        let _ = downstream.send_to(&buf[..len], client);
                    }
                }
            }
        });
        Self {
            tcp_port,
            udp_port,
            bytes,
            udp_datagrams,
            stop,
        }
    }

    /// Whether `needle` appears in any captured TCP chunk or datagram, or across two
    /// consecutive TCP chunks.
    fn contains(&self, needle: &[u8]) -> bool {
        let found = |chunks: &[Vec<u8>]| {
            chunks.windows(2).any(|pair| {
                let joined = [pair[0].as_slice(), pair[1].as_slice()].concat();
                joined.windows(needle.len()).any(|w| w == needle)
            }) || chunks
                .iter()
                .any(|chunk| chunk.windows(needle.len()).any(|w| w == needle))
        };
        found(&self.bytes.lock().expect("the capture"))
            || found(&self.udp_datagrams.lock().expect("the capture"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies one direction of a TCP connection, keeping what passes.
fn copy(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    stop: &std::sync::atomic::AtomicBool,
    bytes: &std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    keep: impl Fn(&std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>, &[u8]),
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("the capture");
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(len) => {
                keep(bytes, &buf[..len]);
                if to.write_all(&buf[..len]).is_err() {
                    return;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The token the client saved for its membership (memberships.json in its data directory).
fn saved_token(data_dir: &Path) -> String {
    let text =
        std::fs::read_to_string(data_dir.join("chat-client/memberships.json")).expect("saved");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    // A saved version-3 membership remembers it (its key id), so it is never used in clear.
    assert!(
        saved["memberships"][0]["grant"]["key_id"].is_u64(),
        "{text}"
    );
    saved["memberships"][0]["grant"]["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

#[test]
fn nothing_a_member_says_or_holds_crosses_the_network_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for tcp_flag in [false, true] {
        let capture = Capture::start(&server);
        let data = tempfile::tempdir().unwrap();
        let udp = capture.udp_port.to_string();
        let mut args = vec!["--udp-port", udp.as_str()];
        if tcp_flag {
            args.push("--tcp");
        }
        let room = if tcp_flag { "hideout" } else { "bunker" };
        args.extend(["create", room, "--name", "zelda"]);
        let mut zelda = ClientProcess::start_with_data_dir(capture.tcp_port, data.path(), &args);
        zelda.wait_for("zelda's welcome", |line| {
            line.starts_with(&format!("* welcome to {room}, zelda"))
        });
        let token = saved_token(data.path());
        let mut link = ClientProcess::enter(&server, &[], "join", room, "link");
        zelda.wait_for("link joins", |line| line.contains("link joined"));
        zelda.send_line("the plans are behind the waterfall");
        link.wait_for_line("zelda: the plans are behind the waterfall");
        link.send_line("meet at the windmill");
        zelda.wait_for_line("link: meet at the windmill");
        zelda.send_line("/quit");
        assert!(zelda.wait_exit().success());

        if !tcp_flag {
            let datagrams = capture.udp_datagrams.lock().unwrap().clone();
            assert!(!datagrams.is_empty(), "the chat went over UDP");
            assert!(
                datagrams.iter().all(|d| d.first() == Some(&0xFE)),
                "every datagram either way is sealed"
            );
        }
        for needle in [
            token.as_bytes(),
            b"waterfall".as_slice(),
            b"windmill",
            b"zelda",
            b"link",
            room.as_bytes(),
        ] {
            assert!(
                !capture.contains(needle),
                "{:?} crossed the network in clear (--tcp: {tcp_flag})",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn in_a_terminal_first_contact_shows_the_fingerprint_and_asks() {
    use chat_tests::tmux::{TmuxSession, client_command_exactly, tmux_installed};
    if !tmux_installed() {
        println!("skipped: tmux is not installed, and this test needs a real terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let print = fingerprint_of(&server);
    for (name, answer) in [("nina", "no"), ("omar", "yes")] {
        let data = tempfile::tempdir().unwrap();
        let command = client_command_exactly(
            data.path(),
            server.tcp.port(),
            &["create", name, "--name", name],
        );
        let session = TmuxSession::start(dir.path(), name, 120, 30, &command);
        session.wait_for_screen("the question with the fingerprint", |screen| {
            screen.iter().any(|row| row.contains(&print))
                && screen
                    .iter()
                    .any(|row| row.starts_with("Trust it and continue connecting (yes/no)?"))
        });
        session.run(answer);
        if answer == "no" {
            session.wait_for_screen("the refusal", |screen| {
                screen.iter().any(|row| row.contains("was not trusted"))
            });
            assert!(!known_servers(data.path()).exists());
        } else {
            session.wait_for_screen("the welcome", |screen| {
                screen
                    .iter()
                    .any(|row| row.starts_with(&format!("* welcome to {name}, {name}")))
            });
            assert_eq!(
                std::fs::read_to_string(known_servers(data.path())).unwrap(),
                format!("{} {print}\n", key(&server))
            );
        }
    }
}

#[test]
fn shared_files_travel_inside_tls_pinned_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::enter(&server, &[], "create", "den", "alice");
    let mut bob = ClientProcess::enter(&server, &[], "join", "den", "bob");
    let original = dir.path().join("letter.txt");
    std::fs::write(&original, "dear bob, the cake is a lie").unwrap();
    alice.send_line(&format!("/send {}", original.display()));
    let shared = bob.wait_for("the shared notice", |line| line.contains("/get "));
    let id = shared.rsplit("/get ").next().unwrap().trim().to_owned();
    let saved = dir.path().join("copy.txt");
    bob.send_line(&format!("/get {id} {}", saved.display()));
    bob.wait_for("the download", |line| line.contains("checksum verified"));
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "dear bob, the cake is a lie"
    );
    alice.wait_for("alice's confirmation", |line| {
        line.contains("shared letter.txt")
    });
}

#[test]
fn a_restart_elsewhere_ends_the_conversation_as_the_certificate_says() {
    for same_certificate in [true, false] {
        let first_dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(first_dir.path());
        let (tcp, udp) = (server.tcp, server.udp);
        let old_print = fingerprint_of(&server);
        let mut ana = ClientProcess::enter(&server, &[], "create", "lobby", "ana");
        server.kill9();
        // The same ports, another state file: the membership is unknown there.
        let other_dir = tempfile::tempdir().unwrap();
        if same_certificate {
            for file in ["tls-cert.pem", "tls-key.pem"] {
                std::fs::copy(first_dir.path().join(file), other_dir.path().join(file))
                    .expect("the certificate files beside the state");
            }
        }
        let server = ServerProcess::restart_same_ports(other_dir.path(), tcp, udp, &[]);
        let new_print = fingerprint_of(&server);
        assert_eq!(same_certificate, old_print == new_print);
        if same_certificate {
            // The tunnel attaches again and hears that the room is gone.
            ana.wait_for_line("* this room no longer exists");
            assert_eq!(ana.wait_exit_with_stdin_open().code(), Some(0));
        } else {
            // Another certificate: the client does not reconnect, and says why, loudly.
            let said = ana.wait_for("the changed-certificate warning", |line| {
                line.contains("CERTIFICATE HAS CHANGED")
            });
            assert!(said.starts_with("[stderr]"), "{said}");
            let (lines, status) = ana.finish_with_stdin_open();
            assert_eq!(status.code(), Some(5), "{lines:?}");
            let printed = lines.join("\n");
            assert!(
                printed.contains(&old_print) && printed.contains(&new_print),
                "{printed}"
            );
        }
    }
}
