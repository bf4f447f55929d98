//! `redis-server` as a child process for the scale-out tests: on an ephemeral port, with its
//! files in a test's directory, persistence as production runs it (AOF, `everysec`), and
//! stopped by PID. `scripts/install-redis.sh` installs it (CI runs it). Also the nodes that
//! share it, and the wait for their view of each other.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use crate::reference::free_port;
use crate::{Api, EVENT_TIMEOUT, ServerProcess};

/// A running `redis-server`, killed when dropped.
pub struct RedisProcess {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts one on a free port with its files in `dir`. Panics when `redis-server` is not
    /// installed, naming the script that installs it.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, free_port("tcp"))
    }

    /// Starts one on `port` with its files (the append-only file) in `dir`: after a restart
    /// it reads back what it had.
    pub fn start_on(dir: &Path, port: u16) -> Self {
        let log = std::fs::File::create(dir.join(format!("redis-{port}.log")))
            .expect("create the redis log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run redis-server ({error}); install it with scripts/install-redis.sh"
                )
            });
        let redis = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// The URL a node is given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts a `chat-server` node sharing it, on ephemeral ports of 127.0.0.1 (so it
    /// announces its page there), with its own directory (history, files) under `dir`.
    pub fn node(&self, dir: &Path, name: &str, extra: &[&str]) -> ServerProcess {
        let own = dir.join(name);
        std::fs::create_dir_all(&own).expect("a node directory");
        let url = self.url();
        let mut args = vec!["--redis", url.as_str(), "--node-id", name];
        args.extend_from_slice(extra);
        ServerProcess::start_with(&own, &args)
    }

    /// Stops it (SIGTERM: it writes its append-only file and exits) and starts it again on
    /// the same port and directory.
    pub fn restart(mut self) -> Self {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = crate::wait_with_timeout(&mut self.child, EVENT_TIMEOUT);
        let (dir, port) = (self.dir.clone(), self.port);
        drop(self);
        Self::start_on(&dir, port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a node's `/api/nodes` (up to twice [`EVENT_TIMEOUT`]; the nodes look at each other
/// every 2 s) until `wanted` holds for the answer, which it returns.
pub fn wait_for_nodes(http: SocketAddr, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let api = Api::at(http);
    let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
    loop {
        let (_, listed) = api.get_text("/api/nodes");
        if wanted(&listed) {
            return listed;
        }
        assert!(Instant::now() < deadline, "{what}: {listed}");
        thread::sleep(Duration::from_millis(100));
    }
}
