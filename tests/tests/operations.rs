//! Running the server as an administrator does: settings from a file, the environment and
//! flags; refusals at start; systemd readiness and the unit file; completions and manual
//! pages; backup while people chat, restore on a fresh server, export of a room.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2};
use chat_tests::{EVENT_TIMEOUT, ServerProcess, V2Member, binary, create, join, wait_with_timeout};

/// Runs a binary to completion (bounded by [`EVENT_TIMEOUT`]) with a clean environment.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Outputs here are small (a man page is the largest), far below a pipe's buffer... except
    // that one; read them on threads so that no child blocks on a full pipe.
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_with_timeout(&mut child, EVENT_TIMEOUT).expect("the command finishes");
    Output {
        status,
        stdout: out.join().expect("stdout reader").into_bytes(),
        stderr: err.join().expect("stderr reader").into_bytes(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server started directly (not through the harness, which passes its own flags), killed
/// when dropped.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary("chat-server"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chat-server");
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self { child, lines }
    }

    /// The addresses of the `chat-server listening` line, or everything printed until the
    /// process ended or [`EVENT_TIMEOUT`] passed.
    fn listening(&mut self) -> Result<(SocketAddr, SocketAddr), String> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut printed = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Some(rest) = line.strip_prefix("chat-server listening ") {
                let addr = |key: &str| -> SocketAddr {
                    rest.split_whitespace()
                        .find_map(|part| part.strip_prefix(key))
                        .and_then(|addr| addr.parse().ok())
                        .expect("an address in the listening line")
                };
                return Ok((addr("tcp="), addr("udp=")));
            }
            printed.push(line);
        }
        Err(printed.join("\n"))
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = wait_with_timeout(&mut self.child, EVENT_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after SIGTERM: {status:?}"
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    // Ports held for the whole test: a server that used them would fail to start.
    let file_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let env_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let file_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let env_udp = free_udp_port();
    let config = dir.path().join("chat-server.toml");
    std::fs::write(
        &config,
        format!(
            "# the file gives the address (over the default 0.0.0.0) and both ports\n\
             bind = \"127.0.0.1\"\ntcp-port = {}\nudp-port = {}\nhttp-port = 0\nstate = \"{}\"\n\
             history = \"{}\"\nflood-rate = 2.5\n",
            file_tcp.local_addr().unwrap().port(),
            file_udp.local_addr().unwrap().port(),
            dir.path().join("state.json").display(),
            dir.path().join("history.sqlite3").display(),
        ),
    )
    .unwrap();
    let env_tcp_port = env_tcp.local_addr().unwrap().port().to_string();
    let env_udp_port = env_udp.to_string();
    let mut server = Daemon::spawn(
        &["--config", config.to_str().unwrap(), "--tcp-port", "0"],
        &[
            ("CHAT_SERVER_TCP_PORT", &env_tcp_port),
            ("CHAT_SERVER_UDP_PORT", &env_udp_port),
        ],
    );
    let (tcp, udp) = server.listening().expect("the server starts");
    // bind: from the file; TCP: the flag's 0 over the environment's and the file's ports;
    // UDP: the environment's over the file's.
    assert_eq!(tcp.ip().to_string(), "127.0.0.1");
    assert_ne!(tcp.port(), env_tcp.local_addr().unwrap().port());
    assert_ne!(tcp.port(), file_tcp.local_addr().unwrap().port());
    assert_eq!(udp.port(), env_udp);
    // The file's state path is used: a room created now is in it after shutdown.
    create(tcp, "lobby", "alice").token();
    server.terminate();
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(state.contains("\"lobby\""), "{state}");
}

#[test]
fn a_bad_configuration_file_is_refused_at_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "bind = \"127.0.0.1\"\n\ntcp-port = \"nine\"\n").unwrap();
    let config = config.to_str().unwrap();
    let started = run("chat-server", &["--config", config], &[]);
    assert_eq!(started.status.code(), Some(2));
    let said = text(&started.stderr);
    assert!(
        said.contains(&format!("{config} line 3: \"tcp-port\" cannot be \"nine\"")),
        "{said}"
    );
    assert!(!text(&started.stdout).contains("listening"));

    let checked = run("chat-server", &["check-config", config], &[]);
    assert_eq!(checked.status.code(), Some(2));
    assert_eq!(text(&checked.stderr), said);

    std::fs::write(
        dir.path().join("bad.toml"),
        "tcp-port = 9\nflood-rate = 0\n",
    )
    .unwrap();
    let checked = run("chat-server", &["check-config", config], &[]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(text(&checked.stdout).contains("valid, 2 settings"));

    // A configuration file that does not exist is refused too, not silently skipped.
    let missing = run(
        "chat-server",
        &[
            "--config",
            &dir.path().join("none.toml").display().to_string(),
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("none.toml"));
}

#[test]
fn the_example_configuration_file_is_valid_and_names_every_flag() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chat-server.toml.example");
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/chat-server.toml");
    for file in [&example, &packaged] {
        let checked = run(
            "chat-server",
            &["check-config", file.to_str().unwrap()],
            &[],
        );
        assert!(checked.status.success(), "{}", text(&checked.stderr));
    }
    let written = std::fs::read_to_string(&example).unwrap();
    let help = text(&run("chat-server", &["--help"], &[]).stdout);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|rest| rest.split([' ', ',']).next())
        .filter(|flag| !["help", "version", "config"].contains(flag))
        .collect();
    assert!(flags.len() >= 15, "{help}");
    for flag in flags {
        assert!(
            written.contains(&format!("\n# {flag} = "))
                || written.contains(&format!("\n{flag} = ")),
            "chat-server.toml.example does not document --{flag}"
        );
    }
}

/// One sentence, no listening line, a non-zero exit.
fn assert_refuses_to_start(args: &[&str], expected: &str) {
    let started = run("chat-server", args, &[]);
    let said = text(&started.stderr);
    assert!(!started.status.success(), "started with {args:?}: {said}");
    assert!(!text(&started.stdout).contains("listening"), "{args:?}");
    assert_eq!(said.trim_end().lines().count(), 1, "one line: {said}");
    assert!(said.contains(expected), "{said}");
}

#[test]
fn an_unwritable_state_path_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing_directory = dir.path().join("no-such-dir/room_manager.json");
    let history = dir.path().join("history.sqlite3");
    let base = [
        "--bind",
        "127.0.0.1",
        "--tcp-port",
        "0",
        "--udp-port",
        "0",
        "--http-port",
        "0",
        "--history",
        history.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["--state", missing_directory.to_str().unwrap()]);
    assert_refuses_to_start(&args, "cannot write the state file");

    // A read-only directory; root writes there anyway, so only checked for other users.
    let is_root = text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    if !is_root {
        let read_only = dir.path().join("read-only");
        std::fs::create_dir(&read_only).unwrap();
        let state = read_only.join("room_manager.json");
        Command::new("chmod")
            .args(["500", read_only.to_str().unwrap()])
            .status()
            .unwrap();
        let mut args = base.to_vec();
        args.extend(["--state", state.to_str().unwrap()]);
        assert_refuses_to_start(&args, "cannot write the state file");
        Command::new("chmod")
            .args(["700", read_only.to_str().unwrap()])
            .status()
            .unwrap();
    }
}

#[test]
fn an_unknown_log_level_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let history = dir.path().join("history.sqlite3");
    let args = [
        "--bind",
        "127.0.0.1",
        "--tcp-port",
        "0",
        "--udp-port",
        "0",
        "--http-port",
        "0",
        "--state",
        state.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
        "--log-level",
        "loud",
    ];
    let started = run("chat-server", &args, &[]);
    assert_eq!(started.status.code(), Some(2));
    assert!(
        text(&started.stderr).contains("\"loud\" is not a log level"),
        "{}",
        text(&started.stderr)
    );
    assert!(!text(&started.stdout).contains("listening"));
}

#[test]
fn the_version_names_the_commit() {
    for name in ["chat-server", "chat-client"] {
        let version = run(name, &["--version"], &[]);
        assert!(version.status.success());
        let said = text(&version.stdout);
        assert!(said.starts_with(&format!("{name} 0.")), "{said}");
        assert!(said.contains("(commit "), "{said}");
    }
}

#[test]
fn completions_and_manual_pages_are_generated_for_both_binaries() {
    for (name, command) in [("chat-server", "backup"), ("chat-client", "join")] {
        for shell in ["bash", "zsh", "fish"] {
            let script = run(name, &["completions", shell], &[]);
            assert!(script.status.success(), "{name} completions {shell}");
            let script = text(&script.stdout);
            assert!(
                script.contains(name) && script.contains(command),
                "{name} {shell}"
            );
        }
        let page = run(name, &["man"], &[]);
        assert!(page.status.success(), "{name} man");
        let page = text(&page.stdout);
        assert!(page.contains(&format!(".TH {name} 1")), "{page}");
        assert!(page.contains(command), "{page}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/chat-server.service");
    let written = std::fs::read_to_string(&unit).unwrap();
    for setting in [
        "Type=notify",
        "StateDirectory=chat-server",
        "User=chat-server",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
    ] {
        assert!(written.contains(setting), "the unit lacks {setting}");
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit file is not verified");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("chat-server.service");
    std::fs::write(
        &copy,
        written.replace(
            "/usr/local/bin/chat-server",
            binary("chat-server").to_str().unwrap(),
        ),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .args(["verify", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&verified.stderr);
    assert!(verified.status.success(), "{said}");
    assert!(
        !said.contains("chat-server.service"),
        "systemd-analyze has something to say about the unit:\n{said}"
    );
}

#[test]
fn systemd_is_told_ready_after_the_sockets_are_bound_and_stopping_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let state = dir.path().join("state.json");
    let history = dir.path().join("history.sqlite3");
    let mut server = Daemon::spawn(
        &[
            "--bind",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--udp-port",
            "0",
            "--http-port",
            "0",
            "--state",
            state.to_str().unwrap(),
            "--history",
            history.to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let mut message = [0; 256];
    let length = notify
        .recv(&mut message)
        .expect("a notification within the timeout");
    assert_eq!(text(&message[..length]), "READY=1\n");
    // Ready means serving: a handshake succeeds straight away.
    let (tcp, _) = server.listening().expect("the listening line");
    create(tcp, "lobby", "alice").token();
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let length = notify
        .recv(&mut message)
        .expect("a notification at shutdown");
    assert_eq!(text(&message[..length]), "STOPPING=1\n");
    assert!(wait_with_timeout(&mut server.child, EVENT_TIMEOUT).is_some_and(|s| s.success()));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--log-format", "json"]);
    create(server.tcp, "lobby", "alice").token();
    server.terminate();
    let logs = std::fs::read_to_string(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with("server-"))
            .expect("the server's log")
            .path(),
    )
    .unwrap();
    let mut lines = 0;
    for line in logs.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 2, "{logs}");
}

/// The paths `--state` and `--history` of a server started by the harness in `dir`.
fn files_of(dir: &Path) -> [String; 4] {
    [
        "--state".into(),
        dir.join("room_manager.json").display().to_string(),
        "--history".into(),
        dir.join("chat-history.sqlite3").display().to_string(),
    ]
}

fn admin(dir: &Path, command: &[&str]) -> Output {
    let files = files_of(dir);
    let mut args: Vec<&str> = command.to_vec();
    args.extend(files.iter().map(String::as_str));
    run("chat-server", &args, &[])
}

/// Whether the server knows this token: it confirms a registration with the member list (it
/// ignores unknown tokens). Retried as a client would, in case a datagram is lost.
fn registers(server: &ServerProcess, room: &str, token: &str) -> bool {
    let member = V2Member::new(server.udp, room, token);
    (0..3).any(|_| {
        member.send(&ClientV2::Register { last_id: None });
        let deadline = Instant::now() + EVENT_TIMEOUT / 3;
        while let Some(event) =
            member.next_event_within(deadline.saturating_duration_since(Instant::now()))
        {
            match event {
                ServerV2::Members { .. } => return true,
                // A new address proves it receives there before it is bound.
                ServerV2::Challenge { nonce } => member.send(&ClientV2::Echo { nonce }),
                _ => {}
            }
        }
        false
    })
}

/// What the chatting and joining threads saw acknowledged, and whether before the backup.
#[derive(Default)]
struct Acknowledged {
    messages: Vec<(ChatMessage, bool)>,
    tokens: Vec<(String, String, bool)>,
}

#[test]
fn a_backup_during_live_chat_restores_every_acked_message_and_answered_token() {
    let live = tempfile::tempdir().unwrap();
    // One address makes every handshake and message here: no per-address limits.
    let server = ServerProcess::start_with(
        live.path(),
        &[
            "--handshakes-per-ip",
            "0",
            "--rooms-per-ip",
            "0",
            "--flood-rate",
            "0",
        ],
    );
    let host_token = create(server.tcp, "lobby", "alice").token();
    let seen = Arc::new(Mutex::new(Acknowledged::default()));
    let backup_started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let chatter = {
        let (seen, started, stop) = (seen.clone(), backup_started.clone(), stop.clone());
        let (udp, token) = (server.udp, host_token.clone());
        thread::spawn(move || {
            let alice = V2Member::new(udp, "lobby", &token);
            alice.register(None);
            for seq in 1..=2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let text = format!("message {seq}");
                let id = alice.say(seq, &text);
                // Read after the ack: true means acked before the backup started.
                let before = !started.load(Ordering::SeqCst);
                let message = ChatMessage {
                    id,
                    from: "alice".into(),
                    text,
                    ts: 0,
                    me: false,
                    to: None,
                };
                seen.lock().unwrap().messages.push((message, before));
            }
        })
    };
    let joiner = {
        let (seen, started, stop) = (seen.clone(), backup_started.clone(), stop.clone());
        let tcp = server.tcp;
        thread::spawn(move || {
            for n in 1..=200 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (room, name) = if n % 2 == 0 {
                    (format!("room-{n}"), format!("host-{n}"))
                } else {
                    ("lobby".to_owned(), format!("guest-{n}"))
                };
                let grant = if n % 2 == 0 {
                    create(tcp, &room, &name)
                } else {
                    join(tcp, &room, &name)
                };
                let token = grant.token();
                let before = !started.load(Ordering::SeqCst);
                seen.lock().unwrap().tokens.push((room, token, before));
                // Spread over the backup rather than all before it.
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let wait_until = |enough: &dyn Fn(&Acknowledged) -> bool| {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while !enough(&seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "the chat did not get going");
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_until(&|seen| seen.messages.len() >= 30 && seen.tokens.len() >= 10);

    let backup_dir = tempfile::tempdir().unwrap();
    let target = backup_dir.path().join("backup");
    backup_started.store(true, Ordering::SeqCst);
    let backed_up = admin(live.path(), &["backup", target.to_str().unwrap()]);
    assert!(backed_up.status.success(), "{}", text(&backed_up.stderr));
    assert!(text(&backed_up.stdout).starts_with("backed up "));
    // Chat carried on during the backup and after it.
    let after = seen.lock().unwrap().messages.len() + 10;
    wait_until(&|seen| seen.messages.len() >= after);
    stop.store(true, Ordering::SeqCst);
    chatter.join().unwrap();
    joiner.join().unwrap();
    server.terminate();

    let fresh = tempfile::tempdir().unwrap();
    let restored = admin(fresh.path(), &["restore", target.to_str().unwrap()]);
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    // A second restore would overwrite what is there: refused without --force.
    let again = admin(fresh.path(), &["restore", target.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );

    // Flood control off, as on the live server: paging back through hundreds of messages is
    // more than the default budget of history requests.
    let server = ServerProcess::start_with(fresh.path(), &["--flood-rate", "0"]);
    let seen = seen.lock().unwrap();
    let alice = V2Member::new(server.udp, "lobby", &host_token);
    alice.register(None);
    let history: BTreeMap<u64, String> = alice
        .whole_history(50)
        .into_iter()
        .map(|message| (message.id, message.text))
        .collect();
    let mut checked = 0;
    for (message, before) in &seen.messages {
        if *before {
            assert_eq!(
                history.get(&message.id),
                Some(&message.text),
                "acked message {} is missing after the restore",
                message.id
            );
            checked += 1;
        }
    }
    assert!(checked >= 30);
    let mut tokens = 0;
    for (room, token, before) in &seen.tokens {
        if *before {
            assert!(
                registers(&server, room, token),
                "the token answered for {room} is not restored"
            );
            tokens += 1;
        }
    }
    assert!(tokens >= 10);
}

#[test]
fn an_export_marks_actions_and_direct_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let token = create(server.tcp, "den", "dana").token();
    let dana = V2Member::new(server.udp, "den", &token);
    dana.register(None);
    let erin = V2Member::joined(&server, "den", "erin");
    dana.say(1, "hello");
    let acked = |seq: u64| move |event: &ServerV2| matches!(event, ServerV2::Ack { seq: acked, .. } if *acked == seq);
    dana.send(&ClientV2::Me {
        seq: 2,
        text: "waves".into(),
    });
    dana.expect("the action's ack", acked(2));
    dana.send(&ClientV2::Dm {
        seq: 3,
        to: "erin".into(),
        text: "psst".into(),
    });
    dana.expect("the direct message's ack", acked(3));
    erin.expect(
        "the direct message",
        |event| matches!(event, ServerV2::Msg(message) if message.text == "psst"),
    );

    let exported = admin(dir.path(), &["export", "den"]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let lines: Vec<String> = text(&exported.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].ends_with(" <dana> hello"), "{lines:?}");
    assert!(lines[1].ends_with(" * dana waves"), "{lines:?}");
    assert!(lines[2].ends_with(" <dana> (to erin) psst"), "{lines:?}");

    let exported = admin(dir.path(), &["export", "den", "--format", "jsonl"]);
    let lines: Vec<ChatMessage> = text(&exported.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON message per line"))
        .collect();
    assert!(lines[1].me && lines[1].to.is_none(), "{lines:?}");
    assert_eq!(lines[2].to.as_deref(), Some("erin"), "{lines:?}");
}

#[test]
fn an_export_of_a_room_matches_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let token = create(server.tcp, "book club", "dana").token();
    let dana = V2Member::new(server.udp, "book club", &token);
    dana.register(None);
    let texts = ["first", "tab\there", "snow ☃", "a\\b", "last"];
    for (seq, text) in texts.iter().enumerate() {
        dana.say(seq as u64 + 1, text);
    }
    let history = dana.whole_history(50);
    assert_eq!(history.len(), texts.len());

    let exported = admin(dir.path(), &["export", "book club", "--format", "jsonl"]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let lines: Vec<ChatMessage> = text(&exported.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON message per line"))
        .collect();
    assert_eq!(lines, history);

    let exported = admin(dir.path(), &["export", "book club"]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let lines: Vec<String> = text(&exported.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), history.len());
    for (line, message) in lines.iter().zip(&history) {
        let shown = message.text.replace('\\', "\\\\").replace('\t', "\\t");
        assert!(line.ends_with(&format!(" <dana> {shown}")), "{line}");
    }

    let unknown = admin(dir.path(), &["export", "no\u{1b}room"]);
    assert_eq!(unknown.status.code(), Some(1));
    let said = text(&unknown.stderr);
    assert!(
        said.contains("there is no room named \"no\\u{1b}room\""),
        "{said}"
    );
}

#[test]
fn the_client_takes_its_defaults_from_its_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    create(server.tcp, "lobby", "alice").token();
    let config_home = dir.path().join("config");
    std::fs::create_dir_all(config_home.join("chat-client")).unwrap();
    let config = config_home.join("chat-client/config.toml");
    std::fs::write(
        &config,
        // No data directory (the environment is cleared), so no known_servers to consult:
        // the file says to trust the server met first.
        format!(
            "server = \"127.0.0.1\"\ntcp-port = {}\ntrust-new-server = true\n",
            server.tcp.port()
        ),
    )
    .unwrap();
    let home = [("XDG_CONFIG_HOME", config_home.to_str().unwrap())];
    let listed = run("chat-client", &["rooms"], &home);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("lobby"),
        "{}",
        text(&listed.stdout)
    );

    std::fs::write(&config, "server = \"127.0.0.1\"\nport = 9090\n").unwrap();
    let refused = run("chat-client", &["rooms"], &home);
    assert_eq!(refused.status.code(), Some(2));
    let said = text(&refused.stderr);
    assert!(
        said.contains(&format!(
            "{} line 2: unknown key \"port\"",
            config.display()
        )),
        "{said}"
    );
}

/// Waits until the server's log has a line with every one of `parts`; returns that line.
fn log_line(server: &ServerProcess, parts: &[&str]) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|line| parts.iter().all(|part| line.contains(part)))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}; the log:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refusals_leaves_and_timeouts_are_logged_at_info_with_escaped_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--idle-timeout", "1"]);
    create(server.tcp, "lobby", "alice").token();
    let refused = join(server.tcp, "lobby", "eve\u{1b}[2J");
    assert!(refused.error_code().is_some());
    let line = log_line(&server, &["handshake refused", "room=\"lobby\""]);
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("user=\"eve\\u{1b}[2J\""), "{line}");
    assert!(!line.contains('\u{1b}'), "{line}");
    let refused = join(server.tcp, "no\nsuch room", "bob");
    assert!(refused.error_code().is_some());
    let line = log_line(&server, &["handshake refused", "user=\"bob\""]);
    assert!(line.contains("room=\"no\\nsuch room\""), "{line}");

    let bob = V2Member::new(
        server.udp,
        "lobby",
        &join(server.tcp, "lobby", "bob").token(),
    );
    bob.register(None);
    bob.send(&ClientV2::Leave);
    let line = log_line(&server, &["member left", "user=\"bob\""]);
    assert!(
        line.contains(" INFO ") && line.contains("reason=Leave"),
        "{line}"
    );

    // Silent past the idle timeout: carol times out while dave, the host, pings; then dave
    // goes silent and his room closes.
    let dave = create(server.tcp, "quiet", "dave").token();
    let dave = V2Member::new(server.udp, "quiet", &dave);
    dave.register(None);
    let carol = V2Member::new(
        server.udp,
        "quiet",
        &join(server.tcp, "quiet", "carol").token(),
    );
    carol.register(None);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !server.log().contains("user=\"carol\" reason=Timeout") && Instant::now() < deadline {
        dave.send(&ClientV2::Ping { last_id: None });
        thread::sleep(Duration::from_millis(200));
    }
    let line = log_line(&server, &["member left", "user=\"carol\""]);
    assert!(
        line.contains(" INFO ") && line.contains("reason=Timeout"),
        "{line}"
    );
    let line = log_line(&server, &["room closed", "room=\"quiet\""]);
    assert!(
        line.contains(" INFO ") && line.contains("reason=HostTimeout"),
        "{line}"
    );
}
