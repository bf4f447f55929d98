//! The one error type of the tool: every failure becomes a sentence for the person at the
//! terminal.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

/// Why a benchmark run could not be completed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The tool only ever talks to the local machine.
    #[error("refusing to address {0}: chat-bench only ever sends traffic to 127.0.0.1")]
    NotLoopback(String),
    /// Neither --spawn nor --target-live: the tool will not load a server it did not start
    /// unless told to.
    #[error(
        "refusing to load the running server at {0}: pass --spawn to start a throwaway one, \
         or --target-live to drive that server (it gets real rooms and members)"
    )]
    LiveTargetNotConfirmed(String),
    /// A command-line value is out of range or inconsistent with another one.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The chat-server binary to spawn does not exist.
    #[error(
        "cannot find the chat-server binary at {0} (build it with `cargo build -p chat-server`, or pass --server-bin)"
    )]
    ServerBinaryMissing(String),
    /// Spawning or talking to the spawned server failed at the OS level.
    #[error("could not start chat-server: {0}")]
    SpawnFailed(#[source] io::Error),
    /// The spawned server exited or stayed silent before announcing its ports.
    #[error("chat-server did not announce its ports: {0}")]
    ServerDidNotStart(String),
    /// A TCRP handshake failed at the socket level.
    #[error("TCRP handshake with {addr} failed: {source}")]
    Handshake {
        /// The server's control address.
        addr: SocketAddr,
        /// What the socket reported.
        #[source]
        source: io::Error,
    },
    /// The server answered a handshake with something the contract does not allow.
    #[error("the server sent an invalid TCRP reply: {0}")]
    BadReply(String),
    /// The server refused a create or join the benchmark needs.
    #[error("the server refused {operation} of room {room:?}: {code} ({message})")]
    Refused {
        /// `create` or `join`.
        operation: &'static str,
        /// The room asked for.
        room: String,
        /// The error code of the compliance reply.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// A member never received its `welcome to` notice.
    #[error("member {member} of room {room:?} was not welcomed after {attempts} register attempts")]
    RegisterTimeout {
        /// The member's username.
        member: String,
        /// Its room.
        room: String,
        /// How many `__REGISTER__` datagrams were sent.
        attempts: u32,
    },
    /// A process or thread statistic could not be read from /proc.
    #[error("cannot read {path}: {reason}")]
    Procfs {
        /// The /proc file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A socket operation failed.
    #[error("socket error while {context}: {source}")]
    Socket {
        /// What the tool was doing.
        context: &'static str,
        /// What the OS reported.
        #[source]
        source: io::Error,
    },
    /// An HTTP API request failed or was answered with something the contract does not allow.
    #[error("HTTP API: {0}")]
    Http(String),
    /// A WebSocket member could not connect, register, or keep its connection.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// A TLS connection (version 3) failed: the handshake, the pinned fingerprint, the key
    /// export, or the tunnel.
    #[error("TLS: {0}")]
    Tls(String),
    /// A worker thread panicked; the message is the panic payload when it was a string.
    #[error("a benchmark thread panicked: {0}")]
    ThreadPanicked(String),
}

impl BenchError {
    /// Wraps a socket error with what the tool was doing when it happened.
    pub fn socket(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Socket { context, source }
    }

    /// Turns a thread's panic payload into an error.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Self::ThreadPanicked(text)
    }
}

/// Result alias for the whole tool.
pub type Result<T> = std::result::Result<T, BenchError>;
