//! Rooms and tokens across the server's life: restarts, crashes, corrupt state.

use chat_tests::{ServerProcess, UdpMember, create, join};

#[test]
fn kill_9_right_after_a_handshake_keeps_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let host_token = create(server.tcp, "den", "alice").token();
    let guest_token = join(server.tcp, "den", "bob").token();
    let (tcp, udp) = (server.tcp, server.udp);
    // The instant after the reply: no chance to flush anything more.
    server.kill9();

    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &[]);
    let alice = UdpMember::new(server.udp, "den", &host_token);
    let bob = UdpMember::new(server.udp, "den", &guest_token);
    alice.register();
    bob.register();
    bob.send(b"still here");
    alice.expect_chat("bob", "still here");
    // The names survived too.
    assert_eq!(
        join(server.tcp, "den", "Bob").error_code().as_deref(),
        Some("name_taken")
    );
}

#[test]
fn graceful_shutdown_keeps_rooms_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let token = create(server.tcp, "lounge", "host").token();
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");

    let server = ServerProcess::start(dir.path());
    let host = UdpMember::new(server.udp, "lounge", &token);
    host.register();
    assert_eq!(
        create(server.tcp, "lounge", "other")
            .error_code()
            .as_deref(),
        Some("room_exists")
    );
}

#[test]
fn corrupt_state_file_refuses_to_start_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("room_manager.json");
    let garbage = b"{\"format\":1,\"rooms\":[{\"name\":\"x\"";
    std::fs::write(&state, garbage).unwrap();
    let failure = ServerProcess::try_start(dir.path(), &[])
        .err()
        .expect("the server must refuse");
    assert!(
        failure.contains("room_manager.json"),
        "names the file: {failure}"
    );
    assert!(failure.contains("corrupt"), "says what is wrong: {failure}");
    assert_eq!(std::fs::read(&state).unwrap(), garbage);
}

#[test]
fn inconsistent_state_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("room_manager.json");
    let two_hosts = serde_json::json!({"format": 1, "rooms": [{"name": "r", "kind": "public",
        "created_at_ms": 0, "members": [
            {"username": "a", "token": "a".repeat(64), "host": true},
            {"username": "b", "token": "b".repeat(64), "host": true}]}]});
    let text = serde_json::to_vec_pretty(&two_hosts).unwrap();
    std::fs::write(&state, &text).unwrap();
    let failure = ServerProcess::try_start(dir.path(), &[])
        .err()
        .expect("the server must refuse");
    assert!(failure.contains("more than one host"), "{failure}");
    assert_eq!(std::fs::read(&state).unwrap(), text);
}

#[test]
fn the_example_state_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../room_manager.json.example");
    std::fs::copy(&example, dir.path().join("room_manager.json")).unwrap();
    let server = ServerProcess::start(dir.path());
    assert_eq!(
        create(server.tcp, "lobby", "zed").error_code().as_deref(),
        Some("room_exists")
    );
}
