//! `redis-server` as a child process for the scale-out tests: on an ephemeral port, with its
//! files in a test's directory, persistence as production runs it (AOF, `everysec`), and
//! stopped by PID. `scripts/install-redis.sh` installs it (CI runs it).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::EVENT_TIMEOUT;
use crate::reference::free_port;

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
