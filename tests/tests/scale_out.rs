//! Scale-out (issue 12): several `chat-server` nodes sharing rooms through one Redis, which
//! each test starts itself (`scripts/install-redis.sh` installs `redis-server`). Members are
//! raw version-2 members or real clients spread over the nodes; the tests wait for events with
//! generous timeouts and check what each member saw: every message once, in id order.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chat_protocol::v2::ServerV2;
use chat_tests::redis::wait_for_nodes;
use chat_tests::{
    ClientProcess, EVENT_TIMEOUT, RedisProcess, ServerProcess, V2Member, WebMember, create, join,
    try_handshake,
};

/// Collects `msg` events until every id in `wanted` has arrived (or the deadline passes);
/// returns the ids in the order they came, duplicates included.
fn collect_ids(member: &V2Member, wanted: &BTreeSet<u64>) -> Vec<u64> {
    let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
    let mut seen = Vec::new();
    while Instant::now() < deadline && !wanted.iter().all(|id| seen.contains(id)) {
        if let Some(ServerV2::Msg(message)) = member.next_event_within(Duration::from_millis(200)) {
            seen.push(message.id);
        }
    }
    // Anything more would be a duplicate: give it a moment to show.
    while let Some(event) = member.next_event_within(Duration::from_millis(300)) {
        if let ServerV2::Msg(message) = event {
            seen.push(message.id);
        }
    }
    seen
}

#[test]
fn three_nodes_one_room_every_member_sees_every_message_once_in_id_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let nodes: Vec<ServerProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| redis.node(dir.path(), name, &[]))
        .collect();
    // Six members, two per node; the room is created on the first node.
    let names = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let mut members = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let server = &nodes[index % 3];
        let replies = if index == 0 {
            create(server.tcp, "lobby", name)
        } else {
            join(server.tcp, "lobby", name)
        };
        let token = replies.token();
        assert_eq!(token.len(), 64, "{name} joins through node {}", index % 3);
        let member = V2Member::new(server.udp, "lobby", &token);
        member.register(None);
        members.push(member);
    }
    // No pause: a node that subscribes to the room's channel after the first messages were
    // published fills them in from the room's stream.
    let mut own: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); members.len()];
    let rounds = 8;
    let mut all = BTreeSet::new();
    for round in 0..rounds {
        for (index, member) in members.iter().enumerate() {
            let id = member.say(round + 1, &format!("{} says {round}", names[index]));
            assert!(all.insert(id), "id {id} was handed out twice");
            own[index].insert(id);
        }
    }
    let expected: BTreeSet<u64> = (1..=rounds * members.len() as u64).collect();
    assert_eq!(all, expected, "ids are 1..=N across the nodes, with no gap");
    for (index, member) in members.iter().enumerate() {
        let wanted: BTreeSet<u64> = all.difference(&own[index]).copied().collect();
        let seen = collect_ids(member, &wanted);
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            unique, wanted,
            "{} sees every other member's message",
            names[index]
        );
        assert_eq!(
            seen.len(),
            unique.len(),
            "{} sees each once: {seen:?}",
            names[index]
        );
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "{} sees them in id order: {seen:?}",
            names[index]
        );
    }
}

#[test]
fn a_name_and_a_room_are_one_across_nodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &[]);
    let b = redis.node(dir.path(), "b", &[]);
    assert_eq!(create(a.tcp, "Lobby", "ann").token().len(), 64);
    // The other node knows the room once the change reached it. Before that, its own create
    // of the same name is refused when Redis commits it (server_busy: the other node's room
    // stands); never granted.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let replies = create(b.tcp, "LOBBY", "bob");
        match replies.error_code().as_deref() {
            Some("room_exists") => break,
            Some("server_busy") => {}
            other => panic!("node b answered a second LOBBY with {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "node b never learned of the room"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A withdrawn create took nothing of the first room with it, on either node.
    assert_eq!(join(a.tcp, "lobby", "cid").token().len(), 64);
    assert_eq!(
        join(b.tcp, "lobby", "ANN").error_code().as_deref(),
        Some("name_taken")
    );
    // A token from one node works on the other.
    let token = join(b.tcp, "lobby", "bob").token();
    // Once node a has heard of bob (its name is taken there too), his token works there.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while join(a.tcp, "lobby", "BOB").error_code().as_deref() != Some("name_taken") {
        assert!(Instant::now() < deadline, "node a never heard of bob");
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_a = V2Member::new(a.udp, "lobby", &token);
    let replay = on_a.register(None);
    let (names, _) = replay.members.expect("members on registration");
    assert!(names.iter().any(|n| n == "bob") && names.iter().any(|n| n == "ann"));
}

#[test]
fn redis_unavailable_refuses_handshakes_and_readyz_says_so_then_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &[]);
    let ann = {
        let token = create(a.tcp, "lobby", "ann").token();
        let member = V2Member::new(a.udp, "lobby", &token);
        member.register(None);
        member
    };
    let first = ann.say(1, "before");
    let port = redis.port;
    drop(redis);
    // Handshakes are refused, not granted half-saved.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let code =
            try_handshake(a.tcp, 2, "lobby", b"\"bob\"").and_then(|replies| replies.error_code());
        if code.as_deref() == Some("server_busy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshakes go on without redis: {code:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let http = a.http.expect("http");
    let ready = ureq_status(http);
    assert_eq!(ready.0, 503, "/readyz: {}", ready.1);
    assert!(
        ready.1.contains("redis"),
        "/readyz names redis: {}",
        ready.1
    );
    let metrics = http_get(http, "/metrics").1;
    assert!(metrics.contains("chat_redis_up 0"), "{metrics}");
    // A message sent meanwhile is not acked until Redis has it.
    ann.send_msg(2, "while redis is down");
    assert!(
        !matches!(
            ann.next_event_within(Duration::from_millis(700)),
            Some(ServerV2::Ack { .. })
        ),
        "nothing is acked that is not stored"
    );
    let _redis = RedisProcess::start_on(dir.path(), port);
    let second = ann.say_retrying(2, "while redis is down");
    assert!(second > first);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while ureq_status(http).0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(join(a.tcp, "lobby", "bob").token().len(), 64);
    let metrics = http_get(http, "/metrics").1;
    assert!(metrics.contains("chat_redis_up 1"), "{metrics}");
}

fn ureq_status(http: std::net::SocketAddr) -> (u16, String) {
    http_get(http, "/readyz")
}

fn http_get(http: std::net::SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&format!("http://{http}{path}")).call() {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(error) => (0, error.to_string()),
    }
}

#[test]
fn redis_restarted_mid_conversation_loses_nothing_acked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &[]);
    let b = redis.node(dir.path(), "b", &[]);
    let ann = {
        let member = V2Member::new(a.udp, "lobby", &create(a.tcp, "lobby", "ann").token());
        member.register(None);
        member
    };
    let ben = {
        let member = V2Member::new(b.udp, "lobby", &join(b.tcp, "lobby", "ben").token());
        member.register(None);
        member
    };
    let mut acked = Vec::new();
    for seq in 1..=5 {
        acked.push(ann.say_retrying(seq, &format!("before {seq}")));
    }
    // `everysec`: what was acked a second ago is in the append-only file.
    std::thread::sleep(Duration::from_millis(1200));
    let redis = redis.restart();
    for seq in 6..=10 {
        acked.push(ann.say_retrying(seq, &format!("after {seq}")));
    }
    assert!(
        acked.windows(2).all(|p| p[0] < p[1]),
        "ids go on: {acked:?}"
    );
    // Ben, on the other node, has every acked message, by replay if not live.
    let replay = ben.register(Some(0));
    let mut have: BTreeSet<u64> = replay.messages.iter().map(|m| m.id).collect();
    while let Some(event) = ben.next_event_within(Duration::from_millis(300)) {
        if let ServerV2::Msg(message) = event {
            have.insert(message.id);
        }
    }
    for id in &acked {
        assert!(
            have.contains(id),
            "acked id {id} reached the other node: {have:?}"
        );
    }
    drop(redis);
}

#[test]
fn a_client_fails_over_to_the_next_node_after_kill_9_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    // Node a's presence is short (it expires `--idle-timeout` after its last refresh), so that
    // a member that does not come back is seen leaving soon; node b keeps the default, under
    // which the raw host, which never pings, stays.
    let a = redis.node(dir.path(), "a", &["--idle-timeout", "8"]);
    let b = redis.node(dir.path(), "b", &[]);
    let host = V2Member::new(b.udp, "lobby", &create(b.tcp, "lobby", "host").token());
    host.register(None);
    // Two members on node a: a real client given both nodes, and a raw member that will not
    // come back.
    let servers = format!(
        "127.0.0.1:{}:{},127.0.0.1:{}:{}",
        a.tcp.port(),
        a.udp.port(),
        b.tcp.port(),
        b.udp.port()
    );
    let mut alice =
        ClientProcess::start_with_servers(&servers, &["join", "lobby", "--name", "alice"]);
    alice.wait_for("alice's welcome", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    let ghost = V2Member::new(a.udp, "lobby", &join(a.tcp, "lobby", "ghost").token());
    ghost.register(None);
    alice.send_line("one");
    host.expect(
        "alice's first line",
        |e| matches!(e, ServerV2::Msg(m) if m.text == "one"),
    );
    let _ = host.say(1, "to everyone");
    alice.wait_for_line("host: to everyone");
    a.kill9();
    // Alice types while her node is dead; her client moves to node b and sends it there.
    alice.send_line("two");
    alice.wait_for("the move to node b", |line| line.contains("trying"));
    let (before, _) = host.expect(
        "alice's line after the failover",
        |e| matches!(e, ServerV2::Msg(m) if m.text == "two"),
    );
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, ServerV2::Left { name, .. } if name == "alice")),
        "alice came back: nobody hears her leave"
    );
    let _ = host.say(2, "after the failover");
    alice.wait_for_line("host: after the failover");
    // The raw member never comes back: once node a's presence expired, it times out.
    host.expect(
        "the ghost leaving",
        |e| matches!(e, ServerV2::Left { name, .. } if name == "ghost"),
    );
    let lines = alice.seen.clone();
    let count = |text: &str| lines.iter().filter(|l| l.as_str() == text).count();
    assert_eq!(count("host: to everyone"), 1, "{lines:?}");
    assert_eq!(count("host: after the failover"), 1, "{lines:?}");
    let texts: Vec<String> = host_texts(&host);
    assert!(
        !texts.iter().any(|t| t == "two"),
        "alice's line arrived once: {texts:?}"
    );
    drop(b);
}

/// What else the host hears within a moment (to catch duplicates).
fn host_texts(host: &V2Member) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(event) = host.next_event_within(Duration::from_millis(500)) {
        if let ServerV2::Msg(message) = event {
            texts.push(message.text);
        }
    }
    texts
}

#[test]
fn two_nodes_racing_to_create_one_name_grant_it_once_and_the_winner_stays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &[]);
    let b = redis.node(dir.path(), "b", &[]);
    for round in 0..10 {
        let room = format!("race{round}");
        let (on_a, on_b) = std::thread::scope(|scope| {
            let first = scope.spawn(|| create(a.tcp, &room, "ann"));
            let second = scope.spawn(|| create(b.tcp, &room, "bob"));
            (
                first.join().expect("a's create"),
                second.join().expect("b's create"),
            )
        });
        let granted = [&on_a, &on_b]
            .iter()
            .filter(|replies| replies.error_code().is_none())
            .count();
        assert_eq!(
            granted,
            1,
            "{room}: a {:?}, b {:?}",
            on_a.error_code(),
            on_b.error_code()
        );
        // The winner's room is there on both nodes, whatever the loser withdrew.
        for (server, name) in [(&a, "cid"), (&b, "dot")] {
            let deadline = Instant::now() + EVENT_TIMEOUT;
            loop {
                let replies = join(server.tcp, &room, name);
                if replies.error_code().is_none() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{room} cannot be joined: {:?}",
                    replies.error_code()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_topic_and_a_departure_on_one_node_are_heard_on_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &[]);
    let b = redis.node(dir.path(), "b", &[]);
    let ann = V2Member::new(a.udp, "lobby", &create(a.tcp, "lobby", "ann").token());
    ann.register(None);
    let bob = V2Member::new(b.udp, "lobby", &join(b.tcp, "lobby", "bob").token());
    bob.register(None);
    ann.expect(
        "bob joining, on the other node",
        |e| matches!(e, ServerV2::Joined { name } if name == "bob"),
    );
    ann.send(&chat_protocol::v2::ClientV2::Topic {
        text: "books".into(),
    });
    bob.expect(
        "ann's topic, from the other node",
        |e| matches!(e, ServerV2::Topic { name, text } if name == "ann" && text == "books"),
    );
    bob.send(&chat_protocol::v2::ClientV2::Leave);
    ann.expect("bob leaving, on the other node", |e| {
        matches!(e, ServerV2::Left { name, reason } if name == "bob" && *reason == chat_protocol::v2::LeaveReason::Leave)
    });
}

#[test]
fn a_client_given_several_nodes_enters_through_the_first_that_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let b = redis.node(dir.path(), "b", &[]);
    // Nothing listens on the first entry's ports.
    let dead_tcp = chat_tests::free_port("tcp");
    let dead_udp = chat_tests::free_port("udp");
    let servers = format!(
        "127.0.0.1:{dead_tcp}:{dead_udp},127.0.0.1:{}:{}",
        b.tcp.port(),
        b.udp.port()
    );
    let mut alice =
        ClientProcess::start_with_servers(&servers, &["create", "lobby", "--name", "alice"]);
    alice.wait_for("alice's welcome, from the second node", |line| {
        line.starts_with("* welcome to lobby, alice")
    });
    let bob = V2Member::new(b.udp, "lobby", &join(b.tcp, "lobby", "bob").token());
    bob.register(None);
    alice.send_line("through b");
    bob.expect(
        "alice's line",
        |e| matches!(e, ServerV2::Msg(m) if m.text == "through b"),
    );
}

/// The head of the answer to a raw HTTP/1.1 request (`Connection: close` is added).
fn http_head(http: std::net::SocketAddr, request_lines: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).expect("connect to the HTTP port");
    stream
        .set_read_timeout(Some(EVENT_TIMEOUT))
        .expect("a read timeout");
    let request = format!("{request_lines}\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A page can move between nodes: each lists the live ones, and lets the others' pages in
/// (WebSocket, CORS, the page's own connect-src), a dead node's too, since its pages live on.
#[test]
fn nodes_list_each_other_and_trust_each_others_pages_even_after_one_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    let a = redis.node(dir.path(), "a", &["--idle-timeout", "3"]);
    let b = redis.node(dir.path(), "b", &[]);
    let (a_http, b_http) = (a.http.expect("http"), b.http.expect("http"));
    let a_url = format!("http://{a_http}");
    let listed = wait_for_nodes(b_http, "b lists both nodes", |listed| {
        listed.contains(&format!("\"{a_url}\"")) && listed.contains(&format!("\"http://{b_http}\""))
    });
    assert!(
        listed.contains(&format!(
            "{{\"node\":\"b\",\"url\":\"http://{b_http}\",\"self\":true}}"
        )),
        "{listed}"
    );
    a.kill9();
    wait_for_nodes(b_http, "b stops listing the dead node", |listed| {
        !listed.contains(&a_url) && listed.contains("\"b\"")
    });
    // Pages node a served are still open somewhere: b still lets them in.
    let preflight = |origin: &str| {
        http_head(
            b_http,
            &format!(
                "OPTIONS /api/rooms/den/files HTTP/1.1\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization,content-type"
            ),
        )
    };
    let trusted = preflight(&a_url);
    assert!(
        trusted.contains(&format!("access-control-allow-origin: {a_url}"))
            && trusted.contains("access-control-allow-headers: content-type,authorization"),
        "{trusted}"
    );
    let foreign = preflight("http://evil.example");
    assert!(
        !foreign.contains("access-control-allow-origin"),
        "{foreign}"
    );
    assert!(WebMember::open(b_http, Some(&a_url)).is_ok());
    assert_eq!(
        WebMember::open(b_http, Some("http://evil.example"))
            .err()
            .map(|refused| refused.status),
        Some(403)
    );
    let page = http_head(b_http, "GET / HTTP/1.1");
    let policy = page
        .lines()
        .find(|line| line.starts_with("content-security-policy:"))
        .unwrap_or_default();
    assert!(
        policy.contains("connect-src 'self' ws: wss: ") && policy.contains(&a_http.to_string()),
        "the page may connect to the other nodes: {policy}"
    );
}
