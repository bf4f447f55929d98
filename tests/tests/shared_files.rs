//! Files shared in a room over HTTP: the room is told, members download what was uploaded
//! byte for byte with its checksum, limits answer with clear codes, and the files go when the
//! room goes.

use std::time::{Duration, Instant};

use chat_tests::{Api, ClientProcess, ServerProcess, WebMember};

#[test]
fn a_shared_file_is_announced_and_downloads_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--max-file-size", "100000", "--room-file-quota", "150000"],
    );
    let api = Api::of(&server);
    let ann = api.create("den", "ann");
    let ben = api.join("den", "ben");
    let mut web = WebMember::connect(server.http.unwrap(), "den", &ben, None);
    web.wait_for_type("pong");
    let mut cat = ClientProcess::start(&server, &["join", "den", "--name", "cat"]);
    cat.wait_for("cat's welcome", |line| {
        line.starts_with("* welcome to den, cat")
    });

    let bytes: Vec<u8> = (0..60_000u32).map(|n| (n * 7 % 251) as u8).collect();
    let shared = api.upload("/api/rooms/den/files?name=../notes%20v2.bin", &bytes, &ann);
    assert_eq!(shared.status, 201, "{shared:?}");
    assert_eq!(shared.body["name"], "notes v2.bin", "no path in the name");
    assert_eq!(shared.body["size"], 60_000);
    let id = shared.body["id"].as_str().unwrap().to_owned();
    let sha256 = shared.body["sha256"].as_str().unwrap().to_owned();

    let line = format!("shared notes v2.bin (58.6 KiB): /get {id}");
    let announced = web.wait_for("the announcement", |event| event["t"] == "msg");
    assert_eq!(announced["from"], "ann");
    assert_eq!(announced["text"], line.as_str());
    cat.wait_for_line(&format!("ann: {line}"));

    let listed = api.get("/api/rooms/den/files", Some(&ben));
    assert_eq!(listed.body["files"][0]["id"], id.as_str());
    let (status, downloaded, header) = api.download(&format!("/api/rooms/den/files/{id}"), &ben);
    assert_eq!(status, 200);
    assert_eq!(downloaded, bytes, "byte for byte");
    assert_eq!(header.as_deref(), Some(sha256.as_str()));

    // Limits, each with its code.
    let too_big = api.upload("/api/rooms/den/files?name=big", &vec![1; 100_001], &ann);
    assert_eq!((too_big.status, too_big.code()), (413, "too_large"));
    let over_quota = api.upload("/api/rooms/den/files?name=more", &vec![2; 99_000], &ann);
    assert_eq!((over_quota.status, over_quota.code()), (507, "quota_full"));
    let empty = api.upload("/api/rooms/den/files?name=empty", b"", &ann);
    assert_eq!((empty.status, empty.code()), (400, "invalid_request"));
    let stranger = api.create("elsewhere", "eve");
    let (status, _, _) = api.download(&format!("/api/rooms/den/files/{id}"), &stranger);
    assert_eq!(status, 403, "members of another room cannot read it");
    let (status, _, _) = api.download("/api/rooms/den/files/000000000000", &ben);
    assert_eq!(status, 404);

    // The host leaves, the room closes, its files go.
    let room_dir = dir.path().join("chat-files");
    assert!(std::fs::read_dir(&room_dir).unwrap().count() >= 1);
    assert_eq!(api.delete("/api/rooms/den/members/me", &ann).status, 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<_> = std::fs::read_dir(&room_dir)
            .unwrap()
            .filter_map(Result::ok)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed room's files are still there: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `/send` in one terminal, `/get` in another: the file arrives whole and checked.
#[test]
fn terminals_share_a_file_with_send_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut alice = ClientProcess::start(&server, &["create", "den", "--name", "alice"]);
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to den, alice")
    });
    let mut bob = ClientProcess::start(&server, &["join", "den", "--name", "bob"]);
    bob.wait_for("bob's welcome", |line| {
        line.starts_with("* welcome to den, bob")
    });

    let original = dir.path().join("plan v1.txt");
    let bytes: Vec<u8> = (0..20_000u32).map(|n| (n % 97) as u8 + 32).collect();
    std::fs::write(&original, &bytes).unwrap();
    alice.send_line(&format!("/send {}", original.display()));
    let confirmed = alice.wait_for("the upload's confirmation", |line| {
        line.starts_with("* shared plan v1.txt (20000 bytes) as ")
    });
    let id = confirmed.rsplit(' ').next().unwrap().to_owned();
    bob.wait_for_line(&format!("alice: shared plan v1.txt (19.5 KiB): /get {id}"));

    let saved = dir.path().join("from alice.txt");
    bob.send_line(&format!("/get {id} {}", saved.display()));
    bob.wait_for("the download's confirmation", |line| {
        line.starts_with("* saved plan v1.txt (20000 bytes, checksum verified) to ")
    });
    assert_eq!(std::fs::read(&saved).unwrap(), bytes, "byte for byte");

    // Never over an existing file; an unknown id is said so.
    bob.send_line(&format!("/get {id} {}", saved.display()));
    bob.wait_for("the refusal to overwrite", |line| {
        line.contains("not downloaded") && line.contains("exists")
    });
    bob.send_line("/get 000000000000");
    bob.wait_for("the unknown id", |line| {
        line.contains("there is no file 000000000000 in this room")
    });
}

/// Sharing is said in the room, so it counts against flood control, and a refused share
/// stores nothing.
#[test]
fn shares_beyond_flood_control_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-burst", "1", "--flood-rate", "0.05"]);
    let api = Api::of(&server);
    let ann = api.create("den", "ann");
    let first = api.upload("/api/rooms/den/files?name=a.txt", b"first", &ann);
    assert_eq!(first.status, 201, "{first:?}");
    let second = api.upload("/api/rooms/den/files?name=b.txt", b"second", &ann);
    assert_eq!((second.status, second.code()), (429, "rate_limited"));
    let listed = api.get("/api/rooms/den/files", Some(&ann));
    assert_eq!(
        listed.body["files"].as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
}
