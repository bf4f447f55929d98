//! Command-line interface: global target options and one subcommand per scenario.

use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::fingerprint::Fingerprint;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::error::{BenchError, Result};
use crate::load::LoadSpec;
use crate::member::BufferSizes;
use crate::payload::MIN_PAYLOAD_LEN;
use crate::wire::Protocol;

/// Longest run any single duration option may ask for.
const MAX_SECONDS: f64 = 3600.0;

/// Benchmark a chat-server over loopback through the real TCRP/UCRP protocol, beside a bare
/// UDP relay built into this tool.
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub struct Cli {
    /// Which server to drive.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also print one JSON object per result row on stdout (the table then goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Where the server under test is.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Start a chat-server on ephemeral loopback ports (flood control off, throwaway state)
    /// and stop it at the end.
    #[arg(long, global = true)]
    pub spawn: bool,
    /// The chat-server binary to spawn (implies --spawn); default: next to chat-bench.
    #[arg(long, global = true, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Address of an already running server; must be a loopback address.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub server: String,
    /// TCRP port of an already running server.
    #[arg(long, global = true, default_value_t = 9090)]
    pub tcp_port: u16,
    /// UCRP port of an already running server.
    #[arg(long, global = true, default_value_t = 9091)]
    pub udp_port: u16,
    /// HTTP port (API and WebSocket gateway) of an already running server.
    #[arg(long, global = true, default_value_t = 8080)]
    pub http_port: u16,
    /// One more argument for the spawned server, after the tool's own (repeatable), e.g.
    /// `--server-arg=--max-members=1000`.
    #[arg(long, global = true, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Version 3: the server certificate's fingerprint to pin (`SHA256:` and 64 hex digits,
    /// as `chat-server fingerprint` prints it); without it the first certificate seen is
    /// pinned for the rest of the run.
    #[arg(long, global = true, value_name = "SHA256:HEX")]
    pub fingerprint: Option<Fingerprint>,
    /// PID of an already running server, for its CPU and memory figures.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Drive the already running server at --server/--tcp-port/--udp-port: it gets real rooms
    /// and members, so without --spawn this must be said outright.
    #[arg(long, global = true, conflicts_with_all = ["spawn", "server_bin"])]
    pub target_live: bool,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Create/join handshakes per second and their latency, with concurrent connections.
    Handshake(HandshakeArgs),
    /// One room, paced senders: delivered rate, loss, latency, server CPU; beside the baseline.
    Relay(RelayArgs),
    /// Raise the offered rate until loss exceeds the threshold; beside the baseline.
    Ramp(RampArgs),
    /// Many rooms of two at an aggregate rate: latency and loss; beside the baseline.
    Rooms(RoomsArgs),
    /// Register many members and report the server's resident memory per member.
    Members(MembersArgs),
    /// The relay load against the bare relay alone.
    Baseline(BaselineArgs),
    /// One room of UDP (version 2) and WebSocket members: figures per transport, server
    /// memory per WebSocket member.
    Web(WebArgs),
    /// Scale-out: one room with members spread over several nodes sharing a Redis, beside
    /// the same load on one node alone and on one node with Redis (needs redis-server).
    Nodes(NodesArgs),
}

/// Knobs shared by every paced load.
#[derive(Debug, Clone, Args)]
pub struct LoadTuning {
    /// Bytes of chat text per message.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How long to wait for late datagrams after the last send, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub drain_ms: u64,
    /// Upper bound on messages per run, whatever rate × duration says.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_messages: u64,
    /// Threads receiving on the member sockets.
    #[arg(long, default_value_t = 2)]
    pub receiver_threads: usize,
    /// SO_RCVBUF and SO_SNDBUF asked for every member socket, in KiB.
    #[arg(long, default_value_t = 4096)]
    pub socket_buffer_kib: usize,
}

impl LoadTuning {
    /// The socket buffers to ask for.
    pub fn buffers(&self) -> BufferSizes {
        let bytes = self.socket_buffer_kib.saturating_mul(1024);
        BufferSizes {
            receive: bytes,
            send: bytes,
        }
    }

    /// A load spec for one run at `rate` for `duration`.
    pub fn spec(&self, run_id: u32, rate: f64, duration: Duration) -> LoadSpec {
        LoadSpec {
            run_id,
            rate,
            duration,
            max_messages: self.max_messages,
            payload_len: self.payload_bytes,
            drain: Duration::from_millis(self.drain_ms),
            receiver_threads: self.receiver_threads,
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<()> {
        in_range("--payload-bytes", self.payload_bytes, MIN_PAYLOAD_LEN, 3800)?;
        in_range("--drain-ms", self.drain_ms, 0, 60_000)?;
        in_range("--max-messages", self.max_messages, 1, 100_000_000)?;
        in_range("--receiver-threads", self.receiver_threads, 1, 64)?;
        in_range("--socket-buffer-kib", self.socket_buffer_kib, 64, 1 << 20)?;
        Ok(())
    }
}

/// `relay` options.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Members in the room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// How many of them send, in turn.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Offered rate over all senders, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Run the same load against the bare relay and print the ratio.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub compare_baseline: bool,
    /// Datagram version the members speak to the server (the bare relay always gets v1).
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    pub protocol: Protocol,
    /// With `--protocol v2` (or v3): first run the same load in version 1 against a server
    /// started (or found) the same way, then print the ratio row (v2/v1).
    #[arg(long, conflicts_with = "compare_v2")]
    pub compare_v1: bool,
    /// With `--protocol v3`: first run the same load in version 2 against a server started
    /// (or found) the same way, then print the v3/v2 ratio row (CPU per delivered datagram,
    /// latency, rates).
    #[arg(long)]
    pub compare_v2: bool,
    /// With `--protocol v3`: the path of the members' sealed datagrams: UDP, their TLS
    /// connection (the tunnel, registered there without a challenge), or both, one after the
    /// other on fresh servers, with a tunnel/udp ratio row.
    #[arg(long, value_enum, default_value_t = DataPath::Udp)]
    pub transport: DataPath,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

impl RelayArgs {
    /// The protocol of the comparison run, if any.
    pub fn compared(&self) -> Option<Protocol> {
        if self.compare_v1 {
            Some(Protocol::V1)
        } else if self.compare_v2 {
            Some(Protocol::V2)
        } else {
            None
        }
    }

    /// The protocol of each measured server run, in order: `--protocol`, or for version 3
    /// one per path of `--transport`.
    pub fn measured(&self) -> Vec<Protocol> {
        match (self.protocol, self.transport) {
            (Protocol::V3, DataPath::Tunnel) => vec![Protocol::V3Tunnel],
            (Protocol::V3, DataPath::Both) => vec![Protocol::V3, Protocol::V3Tunnel],
            (protocol, _) => vec![protocol],
        }
    }
}

/// Which path version-3 members' sealed datagrams take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataPath {
    /// UDP, as when nothing blocks it.
    Udp,
    /// The member's TLS connection to the control port.
    Tunnel,
    /// UDP, then the tunnel.
    Both,
}

/// `baseline` options.
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Members in the room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// How many of them send, in turn.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Offered rate over all senders, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

/// `ramp` options.
#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    /// Members in the room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// How many of them send, in turn.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// First offered rate, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Highest offered rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 2.0)]
    pub step_duration: f64,
    /// Loss above this percentage fails a step.
    #[arg(long, default_value_t = 0.1)]
    pub loss_threshold: f64,
    /// Bisection steps after the first failing rate.
    #[arg(long, default_value_t = 4)]
    pub bisect_steps: u32,
    /// Most steps per relay, doubling and bisecting together.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// Seconds one relay's ramp may take before it stops where it is.
    #[arg(long, default_value_t = 120.0)]
    pub time_limit: f64,
    /// Ramp the bare relay too and print the ratio.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub compare_baseline: bool,
    /// Datagram version the members speak to the server (the bare relay always gets v1).
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    pub protocol: Protocol,
    /// With `--protocol v3`: first ramp a server started (or found) the same way in version
    /// 2, then print the v3/v2 ratio of the highest lossless rates.
    #[arg(long)]
    pub compare_v2: bool,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

/// `rooms` options.
#[derive(Debug, Clone, Args)]
pub struct RoomsArgs {
    /// Members, paired into rooms of two (must be even).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Aggregate offered rate, messages per second; every member sends in turn.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Run the same load against the bare relay and print the ratio.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub compare_baseline: bool,
    /// Datagram version the members speak to the server (the bare relay always gets v1).
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    pub protocol: Protocol,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

/// `nodes` options.
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// Members in the room, dealt round-robin over the nodes.
    #[arg(long, default_value_t = 12)]
    pub members: usize,
    /// How many of them send, in turn (spread over the nodes the same way).
    #[arg(long, default_value_t = 3)]
    pub senders: usize,
    /// Offered rate over all senders, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Nodes sharing the Redis.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The redis-server binary (started on a free loopback port, AOF everysec, throwaway
    /// directory).
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: PathBuf,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

/// `web` options.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// Members speaking version 2 over UDP; the first one creates the room.
    #[arg(long, default_value_t = 10)]
    pub udp_members: usize,
    /// Members on WebSockets (token from the HTTP API, then GET /ws); the first one creates
    /// the room when there is no UDP member.
    #[arg(long, default_value_t = 10)]
    pub ws_members: usize,
    /// Members that send, in turn, taken alternately from the UDP and the WebSocket members
    /// while each transport has some left.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Offered rate over all senders, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// The crowd: 1000 WebSocket members and no UDP member at 100 msg/s (instead of
    /// --udp-members, --ws-members and --rate).
    #[arg(long, conflicts_with_all = ["udp_members", "ws_members", "rate"])]
    pub crowd: bool,
    /// HTTP joins and WebSocket connections under way at once.
    #[arg(long, default_value_t = 16)]
    pub connect_concurrency: usize,
    /// Threads driving the WebSocket connections.
    #[arg(long, default_value_t = 2)]
    pub ws_threads: usize,
    /// Seconds the joins and connections together may take.
    #[arg(long, default_value_t = 120.0)]
    pub setup_limit: f64,
    /// Milliseconds to wait after connecting before reading memory.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Load knobs.
    #[command(flatten)]
    pub tuning: LoadTuning,
}

impl WebArgs {
    /// UDP members, WebSocket members and the rate, with --crowd applied.
    pub fn shape(&self) -> (usize, usize, f64) {
        if self.crowd {
            (0, 1000, 100.0)
        } else {
            (self.udp_members, self.ws_members, self.rate)
        }
    }
}

/// `members` options.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    /// Members to register, hosts included.
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Most members per room (a host creates it, the rest join).
    #[arg(long, default_value_t = 200)]
    pub room_size: usize,
    /// Rooms populated concurrently.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds registration may take before it stops where it is.
    #[arg(long, default_value_t = 300.0)]
    pub time_limit: f64,
    /// Milliseconds to wait after registration before reading memory.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
}

/// `handshake` options.
#[derive(Debug, Clone, Args)]
pub struct HandshakeArgs {
    /// Concurrent connections (one worker each, create then join, repeatedly).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop after this many operations even if time remains.
    #[arg(long, default_value_t = 100_000)]
    pub operations: u64,
    /// Guests that join each room after its host creates it (at most 255, under the server's
    /// default 256 members per room); more guests make the run mostly joins.
    #[arg(long, default_value_t = 1)]
    pub joins_per_room: u32,
    /// Version 3: each operation is a new TCP connection, a full TLS 1.3 handshake (no
    /// resumption) and the exchange inside it, with the member's keys exported after a grant.
    #[arg(long)]
    pub tls: bool,
    /// With `--tls`: first measure the same load in plain TCRP on a server started (or found)
    /// the same way, then print the tls/plain ratio rows.
    #[arg(long, default_value_t = true, action = ArgAction::Set, requires = "tls")]
    pub compare_plain: bool,
}

/// Checks that an integer option lies in `min..=max`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        return Err(BenchError::InvalidArguments(format!(
            "{name} must be between {min} and {max}, not {value}"
        )));
    }
    Ok(())
}

/// A positive, bounded number of seconds.
pub fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(value > 0.0 && value <= MAX_SECONDS) {
        return Err(BenchError::InvalidArguments(format!(
            "{name} must be more than 0 and at most {MAX_SECONDS} seconds, not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// A positive, finite rate.
pub fn rate(name: &str, value: f64) -> Result<f64> {
    if !(1.0..=10_000_000.0).contains(&value) {
        return Err(BenchError::InvalidArguments(format!(
            "{name} must be between 1 and 10000000 messages per second, not {value}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "chat-bench",
            "relay",
            "--spawn",
            "--duration",
            "1",
            "--rate",
            "200",
            "--members",
            "3",
            "--json",
        ])
        .unwrap();
        assert!(cli.target.spawn && cli.json);
        let Scenario::Relay(relay) = cli.scenario else {
            panic!("expected relay");
        };
        assert!(relay.compare_baseline);
        assert_eq!(relay.members, 3);
        assert_eq!(relay.protocol, Protocol::V1, "version 1 unless asked");
        assert!(!relay.compare_v1);
        let cli =
            Cli::try_parse_from(["chat-bench", "relay", "--compare-baseline", "false"]).unwrap();
        let Scenario::Relay(relay) = cli.scenario else {
            panic!("expected relay");
        };
        assert!(!relay.compare_baseline);
    }

    #[test]
    fn the_protocol_is_chosen_per_scenario() {
        let cli = Cli::try_parse_from([
            "chat-bench",
            "relay",
            "--spawn",
            "--protocol",
            "v2",
            "--compare-v1",
        ])
        .unwrap();
        let Scenario::Relay(relay) = cli.scenario else {
            panic!("expected relay");
        };
        assert_eq!(relay.protocol, Protocol::V2);
        assert!(relay.compare_v1);
        for scenario in ["ramp", "rooms"] {
            let cli = Cli::try_parse_from(["chat-bench", scenario, "--protocol", "v2"]).unwrap();
            let protocol = match cli.scenario {
                Scenario::Ramp(args) => args.protocol,
                Scenario::Rooms(args) => args.protocol,
                _ => panic!("expected {scenario}"),
            };
            assert_eq!(protocol, Protocol::V2);
        }
        assert!(Cli::try_parse_from(["chat-bench", "relay", "--protocol", "v4"]).is_err());
        assert!(
            Cli::try_parse_from(["chat-bench", "relay", "--protocol", "v3-tunnel"]).is_err(),
            "the tunnel is a --transport, not a protocol"
        );
        assert!(Cli::try_parse_from(["chat-bench", "baseline", "--protocol", "v2"]).is_err());
    }

    #[test]
    fn version_3_compares_with_version_2_and_picks_its_path() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Scenario::Relay(relay) = cli.scenario else {
                panic!("expected relay");
            };
            relay
        };
        let relay = parse(&["chat-bench", "relay", "--protocol", "v3", "--compare-v2"]);
        assert_eq!(relay.compared(), Some(Protocol::V2));
        assert_eq!(relay.measured(), [Protocol::V3]);
        let relay = parse(&[
            "chat-bench",
            "relay",
            "--protocol",
            "v3",
            "--transport",
            "both",
        ]);
        assert_eq!(relay.compared(), None);
        assert_eq!(relay.measured(), [Protocol::V3, Protocol::V3Tunnel]);
        let relay = parse(&[
            "chat-bench",
            "relay",
            "--protocol",
            "v3",
            "--transport",
            "tunnel",
        ]);
        assert_eq!(relay.measured(), [Protocol::V3Tunnel]);
        assert!(
            Cli::try_parse_from(["chat-bench", "relay", "--compare-v1", "--compare-v2"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "chat-bench",
            "ramp",
            "--protocol",
            "v3",
            "--compare-v2",
            "--fingerprint",
            &format!("SHA256:{}", "ab".repeat(32)),
        ])
        .unwrap();
        assert!(cli.target.fingerprint.is_some());
        let Scenario::Ramp(ramp) = cli.scenario else {
            panic!("expected ramp");
        };
        assert!(ramp.compare_v2);
        assert!(
            Cli::try_parse_from(["chat-bench", "relay", "--fingerprint", "SHA256:00"]).is_err()
        );
        let cli = Cli::try_parse_from(["chat-bench", "handshake", "--tls"]).unwrap();
        let Scenario::Handshake(handshake) = cli.scenario else {
            panic!("expected handshake");
        };
        assert!(handshake.tls && handshake.compare_plain);
    }

    #[test]
    fn web_has_a_crowd_preset() {
        let cli = Cli::try_parse_from(["chat-bench", "web", "--spawn"]).unwrap();
        let Scenario::Web(web) = cli.scenario else {
            panic!("expected web");
        };
        assert_eq!(web.shape(), (10, 10, 1000.0));
        assert_eq!(web.senders, 10);
        let cli = Cli::try_parse_from(["chat-bench", "web", "--crowd", "--senders", "4"]).unwrap();
        let Scenario::Web(web) = cli.scenario else {
            panic!("expected web");
        };
        assert_eq!(web.shape(), (0, 1000, 100.0));
        assert!(
            Cli::try_parse_from(["chat-bench", "web", "--crowd", "--ws-members", "5"]).is_err()
        );
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(seconds("--duration", 0.0).is_err());
        assert!(seconds("--duration", f64::NAN).is_err());
        assert!(seconds("--duration", 1.5).is_ok());
        assert!(rate("--rate", 0.5).is_err());
        assert!(in_range("--members", 1usize, 2, 10).is_err());
    }
}
