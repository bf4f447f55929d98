//! `handshake`: create and join operations per second over concurrent connections, and the
//! time from connect to both reply frames (which on our server includes the durable state
//! write). Each worker creates a fresh room as `host` and then joins it as `guest`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::tcrp::Operation;
use hdrhistogram::Histogram;

use crate::cli::{HandshakeArgs, in_range, seconds};
use crate::error::{BenchError, Result};
use crate::load::latency_histogram;
use crate::report::{Cell, Column, Printer, Row};
use crate::scenario::Context;
use crate::setup::run_tag;
use crate::target::ServerTarget;
use crate::tcrp_client::{Outcome, SERVER_BUSY, handshake};

/// Pause of a worker after a `server_busy` refusal.
const BUSY_PAUSE: Duration = Duration::from_millis(100);

const COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "operation",
        header: "operation",
    },
    Column {
        key: "connections",
        header: "connections",
    },
    Column {
        key: "ok",
        header: "ok",
    },
    Column {
        key: "failed",
        header: "failed",
    },
    Column {
        key: "ops_per_s",
        header: "ops/s",
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
        key: "errors",
        header: "errors",
    },
];

/// Counts and latencies of one operation kind.
struct OpStats {
    ok: u64,
    failures: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

impl OpStats {
    fn new() -> Self {
        Self {
            ok: 0,
            failures: BTreeMap::new(),
            latency: latency_histogram(),
        }
    }

    fn fail(&mut self, code: impl Into<String>) {
        *self.failures.entry(code.into()).or_default() += 1;
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        self.ok += other.ok;
        for (code, count) in &other.failures {
            *self.failures.entry(code.clone()).or_default() += count;
        }
        self.latency
            .add(&other.latency)
            .map_err(|e| BenchError::ThreadPanicked(format!("histogram merge failed: {e:?}")))
    }

    fn row(&self, operation: &str, connections: usize, elapsed: Duration) -> Row {
        let quantile = |q: f64| {
            (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1_000.0)
        };
        let errors = if self.failures.is_empty() {
            "-".to_owned()
        } else {
            self.failures
                .iter()
                .map(|(code, count)| format!("{code}:{count}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        Row::new()
            .with("target", Cell::Text("server".to_owned()))
            .with("operation", Cell::Text(operation.to_owned()))
            .with("connections", Cell::Int(connections as u64))
            .with("ok", Cell::Int(self.ok))
            .with("failed", Cell::Int(self.failures.values().sum()))
            .with("elapsed_s", Cell::Float(elapsed.as_secs_f64(), 2))
            .with(
                "ops_per_s",
                Cell::Float(self.ok as f64 / elapsed.as_secs_f64().max(1e-9), 0),
            )
            .with("p50_us", Cell::opt(quantile(0.50), 1))
            .with("p99_us", Cell::opt(quantile(0.99), 1))
            .with("p999_us", Cell::opt(quantile(0.999), 1))
            .with(
                "max_us",
                Cell::opt(
                    (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1_000.0),
                    1,
                ),
            )
            .with("errors", Cell::Text(errors))
    }
}

/// One attempt, filed under the operation's stats.
fn attempt(
    server: &ServerTarget,
    operation: Operation,
    room: &str,
    user: &str,
    stats: &mut OpStats,
) -> bool {
    match handshake(server.tcp, operation, room, user) {
        Ok(done) => match done.outcome {
            Outcome::Granted(_) => {
                stats.ok += 1;
                stats
                    .latency
                    .saturating_record(u64::try_from(done.elapsed.as_nanos()).unwrap_or(u64::MAX));
                true
            }
            Outcome::Refused { code, .. } => {
                if code == SERVER_BUSY {
                    // The server asked for a pause; hammering it would only measure refusals.
                    std::thread::sleep(BUSY_PAUSE);
                }
                stats.fail(code);
                false
            }
        },
        Err(BenchError::Handshake { source, .. }) => {
            tracing::debug!(error = %source, "handshake I/O error");
            stats.fail(format!("io_{:?}", source.kind()).to_lowercase());
            false
        }
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            stats.fail("bad_reply");
            false
        }
    }
}

/// `chat-bench handshake`.
pub fn run(context: &Context, args: &HandshakeArgs) -> Result<()> {
    in_range("--connections", args.connections, 1, 1024)?;
    in_range("--operations", args.operations, 1, 10_000_000)?;
    in_range("--joins-per-room", args.joins_per_room, 1, 255)?;
    let joins_per_room = args.joins_per_room;
    let duration = seconds("--duration", args.duration)?;
    let server = context.server()?;
    let tag = run_tag();
    let issued = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + duration;
    let parts: Vec<Result<(OpStats, OpStats)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|worker| {
                let (server, tag, issued) = (&server, &tag, &issued);
                let budget = args.operations;
                std::thread::Builder::new()
                    .name(format!("handshake-{worker}"))
                    .spawn_scoped(scope, move || {
                        let mut create = OpStats::new();
                        let mut join = OpStats::new();
                        let take = || {
                            Instant::now() < deadline
                                && issued.fetch_add(1, Ordering::Relaxed) < budget
                        };
                        let mut round = 0u64;
                        while take() {
                            let room = format!("{tag}-{worker}-{round}");
                            round += 1;
                            if attempt(server, Operation::Create, &room, "host", &mut create) {
                                for guest in 0..joins_per_room {
                                    if !take() {
                                        break;
                                    }
                                    let name = format!("guest{guest}");
                                    attempt(server, Operation::Join, &room, &name, &mut join);
                                }
                            }
                        }
                        (create, join)
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .map_err(BenchError::socket("starting a handshake worker"))?
                    .join()
                    .map_err(|p| BenchError::from_panic(&*p))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut create = OpStats::new();
    let mut join = OpStats::new();
    for part in parts {
        let (c, j) = part?;
        create.merge(&c)?;
        join.merge(&j)?;
    }
    let mut all = OpStats::new();
    all.merge(&create)?;
    all.merge(&join)?;
    let mut printer = Printer::new("handshake", COLUMNS, context.json);
    printer.emit(&create.row("create", args.connections, elapsed));
    printer.emit(&join.row("join", args.connections, elapsed));
    printer.emit(&all.row("all", args.connections, elapsed));
    Ok(())
}
