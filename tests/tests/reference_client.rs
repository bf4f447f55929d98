//! The reference Python client's conversation, byte for byte: JSON-string username, JSON
//! replies, `__REGISTER__`, `[len][name][text]` relay, `__LEAVE__`, bare `__ROOM_CLOSED__`.

use chat_tests::{ServerProcess, UdpMember, join, raw_exchange, v1_frame};
use std::time::Duration;

#[test]
fn reference_conversation_is_byte_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Exactly the bytes the reference client writes for `create lobby alice`.
    let mut request = vec![5u8, 1, 0];
    request.extend_from_slice(&[0u8; 28]);
    request.push(7);
    request.extend_from_slice(b"lobby\"alice\"");
    let reply = raw_exchange(server.tcp, &request);
    // First frame: header, echoed room, then JSON {"success":1}.
    assert_eq!(&reply[..3], &[5, 1, 1]);
    let size = usize::from(reply[31]);
    assert!(reply[3..31].iter().all(|&b| b == 0));
    assert_eq!(&reply[32..37], b"lobby");
    let compliance: serde_json::Value = serde_json::from_slice(&reply[37..37 + size]).unwrap();
    assert_eq!(compliance, serde_json::json!({"success": 1}));
    let rest = &reply[37 + size..];
    assert_eq!(&rest[..3], &[5, 1, 2]);
    let grant: serde_json::Value = serde_json::from_slice(&rest[37..]).unwrap();
    let alice_token = grant["token"].as_str().unwrap().to_owned();
    assert_eq!(alice_token.len(), 64);
    assert!(
        alice_token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(grant["host"], true);
    assert_eq!(grant["udp_port"], server.udp.port());

    let bob_token = join(server.tcp, "lobby", "bob").token();
    let alice = UdpMember::new(server.udp, "lobby", &alice_token);
    let bob = UdpMember::new(server.udp, "lobby", &bob_token);
    alice.register();
    bob.register();
    alice.expect_chat("*", "bob joined");

    alice.send("hello from alice".as_bytes());
    bob.expect_chat("alice", "hello from alice");
    bob.send("ça va? 👋".as_bytes());
    alice.expect_chat("bob", "ça va? 👋");

    // A non-host leaves: the host is told, with a `*` notice.
    let carol_token = join(server.tcp, "lobby", "carol").token();
    let carol = UdpMember::new(server.udp, "lobby", &carol_token);
    carol.register();
    carol.send(b"__LEAVE__");
    alice.expect_chat("*", "carol left");

    // The host leaves: everyone else gets the bare bytes, and the room is gone.
    alice.send(b"__LEAVE__");
    let closed = bob.recv_matching(|d| d == b"__ROOM_CLOSED__");
    assert_eq!(closed.as_deref(), Some(&b"__ROOM_CLOSED__"[..]));
    assert_eq!(
        join(server.tcp, "lobby", "dave").error_code().as_deref(),
        Some("room_not_found")
    );
    // Its tokens died with it.
    bob.send(b"anyone?");
    assert!(alice.drain(Duration::from_millis(300)).is_empty());
    assert_ne!(v1_frame("a", "b"), b"__ROOM_CLOSED__".to_vec());
}
