//! The scenarios, one module each, and what they share: the server to drive and the shape
//! of a load row.

pub mod handshake;
pub mod members;
pub mod nodes;
pub mod ramp;
pub mod relay;
pub mod rooms;
pub mod web;

use crate::cli::TargetArgs;
use crate::error::{BenchError, Result};
use crate::load::LoadOutcome;
use crate::report::{Cell, Column, Row};
use crate::target::{ServerTarget, default_server_binary, require_loopback};
use crate::wire::Protocol;

/// What every scenario needs besides its own options.
#[derive(Debug)]
pub struct Context {
    /// Print JSON rows.
    pub json: bool,
    target: TargetArgs,
}

impl Context {
    /// Validates the target options up front, so a non-loopback --server is refused even by
    /// scenarios that would not use it.
    pub fn new(json: bool, target: TargetArgs) -> Result<Self> {
        require_loopback(&target.server)?;
        Ok(Self { json, target })
    }

    /// Spawns the server, or points at the running one.
    /// Scale-out (`nodes`): spawns a server with `extra` flags after `--server-arg`s; only
    /// with `--spawn` or `--server-bin`, since it starts several.
    pub fn spawn_with(&self, extra: &[String]) -> Result<ServerTarget> {
        if !(self.target.spawn || self.target.server_bin.is_some()) {
            return Err(BenchError::InvalidArguments(
                "this scenario starts its own servers: add --spawn or --server-bin".to_owned(),
            ));
        }
        let binary = match &self.target.server_bin {
            Some(path) => path.clone(),
            None => default_server_binary()?,
        };
        let mut args = self.target.server_arg.clone();
        args.extend_from_slice(extra);
        ServerTarget::spawn(&binary, &[], &args)
    }

    pub fn server(&self) -> Result<ServerTarget> {
        self.server_with(&[])
    }

    /// Spawns the server with the scenario's `settings` (flags and values, each passed when
    /// the binary has it and --server-arg does not set it), or points at the running one.
    pub fn server_with(&self, settings: &[(&'static str, String)]) -> Result<ServerTarget> {
        if self.target.spawn || self.target.server_bin.is_some() {
            let binary = match &self.target.server_bin {
                Some(path) => path.clone(),
                None => default_server_binary()?,
            };
            return Ok(
                ServerTarget::spawn(&binary, settings, &self.target.server_arg)?
                    .pinned(self.target.fingerprint),
            );
        }
        let ip = require_loopback(&self.target.server)?;
        if !self.target.target_live {
            return Err(BenchError::LiveTargetNotConfirmed(format!(
                "{ip}:{}",
                self.target.tcp_port
            )));
        }
        tracing::info!(
            "driving the running server at {ip} (tcp {}, udp {}); its flood control, if on, \
             will show up as loss",
            self.target.tcp_port,
            self.target.udp_port
        );
        Ok(ServerTarget::external(
            ip,
            self.target.tcp_port,
            self.target.udp_port,
            self.target.http_port,
            self.target.server_pid,
        )
        .pinned(self.target.fingerprint))
    }
}

/// Columns of a paced-load row.
pub const LOAD_COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "rooms",
        header: "rooms",
    },
    Column {
        key: "members",
        header: "members",
    },
    Column {
        key: "senders",
        header: "senders",
    },
    Column {
        key: "offered_per_s",
        header: "offered/s",
    },
    Column {
        key: "sent_per_s",
        header: "sent/s",
    },
    Column {
        key: "delivered",
        header: "delivered",
    },
    Column {
        key: "delivered_per_s",
        header: "deliv/s",
    },
    Column {
        key: "loss_pct",
        header: "loss%",
    },
    Column {
        key: "p50_us",
        header: "p50_us",
    },
    Column {
        key: "p99_us",
        header: "p99_us",
    },
    Column {
        key: "p999_us",
        header: "p999_us",
    },
    Column {
        key: "max_us",
        header: "max_us",
    },
    Column {
        key: "cpu_s_per_m",
        header: "cpu_s/M",
    },
    Column {
        key: "bench_cpu_s",
        header: "bench_cpu_s",
    },
];

/// The column version-2 rows add after `loss%`.
const ACKED_COLUMN: Column = Column {
    key: "acked_pct",
    header: "acked%",
};

/// The columns of a load table whose server rows speak `protocol`: version 2 (and 3) adds
/// `acked%`,
/// so version-1 tables look as they always did.
pub fn load_columns(protocol: Protocol) -> Vec<Column> {
    with_acked_column(LOAD_COLUMNS, protocol)
}

/// `columns` with `acked%` after `loss%` when `protocol` has acks (version 2 or 3).
pub fn with_acked_column(columns: &[Column], protocol: Protocol) -> Vec<Column> {
    let mut columns = columns.to_vec();
    if protocol.has_acks() {
        let at = columns
            .iter()
            .position(|column| column.key == "loss_pct")
            .map_or(columns.len(), |loss| loss + 1);
        columns.insert(at, ACKED_COLUMN);
    }
    columns
}

/// The target label of a ratio row between two server runs: `v2/v1`, `v3/v2`,
/// `v3-tunnel/v2`, ...
pub fn over(ours: Protocol, theirs: Protocol) -> String {
    format!("{}/{}", ours.name(), theirs.name())
}

/// Columns divided in a ratio row.
pub const LOAD_RATIO_KEYS: &[&str] = &[
    "sent_per_s",
    "delivered_per_s",
    "loss_pct",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "cpu_s_per_m",
    "cpu_s",
];

/// The row of one paced load run; version-2 rows also carry the acks.
pub fn load_row(
    label: &str,
    protocol: Protocol,
    rooms: usize,
    members: usize,
    senders: usize,
    outcome: &LoadOutcome,
) -> Row {
    let row = Row::new()
        .with("target", Cell::Text(label.to_owned()))
        .with("protocol", Cell::Text(protocol.name().to_owned()))
        .with("rooms", Cell::Int(rooms as u64))
        .with("members", Cell::Int(members as u64))
        .with("senders", Cell::Int(senders as u64))
        .with("offered_per_s", Cell::Float(outcome.offered_rate, 0))
        .with("planned", Cell::Int(outcome.planned))
        .with("sent", Cell::Int(outcome.sent))
        .with("send_errors", Cell::Int(outcome.send_errors))
        .with("sent_per_s", Cell::Float(outcome.sent_per_second(), 0))
        .with("expected", Cell::Int(outcome.expected))
        .with("delivered", Cell::Int(outcome.delivered))
        .with(
            "delivered_per_s",
            Cell::Float(outcome.delivered_per_second(), 0),
        )
        .with("loss_pct", Cell::Float(outcome.loss_percent(), 3));
    let row = if protocol.has_acks() {
        with_acks(row, outcome)
    } else {
        row
    };
    row.with("duplicates", Cell::Int(outcome.duplicates))
        .with("stale", Cell::Int(outcome.stale))
        .with("notices", Cell::Int(outcome.notices))
        .with("other", Cell::Int(outcome.other))
        .with("p50_us", Cell::opt(outcome.latency_us(0.50), 1))
        .with("p99_us", Cell::opt(outcome.latency_us(0.99), 1))
        .with("p999_us", Cell::opt(outcome.latency_us(0.999), 1))
        .with("max_us", Cell::opt(outcome.latency_max_us(), 1))
        .with(
            "cpu_s",
            Cell::opt(outcome.relay_cpu.map(|cpu| cpu.as_secs_f64()), 2),
        )
        .with(
            "cpu_s_per_m",
            Cell::opt(outcome.cpu_seconds_per_million(), 2),
        )
        .with(
            "bench_cpu_s",
            Cell::opt(outcome.generator_cpu.map(|cpu| cpu.as_secs_f64()), 2),
        )
}

/// Adds a version-2 run's ack figures to its row.
pub fn with_acks(row: Row, outcome: &LoadOutcome) -> Row {
    row.with("acks", Cell::Int(outcome.acks))
        .with("acked_pct", Cell::Float(outcome.acked_percent(), 3))
        .with("refused", Cell::Int(outcome.refused))
}

/// Run ids: distinct per run within one process, so a late datagram of one run never
/// counts in another.
pub fn next_run_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
