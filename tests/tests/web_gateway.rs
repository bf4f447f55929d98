//! The HTTP listener end to end: the JSON API, WebSocket members in the same rooms as
//! terminals, reconnection without loss or duplicates, a slow reader cut off without slowing
//! the room, the origin check, health and metrics.

use std::time::Duration;

use chat_tests::{Api, ClientProcess, ServerProcess, WebMember};
use serde_json::json;

fn server(dir: &tempfile::TempDir, extra: &[&str]) -> ServerProcess {
    ServerProcess::start_with(dir.path(), extra)
}

/// Room "den" with a WebSocket member for each name (the first creates it), each registered;
/// also returns their tokens.
fn den_of(server: &ServerProcess, names: &[&str]) -> (Vec<WebMember>, Vec<String>) {
    let api = Api::of(server);
    let http = server.http.expect("the server serves HTTP");
    let mut members = Vec::new();
    let mut tokens = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let token = if index == 0 {
            api.create("den", name)
        } else {
            api.join("den", name)
        };
        let mut member = WebMember::connect(http, "den", &token, None);
        member.wait_for_type("pong");
        members.push(member);
        tokens.push(token);
    }
    (members, tokens)
}

/// A browser-side member, a terminal and an HTTP-only poster chat in one room, and each sees
/// the others' messages exactly once.
#[test]
fn web_and_terminal_members_share_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let api = Api::of(&server);
    let alice = api.create("lobby", "alice");
    let mut web = WebMember::connect(server.http.unwrap(), "lobby", &alice, None);
    web.wait_for_type("members");
    web.wait_for_type("pong");

    let mut bob = ClientProcess::start(&server, &["join", "lobby", "--name", "bob"]);
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to lobby, bob")
    });
    web.wait_for("bob joining", |event| {
        event["t"] == "joined" && event["name"] == "bob"
    });

    let seq = web.say("hello from the browser");
    let ack = web.wait_for_type("ack");
    assert_eq!(ack["seq"], seq);
    bob.wait_for_line("alice: hello from the browser");

    bob.send_line("hello from the terminal");
    web.wait_for("bob's message", |event| {
        event["t"] == "msg" && event["from"] == "bob" && event["text"] == "hello from the terminal"
    });

    // A third member that only uses the HTTP API.
    let carol = api.join("lobby", "carol");
    let posted = api.post(
        "/api/rooms/lobby/messages",
        &json!({"text": "hello over HTTP", "key": 1}),
        Some(&carol),
    );
    assert_eq!(posted.status, 200, "{posted:?}");
    web.wait_for("carol's message", |event| {
        event["t"] == "msg" && event["from"] == "carol"
    });
    bob.wait_for_line("carol: hello over HTTP");

    // Nothing twice: a short while later each message arrived once.
    web.drain(Duration::from_millis(500));
    let texts: Vec<String> = web.messages().into_iter().map(|(_, text)| text).collect();
    for text in ["hello from the terminal", "hello over HTTP"] {
        assert_eq!(
            texts.iter().filter(|seen| *seen == text).count(),
            1,
            "{text} once: {texts:?}"
        );
    }
    assert!(
        !texts.iter().any(|text| text == "hello from the browser"),
        "the sender is not sent its own message back: {texts:?}"
    );
    let lines = bob.lines_within(Duration::from_millis(300));
    assert!(
        !lines
            .iter()
            .any(|line| line == "alice: hello from the browser"),
        "bob saw the browser's message twice: {lines:?}"
    );
}

/// Every route answers what docs/http-api.md says, with the handshake's codes.
#[test]
fn the_json_api_answers_with_the_contract_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let api = Api::of(&server);

    let created = api.post(
        "/api/rooms",
        &json!({"room": "den", "username": "ann"}),
        None,
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["room"], "den");
    assert_eq!(created.body["host"], true);
    let ann = created.body["token"].as_str().unwrap().to_owned();

    let again = api.post(
        "/api/rooms",
        &json!({"room": "den", "username": "ann"}),
        None,
    );
    assert_eq!((again.status, again.code()), (409, "room_exists"));
    let missing = api.post("/api/rooms/nowhere/join", &json!({"username": "x"}), None);
    assert_eq!((missing.status, missing.code()), (404, "room_not_found"));
    let bad_name = api.post("/api/rooms/den/join", &json!({"username": ""}), None);
    assert_eq!(
        (bad_name.status, bad_name.code()),
        (400, "invalid_username")
    );
    let taken = api.post("/api/rooms/den/join", &json!({"username": "ANN"}), None);
    assert_eq!((taken.status, taken.code()), (409, "name_taken"));
    let not_json = api.post_raw("/api/rooms", b"{not json");
    assert_eq!((not_json.status, not_json.code()), (400, "invalid_request"));
    let huge = api.post_raw("/api/rooms", &vec![b' '; 20 * 1024]);
    assert_eq!((huge.status, huge.code()), (413, "payload_too_large"));

    let private = api.post(
        "/api/rooms",
        &json!({"room": "vault", "username": "vic", "password": "s3cret"}),
        None,
    );
    assert_eq!(private.status, 201, "{private:?}");
    let wrong = api.post(
        "/api/rooms/vault/join",
        &json!({"username": "eve", "password": "guess"}),
        None,
    );
    assert_eq!((wrong.status, wrong.code()), (403, "bad_password"));
    let right = api.post(
        "/api/rooms/vault/join",
        &json!({"username": "val", "password": "s3cret"}),
        None,
    );
    assert_eq!(right.status, 200, "{right:?}");

    let list = api.get("/api/rooms", None);
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body["rooms"],
        json!([
            {"name": "den", "members": 1, "private": false},
            {"name": "vault", "members": 2, "private": true}
        ])
    );
    let paged = api.get("/api/rooms?limit=1", None);
    assert_eq!(paged.body["next"], "den", "{paged:?}");

    // With a token.
    let no_token = api.get("/api/rooms/den/members", None);
    assert_eq!((no_token.status, no_token.code()), (401, "unauthorized"));
    let other_room = api.get("/api/rooms/vault/members", Some(&ann));
    assert_eq!((other_room.status, other_room.code()), (403, "wrong_room"));
    let members = api.get("/api/rooms/den/members", Some(&ann));
    assert_eq!(members.body, json!({"names": ["ann"], "host": "ann"}));

    let first = api.post(
        "/api/rooms/den/messages",
        &json!({"text": "one", "key": 1}),
        Some(&ann),
    );
    assert_eq!(first.status, 200, "{first:?}");
    let id = first.body["id"].as_u64().unwrap();
    let retried = api.post(
        "/api/rooms/den/messages",
        &json!({"text": "one", "key": 1}),
        Some(&ann),
    );
    assert_eq!(
        retried.body,
        json!({"id": id, "key": 1}),
        "the same key, the same id"
    );
    let second = api.post(
        "/api/rooms/den/messages",
        &json!({"text": "two", "key": 2}),
        Some(&ann),
    );
    assert_eq!(second.body["id"], id + 1);
    let too_long = api.post(
        "/api/rooms/den/messages",
        &json!({"text": "x".repeat(5000), "key": 3}),
        Some(&ann),
    );
    assert_eq!((too_long.status, too_long.code()), (413, "too_large"));
    let empty = api.post(
        "/api/rooms/den/messages",
        &json!({"text": "", "key": 4}),
        Some(&ann),
    );
    assert_eq!(empty.status, 400, "{empty:?}");

    let page = api.get("/api/rooms/den/messages?limit=10", Some(&ann));
    assert_eq!(page.status, 200, "{page:?}");
    let texts: Vec<&str> = page.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["one", "two"],
        "each message stored once, oldest first"
    );
    assert_eq!(page.body["more"], false);
    let older = api.get(
        &format!("/api/rooms/den/messages?before={}", id + 1),
        Some(&ann),
    );
    assert_eq!(older.body["messages"].as_array().unwrap().len(), 1);

    let left = api.delete("/api/rooms/den/members/me", &ann);
    assert_eq!(left.status, 204, "{left:?}");
    let gone = api.get("/api/rooms/den/members", Some(&ann));
    assert_eq!((gone.status, gone.code()), (404, "no_room"));
    let unknown = api.get("/api/nothing", None);
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
}

/// A member that reconnects with `last_id` gets exactly what it missed; a second connection
/// with the same token takes the member over and the first is told `moved`.
#[test]
fn a_reconnecting_websocket_gets_what_it_missed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &["--flood-rate", "0"]);
    let http = server.http.unwrap();
    let (members, tokens) = den_of(&server, &["ann", "ben"]);
    let [mut writer, reader] = <[WebMember; 2]>::try_from(members).ok().unwrap();
    let mut reader = reader;
    let ben = tokens[1].clone();

    writer.say("before the drop");
    let seen = reader.wait_for("the first message", |event| event["t"] == "msg");
    let last_id = seen["id"].as_u64().unwrap();
    drop(reader);

    for n in 1..=5 {
        writer.say(&format!("missed {n}"));
        writer.wait_for_type("ack");
    }
    let mut back = WebMember::connect(http, "den", &ben, Some(last_id));
    back.wait_for_type("pong");
    back.drain(Duration::from_millis(500));
    let texts: Vec<String> = back.messages().into_iter().map(|(_, text)| text).collect();
    assert_eq!(
        texts,
        ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"],
        "exactly what was missed, in order, once"
    );

    // The same token from another connection: the old one is told and closed.
    let mut taken_over = WebMember::connect(http, "den", &ben, Some(last_id + 5));
    taken_over.wait_for_type("pong");
    back.wait_for_type("moved");
    assert_eq!(back.wait_closed(), Some(1000));
    writer.say("after the move");
    taken_over.wait_for("the new connection's message", |event| {
        event["t"] == "msg" && event["text"] == "after the move"
    });

    // A dead token is told the room is gone.
    let mut stranger = WebMember::connect(http, "den", &"0".repeat(64), None);
    let error = stranger.wait_for_type("error");
    assert_eq!(error["code"], "no_room");
    stranger.wait_closed();
}

/// A WebSocket that stops reading is cut off once its queue fills; the room goes on at full
/// speed and the other members get everything.
#[test]
fn a_websocket_that_stops_reading_is_cut_off_without_slowing_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &["--flood-rate", "0"]);
    let api = Api::of(&server);
    let (members, _) = den_of(&server, &["ann", "ben", "sloth"]);
    let [mut writer, mut reader, mut slow] = <[WebMember; 3]>::try_from(members).ok().unwrap();

    // Enough to fill the slow member's queue and the kernel buffers in between many times.
    let text = "z".repeat(3000);
    let total = 4000;
    // The reader reads all the time, on a thread of its own, so only `slow` falls behind.
    let reading = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let mut received = 0;
        while received < total && std::time::Instant::now() < deadline {
            match reader.next_event(Duration::from_millis(500)) {
                Ok(Some(event)) if event["t"] == "msg" => received += 1,
                Ok(_) => {}
                Err(frame) => panic!("the reader was closed ({frame:?}) after {received}"),
            }
            // Keep only what is needed: the events list would grow by 4,000 large values.
            reader.events.clear();
        }
        received
    });
    for n in 0..total {
        writer.say(&text);
        if n % 50 == 49 {
            // The writer's acks must not pile up either.
            writer.drain(Duration::from_millis(1));
        }
    }
    let received = reading.join().unwrap();
    assert_eq!(received, total, "the reading member got every message");
    let (_, metrics) = api.get_text("/metrics");
    let slow_drops = metrics
        .lines()
        .find(|line| line.starts_with("chat_websocket_messages_dropped_total{reason=\"slow\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(slow_drops >= 1, "the slow member was cut off: {metrics}");
    // What it had queued still arrives, then the close that says why.
    let mut code = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match slow.next_event(Duration::from_millis(500)) {
            Ok(_) => {}
            Err(frame) => {
                code = frame.map(|frame| u16::from(frame.code));
                break;
            }
        }
    }
    assert_eq!(code, Some(1008), "closed as too slow");
}

/// Only the server's own pages (or those named by --allowed-origin) may open a WebSocket.
#[test]
fn websockets_from_other_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &["--allowed-origin", "https://chat.example.org"]);
    let http = server.http.unwrap();
    let refused = WebMember::open(http, Some("http://evil.example.com"));
    assert_eq!(refused.err().map(|refused| refused.status), Some(403));
    assert!(WebMember::open(http, Some(&format!("http://{http}"))).is_ok());
    assert!(WebMember::open(http, Some("https://chat.example.org")).is_ok());
    assert!(
        WebMember::open(http, None).is_ok(),
        "not a browser: no origin"
    );
}

/// Health, readiness and metrics; `--no-http` serves none of it.
#[test]
fn health_readiness_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let api = Api::of(&server);
    assert_eq!(api.get_text("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(api.get_text("/readyz"), (200, "ready\n".to_owned()));
    let (status, page) = api.get_text("/");
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the page is served: {page}");
    // One node: no other node for the page to move to.
    assert_eq!(
        api.get_text("/api/nodes"),
        (200, "{\"nodes\":[]}".to_owned())
    );

    let token = api.create("den", "ann");
    let mut web = WebMember::connect(server.http.unwrap(), "den", &token, None);
    web.wait_for_type("pong");
    web.say("counted");
    web.wait_for_type("ack");
    let (status, metrics) = api.get_text("/metrics");
    assert_eq!(status, 200);
    for expected in [
        "chat_handshakes_total{op=\"create\",result=\"ok\"} 1",
        "chat_members{transport=\"web\"} 1",
        "chat_rooms 1",
        "chat_websocket_messages_received_total 2",
        "chat_history_commit_seconds_count",
    ] {
        assert!(metrics.contains(expected), "{expected} in:\n{metrics}");
    }
    assert!(!metrics.contains("den"), "no per-room labels: {metrics}");

    let quiet_dir = tempfile::tempdir().unwrap();
    let quiet = ServerProcess::start_with(quiet_dir.path(), &["--no-http"]);
    assert_eq!(quiet.http, None);
}
