//! Version 3 against the real server: TLS on the control port, sealed datagrams, the tunnel,
//! attach, restarts, and `--require-encryption`. The members are the harness's
//! [`SealedMember`]s, which record every byte they send and receive.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use chat_protocol::v2::{ClientV2, ServerV2};
use chat_tests::sealed::{Capture, tls_connect, tls_exchange};
use chat_tests::{Api, EVENT_TIMEOUT, SealedMember, ServerProcess, V2Member, binary};

/// The value of the metrics sample that starts with `sample` (name and labels), 0 if absent.
fn metric(api: &Api, sample: &str) -> u64 {
    let (_, metrics) = api.get_text("/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The value of one `chat_datagrams_dropped_total{reason=...}` sample.
fn dropped(api: &Api, reason: &str) -> u64 {
    metric(
        api,
        &format!("chat_datagrams_dropped_total{{reason=\"{reason}\"}} "),
    )
}

/// Waits until `dropped(reason)` reaches `at_least`.
fn wait_dropped(api: &Api, reason: &str, at_least: u64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while dropped(api, reason) < at_least {
        assert!(
            Instant::now() < deadline,
            "the server never counted a {reason} datagram"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sealed_members_chat_and_no_name_text_or_token_crosses_the_wire_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = SealedMember::handshake(&server, 1, "vault", "alice-sealed").unwrap();
    alice.register(None);
    let mut bob = SealedMember::joined(&server, "vault", "bob-sealed");
    // A plaintext version-2 member shares the room: encryption is per hop, not end to end.
    let carol = V2Member::joined(&server, "vault", "carol-plain");

    let secret = "the combination is 31-14-15";
    let id = alice.say(1, secret);
    assert_eq!(bob.expect_text(secret), id);
    carol.expect_msg(id);
    bob.say(1, "reply from bob, sealed");
    alice.expect_text("reply from bob, sealed");

    for member in [&alice, &bob] {
        let capture = &member.capture;
        assert!(capture.len() > 1000, "the capture holds the session");
        for needle in [
            secret,
            "reply from bob, sealed",
            "alice-sealed",
            "bob-sealed",
            "vault",
            alice.token.as_str(),
            bob.token.as_str(),
        ] {
            assert!(
                !capture.contains(needle.as_bytes()),
                "{needle:?} appears in {}'s captured bytes",
                member.username
            );
        }
    }
}

#[test]
fn forged_replayed_spoofed_and_plaintext_datagrams_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api = Api::of(&server);
    let mut alice = SealedMember::handshake(&server, 1, "den", "alice").unwrap();
    alice.register(None);
    let mut bob = SealedMember::joined(&server, "den", "bob");

    let first = alice.say(1, "one");
    bob.expect_text("one");
    let sniffed = alice.last_sent.clone();

    // A flipped bit (with a counter not seen yet, so the window lets it through to the
    // tag): the tag fails, nothing happens.
    let mut forged = sniffed.clone();
    forged[5..13].copy_from_slice(&500u64.to_be_bytes());
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    alice.send_raw(&forged);
    wait_dropped(&api, "forged", 1);

    // The same datagram again (a replay, from the member's own address): dropped.
    alice.send_raw(&sniffed);
    wait_dropped(&api, "replayed", 1);

    // Sniffed and sent from another address: still a replay, and the binding stays.
    let attacker = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    attacker.send_to(&sniffed, server.udp).unwrap();
    wait_dropped(&api, "replayed", 2);
    // An unknown key id.
    let mut stranger = sniffed.clone();
    stranger[1..5].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
    attacker.send_to(&stranger, server.udp).unwrap();
    wait_dropped(&api, "unknown_key", 1);
    // The token in plaintext (as if it had leaked some other way): refused for a sealed member.
    let plain = V2Member::new(server.udp, "den", &alice.token);
    plain.send_msg(2, "plaintext with a sealed member's token");
    wait_dropped(&api, "plaintext", 1);
    let mut buf = [0u8; 64];
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "the attacker's address is sent nothing"
    );

    // None of it reached the room, and alice still holds her address.
    let second = alice.say(2, "two");
    assert_eq!(second, first + 1, "nothing else took an id");
    bob.expect_text("two");
}

#[test]
fn the_tunnel_carries_chat_and_udp_takes_over_again_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = SealedMember::handshake(&server, 1, "tunnel", "alice").unwrap();
    // Alice behind a firewall that drops UDP: everything over her TLS connection.
    alice.register_tunnel(None);
    let mut bob = SealedMember::joined(&server, "tunnel", "bob");
    bob.say(1, "over udp to the tunnel");
    alice.expect_text("over udp to the tunnel");
    alice.send_tunnel(&ClientV2::Msg {
        seq: 1,
        text: "through the tunnel".into(),
    });
    let tunnelled = alice.expect_ack(1);
    assert_eq!(bob.expect_text("through the tunnel"), tunnelled);

    // UDP works again: register there (challenge, echo), and carry on without a gap.
    let before_switch = bob.say(2, "sent just before the switch");
    alice.register(Some(tunnelled));
    alice.expect_text("sent just before the switch");
    let after = alice.say(2, "back on udp");
    assert_eq!(after, before_switch + 1);
    bob.expect_text("back on udp");
    // With the tunnel gone, alice still receives over UDP.
    alice.close_tunnel();
    bob.say(3, "after the tunnel closed");
    alice.expect_text("after the tunnel closed");
}

#[test]
fn attach_renews_the_keys_and_the_old_ones_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api = Api::of(&server);
    let mut alice = SealedMember::handshake(&server, 1, "renew", "alice").unwrap();
    alice.register(None);
    let mut bob = SealedMember::joined(&server, "renew", "bob");
    alice.say(1, "with the first keys");
    bob.expect_text("with the first keys");
    let old = alice.last_sent.clone();
    alice.attach(server.tcp).unwrap();
    alice.say(2, "with the new keys");
    bob.expect_text("with the new keys");
    // A datagram under the old keys no longer opens (its counter is new to the new window).
    let mut under_old_keys = old;
    under_old_keys[5..13].copy_from_slice(&1000u64.to_be_bytes());
    alice.send_raw(&under_old_keys);
    wait_dropped(&api, "forged", 1);

    // Attach with a token the server does not know, or over plain TCP: refused.
    let capture = Capture::default();
    let (mut tls, _) = tls_connect(server.tcp, Some(alice.fingerprint), &capture).unwrap();
    let (compliance, _) = tls_exchange(
        &mut tls,
        5,
        "renew",
        format!("{{\"token\":\"{}\"}}", "ab".repeat(32)).as_bytes(),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&compliance.payload).contains("room_not_found"),
        "{}",
        String::from_utf8_lossy(&compliance.payload)
    );
    let plain = chat_tests::handshake(
        server.tcp,
        5,
        "renew",
        format!("{{\"token\":\"{}\"}}", alice.token).as_bytes(),
    );
    assert_eq!(plain.error_code().as_deref(), Some("encryption_required"));
}

#[test]
fn sealed_members_carry_on_across_a_server_restart_without_joining_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = SealedMember::handshake(&server, 1, "lasting", "alice").unwrap();
    alice.register(None);
    let mut bob = SealedMember::joined(&server, "lasting", "bob");
    let first = alice.say(1, "before the restart");
    bob.expect_text("before the restart");
    let fingerprint = alice.fingerprint;
    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    // The same certificate, the same keys: the members just go on (their counters go on,
    // the server's start above its previous boot's, so the members' windows take them).
    let (_, again) = tls_connect(server.tcp, Some(fingerprint), &Capture::default()).unwrap();
    assert_eq!(again, fingerprint, "the certificate survives a restart");
    let second = alice.say(2, "after the restart");
    assert_eq!(second, first + 1);
    bob.expect_text("after the restart");
    bob.say(2, "bob after the restart");
    alice.expect_text("bob after the restart");
}

#[test]
fn require_encryption_refuses_plain_handshakes_datagrams_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // A plaintext member made before the switch, to try plaintext datagrams afterwards.
    let plain_token = chat_tests::create(server.tcp, "strict", "plain").token();
    let (tcp, udp) = (server.tcp, server.udp);
    let http = server.http.expect("http");
    server.terminate();
    let server = ServerProcess::restart_same_ports(
        dir.path(),
        tcp,
        udp,
        &[
            "--require-encryption",
            "--http-port",
            &http.port().to_string(),
        ],
    );
    let refused = chat_tests::join(server.tcp, "strict", "eve");
    assert_eq!(refused.error_code().as_deref(), Some("encryption_required"));
    let mut sealed = SealedMember::joined(&server, "strict", "alice");
    // Plain HTTP is refused; HTTPS on the same port serves.
    let mut plain_http = std::net::TcpStream::connect(http).unwrap();
    plain_http
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    plain_http.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut answer = String::new();
    let _ = plain_http.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let (mut tls, _) = tls_connect(http, Some(sealed.fingerprint), &Capture::default()).unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = Vec::new();
    let _ = tls.read_to_end(&mut metrics);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    // A plaintext datagram, even with a live token, is dropped and counted.
    let plain = V2Member::new(server.udp, "strict", &plain_token);
    plain.send(&ClientV2::Register { last_id: None });
    assert!(
        plain
            .next_event_within(Duration::from_millis(500))
            .is_none(),
        "a plaintext register is not answered"
    );
    assert!(
        metrics.contains("chat_datagrams_dropped_total{reason=\"plaintext\"}"),
        "{metrics}"
    );
    sealed.say(1, "still fine sealed");
}

#[test]
fn the_fingerprint_command_prints_what_the_server_presents() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let (_, seen) = tls_connect(server.tcp, None, &Capture::default()).unwrap();
    let output = std::process::Command::new(binary("chat-server"))
        .arg("--state")
        .arg(&server.state)
        .arg("fingerprint")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        seen.to_string()
    );
    assert!(
        server.log().contains(&seen.to_string()),
        "the server logs it"
    );
    let mut alice = SealedMember::handshake(&server, 1, "pinned", "alice").unwrap();
    let _ = alice.next_event_within(Duration::from_millis(10));
    assert_eq!(alice.fingerprint, seen);
    // A client pinning another fingerprint is refused by its own check.
    let other: chat_protocol::fingerprint::Fingerprint =
        format!("SHA256:{}", "00".repeat(32)).parse().unwrap();
    assert!(tls_connect(server.tcp, Some(other), &Capture::default()).is_err());
    let _ = ServerV2::Pong { id: 0 };
}

/// A tunnel whose client stops reading is cut off once its queue (256 frames) is full, and the
/// room goes on without waiting for it: the bound on what one tunnel can make the server hold.
#[test]
fn a_tunnel_that_stops_reading_is_cut_off_without_slowing_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let api = Api::of(&server);
    let mut writer = SealedMember::handshake(&server, 1, "flood", "writer").unwrap();
    writer.register(None);
    let mut slow = SealedMember::handshake(&server, 2, "flood", "sloth").unwrap();
    slow.register_tunnel(None);
    let mut reader = SealedMember::joined(&server, "flood", "reader");
    // Enough to fill the tunnel's queue and the kernel buffers in between many times over.
    let text = "z".repeat(3000);
    for seq in 1..=6000u64 {
        writer.send(&ClientV2::Msg {
            seq,
            text: text.clone(),
        });
        if seq % 100 == 0 {
            // Paced a little, so that the server's own receive buffer is not what overflows.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(
        &api,
        "chat_tunnels_closed_by_server_total{reason=\"slow\"} ",
    ) == 0
    {
        assert!(
            Instant::now() < deadline,
            "the tunnel that stopped reading was never cut off"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The room goes on: a message after the flood reaches a member who reads.
    writer.send(&ClientV2::Msg {
        seq: 6001,
        text: "after the flood".into(),
    });
    reader.expect_text("after the flood");
}
