//! The chat page against several nodes sharing one Redis (issue 12): a page served by a node
//! that is killed moves to the next node with its token and last id, through that node's
//! WebSocket and API, and loses nothing and shows nothing twice.
//!
//! Needs `chromium`, `chromium-driver` and `redis-server` (scripts/install-packages.sh); each
//! test starts Redis, the nodes and the browser itself, on ephemeral ports of 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::v2::{ClientV2, ServerV2};
use chat_tests::browser::lobby::{member, say, say_confirmed};
use chat_tests::{
    Chromedriver, EVENT_TIMEOUT, RedisProcess, ServerProcess, Shown, V2Member, count_confirmed,
    create, join,
};
use fantoccini::Locator;
use serde_json::json;

/// A node on ephemeral ports of 127.0.0.1 (so it announces its page there) with its own
/// directory under `dir`.
fn node(dir: &Path, redis: &RedisProcess, name: &str, extra: &[&str]) -> ServerProcess {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).expect("a node directory");
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--node-id", name];
    args.extend_from_slice(extra);
    ServerProcess::start_with(&own, &args)
}

fn http_get(http: SocketAddr, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://{http}{path}"))
        .call()
        .ok()
        .and_then(|mut response| response.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

/// Waits until every node lists all of them as live with their pages: from then on each
/// trusts the others' pages, and a page learns where it can move.
fn wait_for_directory(nodes: &[&ServerProcess]) {
    let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
    for node in nodes {
        let http = node.http.expect("an HTTP listener");
        loop {
            let listed = http_get(http, "/api/nodes");
            let urls = nodes
                .iter()
                .filter(|n| listed.contains(&format!("\"http://{}\"", n.http.unwrap_or(http))))
                .count();
            if urls == nodes.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{http} never listed every node: {listed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What `member` hears (its messages' texts, and who it heard leave) until `done` holds for
/// them, or for all of `limit`.
fn listen(
    member: &V2Member,
    limit: Duration,
    done: impl Fn(&[String], &[String]) -> bool,
) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let (mut texts, mut left) = (Vec::new(), Vec::new());
    while Instant::now() < deadline && !done(&texts, &left) {
        match member.next_event_within(Duration::from_millis(100)) {
            Some(ServerV2::Msg(message)) => texts.push(message.text),
            Some(ServerV2::Left { name, .. }) => left.push(name),
            _ => {}
        }
    }
    (texts, left)
}

fn assert_shown_once(shown: &[Shown], expected: &[(&str, &str)]) {
    for (from, text) in expected {
        assert_eq!(
            count_confirmed(shown, from, text),
            1,
            "the page shows {from}: {text:?} exactly once; it shows {shown:#?}"
        );
    }
    assert!(
        shown.iter().all(|m| !m.pending && !m.failed),
        "nothing pending or failed: {shown:#?}"
    );
    let ids: Vec<u64> = shown.iter().filter_map(|m| m.id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "in id order, each once: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_node_is_killed_moves_to_the_next_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    // Node a's presence is short, so that its members that do not come back are reaped soon.
    let a = node(dir.path(), &redis, "a", &["--idle-timeout", "4"]);
    let b = node(dir.path(), &redis, "b", &[]);
    let c = node(dir.path(), &redis, "c", &[]);
    wait_for_directory(&[&a, &b, &c]);

    // Carol, on node c, hosts the room; a ghost on node a will never come back.
    let carol = V2Member::new(c.udp, "den", &create(c.tcp, "den", "carol").token());
    carol.register(None);
    let ghost = V2Member::new(a.udp, "den", &join(a.tcp, "den", "ghost").token());
    ghost.register(None);
    // It pings as a client does (node a's idle timeout is short too), until node a is gone.
    let stop_ghost = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = Arc::clone(&stop_ghost);
        std::thread::spawn(move || {
            for _ in 0..120 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                ghost.send(&ClientV2::Ping { last_id: None });
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let driver = Chromedriver::start();
    let alice = member(&driver, &a, "alice", "den").await;
    say_confirmed(&alice, "alice", "before").await;
    // Carol, on another node, hears the page join, as she would a terminal.
    let (before, _) = carol.expect(
        "alice's first line",
        |e| matches!(e, ServerV2::Msg(m) if m.text == "before"),
    );
    assert!(
        before.contains(&ServerV2::Joined {
            name: "alice".into()
        }),
        "{before:?}"
    );
    carol.say(1, "hello alice");
    alice.wait_confirmed("carol", "hello alice").await;

    // Alice's node dies. She types anyway: the page keeps the line pending, finds node a
    // gone, moves to node b with the same token and last id, and sends it there.
    a.kill9();
    stop_ghost.store(true, Ordering::Relaxed);
    pinger.join().expect("the ghost's pinger");
    say(&alice, "while a is down").await;
    alice.wait_confirmed("alice", "while a is down").await;
    // Carol hears that line, and, once node a's presence has expired, the ghost leave: the
    // other nodes reap node a's members that did not come back, not alice, who is node b's
    // now (node c, which never served her, must know that too).
    let (texts, left) = listen(&carol, 3 * EVENT_TIMEOUT, |texts, left| {
        texts.iter().any(|t| t == "while a is down") && left.iter().any(|n| n == "ghost")
    });
    assert_eq!(left, ["ghost"], "alice came back: nobody hears her leave");
    assert_eq!(texts, ["while a is down"]);
    // A few more passes of every node's reaper (each looks every 2 s).
    let (texts, left) = listen(&carol, Duration::from_secs(5), |_, _| false);
    assert!(left.is_empty() && texts.is_empty(), "{texts:?} {left:?}");
    carol.say(2, "after the move");
    alice.wait_confirmed("carol", "after the move").await;
    say_confirmed(&alice, "alice", "still here").await;
    let (texts, left) = listen(&carol, Duration::from_secs(1), |_, _| false);
    assert_eq!(texts, ["still here"], "each of alice's lines once");
    assert!(left.is_empty(), "{left:?}");

    // The moved page uses that node's API too, across origins: a file shared there comes
    // back checked (the token in a header, the checksum header exposed to the page).
    let upload = tempfile::tempdir().expect("temp dir");
    let path = upload.path().join("notes.txt");
    std::fs::write(&path, "minutes of the meeting\n".repeat(40)).expect("write the file");
    alice
        .client()
        .find(Locator::Css("#file"))
        .await
        .expect("the file input")
        .send_keys(&path.display().to_string())
        .await
        .expect("choose the file");
    alice
        .wait_for(
            "the shared file's download button",
            "return document.querySelector('#messages button.download') !== null;",
            vec![],
        )
        .await;
    alice.click("#messages button.download").await;
    let state = alice
        .wait_for(
            "the download to finish",
            "const b = document.querySelector('#messages button.download');
             return b.dataset.state === 'saved' || b.dataset.state === 'failed'
               ? b.dataset.state + ': ' + b.closest('.msg').querySelector('.download-status').textContent
               : null;",
            vec![],
        )
        .await;
    assert_eq!(state, json!("saved: saved (SHA-256 checked)"));

    assert_shown_once(
        &alice.messages().await,
        &[
            ("alice", "before"),
            ("carol", "hello alice"),
            ("alice", "while a is down"),
            ("carol", "after the move"),
            ("alice", "still here"),
        ],
    );
    alice.close().await;
    drop((b, c));
}
