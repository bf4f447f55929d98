//! Putting the pieces together: load the state, bind both sockets, run until told to stop, and
//! stop in an order that loses nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chat_protocol::fingerprint::Fingerprint;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::control::{self, ControlContext};
use crate::engine::{Engine, HistoryJob, HistoryReadError, RestoreError};
use crate::files::FileStore;
use crate::history::{HistoryError, HistoryStore};
use crate::history_writer;
use crate::ip_limit::HandshakeRateLimiter;
use crate::journal;
use crate::metrics::Metrics;
use crate::password_gate::{PasswordGate, PasswordPolicy};
use crate::persist::StateError;
use crate::relay::{self, Relay};
use crate::room_quota::RoomQuota;
use crate::secure::certificate::{CertificateError, CertificatePaths};
use crate::secure::https::DualListener;
use crate::secure::tunnel::TunnelContext;
use crate::secure::{KeyTable, ServerIdentity, Tunnels};
use crate::send::{Outlet, Transports};
use crate::shared::{SharedEngine, lock};
use crate::stats::RelayStats;
use crate::web::{self, WebContext, WebPeers};
use crate::writer::StateWriter;

mod background;

#[cfg(unix)]
use background::log_status_on_sigusr1;
use background::tick;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The state file is unreadable, corrupt or inconsistent (it is left untouched).
    #[error(transparent)]
    State(#[from] StateError),
    /// The history database cannot be opened or read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The history database could not be read while the rooms were restored.
    #[error(transparent)]
    HistoryRead(#[from] HistoryReadError),
    /// A socket could not be bound.
    #[error("cannot listen on {protocol} {addr}: {source}")]
    Bind {
        /// "TCP", "UDP" or "HTTP".
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The shared files' directory cannot be made or used.
    #[error("cannot use the shared files' directory {path}: {source}")]
    Files {
        /// The directory.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The history thread could not be started.
    #[error("cannot start the history thread: {0}")]
    Thread(#[source] io::Error),
    /// The TLS certificate or key cannot be read, made or used.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// Scale-out: Redis, or the state in it.
    #[error(transparent)]
    Cluster(#[from] cluster::node::NodeStartError),
    /// Scale-out: a `--redis` URL that does not parse.
    #[error("--redis: {0}")]
    RedisUrl(#[from] cluster::ClusterError),
}

/// A server whose sockets are bound and whose state is loaded, ready to run.
#[derive(Debug)]
pub struct Server {
    config: Config,
    engine: SharedEngine,
    tcp: TcpListener,
    udp: UdpSocket,
    /// The HTTP listener and the shared files it serves, unless `--no-http`.
    http: Option<(TcpListener, Arc<FileStore>)>,
    /// Where every loop's frames go (a clone of `udp`, and the web connections).
    transports: Arc<Transports>,
    stats: Arc<RelayStats>,
    history_jobs: Sender<HistoryJob>,
    history_thread: JoinHandle<u64>,
    /// Tells the history thread to stop retrying failed commits.
    history_stopping: Arc<AtomicBool>,
    /// The TLS certificate and configuration (version 3, HTTPS).
    identity: ServerIdentity,
    /// Scale-out: the Redis handle and where the change stream stood at start.
    cluster: Option<(Arc<Cluster>, String)>,
}

/// Uploads stored at once; each holds its body (up to `--max-file-size`) in memory.
const UPLOADS_AT_ONCE: usize = 4;

/// The longest shutdown waits for the history thread (which stops retrying failed commits as
/// soon as shutdown starts, so this is reached only if the disk itself hangs).
pub const HISTORY_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

impl Server {
    /// Loads the state file and the history, binds the sockets, starts the history thread.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        // The state file first: a server that refuses to start should not have created a
        // history database on its way out.
        let mut history = HistoryStore::open(&config.history)?;
        let mut node = None;
        let saved = match config.cluster() {
            // Scale-out: the state lives in Redis, not in the state file.
            Some(cluster) => {
                let cluster = Cluster::new(&cluster)?;
                let (engine, cursor) = cluster::node::load_engine(
                    &cluster,
                    config.limits(),
                    config.flood_policy(),
                    &history,
                )?;
                node = Some((engine, cluster, cursor));
                None
            }
            None => journal::load(&config.state)?,
        };
        let (node_engine, cluster) = match node {
            Some((engine, cluster, cursor)) => (Some(engine), Some((cluster, cursor))),
            None => (None, None),
        };
        let engine = match (node_engine, saved) {
            (Some(engine), _) => engine,
            (None, None) => Engine::new(config.limits(), config.flood_policy()),
            (None, Some(state)) => Engine::restore(
                state,
                config.limits(),
                config.flood_policy(),
                Some(&history),
                Instant::now(),
            )
            .map_err(|error| match error {
                RestoreError::State(problem) => StartError::State(StateError::Inconsistent {
                    path: config.state.clone(),
                    problem,
                }),
                RestoreError::History(error) => StartError::HistoryRead(error),
            })?,
        };
        // Rooms that closed while their close was not yet saved leave history behind.
        history.retain_rooms(&engine.room_uids())?;
        let identity = ServerIdentity::load_or_create(&CertificatePaths::new(
            &config.state,
            config.tls_cert.clone(),
            config.tls_key.clone(),
        )?)?;
        let mut engine = engine;
        // Counted before anything is sealed: run() waits for it to be durable.
        let keys = KeyTable::new(engine.next_boot());
        keys.load(&engine.sealed_members());

        let tcp_addr = SocketAddr::new(config.bind, config.tcp_port);
        let tcp = TcpListener::bind(tcp_addr)
            .await
            .map_err(|source| StartError::Bind {
                protocol: "TCP",
                addr: tcp_addr,
                source,
            })?;
        let udp_addr = SocketAddr::new(config.bind, config.udp_port);
        let bind_udp = || -> io::Result<(UdpSocket, UdpSocket)> {
            let socket = UdpSocket::bind(udp_addr)?;
            if config.udp_recv_buffer > 0 {
                // The relay's own buffer is where loss at saturation starts (the members keep
                // up): a larger one absorbs bursts.
                nix::sys::socket::setsockopt(
                    &socket,
                    nix::sys::socket::sockopt::RcvBuf,
                    &config.udp_recv_buffer,
                )
                .map_err(io::Error::from)?;
            }
            // Blocking, with a timeout so the relay thread notices a shutdown.
            socket.set_read_timeout(Some(relay::STOP_POLL))?;
            // The history thread sends acks and relays from a clone of the same socket, so
            // members see one server address.
            let for_history = socket.try_clone()?;
            Ok((socket, for_history))
        };
        let (udp, history_socket) = bind_udp().map_err(|source| StartError::Bind {
            protocol: "UDP",
            addr: udp_addr,
            source,
        })?;
        let http = if config.no_http {
            None
        } else {
            let http_addr = SocketAddr::new(config.bind, config.http_port);
            let listener =
                TcpListener::bind(http_addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        protocol: "HTTP",
                        addr: http_addr,
                        source,
                    })?;
            let files_dir = config.files_dir();
            let files = FileStore::open(&files_dir, config.max_file_size, config.room_file_quota)
                .map_err(|source| StartError::Files {
                path: files_dir,
                source,
            })?;
            Some((listener, Arc::new(files)))
        };
        let transports = Arc::new(Transports {
            udp: history_socket,
            web: Arc::new(WebPeers::default()),
            keys: Arc::new(keys),
            tunnels: Arc::new(Tunnels::new(config.max_tunnels)),
        });

        engine.attach_history();
        let engine = Arc::new(Mutex::new(engine));
        let history_stopping = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let checkpoints = HistoryStore::open(&config.history)?;
        let (history_jobs, history_thread) = history_writer::spawn(
            history,
            checkpoints,
            config.history_limit,
            Arc::clone(&engine),
            Arc::clone(&transports),
            Arc::clone(&history_stopping),
            Arc::clone(&stats),
            cluster.as_ref().map(|(cluster, _)| Arc::clone(cluster)),
        )
        .map_err(StartError::Thread)?;
        Ok(Self {
            config,
            engine,
            tcp,
            udp,
            http,
            transports,
            stats,
            history_jobs,
            history_thread,
            history_stopping,
            identity,
            cluster,
        })
    }

    /// The TLS certificate's fingerprint, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint
    }

    /// Whether only encrypted clients are accepted.
    pub fn requires_encryption(&self) -> bool {
        self.config.require_encryption
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The bound HTTP address, unless `--no-http`.
    pub fn http_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.http
            .as_ref()
            .map(|(listener, _)| listener.local_addr())
    }

    /// Where browsers reach this node's page, announced to the other nodes: `--public-url`,
    /// else the HTTP listener's address unless it is bound to every interface (no one
    /// address then says where browsers come from).
    fn public_url(&self) -> Option<String> {
        if self.config.public_url.is_some() {
            return self.config.public_url.clone();
        }
        let addr = self.http_addr()?.ok()?;
        if addr.ip().is_unspecified() {
            tracing::info!(
                "this node announces no page for other nodes' pages to move to: its HTTP \
                 listener is on every interface; give --public-url"
            );
            return None;
        }
        Some(format!("http://{addr}"))
    }

    /// Counters of the data plane.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets handshakes in flight
    /// finish, stores the last messages, writes the state one last time and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let udp_port = self.udp_addr()?.port();
        {
            let engine = lock(&self.engine);
            let udp_recv_buffer =
                nix::sys::socket::getsockopt(&self.udp, nix::sys::socket::sockopt::RcvBuf).ok();
            tracing::info!(
                udp_recv_buffer,
                rooms = engine.room_count(),
                members = engine.member_count(),
                state = %self.config.state.display(),
                history = %self.config.history.display(),
                "state loaded"
            );
        }
        let (stop_writer, writer_stopped) = watch::channel(false);
        let (stop_front_ends, front_ends_stopped) = watch::channel(false);
        let (writer, writer_task) = StateWriter::spawn(
            Arc::clone(&self.engine),
            self.config.state.clone(),
            writer_stopped,
            self.cluster
                .as_ref()
                .map(|(cluster, _)| Arc::clone(cluster)),
        );
        // This start's boot number must be on disk before anything is sealed with counters
        // above it: a crash before then would let the next start reuse them.
        let boot_seq = lock(&self.engine).journal_seq();
        writer
            .durable(boot_seq)
            .await
            .map_err(|failure| io::Error::other(format!("cannot save the state: {failure}")))?;
        // One outlet for every loop: frames leave through the data-plane socket or to the web
        // connections, jobs go to the history thread.
        let outlet = Outlet::new(
            Arc::clone(&self.transports),
            self.history_jobs.clone(),
            Arc::clone(&self.stats),
        );
        let mut metrics = Metrics::new(
            Arc::clone(&self.engine),
            Arc::clone(&self.stats),
            Arc::clone(&self.transports.web),
            Arc::clone(&self.transports.tunnels),
        );
        if let Some((cluster, _)) = &self.cluster {
            metrics.watch_cluster(Arc::clone(cluster));
        }
        let metrics = Arc::new(metrics);
        let node_threads = match &self.cluster {
            Some((cluster, cursor)) => Some(cluster::node::NodeThreads::start(
                cluster,
                &self.engine,
                &outlet,
                &writer,
                cursor.clone(),
                self.config.idle_timeout,
                self.public_url(),
            )?),
            None => None,
        };
        let stop_relay = Arc::new(AtomicBool::new(false));
        let relay_thread = relay::spawn(
            self.udp.try_clone()?,
            Relay {
                engine: Arc::clone(&self.engine),
                outlet: outlet.clone(),
                writer: writer.clone(),
                stats: Arc::clone(&self.stats),
                no_room: self.config.no_room_policy(),
                keys: Arc::clone(&self.transports.keys),
                require_encryption: self.config.require_encryption,
            },
            Arc::clone(&stop_relay),
        )?;
        let tick_task = tokio::spawn(tick(
            Arc::clone(&self.engine),
            Arc::clone(&self.transports.keys),
            outlet.clone(),
            writer.clone(),
            self.config.idle_timeout.min(self.config.v1_idle_timeout),
            front_ends_stopped.clone(),
        ));
        let tunnel = TunnelContext {
            engine: Arc::clone(&self.engine),
            outlet: outlet.clone(),
            writer: writer.clone(),
            keys: Arc::clone(&self.transports.keys),
            tunnels: Arc::clone(&self.transports.tunnels),
            stats: Arc::clone(&self.stats),
        };
        let context = Arc::new(ControlContext {
            engine: Arc::clone(&self.engine),
            outlet,
            writer,
            tls: Arc::clone(&self.identity.config),
            require_encryption: self.config.require_encryption,
            tunnel,
            udp_port,
            http_port: self
                .http
                .as_ref()
                .and_then(|(listener, _)| listener.local_addr().ok())
                .map(|addr| addr.port()),
            send_pace: self.config.send_pace(),
            request_timeout: self.config.handshake_timeout,
            max_handshakes: self.config.max_handshakes,
            handshakes_per_ip: self.config.handshakes_per_ip,
            passwords: PasswordGate::new(PasswordPolicy::for_this_machine(
                self.config.password_failures_per_ip,
                self.config.password_failures_per_room,
            ))?,
            room_quota: RoomQuota::new(self.config.rooms_per_ip),
            metrics: Arc::clone(&metrics),
        });
        let web_task = self.http.map(|(listener, files)| {
            let sweep = tokio::spawn(web::files::sweep(
                Arc::clone(&files),
                Arc::clone(&self.engine),
                front_ends_stopped.clone(),
            ));
            let web = Arc::new(WebContext {
                files,
                uploads: Semaphore::new(UPLOADS_AT_ONCE),
                control: Arc::clone(&context),
                peers: Arc::clone(&self.transports.web),
                metrics,
                allowed_origins: self.config.allowed_origin.clone(),
                cluster: self
                    .cluster
                    .as_ref()
                    .map(|(cluster, _)| Arc::clone(cluster)),
                max_websockets: self.config.max_websockets,
                websockets_per_ip: self.config.websockets_per_ip,
                websockets: Mutex::default(),
                handshake_rate: Mutex::new(HandshakeRateLimiter::new(
                    self.config.handshakes_per_ip,
                )),
                handshake_slots: Arc::new(Semaphore::new(self.config.max_handshakes)),
                stop: front_ends_stopped.clone(),
            });
            let mut stopped = front_ends_stopped.clone();
            let listener = DualListener::new(
                listener,
                Arc::clone(&self.identity.config),
                self.config.require_encryption,
            );
            let serve = tokio::spawn(web::serve(listener, web, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
            (serve, sweep)
        });
        let control_task = tokio::spawn(control::serve(
            self.tcp,
            context,
            front_ends_stopped.clone(),
        ));
        #[cfg(unix)]
        let status_task = tokio::spawn(log_status_on_sigusr1(
            Arc::clone(&self.engine),
            Arc::clone(&self.stats),
            front_ends_stopped,
        ));

        shutdown.await;
        tracing::info!("shutting down: finishing handshakes in flight");
        let _ = stop_front_ends.send(true);
        // Handshakes in flight still need the writer, so it stops last.
        let _ = control_task.await;
        if let Some((serve, sweep)) = web_task {
            let _ = serve.await;
            let _ = sweep.await;
        }
        stop_relay.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || relay_thread.join()).await;
        let _ = tick_task.await;
        #[cfg(unix)]
        let _ = status_task.await;
        if let Some(threads) = node_threads {
            let _ = tokio::task::spawn_blocking(move || threads.stop()).await;
        }
        self.history_stopping.store(true, Ordering::Relaxed);
        let _ = self.history_jobs.send(HistoryJob::Stop);
        let history_thread = self.history_thread;
        let joined = tokio::time::timeout(
            HISTORY_SHUTDOWN_LIMIT,
            tokio::task::spawn_blocking(move || history_thread.join()),
        )
        .await;
        match joined {
            Ok(Ok(Ok(0))) => {}
            Ok(Ok(Ok(not_stored))) => tracing::error!(
                not_stored,
                "messages accepted but not stored before shutdown (never acknowledged: version-2 senders retransmit them to the next start)"
            ),
            Ok(_) => tracing::error!("the history thread failed during shutdown"),
            Err(_) => tracing::error!(
                limit = ?HISTORY_SHUTDOWN_LIMIT,
                "the history database did not finish in time; stopping without it"
            ),
        }
        let _ = stop_writer.send(true);
        let _ = writer_task.await;
        tracing::info!(
            received = self.stats.received.load(Ordering::Relaxed),
            dropped = self.stats.dropped(),
            "state written; goodbye"
        );
        Ok(())
    }
}
