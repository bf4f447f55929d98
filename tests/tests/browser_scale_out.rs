//! The chat page against several nodes sharing one Redis (issue 12): a page served by a node
//! that is killed moves to the next node with its token and last id, through that node's
//! WebSocket and API, and loses nothing and shows nothing twice.
//!
//! Needs `chromium`, `chromium-driver` and `redis-server` (scripts/install-packages.sh); each
//! test starts Redis, the nodes and the browser itself, on ephemeral ports of 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::v2::{ClientV2, ServerV2};
use chat_tests::browser::lobby::{member, say, say_confirmed, wait_download};
use chat_tests::redis::wait_for_nodes;
use chat_tests::{
    Chromedriver, EVENT_TIMEOUT, RedisProcess, ServerProcess, V2Member, assert_shown_once, create,
    join,
};
use fantoccini::Locator;

/// Waits until every node lists all of them as live with their pages: from then on each
/// trusts the others' pages, and a page learns where it can move.
fn wait_for_directory(nodes: &[&ServerProcess]) {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"http://{}\"", n.http.expect("an HTTP listener")))
        .collect();
    for node in nodes {
        wait_for_nodes(
            node.http.expect("an HTTP listener"),
            "every node listed",
            |listed| urls.iter().all(|url| listed.contains(url)),
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_node_is_killed_moves_to_the_next_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProcess::start(dir.path());
    // Node a's presence is short, so that its members that do not come back are reaped soon.
    let a = redis.node(dir.path(), "a", &["--idle-timeout", "4"]);
    let b = redis.node(dir.path(), "b", &[]);
    let c = redis.node(dir.path(), "c", &[]);
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
    let state = wait_download(&alice, "the download to finish").await;
    assert_eq!(state, "saved: saved (SHA-256 checked)");

    assert_shown_once(
        "alice's page",
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
