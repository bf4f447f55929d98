//! Headless Chromium driven through `chromedriver` (WebDriver), for the chat page's tests.
//!
//! [`Chromedriver::start`] runs `/usr/bin/chromedriver` on a free port of 127.0.0.1 and waits
//! until it answers; [`Chromedriver::session`] opens a [`Page`]: one headless Chromium with its
//! own fresh profile directory, so sessions share nothing (localStorage included). Both clean up
//! after themselves by process id: the driver is killed when dropped, and a page kills whatever
//! still runs with its profile directory (a browser left behind by a failing test).
//!
//! Waiting is polling the DOM, up to [`PAGE_TIMEOUT`], never a fixed sleep.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::free_port;

/// Where Debian's `chromium` and `chromium-driver` packages put the binaries.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to show something expected. Generous: a browser on a shared CI
/// machine is slow to start and to lay out; a correct page reacts in milliseconds.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`Page::wait_for`] looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// The Chromium flags every session gets: headless, no sandbox (containers run as root), and no
/// background traffic of its own, so the only network use is the page under test.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,760",
];

/// A running `chromedriver`, killed when dropped.
pub struct Chromedriver {
    child: Child,
    port: u16,
    log: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts `chromedriver` on a free port and waits until it answers `/status`.
    pub fn start() -> Self {
        let mut failures = Vec::new();
        // The free port can be taken by someone else before chromedriver binds it: try again.
        for _ in 0..3 {
            match Self::try_start() {
                Ok(driver) => return driver,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("chromedriver did not start:\n{}", failures.join("\n"));
    }

    fn try_start() -> Result<Self, String> {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(binary).exists() {
                return Err(format!(
                    "{binary} is missing: run scripts/install-browser.sh (Debian packages \
                     chromium and chromium-driver)"
                ));
            }
        }
        let port = free_port("tcp");
        let log = tempfile::tempdir().map_err(|e| format!("a log directory: {e}"))?;
        let log_path = log.path().join("chromedriver.log");
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {CHROMEDRIVER}: {e}"))?;
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let printed = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("chromedriver exited ({status}):\n{printed}"));
            }
            if status_answers(port) {
                return Ok(Self { child, port, log });
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "chromedriver did not answer on port {port} in time"
        ))
    }

    /// The driver's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Opens a new headless Chromium with a fresh profile, saving downloads in a directory of
    /// its own ([`Page::download_dir`]) without asking.
    pub async fn session(&self) -> Page {
        let profile = tempfile::tempdir().expect("a profile directory");
        let downloads = tempfile::tempdir().expect("a download directory");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("json! of an object literal is an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("a Chromium session: {e}\n{}", self.log()));
        Page {
            client: Some(client),
            profile,
            downloads,
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something on `port` answers `GET /status` over HTTP.
fn status_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // The status line is all we need; it comes in the first read.
    let mut reply = [0u8; 64];
    let Ok(read) = stream.read(&mut reply) else {
        return false;
    };
    reply[..read].starts_with(b"HTTP/1.1 200")
}

/// One chat message as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The server's id; None while pending (or failed).
    pub id: Option<u64>,
    /// Greyed: sent, not yet acked.
    pub pending: bool,
    /// Refused by the server (rate_limited, too_large).
    pub failed: bool,
    /// The sender's name.
    pub from: String,
    /// The text.
    pub text: String,
}

/// The page's messages, in the order shown.
const MESSAGES_JS: &str =
    "return Array.from(document.querySelectorAll('#messages .msg')).map(e => ({
  id: e.dataset.id ? Number(e.dataset.id) : null,
  pending: e.classList.contains('pending'),
  failed: e.classList.contains('failed'),
  from: (e.querySelector('.from') || {}).textContent || '',
  text: (e.querySelector('.text') || {}).textContent || '',
}));";

/// A headless Chromium session with its own profile; the browser is closed by
/// [`Page::close`] or, failing that, killed by process id when dropped.
pub struct Page {
    client: Option<Client>,
    profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

impl Page {
    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Where this browser saves downloads.
    pub fn download_dir(&self) -> &Path {
        self.downloads.path()
    }

    /// Navigates to `url` and waits for the page to be loaded.
    pub async fn open(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Reloads the page.
    pub async fn reload(&self) {
        self.client().refresh().await.expect("reload the page");
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), up to
    /// [`PAGE_TIMEOUT`]; returns that value. Panics naming `what`, with the page's text, when it
    /// never does.
    pub async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let value = self.js(script, args.clone()).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}\nmessages: {:#?}",
                    self.body_text().await,
                    self.messages().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the messages until `wanted` holds for them, up to [`PAGE_TIMEOUT`].
    pub async fn wait_messages(&self, what: &str, wanted: impl Fn(&[Shown]) -> bool) -> Vec<Shown> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let shown = self.messages().await;
            if wanted(&shown) {
                return shown;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}\nmessages: {shown:#?}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the page shows `text` from `from` as a confirmed (acked or received) message.
    pub async fn wait_confirmed(&self, from: &str, text: &str) -> Vec<Shown> {
        self.wait_messages(&format!("{from}: {text:?} confirmed"), |shown| {
            count_confirmed(shown, from, text) > 0
        })
        .await
    }

    /// Every message the page shows, in order.
    pub async fn messages(&self) -> Vec<Shown> {
        let value = self.js(MESSAGES_JS, vec![]).await;
        let Value::Array(items) = value else {
            return Vec::new();
        };
        items
            .iter()
            .map(|item| Shown {
                id: item["id"].as_u64(),
                pending: item["pending"].as_bool().unwrap_or(false),
                failed: item["failed"].as_bool().unwrap_or(false),
                from: item["from"].as_str().unwrap_or_default().to_owned(),
                text: item["text"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        self.js("return document.body.innerText;", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the element matching `css`, once it is there and visible. The page may replace
    /// the element between finding and clicking (the room list refreshes itself), so a failed
    /// click is tried again on a fresh find, up to [`PAGE_TIMEOUT`].
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            self.wait_visible(css).await;
            let clicked = match self.client().find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Replaces the text of the input matching `css` with `text` by typing it.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_visible(css).await;
        let input = self
            .client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        input
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits until an element matching `css` is shown (present, not inside anything hidden).
    pub async fn wait_visible(&self, css: &str) {
        self.wait_for(
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]); \
             return !!e && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await;
    }

    /// The text content of the element matching `css` ("" when there is none).
    pub async fn text_of(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A PNG of the visible window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client().screenshot().await.expect("a screenshot")
    }

    /// Ends the WebDriver session, which quits the browser.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        kill_processes_using(self.profile.path());
    }
}

/// How many of `shown` are confirmed (have an id) with this sender and text.
pub fn count_confirmed(shown: &[Shown], from: &str, text: &str) -> usize {
    shown
        .iter()
        .filter(|m| m.id.is_some() && !m.pending && m.from == from && m.text == text)
        .count()
}

/// Asserts that each (from, text) is shown confirmed exactly once, nothing is pending or
/// failed, and the ids are strictly increasing (in id order, no id twice).
pub fn assert_shown_once(who: &str, shown: &[Shown], expected: &[(&str, &str)]) {
    for (from, text) in expected {
        assert_eq!(
            count_confirmed(shown, from, text),
            1,
            "{who} shows {from}: {text:?} exactly once; it shows {shown:#?}"
        );
    }
    assert!(
        shown.iter().all(|m| !m.pending && !m.failed),
        "{who} has nothing pending or failed: {shown:#?}"
    );
    let ids: Vec<u64> = shown.iter().filter_map(|m| m.id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "{who} shows messages in id order, each once: {ids:?}"
    );
}

/// Kills, by process id, every process whose command line names `dir`: the Chromium processes
/// of one session (each has `--user-data-dir=DIR`), so that nothing outlives its test.
fn kill_processes_using(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten().take(100_000) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The page's lobby and room as a person uses them: shared by the browser test files.
pub mod lobby {
    use serde_json::json;

    use super::{Chromedriver, Page};
    use crate::ServerProcess;

    /// The page's address on `server`.
    pub fn page_url(server: &ServerProcess) -> String {
        let http = server.http.expect("the server has an HTTP listener");
        format!("http://{http}/")
    }

    /// Opens the page in a new browser session, in the lobby, with `name` typed in.
    pub async fn open_lobby(driver: &Chromedriver, server: &ServerProcess, name: &str) -> Page {
        let page = driver.session().await;
        page.open(&page_url(server)).await;
        page.wait_visible("#lobby").await;
        page.type_into("#name", name).await;
        page
    }

    /// Creates `room` from the lobby and waits until the page is in it and connected.
    pub async fn create_room(page: &Page, room: &str) {
        page.type_into("#new-room", room).await;
        page.click("#create").await;
        wait_in_room(page, room).await;
    }

    /// Clicks `room`'s Join button in the lobby's (refreshed) room list.
    pub async fn click_join(page: &Page, room: &str) {
        page.click("#refresh").await;
        page.click(&format!("#rooms li.room[data-room=\"{room}\"] button.join"))
            .await;
    }

    /// Joins `room` from the lobby's room list and waits until the page is in it and connected.
    pub async fn join_from_list(page: &Page, room: &str) {
        click_join(page, room).await;
        wait_in_room(page, room).await;
    }

    /// Waits until the page shows `room` and its socket is registered (status "online").
    pub async fn wait_in_room(page: &Page, room: &str) {
        page.wait_for(
            &format!("the page to be in room {room}"),
            "return !document.getElementById('room').hidden \
               && document.getElementById('room-name').textContent === arguments[0] \
               && document.getElementById('status').dataset.state === 'online';",
            vec![json!(room)],
        )
        .await;
    }

    /// Types `text` and presses Enter.
    pub async fn say(page: &Page, text: &str) {
        page.type_into("#text", &format!("{text}\u{E007}")).await;
    }

    /// Says `text` and waits until the page shows it confirmed (acked) as `name`'s.
    pub async fn say_confirmed(page: &Page, name: &str, text: &str) {
        say(page, text).await;
        page.wait_confirmed(name, text).await;
    }

    /// Waits until the page's first download button has saved or failed; returns
    /// `"saved: STATUS"` or `"failed: WHY"`.
    pub async fn wait_download(page: &Page, what: &str) -> String {
        let state = page
            .wait_for(
                what,
                "const b = document.querySelector('#messages button.download');
                 return b.dataset.state === 'saved' || b.dataset.state === 'failed'
                   ? b.dataset.state + ': ' + b.closest('.msg').querySelector('.download-status').textContent
                   : null;",
                vec![],
            )
            .await;
        state.as_str().unwrap_or_default().to_owned()
    }

    /// Opens a browser as `name` and creates `room`, as its host.
    pub async fn host(
        driver: &Chromedriver,
        server: &ServerProcess,
        name: &str,
        room: &str,
    ) -> Page {
        let page = open_lobby(driver, server, name).await;
        create_room(&page, room).await;
        page
    }

    /// Opens a browser as `name` and joins `room`.
    pub async fn member(
        driver: &Chromedriver,
        server: &ServerProcess,
        name: &str,
        room: &str,
    ) -> Page {
        let page = open_lobby(driver, server, name).await;
        join_from_list(&page, room).await;
        page
    }
}
