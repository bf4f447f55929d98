//! The chat page (crates/server/web) in headless Chromium, against a real `chat-server`:
//! browsers and the terminal client in one room, random pairing, a reload, and a server
//! restart under an open page. Every wait polls the DOM (up to `PAGE_TIMEOUT`); the counts
//! ("exactly once") are checked after a later message has arrived, which on the same ordered
//! connection would come after any duplicate.
//!
//! Needs `chromium` and `chromium-driver` (scripts/install-browser.sh).

use std::path::Path;

use chat_tests::browser::PAGE_TIMEOUT;
use chat_tests::browser::lobby::{
    create_room, host, member, open_lobby, page_url, say, say_confirmed, wait_in_room,
};
use chat_tests::{
    Chromedriver, ClientProcess, Page, ServerProcess, assert_shown_once, count_confirmed,
};
use serde_json::json;

/// The server's HTTP address (the harness starts it with `--http-port 0`).
fn http_addr(server: &ServerProcess) -> std::net::SocketAddr {
    server.http.expect("the server has an HTTP listener")
}

/// The room the page is in ("" in the lobby).
async fn current_room(page: &Page) -> String {
    let value = page
        .js(
            "return document.getElementById('room').hidden ? '' \
               : document.getElementById('room-name').textContent;",
            vec![],
        )
        .await;
    value.as_str().unwrap_or_default().to_owned()
}

/// Waits until the terminal client printed `line`, then checks it printed it exactly once.
fn client_saw_once(client: &mut ClientProcess, line: &str) {
    if !client.seen.iter().any(|seen| seen == line) {
        client.wait_for_line(line);
    }
    let times = client.seen.iter().filter(|seen| *seen == line).count();
    assert_eq!(times, 1, "chat-client printed {line:?} {times} times");
}

/// Starts `chat-client` in `room` as `name` and waits for its welcome.
fn terminal(server: &ServerProcess, room: &str, name: &str) -> ClientProcess {
    let mut client = ClientProcess::start(server, &["join", room, "--name", name]);
    let welcome = format!("* welcome to {room}, {name}");
    client.wait_for("the welcome notice", |line| line.starts_with(&welcome));
    client
}

fn start_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_the_terminal_client_see_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let mut carol = terminal(&server, "den", "carol");

    // Everyone is in: the browsers list all three members.
    for page in [&alice, &bob] {
        page.wait_for(
            "the member list to show alice, bob and carol",
            "const names = [...document.querySelectorAll('#members li')].map(e => e.textContent);
             return ['alice', 'bob', 'carol'].every(n => names.includes(n));",
            vec![],
        )
        .await;
    }

    // Bob starts typing: alice is told.
    bob.type_into("#text", "hm").await;
    alice
        .wait_for(
            "alice to see that bob is typing",
            "return document.getElementById('typing').textContent.includes('bob is typing');",
            vec![],
        )
        .await;

    say_confirmed(&alice, "alice", "hello from alice").await;
    say_confirmed(&bob, "bob", "hello from bob").await;
    carol.send_line("hello from carol");
    alice.wait_confirmed("bob", "hello from bob").await;
    alice.wait_confirmed("carol", "hello from carol").await;
    bob.wait_confirmed("alice", "hello from alice").await;
    bob.wait_confirmed("carol", "hello from carol").await;

    // A last message from each browser: once everyone has it, any duplicate of the earlier ones
    // would have arrived before it.
    say_confirmed(&alice, "alice", "alice done").await;
    say_confirmed(&bob, "bob", "bob done").await;
    alice.wait_confirmed("bob", "bob done").await;
    bob.wait_confirmed("alice", "alice done").await;
    client_saw_once(&mut carol, "alice: hello from alice");
    client_saw_once(&mut carol, "bob: hello from bob");
    client_saw_once(&mut carol, "alice: alice done");
    client_saw_once(&mut carol, "bob: bob done");

    let all = [
        ("alice", "hello from alice"),
        ("bob", "hello from bob"),
        ("carol", "hello from carol"),
        ("alice", "alice done"),
        ("bob", "bob done"),
    ];
    assert_shown_once("alice's page", &alice.messages().await, &all);
    assert_shown_once("bob's page", &bob.messages().await, &all);
    let carol_own = carol
        .seen
        .iter()
        .filter(|line| line.as_str() == "carol: hello from carol")
        .count();
    assert!(carol_own <= 1, "chat-client showed its own message twice");

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_chat_pairs_two_browsers_and_new_chat_moves_to_a_new_pair() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = open_lobby(&driver, &server, "alice").await;
    alice.click("#random").await;
    let first = alice
        .wait_for(
            "alice to be in a pair room",
            "const n = document.getElementById('room-name').textContent;
             return !document.getElementById('room').hidden && n.startsWith('pair-') ? n : null;",
            vec![],
        )
        .await;
    let first = first.as_str().unwrap().to_owned();
    wait_in_room(&alice, &first).await;

    let bob = open_lobby(&driver, &server, "bob").await;
    bob.click("#random").await;
    wait_in_room(&bob, &first).await;
    // The "New chat" button is there in a pair room.
    bob.wait_visible("#new-chat").await;

    say_confirmed(&alice, "alice", "hi stranger").await;
    bob.wait_confirmed("alice", "hi stranger").await;
    say_confirmed(&bob, "bob", "hi back").await;
    alice.wait_confirmed("bob", "hi back").await;

    // Alice asks for a new chat: she leaves this pair and waits in a new one (the server keeps
    // her out of the one she left); bob stays, and is told she left.
    alice.click("#new-chat").await;
    let second = alice
        .wait_for(
            "alice to be in another pair room",
            "const n = document.getElementById('room-name').textContent;
             return !document.getElementById('room').hidden && n.startsWith('pair-')
               && n !== arguments[0] && document.getElementById('status').dataset.state === 'online'
               ? n : null;",
            vec![json!(first)],
        )
        .await;
    let second = second.as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(
        alice.messages().await.is_empty(),
        "the new pair room starts empty"
    );
    bob.wait_for(
        "bob to be told alice left",
        "return [...document.querySelectorAll('#messages .notice-line')]
           .some(e => e.textContent.startsWith('alice left'));",
        vec![],
    )
    .await;
    assert_eq!(current_room(&bob).await, first, "bob stays where he was");

    // Bob asks for a new chat too: he meets alice, who has waited longest, in her new room.
    bob.click("#new-chat").await;
    wait_in_room(&bob, &second).await;
    say_confirmed(&bob, "bob", "found you again").await;
    let shown = alice.wait_confirmed("bob", "found you again").await;
    // The new room starts empty: nothing from the first pair came along.
    assert_eq!(
        count_confirmed(&shown, "alice", "hi stranger"),
        0,
        "{shown:#?}"
    );

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_room_and_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let mut carol = terminal(&server, "den", "carol");
    say_confirmed(&alice, "alice", "before the reload").await;
    carol.send_line("carol was here");
    alice.wait_confirmed("carol", "carol was here").await;
    client_saw_once(&mut carol, "alice: before the reload");

    alice.reload().await;
    wait_in_room(&alice, "den").await;
    // The conversation is back, each message once.
    alice.wait_confirmed("alice", "before the reload").await;
    alice.wait_confirmed("carol", "carol was here").await;

    // And the page still works: both ways.
    say_confirmed(&alice, "alice", "after the reload").await;
    client_saw_once(&mut carol, "alice: after the reload");
    carol.send_line("welcome back");
    let shown = alice.wait_confirmed("carol", "welcome back").await;
    assert_shown_once(
        "alice's page",
        &shown,
        &[
            ("alice", "before the reload"),
            ("carol", "carol was here"),
            ("alice", "after the reload"),
            ("carol", "welcome back"),
        ],
    );
    // Nothing was sent twice: carol saw the first message once, even after the reload.
    client_saw_once(&mut carol, "alice: before the reload");

    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_across_a_server_restart_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let (tcp, udp, http) = (server.tcp, server.udp, http_addr(&server));
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    say_confirmed(&alice, "alice", "before the restart").await;
    bob.wait_confirmed("alice", "before the restart").await;

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    alice
        .wait_for(
            "alice's page to notice the server is gone",
            "return document.getElementById('status').dataset.state === 'offline';",
            vec![],
        )
        .await;
    // Typed while the server is down: shown pending, kept for the reconnect. More than the
    // server's flood burst (10), so the page must pace the resend to get them all through.
    let typed: Vec<String> = (1..=12).map(|n| format!("typed while down {n}")).collect();
    for text in &typed {
        say(&alice, text).await;
    }
    alice
        .wait_messages("the messages typed while down to be pending", |shown| {
            shown.iter().filter(|m| m.pending).count() == typed.len()
        })
        .await;

    let http_port = http.port().to_string();
    let server =
        ServerProcess::restart_same_ports(dir.path(), tcp, udp, &["--http-port", &http_port]);
    assert_eq!(server.http, Some(http));

    // Both pages come back on their own, and the pending message goes out once.
    wait_in_room(&alice, "den").await;
    wait_in_room(&bob, "den").await;
    alice.wait_confirmed("alice", "typed while down 12").await;
    bob.wait_confirmed("alice", "typed while down 12").await;
    say_confirmed(&alice, "alice", "after the restart").await;
    say_confirmed(&bob, "bob", "bob after the restart").await;
    bob.wait_confirmed("alice", "after the restart").await;
    alice.wait_confirmed("bob", "bob after the restart").await;

    let mut all = vec![
        ("alice", "before the restart"),
        ("alice", "after the restart"),
        ("bob", "bob after the restart"),
    ];
    all.extend(typed.iter().map(|text| ("alice", text.as_str())));
    for (who, page) in [("alice's page", &alice), ("bob's page", &bob)] {
        let shown = page.messages().await;
        assert_shown_once(who, &shown, &all);
        // In the order typed.
        let order: Vec<&str> = shown
            .iter()
            .filter(|m| m.text.starts_with("typed while down"))
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(order, typed.iter().map(String::as_str).collect::<Vec<_>>());
    }
    drop(server);

    alice.close().await;
    bob.close().await;
}

/// Sends a signal (`STOP`, `CONT`) to the server process.
fn signal(server: &ServerProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_gives_up_on_a_silent_link_and_recovers_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    say_confirmed(&alice, "alice", "before the stall").await;
    bob.wait_confirmed("alice", "before the stall").await;

    // A stalled server looks like a dead network: the socket stays open, nothing answers.
    signal(&server, "STOP");
    let stalled = alice
        .wait_for(
            "alice's page to give up on the silent socket",
            "return document.getElementById('status').dataset.state === 'offline';",
            vec![],
        )
        .await;
    assert_eq!(stalled, json!(true));
    // Typed while offline: kept pending for the reconnect.
    say(&alice, "typed during the stall").await;
    alice
        .wait_messages(
            "the message typed during the stall to be pending",
            |shown| {
                shown
                    .iter()
                    .any(|m| m.pending && m.text == "typed during the stall")
            },
        )
        .await;
    signal(&server, "CONT");

    wait_in_room(&alice, "den").await;
    wait_in_room(&bob, "den").await;
    bob.wait_confirmed("alice", "typed during the stall").await;
    alice
        .wait_confirmed("alice", "typed during the stall")
        .await;
    say_confirmed(&bob, "bob", "bob is back").await;
    alice.wait_confirmed("bob", "bob is back").await;
    let all = [
        ("alice", "before the stall"),
        ("alice", "typed during the stall"),
        ("bob", "bob is back"),
    ];
    assert_shown_once("alice's page", &alice.messages().await, &all);
    assert_shown_once("bob's page", &bob.messages().await, &all);
    alice.close().await;
    bob.close().await;
}

/// Whether the page fits its window's width (nothing to scroll sideways).
async fn fits_width(page: &Page) -> bool {
    page.js(
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        vec![],
    )
    .await
    .as_bool()
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_asks_for_its_password_on_a_phone_sized_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = open_lobby(&driver, &server, "alice").await;
    alice.click("#new-private").await;
    alice.type_into("#new-password", "moby dick").await;
    create_room(&alice, "book-club").await;

    let bob = driver.session().await;
    bob.client().set_window_size(390, 740).await.unwrap();
    bob.open(&page_url(&server)).await;
    bob.type_into("#name", "bob").await;
    bob.click("#refresh").await;
    let item = "#rooms li.room[data-room=\"book-club\"]";
    bob.wait_for(
        "the room list to show book-club as private with 1 member",
        "const li = document.querySelector(arguments[0]);
         return !!li && li.querySelector('.count').textContent === '1 member'
           && !!li.querySelector('.private');",
        vec![json!(item)],
    )
    .await;
    assert!(fits_width(&bob).await, "the lobby fits a phone's width");

    // Joining asks for the password; a wrong one is refused, the right one lets bob in.
    bob.click(&format!("{item} button.join")).await;
    bob.wait_visible("#password-form").await;
    bob.type_into("#password", "wrong").await;
    bob.click("#password-join").await;
    bob.wait_for(
        "the wrong password to be refused",
        "return document.getElementById('notice').textContent === 'Wrong password.';",
        vec![],
    )
    .await;
    bob.type_into("#password", "moby dick").await;
    bob.click("#password-join").await;
    wait_in_room(&bob, "book-club").await;
    assert!(fits_width(&bob).await, "the room fits a phone's width");
    let wide = bob
        .js(
            "return document.getElementById('scroller').clientWidth >= 0.8 * window.innerWidth;",
            vec![],
        )
        .await;
    assert_eq!(wide, json!(true), "on a phone the messages take the width");
    bob.wait_visible("#text").await;

    // Text from the network is shown as text, never as markup.
    let markup = "<img src=x onerror=\"document.title='owned'\"><b>bold</b>";
    say_confirmed(&alice, "alice", markup).await;
    bob.wait_confirmed("alice", markup).await;
    let injected = bob
        .js(
            "return document.querySelectorAll('#messages img, #messages b').length;",
            vec![],
        )
        .await;
    assert_eq!(injected, json!(0), "no element was made from a message");

    // The host leaves: her page is back in the lobby, and bob's page says the room closed.
    alice.click("#leave").await;
    alice.wait_visible("#lobby").await;
    bob.wait_for(
        "bob to be told the room closed",
        "return !document.getElementById('lobby').hidden
           && document.getElementById('notice').textContent.includes('closed');",
        vec![],
    )
    .await;

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_messages_load_when_scrolling_back() {
    let dir = tempfile::tempdir().unwrap();
    // No flood control: the terminal client sends 60 lines at once.
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let driver = Chromedriver::start();

    let mut carol = ClientProcess::start(&server, &["create", "den", "--name", "carol"]);
    carol.wait_for("the welcome notice", |line| {
        line.starts_with("* welcome to den, carol")
    });
    let lines: Vec<String> = (1..=60).map(|n| format!("line {n}")).collect();
    for line in &lines {
        carol.send_line(line);
    }
    // All stored: a joiner reads them.
    let mut dan = terminal(&server, "den", "dan");
    let _ = dan.wait_for("the last line", |line| line.ends_with("line 60"));

    let alice = member(&driver, &server, "alice", "den").await;
    // Entering shows the newest 20 (the server's --join-history).
    let shown = alice.wait_confirmed("carol", "line 60").await;
    assert_eq!(count_confirmed(&shown, "carol", "line 40"), 0, "{shown:#?}");
    assert_eq!(count_confirmed(&shown, "carol", "line 41"), 1, "{shown:#?}");

    // Scrolling to the top asks for the page before (lines 1 to 40, at most 50 a page).
    alice
        .js("document.getElementById('scroller').scrollTop = 0;", vec![])
        .await;
    let shown = alice.wait_confirmed("carol", "line 1").await;
    let expected: Vec<(&str, &str)> = lines.iter().map(|l| ("carol", l.as_str())).collect();
    assert_shown_once("alice's page", &shown, &expected);
    let texts: Vec<&str> = shown.iter().map(|m| m.text.as_str()).collect();
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(texts, want, "in order");
    // Nothing older remains: the button is gone.
    alice
        .wait_for(
            "Load older to be hidden",
            "return document.getElementById('older').hidden;",
            vec![],
        )
        .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_flood_control_are_paced_and_a_refused_one_is_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(dir.path(), &["--flood-burst", "3", "--flood-rate", "2"]);
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    // Typed faster than flood control allows: the page paces itself to what the grant
    // announced, so every one gets through.
    for n in 1..=6 {
        say(&alice, &format!("burst {n}")).await;
    }
    let shown = alice
        .wait_messages("every burst message to be confirmed", |shown| {
            shown.len() == 6 && shown.iter().all(|m| !m.pending)
        })
        .await;
    assert!(shown.iter().all(|m| !m.failed), "none refused: {shown:#?}");
    // Too long once escaped (2 bytes each): refused by the server, marked, not kept.
    say(&alice, &"é".repeat(2100)).await;
    let shown = alice
        .wait_messages("the long message to be failed", |shown| {
            shown.len() == 7 && shown.iter().all(|m| !m.pending)
        })
        .await;
    assert_eq!(shown.iter().filter(|m| m.failed).count(), 1, "{shown:#?}");
    let reason = alice.text_of("#messages .msg.failed .reason").await;
    assert!(reason.contains("too long"), "says why: {reason:?}");
    let unacked = alice
        .js(
            "return JSON.parse(localStorage.getItem('chat.session')).unacked.length;",
            vec![],
        )
        .await;
    assert_eq!(
        unacked,
        json!(0),
        "refused messages are not kept for resending"
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_takes_the_chat_over_and_the_first_steps_aside() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let mut carol = terminal(&server, "den", "carol");
    say_confirmed(&alice, "alice", "from the first tab").await;

    // The same browser (the same localStorage) opens the page in a second tab: it enters the
    // same membership.
    let first = alice.client().window().await.unwrap();
    let second = alice.client().new_window(true).await.unwrap();
    alice
        .client()
        .switch_to_window(second.handle.clone())
        .await
        .unwrap();
    alice.open(&page_url(&server)).await;
    wait_in_room(&alice, "den").await;
    alice.wait_confirmed("alice", "from the first tab").await;
    say_confirmed(&alice, "alice", "from the second tab").await;
    client_saw_once(&mut carol, "alice: from the second tab");

    // The first tab was told (`moved`) and stays out of the way instead of taking it back.
    alice
        .client()
        .switch_to_window(first.clone())
        .await
        .unwrap();
    alice
        .wait_for(
            "the first tab to step aside",
            "return document.getElementById('conn').textContent === 'open in another tab';",
            vec![],
        )
        .await;
    // And the second tab keeps the chat.
    alice
        .client()
        .switch_to_window(second.handle)
        .await
        .unwrap();
    carol.send_line("are you still there");
    alice.wait_confirmed("carol", "are you still there").await;
    say_confirmed(&alice, "alice", "yes").await;
    client_saw_once(&mut carol, "alice: yes");
    // No tug of war: the second tab was never moved, and the first one is still aside.
    let moved = alice
        .js(
            "return [...document.querySelectorAll('#messages .notice-line')]
               .some(e => e.textContent.includes('opened elsewhere'));",
            vec![],
        )
        .await;
    assert_eq!(moved, json!(false), "the second tab was taken back");
    alice.client().switch_to_window(first).await.unwrap();
    assert_eq!(alice.text_of("#conn").await, "open in another tab");
    client_saw_once(&mut carol, "alice: from the first tab");
    alice.close().await;
}

/// Loses the first `msg` whose text is "lost once" on every socket the page opens from now on
/// (as a gap in ids looks to the page), and drops the page's current socket so that it opens a
/// new one; `window.__patched` says a new socket has the filter.
const LOSE_ONE_MESSAGE_JS: &str =
    "const desc = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
Object.defineProperty(WebSocket.prototype, 'onmessage', {
  configurable: true,
  get() { return desc.get.call(this); },
  set(handler) {
    if (typeof handler !== 'function') return desc.set.call(this, handler);
    window.__patched = true;
    desc.set.call(this, function (event) {
      try {
        const m = JSON.parse(event.data);
        if (m.t === 'msg' && m.text === 'lost once' && !window.__lost) {
          window.__lost = true;
          return;
        }
      } catch (_) {}
      return handler.call(this, event);
    });
  },
});
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (!window.__closed) {
    window.__closed = true;
    setTimeout(() => this.close(), 0);
  }
  return send.call(this, data);
};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_ids_is_filled_by_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let mut carol = terminal(&server, "den", "carol");
    carol.send_line("first");
    alice.wait_confirmed("carol", "first").await;

    alice.js(LOSE_ONE_MESSAGE_JS, vec![]).await;
    alice
        .wait_for(
            "the page to reconnect through the filter",
            "return window.__patched === true
               && document.getElementById('status').dataset.state === 'online';",
            vec![],
        )
        .await;
    carol.send_line("lost once");
    carol.send_line("after the gap");
    let shown = alice.wait_confirmed("carol", "lost once").await;
    assert_eq!(
        alice.js("return window.__lost === true;", vec![]).await,
        json!(true),
        "the filter lost the message once"
    );
    let shown = if count_confirmed(&shown, "carol", "after the gap") == 0 {
        alice.wait_confirmed("carol", "after the gap").await
    } else {
        shown
    };
    assert_shown_once(
        "alice's page",
        &shown,
        &[
            ("carol", "first"),
            ("carol", "lost once"),
            ("carol", "after the gap"),
        ],
    );
    alice.close().await;
}

/// Makes every ping the page sends ask for the last three messages again (as a server replay
/// overlapping what is shown does), and counts the pings in `window.__pings`.
const OVERLAPPING_PINGS_JS: &str = "window.__pings = 0;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  try {
    const m = JSON.parse(data);
    if (m.t === 'ping' && m.last_id > 3) {
      m.last_id -= 3;
      data = JSON.stringify(m);
      window.__pings += 1;
    }
  } catch (_) {}
  return send.call(this, data);
};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_replayed_again_are_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let mut carol = terminal(&server, "den", "carol");
    let lines = ["one", "two", "three", "four", "five"];
    for line in lines {
        carol.send_line(line);
    }
    alice.wait_confirmed("carol", "five").await;
    say_confirmed(&alice, "alice", "six").await;

    alice.js(OVERLAPPING_PINGS_JS, vec![]).await;
    // Three overlapping pings: the replays of the first two have long arrived by the third
    // (each is answered at once; they are 2 s apart).
    alice
        .wait_for(
            "three overlapping pings",
            "return window.__pings >= 3;",
            vec![],
        )
        .await;
    carol.send_line("seven");
    let shown = alice.wait_confirmed("carol", "seven").await;
    assert_shown_once(
        "alice's page",
        &shown,
        &[
            ("carol", "one"),
            ("carol", "two"),
            ("carol", "three"),
            ("carol", "four"),
            ("carol", "five"),
            ("alice", "six"),
            ("carol", "seven"),
        ],
    );
    alice.close().await;
}

/// Not a test: writes docs/screenshot.png, the page in a room with a few messages, for the
/// README. Run it by hand: `cargo test -p chat-tests --test browser -- --ignored screenshot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshot.png; run by hand"]
async fn screenshot_for_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "lobby").await;
    let bob = member(&driver, &server, "bob", "lobby").await;
    let mut carol = terminal(&server, "lobby", "carol");
    say_confirmed(
        &alice,
        "alice",
        "Welcome! This room is served straight from chat-server.",
    )
    .await;
    say_confirmed(&bob, "bob", "Hi alice, the page reconnects on its own.").await;
    carol.send_line("And I am in the terminal client, same room.");
    alice
        .wait_confirmed("carol", "And I am in the terminal client, same room.")
        .await;
    say_confirmed(&alice, "alice", "Nothing lost, nothing twice.").await;
    // Bob types on, so the typing line shows too: the page sends `typing` at most every 3 s,
    // so keep typing until alice shows it.
    let deadline = std::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        bob.type_into("#text", "I am typing").await;
        let typing = alice.text_of("#typing").await;
        if typing.contains("bob") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob never shows as typing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    let png = alice.screenshot().await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshot.png");
    std::fs::write(&path, png).unwrap();
    drop(carol);
    alice.close().await;
    bob.close().await;
}
