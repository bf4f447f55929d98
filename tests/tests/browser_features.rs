//! The chat page's issue-14 features in headless Chromium, against a real `chat-server`:
//! `/me` actions, the room topic, direct messages, the host's `/kick`, `/ban` and `/host` (and
//! a non-host's refusal), `/ignore`, mentions, `/away`, the new-messages marker and date
//! lines, `/help`, and a file shared from one browser and downloaded byte for byte by another.
//! Every wait polls the DOM (up to `PAGE_TIMEOUT`).
//!
//! Needs `chromium` and `chromium-driver` (scripts/install-browser.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use chat_tests::browser::PAGE_TIMEOUT;
use chat_tests::browser::lobby::{
    click_join, host, join_from_list, member, open_lobby, say, say_confirmed, wait_download,
    wait_in_room,
};
use chat_tests::{Chromedriver, ClientProcess, Page, ServerProcess};
use fantoccini::Locator;
use serde_json::json;

/// Waits until a notice line (or a block of them) of the page contains `text`.
async fn wait_notice(page: &Page, what: &str, text: &str) {
    page.wait_for(
        what,
        "return [...document.querySelectorAll('#messages .notice-line')]
           .some(e => e.textContent.includes(arguments[0]));",
        vec![json!(text)],
    )
    .await;
}

/// Waits until the page is in the lobby with a notice containing `text`.
async fn wait_lobby_notice(page: &Page, what: &str, text: &str) {
    page.wait_for(
        what,
        "return !document.getElementById('lobby').hidden
           && document.getElementById('notice').textContent.includes(arguments[0]);",
        vec![json!(text)],
    )
    .await;
}

/// The text of every visible message element of the page, whole (`* alice waves`).
async fn visible_lines(page: &Page) -> Vec<String> {
    let value = page
        .js(
            "return [...document.querySelectorAll('#messages .msg')]
               .filter(e => e.getClientRects().length > 0)
               .map(e => e.textContent);",
            vec![],
        )
        .await;
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_is_sent_as_an_action_and_shown_as_star_name_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let mut carol = ClientProcess::start(&server, &["join", "den", "--name", "carol"]);
    carol.wait_for("carol's welcome", |line| {
        line.starts_with("* welcome to den, carol")
    });

    say(&alice, "/me waves").await;
    // Sent as an action, not as the text "/me waves": the terminal prints it as one too.
    carol.wait_for_line("* alice waves");
    for page in [&alice, &bob] {
        page.wait_confirmed("* alice", "waves").await;
        let line = page
            .wait_for(
                "the action to be shown as one",
                "const e = document.querySelector('#messages .msg.action[data-id]');
                 return e ? e.querySelector('.from').textContent + ' '
                   + e.querySelector('.text').textContent : null;",
                vec![],
            )
            .await;
        assert_eq!(line, json!("* alice waves"));
    }
    // `//me` sends the text itself.
    say(&bob, "//me is not a command").await;
    bob.wait_confirmed("bob", "/me is not a command").await;
    alice.wait_confirmed("bob", "/me is not a command").await;
    carol.wait_for_line("bob: /me is not a command");
    assert!(
        !visible_lines(&alice)
            .await
            .iter()
            .any(|line| line.contains("/me waves")),
        "the command itself was never shown as chat"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_set_with_a_command_and_shown_in_the_header_and_the_room_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    assert_eq!(bob.text_of("#topic").await, "", "no topic yet");

    say(&bob, "/topic release day <b>friday</b>").await;
    for page in [&alice, &bob] {
        page.wait_for(
            "the header to show the topic",
            "const t = document.getElementById('topic');
             return !t.hidden && t.textContent === 'release day <b>friday</b>';",
            vec![],
        )
        .await;
        wait_notice(page, "the topic notice", "bob set the topic: release day").await;
    }
    assert_eq!(
        alice
            .js(
                "return document.querySelectorAll('#topic b').length;",
                vec![]
            )
            .await,
        json!(0),
        "the topic is text, not markup"
    );

    // Someone arriving later reads it from the member list's topic, and the lobby lists it.
    let carol = open_lobby(&driver, &server, "carol").await;
    carol.click("#refresh").await;
    carol
        .wait_for(
            "the room list to show den's topic",
            "const e = document.querySelector('#rooms li.room[data-room=\"den\"] .room-topic');
             return !!e && e.textContent === 'release day <b>friday</b>';",
            vec![],
        )
        .await;
    join_from_list(&carol, "den").await;
    carol
        .wait_for(
            "carol's header to show the topic",
            "return document.getElementById('topic').textContent === 'release day <b>friday</b>';",
            vec![],
        )
        .await;

    // `/topic` alone shows it; `/topic -` clears it for everyone.
    say(&carol, "/topic").await;
    wait_notice(&carol, "the topic shown", "The topic: release day").await;
    say(&alice, "/topic -").await;
    for page in [&alice, &bob, &carol] {
        page.wait_for(
            "the topic to be cleared",
            "return document.getElementById('topic').hidden
               && document.getElementById('topic').textContent === '';",
            vec![],
        )
        .await;
        wait_notice(page, "the cleared notice", "alice cleared the topic").await;
    }
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_is_seen_by_its_recipient_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let carol = member(&driver, &server, "carol", "den").await;

    say(&alice, "/msg bob the cake is in the fridge").await;
    alice
        .wait_confirmed("alice → bob", "the cake is in the fridge")
        .await;
    // A message to everyone after it: once carol has that, she would have had the DM.
    say_confirmed(&alice, "alice", "anyone want tea").await;
    carol.wait_confirmed("alice", "anyone want tea").await;
    let body = carol.body_text().await;
    assert!(
        !body.contains("cake") && !body.contains("fridge"),
        "carol never sees the direct message: {body}"
    );
    assert_eq!(
        carol
            .js(
                "return document.querySelectorAll('#messages .msg.dm').length;",
                vec![]
            )
            .await,
        json!(0)
    );
    // Its recipient does, shown apart as private (and so does its sender).
    for page in [&alice, &bob] {
        page.wait_confirmed("alice → bob", "the cake is in the fridge")
            .await;
        let dm = page
            .js(
                "const e = document.querySelector('#messages .msg.dm[data-id]');
                 return e ? e.querySelector('.dm-tag').textContent : null;",
                vec![],
            )
            .await;
        assert!(
            dm.as_str().is_some_and(|tag| tag.starts_with("private")),
            "shown distinctly as private: {dm}"
        );
    }
    assert_eq!(
        bob.text_of("#messages .msg.dm .dm-tag").await,
        "private, to you"
    );
    bob.wait_confirmed("alice", "anyone want tea").await;
    // Nor after a reload, which replays the room.
    carol.reload().await;
    wait_in_room(&carol, "den").await;
    carol.wait_confirmed("alice", "anyone want tea").await;
    assert!(!carol.body_text().await.contains("fridge"));

    // A direct message to nobody in the room is refused and marked so.
    say(&bob, "/msg zed hello?").await;
    bob.wait_for(
        "the refused DM to be marked failed",
        "const e = document.querySelector('#messages .msg.dm.failed .reason');
         return e && e.textContent.includes('no other member');",
        vec![],
    )
    .await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_kicks_bans_and_hands_over_and_a_non_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let carol = member(&driver, &server, "carol", "den").await;

    // Not the host: refused, and told why.
    say(&bob, "/kick carol").await;
    bob.wait_for(
        "bob to be told only the host may kick",
        "return [...document.querySelectorAll('#messages .notice-line.error-line')]
           .some(e => e.textContent.includes('only the host'));",
        vec![],
    )
    .await;
    assert_eq!(
        carol
            .js("return document.getElementById('room').hidden;", vec![])
            .await,
        json!(false),
        "carol is still in the room"
    );

    // The host kicks bob: his page says so and is back in the lobby; the others are told.
    say(&alice, "/kick bob").await;
    wait_lobby_notice(
        &bob,
        "bob to be told he was kicked",
        "You were kicked out of den by alice",
    )
    .await;
    for page in [&alice, &carol] {
        wait_notice(page, "the kick notice", "bob was kicked out by the host").await;
        page.wait_for(
            "bob to be gone from the member list",
            "return ![...document.querySelectorAll('#members li')].some(e => e.textContent === 'bob');",
            vec![],
        )
        .await;
    }
    // A kick is not a ban: bob comes back.
    join_from_list(&bob, "den").await;

    // A name that is nobody's is refused too.
    say(&alice, "/kick zed").await;
    wait_notice(&alice, "no such member", "no other member").await;

    // The host bans carol: she is out and cannot come back.
    say(&alice, "/ban carol").await;
    wait_lobby_notice(
        &carol,
        "carol to be told she was banned",
        "You were banned from den by alice",
    )
    .await;
    wait_notice(&alice, "the ban notice", "carol was banned by the host").await;
    click_join(&carol, "den").await;
    wait_lobby_notice(&carol, "carol's join to be refused", "banned").await;

    // The host hands over to bob: he is host now, and alice's kick is refused.
    say(&alice, "/host bob").await;
    wait_notice(&bob, "bob to be told he is host", "You are now the host").await;
    wait_notice(
        &alice,
        "alice to be told bob is host",
        "bob is now the host",
    )
    .await;
    alice
        .wait_for(
            "the member list to mark bob as host",
            "const e = document.querySelector('#members li.host');
             return !!e && e.textContent === 'bob';",
            vec![],
        )
        .await;
    say(&alice, "/kick bob").await;
    alice
        .wait_for(
            "alice's kick to be refused now",
            "return [...document.querySelectorAll('#messages .notice-line.error-line')]
               .some(e => e.textContent.includes('only the host'));",
            vec![],
        )
        .await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

/// A file of `len` bytes that no two offsets of a short period repeat in.
fn file_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Waits until `dir` holds a finished download named `name` and returns its bytes.
async fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let partial = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
            })
            .unwrap_or(false);
        if !partial && let Ok(bytes) = std::fs::read(&path) {
            return bytes;
        }
        let listed: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "no download {name} in {}: {listed:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shared_in_one_browser_downloads_byte_for_byte_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;

    let bytes = file_bytes(150_000);
    let upload = tempfile::tempdir().unwrap();
    let path = upload.path().join("notes v2.bin");
    std::fs::write(&path, &bytes).unwrap();
    // The Share file button opens the file picker of a hidden file input; WebDriver sets the
    // input's file directly.
    alice.wait_visible("#share").await;
    let input = alice
        .client()
        .find(Locator::Css("#file"))
        .await
        .expect("the file input");
    input
        .send_keys(&path.display().to_string())
        .await
        .expect("choose the file");
    wait_notice(&alice, "the upload to succeed", "Shared notes v2.bin").await;

    // Both pages show the announcement with a download button.
    let line = "shared notes v2.bin (146.5 KiB): /get ";
    let mut id = String::new();
    for page in [&alice, &bob] {
        let found = page
            .wait_for(
                "the shared file's line with its download button",
                "const e = [...document.querySelectorAll('#messages .msg[data-id]')]
                   .find(e => e.querySelector('.text').textContent.startsWith(arguments[0]));
                 const b = e && e.querySelector('button.download');
                 return b ? b.dataset.file : null;",
                vec![json!(line)],
            )
            .await;
        id = found.as_str().unwrap().to_owned();
    }
    assert_eq!(id.len(), 12, "{id}");

    bob.click(&format!("#messages button.download[data-file=\"{id}\"]"))
        .await;
    let state = wait_download(&bob, "the download to finish").await;
    assert_eq!(state, "saved: saved (SHA-256 checked)");
    let saved = downloaded(bob.download_dir(), "notes v2.bin").await;
    assert!(saved == bytes, "the download is byte for byte the upload");
    let checked = bob
        .js(
            "const b = document.querySelector('#messages button.download');
             return [b.dataset.size, b.dataset.sha256];",
            vec![],
        )
        .await;
    assert_eq!(checked[0], json!("150000"));
    assert!(checked[1].as_str().is_some_and(|sha| sha.starts_with(&id)));

    // `/get ID` typed in the input does what the button does.
    say(&alice, &format!("/get {id}")).await;
    let state = wait_download(&alice, "the typed /get to finish").await;
    assert_eq!(state, "saved: saved (SHA-256 checked)");
    let saved = downloaded(alice.download_dir(), "notes v2.bin").await;
    assert!(
        saved == bytes,
        "the typed /get's download is byte for byte the upload"
    );

    // The token went in headers only: no URL the pages fetched carries it.
    for page in [&alice, &bob] {
        let leaked = page
            .js(
                "const token = JSON.parse(localStorage.getItem('chat.session')).token;
                 return performance.getEntriesByType('resource').map(e => e.name)
                   .concat([location.href]).filter(u => u.includes(token));",
                vec![],
            )
            .await;
        assert_eq!(leaked, json!([]), "the token is never in a URL");
    }
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_hides_a_member_until_unignored_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let carol = member(&driver, &server, "carol", "den").await;

    say(&alice, "/ignore Bob").await;
    wait_notice(&alice, "the ignore notice", "Ignoring Bob").await;
    say_confirmed(&bob, "bob", "buy my crypto").await;
    say_confirmed(&carol, "carol", "hello all").await;
    alice.wait_confirmed("carol", "hello all").await;
    let lines = visible_lines(&alice).await;
    assert!(
        !lines.iter().any(|l| l.contains("crypto")),
        "bob's message is hidden: {lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("hello all")));

    // Kept in localStorage: still ignored after a reload.
    alice.reload().await;
    wait_in_room(&alice, "den").await;
    alice.wait_confirmed("carol", "hello all").await;
    say_confirmed(&bob, "bob", "really, buy it").await;
    say_confirmed(&carol, "carol", "after the reload").await;
    alice.wait_confirmed("carol", "after the reload").await;
    let lines = visible_lines(&alice).await;
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("crypto") || l.contains("buy it")),
        "still hidden after a reload: {lines:?}"
    );

    say(&alice, "/unignore bob").await;
    alice
        .wait_for(
            "bob's messages to show again",
            "return [...document.querySelectorAll('#messages .msg')]
               .some(e => e.getClientRects().length > 0 && e.textContent.includes('buy it'));",
            vec![],
        )
        .await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_are_highlighted_and_away_shows_in_the_member_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;

    say_confirmed(&bob, "bob", "hey Alice, look at this").await;
    say_confirmed(&bob, "bob", "malice is not a mention").await;
    alice.wait_confirmed("bob", "malice is not a mention").await;
    let marked = alice
        .js(
            "return [...document.querySelectorAll('#messages .msg.mention')]
               .map(e => [e.querySelector('.text').textContent,
                          [...e.querySelectorAll('mark')].map(m => m.textContent)]);",
            vec![],
        )
        .await;
    assert_eq!(marked, json!([["hey Alice, look at this", ["Alice"]]]));

    say(&bob, "/away at lunch").await;
    wait_notice(
        &bob,
        "bob's away confirmation",
        "You are marked away: at lunch",
    )
    .await;
    // Others see it in the member list (asked for now by the refresh button).
    alice.click("#who").await;
    let away = alice
        .wait_for(
            "the member list to show bob away",
            "const e = document.querySelector('#members li.away[data-name=\"bob\"]');
             return e ? [e.textContent, e.dataset.away,
               getComputedStyle(e, '::after').content] : null;",
            vec![],
        )
        .await;
    assert_eq!(away[0], json!("bob"));
    assert_eq!(away[1], json!("away: at lunch"));
    assert!(
        away[2]
            .as_str()
            .is_some_and(|c| c.contains("away: at lunch")),
        "shown beside the name: {away}"
    );
    say(&bob, "/back").await;
    wait_notice(&bob, "bob's back confirmation", "You are back").await;
    alice.click("#who").await;
    alice
        .wait_for(
            "bob to be back in the member list",
            "const e = document.querySelector('#members li[data-name=\"bob\"]');
             return !!e && !e.classList.contains('away');",
            vec![],
        )
        .await;
    alice.close().await;
    bob.close().await;
}

/// Moves the `ts` of the message whose text is "from yesterday" a day back, as every socket
/// opened from now on delivers it.
const YESTERDAY_JS: &str =
    "const desc = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
Object.defineProperty(WebSocket.prototype, 'onmessage', {
  configurable: true,
  get() { return desc.get.call(this); },
  set(handler) {
    if (typeof handler !== 'function') return desc.set.call(this, handler);
    desc.set.call(this, function (event) {
      const m = JSON.parse(event.data);
      if (m.t === 'msg' && m.text === 'from yesterday') {
        m.ts -= 86400000;
        event = new MessageEvent('message', { data: JSON.stringify(m) });
      }
      return handler.call(this, event);
    });
  },
});";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_history_is_marked_off_from_new_messages_and_days_are_dated() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let carol = host(&driver, &server, "carol", "den").await;
    say_confirmed(&carol, "carol", "from yesterday").await;
    say_confirmed(&carol, "carol", "from today").await;

    let alice = open_lobby(&driver, &server, "alice").await;
    alice.js(YESTERDAY_JS, vec![]).await;
    join_from_list(&alice, "den").await;
    alice.wait_confirmed("carol", "from today").await;
    say_confirmed(&carol, "carol", "new one").await;
    alice.wait_confirmed("carol", "new one").await;

    // In order: yesterday's date, the old message, today's date, the replayed one, the marker,
    // the new one.
    let order = alice
        .js(
            "return [...document.getElementById('messages').children]
               .filter(e => !e.classList.contains('notice-line'))
               .map(e => e.classList.contains('msg') ? 'msg:' + e.querySelector('.text').textContent
                 : e.className + ':' + e.textContent);",
            vec![],
        )
        .await;
    let order: Vec<String> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let kinds: Vec<&str> = order
        .iter()
        .map(|e| e.split_once(':').map_or(e.as_str(), |(k, _)| k))
        .collect();
    assert_eq!(
        kinds,
        ["day-line", "msg", "day-line", "msg", "new-marker", "msg"],
        "{order:#?}"
    );
    assert_eq!(order[1], "msg:from yesterday");
    assert_eq!(order[3], "msg:from today");
    assert_eq!(order[5], "msg:new one");
    let dates = alice
        .js(
            "const d = new Date(); const y = new Date(d.getTime() - 86400000);
             const f = x => x.toLocaleDateString([], {weekday: 'long', day: 'numeric', month: 'long', year: 'numeric'});
             return [f(y), f(d)];",
            vec![],
        )
        .await;
    assert_eq!(order[0], format!("day-line:{}", dates[0].as_str().unwrap()));
    assert_eq!(order[2], format!("day-line:{}", dates[1].as_str().unwrap()));

    // The one who was there all along has nothing replayed: no marker.
    assert_eq!(
        carol
            .js(
                "return document.querySelectorAll('.new-marker').length;",
                vec![]
            )
            .await,
        json!(0)
    );
    alice.close().await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_commands_and_an_unknown_one_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    say(&alice, "/help").await;
    let help = alice
        .wait_for(
            "the command list",
            "const e = document.querySelector('#messages .notice-line.info-block');
             return e ? e.innerText : null;",
            vec![],
        )
        .await;
    let help = help.as_str().unwrap();
    for command in [
        "/me TEXT",
        "/msg NAME TEXT",
        "/topic",
        "/away",
        "/back",
        "/ignore",
        "/unignore",
        "/kick NAME",
        "/ban NAME",
        "/host NAME",
        "/help",
    ] {
        assert!(help.contains(command), "/help lists {command}: {help}");
    }
    say(&alice, "/frobnicate").await;
    wait_notice(
        &alice,
        "the unknown command explained",
        "Unknown command /frobnicate",
    )
    .await;
    // Neither went out as chat.
    assert!(alice.messages().await.is_empty());

    // Tab completes a command at the start of the line.
    alice.type_into("#text", "/ki\u{E004}").await;
    let typed = alice
        .js("return document.getElementById('text').value;", vec![])
        .await;
    assert_eq!(typed, json!("/kick "));
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_shows_matches_without_others_direct_messages_and_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let driver = Chromedriver::start();

    let alice = host(&driver, &server, "alice", "den").await;
    let bob = member(&driver, &server, "bob", "den").await;
    let carol = member(&driver, &server, "carol", "den").await;

    say_confirmed(&alice, "alice", "the cake is in the fridge").await;
    say_confirmed(&alice, "alice", "cake for everyone").await;
    say(&bob, "/msg alice secret cake in the fridge").await;
    bob.wait_confirmed("bob → alice", "secret cake in the fridge")
        .await;
    // Enough matches for more than one answer (20 a page).
    for n in 1..=21 {
        say(&bob, &format!("pancake {n} fridge-free")).await;
    }
    bob.wait_confirmed("bob", "pancake 21 fridge-free").await;

    say(&carol, "/search CAKE fridge").await;
    let found = carol
        .wait_for(
            "carol's search results",
            "const b = document.querySelector('#messages .search-block');
             return b ? [b.querySelector('.search-head').textContent,
               [...b.querySelectorAll('.found .text')].map(e => e.textContent)] : null;",
            vec![],
        )
        .await;
    assert_eq!(
        found,
        json!([
            "Search for “CAKE fridge”: 1 message",
            ["the cake is in the fridge"]
        ]),
        "every word must match, and bob's DM to alice is not carol's to find"
    );
    // Alice, its recipient, finds the direct message too.
    say(&alice, "/search fridge cake").await;
    let found = alice
        .wait_for(
            "alice's search results",
            "const b = document.querySelector('#messages .search-block');
             return b ? [...b.querySelectorAll('.found .text')].map(e => e.textContent) : null;",
            vec![],
        )
        .await;
    assert_eq!(
        found,
        json!(["the cake is in the fridge", "secret cake in the fridge"])
    );

    // 21 matches: the first answer has the newest 20, "Older matches" fetches the rest.
    say(&carol, "/search pancake").await;
    let first = carol
        .wait_for(
            "the first page of pancakes",
            "const b = [...document.querySelectorAll('#messages .search-block')][1];
             return b ? [b.querySelectorAll('.found').length, !!b.querySelector('.search-more')] : null;",
            vec![],
        )
        .await;
    assert_eq!(first, json!([20, true]));
    carol.click("#messages .search-more").await;
    let older = carol
        .wait_for(
            "the older pancakes",
            "const b = [...document.querySelectorAll('#messages .search-block')][2];
             return b ? [b.querySelector('.search-head').textContent,
               [...b.querySelectorAll('.found .text')].map(e => e.textContent),
               !!b.querySelector('.search-more')] : null;",
            vec![],
        )
        .await;
    assert_eq!(
        older,
        json!([
            "Older matches for “pancake”: 1 message",
            ["pancake 1 fridge-free"],
            false
        ])
    );
    alice.close().await;
    bob.close().await;
    carol.close().await;
}
