//! Putting the pieces together: load the state, bind both sockets, run until told to stop, and
//! stop in an order that loses nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::Config;
use crate::control::{self, ControlContext};
use crate::manager::{RoomManager, SharedManager, lock};
use crate::persist::{self, StateError};
use crate::relay::{self, RelayStats};
use crate::writer::StateWriter;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The state file is unreadable, corrupt or inconsistent (it is left untouched).
    #[error(transparent)]
    State(#[from] StateError),
    /// A socket could not be bound.
    #[error("cannot listen on {protocol} {addr}: {source}")]
    Bind {
        /// "TCP" or "UDP".
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// A server whose sockets are bound and whose state is loaded, ready to run.
#[derive(Debug)]
pub struct Server {
    config: Config,
    manager: SharedManager,
    tcp: TcpListener,
    udp: Arc<UdpSocket>,
    stats: Arc<RelayStats>,
}

impl Server {
    /// Loads the state file and binds the sockets.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let manager = match persist::load(&config.state)? {
            None => RoomManager::new(config.limits(), config.flood_policy()),
            Some(state) => RoomManager::restore(
                state,
                config.limits(),
                config.flood_policy(),
                Instant::now(),
            )
            .map_err(|problem| StateError::Inconsistent {
                path: config.state.clone(),
                problem,
            })?,
        };
        let tcp_addr = SocketAddr::new(config.bind, config.tcp_port);
        let tcp = TcpListener::bind(tcp_addr)
            .await
            .map_err(|source| StartError::Bind {
                protocol: "TCP",
                addr: tcp_addr,
                source,
            })?;
        let udp_addr = SocketAddr::new(config.bind, config.udp_port);
        let udp = UdpSocket::bind(udp_addr)
            .await
            .map_err(|source| StartError::Bind {
                protocol: "UDP",
                addr: udp_addr,
                source,
            })?;
        Ok(Self {
            config,
            manager: Arc::new(Mutex::new(manager)),
            tcp,
            udp: Arc::new(udp),
            stats: Arc::new(RelayStats::default()),
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Counters of the data plane.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets handshakes in flight
    /// finish, writes the state one last time and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let udp_port = self.udp_addr()?.port();
        {
            let manager = lock(&self.manager);
            tracing::info!(
                rooms = manager.room_count(),
                members = manager.member_count(),
                state = %self.config.state.display(),
                "state loaded"
            );
        }
        let (stop_writer, writer_stopped) = watch::channel(false);
        let (stop_front_ends, front_ends_stopped) = watch::channel(false);
        let (writer, writer_task) = StateWriter::spawn(
            Arc::clone(&self.manager),
            self.config.state.clone(),
            writer_stopped,
        );
        let relay_task = tokio::spawn(relay::serve(
            Arc::clone(&self.udp),
            Arc::clone(&self.manager),
            writer.clone(),
            Arc::clone(&self.stats),
            front_ends_stopped.clone(),
        ));
        let context = Arc::new(ControlContext {
            manager: Arc::clone(&self.manager),
            writer,
            udp_port,
            request_timeout: self.config.handshake_timeout,
            max_handshakes: self.config.max_handshakes,
        });
        let control_task = tokio::spawn(control::serve(self.tcp, context, front_ends_stopped));

        shutdown.await;
        tracing::info!("shutting down: finishing handshakes in flight");
        let _ = stop_front_ends.send(true);
        // Handshakes in flight still need the writer, so it stops last.
        let _ = control_task.await;
        let _ = relay_task.await;
        let _ = stop_writer.send(true);
        let _ = writer_task.await;
        tracing::info!(
            received = self
                .stats
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
            dropped = self.stats.dropped(),
            "state written; goodbye"
        );
        Ok(())
    }
}
