//! Command-line configuration of the server. Every limit has a safe default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::engine::Limits;
use crate::flood::FloodPolicy;

/// chat-server: rooms over TCP, chat over UDP.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-server", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Address to listen on, for both TCP and UDP.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// TCP port of the control plane (0 picks a free port).
    #[arg(long, default_value_t = 9090)]
    pub tcp_port: u16,
    /// UDP port of the data plane (0 picks a free port).
    #[arg(long, default_value_t = 9091)]
    pub udp_port: u16,
    /// Where rooms and tokens are kept across restarts.
    #[arg(long, default_value = "room_manager.json")]
    pub state: PathBuf,
    /// Log level (off, error, warn, info, debug, trace) or a tracing filter such as
    /// `info,chat_server::control=debug`; RUST_LOG overrides it.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Messages a member may send in a burst before flood control applies.
    #[arg(long, default_value_t = 10)]
    pub flood_burst: u32,
    /// Messages per second a member may sustain; 0 turns flood control off.
    #[arg(long, default_value_t = 5.0, value_parser = parse_rate)]
    pub flood_rate: f64,
    /// Seconds a client has to send its whole TCP request.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,
    /// Most TCP handshakes handled at once; more are refused with server_busy.
    #[arg(long, default_value_t = 256)]
    pub max_handshakes: usize,
    /// TCP connections one source address may open per minute (a burst of that many, then a
    /// steady rate); more are refused with server_busy. 0 turns the limit off.
    #[arg(long, default_value_t = 120)]
    pub handshakes_per_ip: u32,
    /// Wrong room passwords one source address may send per minute; more are refused with
    /// too_many_attempts without being checked. 0 turns the limit off.
    #[arg(long, default_value_t = 10)]
    pub password_failures_per_ip: u32,
    /// Wrong passwords one private room may receive per minute from everyone; more are
    /// refused with too_many_attempts without being checked. 0 turns the limit off.
    #[arg(long, default_value_t = 60)]
    pub password_failures_per_room: u32,
    /// Most rooms at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_rooms: usize,
    /// Live rooms one source address may have created; more creates are refused with
    /// too_many_rooms. 0 turns the limit off.
    #[arg(long, default_value_t = 32)]
    pub rooms_per_ip: usize,
    /// Most members in one room; more are refused with room_full.
    #[arg(long, default_value_t = 256)]
    pub max_members: usize,
    /// The message history database (SQLite).
    #[arg(long, default_value = "chat-history.sqlite3")]
    pub history: PathBuf,
    /// Messages kept per room; older ones are deleted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_limit: u64,
    /// Messages a version-2 member is sent when it first registers.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub join_history: u64,
    /// Seconds of silence after which a version-2 member is removed (version-2 clients ping).
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Seconds of silence after which a registered version-1 member is removed (the reference
    /// client sends no keepalive, so this is long).
    #[arg(long, default_value = "3600", value_parser = parse_seconds)]
    pub v1_idle_timeout: Duration,
    /// Bytes of receive buffer asked for the UDP socket, so bursts wait in the kernel instead
    /// of being dropped (the kernel caps it at net.core.rmem_max; 0 keeps the system default).
    #[arg(long, default_value_t = 4 << 20)]
    pub udp_recv_buffer: usize,
    /// MiB that replay caches, held-back messages and the history backlog may use together
    /// (a quarter, a quarter and a half of it).
    #[arg(long, default_value_t = crate::engine::memory::DEFAULT_BUDGET_MIB, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub memory_budget: u64,
    /// Most bytes sent in answer to one datagram from an address that has not proven it
    /// receives there, as a multiple of that datagram's size (anti-amplification).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub reply_budget: u64,
    /// Seconds of silence after which a registered version-2 member (not the host) counts as
    /// gone when someone joins under its name: the name is freed at once instead of after
    /// --idle-timeout.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub ghost_after: Duration,
    /// Datagrams per second, server-wide, answered with "this room no longer exists" when
    /// their token is unknown (never larger than the datagram answered); 0 answers none.
    #[arg(long, default_value_t = 20)]
    pub no_room_replies: u32,
    /// TCP port of the HTTP listener: the chat page, the JSON API, the WebSocket gateway,
    /// health and metrics (0 picks a free port).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Serve no HTTP: terminals only.
    #[arg(long)]
    pub no_http: bool,
    /// Scale-out: share rooms, members, tokens and message ids with other nodes through this
    /// Redis (`redis://HOST:PORT`); the state file is then not used. Off by default: one node.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Scale-out: this node's name among the nodes sharing the Redis (unique; at most 64
    /// bytes of letters, digits, `-`, `_`, `.`). Needed with `--redis`.
    #[arg(long, value_name = "NAME", requires = "redis", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Scale-out: where browsers reach this node's page (`http://chat-a.example.org:8080`),
    /// announced so that a page served by another node can move here when its own dies. By
    /// default the HTTP listener's address, unless it is bound to every interface.
    #[arg(long, value_name = "URL", requires = "redis", value_parser = crate::cluster::directory::parse_public_url)]
    pub public_url: Option<String>,
    /// Origins (`https://chat.example.org`) whose pages may open the WebSocket and call the
    /// API besides the server's own, comma-separated.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Most WebSockets open at once; more are refused with server_busy.
    #[arg(long, default_value_t = 10_000)]
    pub max_websockets: usize,
    /// WebSockets one source address may have open at once; more are refused with
    /// too_many_attempts. 0 turns the limit off.
    #[arg(long, default_value_t = 64)]
    pub websockets_per_ip: usize,
    /// Directory of the files members share (one directory per room, removed with the
    /// room); by default `chat-files` beside the history database.
    #[arg(long, value_name = "PATH")]
    pub files: Option<PathBuf>,
    /// Largest file a member may share, in bytes.
    #[arg(long, default_value_t = 10 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_file_size: u64,
    /// Bytes of shared files one room may hold; more are refused until the room closes.
    #[arg(long, default_value_t = 100 << 20)]
    pub room_file_quota: u64,
    /// The TLS certificate (PEM, the chain) for encrypted clients and HTTPS; with
    /// --tls-key. Without both, a self-signed one is made on first start beside the state
    /// file (tls-cert.pem, tls-key.pem) and clients pin its fingerprint.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM); with --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept only encrypted clients: plain TCRP handshakes are refused with
    /// encryption_required, plaintext datagrams dropped, plain HTTP refused. Versions 1 and 2
    /// (the reference client) stop working.
    #[arg(long)]
    pub require_encryption: bool,
    /// Most encrypted clients' TLS connections (tunnels) open at once; more are closed.
    #[arg(long, default_value_t = 10_000)]
    pub max_tunnels: usize,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Where shared files are kept: `--files`, or `chat-files` beside the history database.
    pub fn files_dir(&self) -> PathBuf {
        self.files.clone().unwrap_or_else(|| {
            self.history
                .parent()
                .unwrap_or_else(|| std::path::Path::new(""))
                .join("chat-files")
        })
    }

    /// The flood-control policy these flags describe.
    pub fn flood_policy(&self) -> FloodPolicy {
        FloodPolicy {
            burst: self.flood_burst,
            rate: self.flood_rate,
        }
    }

    /// Flood control as grants announce it: the burst and the milliseconds per message
    /// (rounded up, so a client that follows it stays within the limit); `None` when off.
    pub fn send_pace(&self) -> Option<(u32, u64)> {
        if self.flood_rate <= 0.0 {
            return None;
        }
        let interval_ms = (1000.0 / self.flood_rate).ceil();
        // A rate too small to express in u64 milliseconds is paced as slowly as possible.
        let interval_ms = if interval_ms < u64::MAX as f64 {
            interval_ms as u64
        } else {
            u64::MAX
        };
        Some((self.flood_burst, interval_ms.max(1)))
    }

    /// The pace of "this room no longer exists" replies: a server-wide bucket of one
    /// second's worth.
    pub fn no_room_policy(&self) -> FloodPolicy {
        FloodPolicy {
            burst: self.no_room_replies,
            rate: f64::from(self.no_room_replies),
        }
    }

    /// The caps these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_rooms: self.max_rooms,
            max_members_per_room: self.max_members,
            join_history: self.join_history,
            retention: self.history_limit,
            idle_timeout: self.idle_timeout,
            v1_idle_timeout: self.v1_idle_timeout,
            memory_budget: usize::try_from(self.memory_budget << 20).unwrap_or(usize::MAX),
            reply_budget: usize::try_from(self.reply_budget).unwrap_or(usize::MAX),
            ghost_after: self.ghost_after,
        }
    }
}

/// Parses a positive number of seconds, fractions allowed.
pub fn parse_node_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("1-64 letters, digits, '-', '_' or '.'".into())
    }
}

/// The scale-out settings, when `--redis` is given.
impl Config {
    /// `--redis` with `--node-id` (by default the host's name, else `node`).
    pub fn cluster(&self) -> Option<crate::cluster::ClusterConfig> {
        let url = self.redis.clone()?;
        let node_id = self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .and_then(|name| parse_node_id(name.trim()).ok())
                .unwrap_or_else(|| "node".into())
        });
        Some(crate::cluster::ClusterConfig { url, node_id })
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "{text} must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

const LEVEL_NAMES: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `--log-level` value: a level name, or a filter whose every directive is a level or
/// `target=level`. A bare word such as `loud` is refused: the tracing filter would read it as
/// a target name and the server would then log nothing.
pub fn parse_log_level(text: &str) -> Result<String, String> {
    let is_level = |word: &str| {
        LEVEL_NAMES
            .iter()
            .any(|name| name.eq_ignore_ascii_case(word))
    };
    let every_directive_ok = !text.is_empty()
        && text
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => !target.is_empty() && is_level(level),
                None => is_level(directive),
            });
    if every_directive_ok && tracing_subscriber::EnvFilter::try_new(text).is_ok() {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "\"{text}\" is not a log level: use one of {} or a filter such as \
             `info,chat_server=debug`",
            LEVEL_NAMES.join(", ")
        ))
    }
}

/// Parses a rate in messages per second: 0 (off) or more.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of messages per second"))?;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(format!("{text} must be 0 (off) or a positive rate"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::parse_from(["chat-server"]);
        assert_eq!(config.tcp_port, 9090);
        assert_eq!(config.udp_port, 9091);
        assert_eq!(config.state, PathBuf::from("room_manager.json"));
        assert_eq!(config.handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.handshakes_per_ip, 120);
        assert_eq!(config.limits().reply_budget, 4);
        assert_eq!(
            config.flood_policy(),
            FloodPolicy {
                burst: 10,
                rate: 5.0
            }
        );
    }

    #[test]
    fn log_levels_are_levels_or_filters() {
        assert!(parse_log_level("debug").is_ok());
        assert!(parse_log_level("WARN").is_ok());
        assert!(parse_log_level("info,chat_server::control=trace").is_ok());
        for refused in ["loud", "", "info,loud", "chat_server=loud", "=debug"] {
            let error = parse_log_level(refused).expect_err(refused);
            assert!(error.contains("is not a log level"), "{error}");
        }
    }

    #[test]
    fn seconds_must_be_positive() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
