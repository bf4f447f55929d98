//! `handshake`: create and join operations per second over concurrent connections, and the
//! time from connect to both reply frames (which on our server includes the durable state
//! write). Each worker creates a fresh room as `host` and then joins it as `guest`.
//!
//! `--tls` (version 3) makes each operation a new connection with a full TLS 1.3 handshake,
//! the same exchange inside it, and the key export after a grant; by default the plain
//! figures are measured first on a server started the same way, with tls/plain rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::tcrp::Operation;
use hdrhistogram::Histogram;

use crate::cli::{HandshakeArgs, in_range, seconds};
use crate::error::{BenchError, Result};
use crate::load::latency_histogram;
use crate::procfs::CpuSource;
use crate::report::{Cell, Column, Printer, Row};
use crate::scenario::Context;
use crate::setup::run_tag;
use crate::target::ServerTarget;
use crate::tcrp_client::{Outcome, SERVER_BUSY, handshake};
use crate::tls::{self, TlsClient, export_keys};

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
        key: "server_cpu_us_per_op",
        header: "srv_cpu_us/op",
    },
    Column {
        key: "bench_cpu_us_per_op",
        header: "bench_cpu_us/op",
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

    fn row(&self, target: &str, operation: &str, connections: usize, elapsed: Duration) -> Row {
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
            .with("target", Cell::Text(target.to_owned()))
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

/// How the handshakes are made.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Plain TCRP over TCP.
    Plain,
    /// TLS 1.3 (a full handshake each time) with the exchange inside, keys exported after a
    /// grant, then close_notify.
    Tls(&'a TlsClient),
}

impl Mode<'_> {
    fn label(self) -> &'static str {
        match self {
            Self::Plain => "server",
            Self::Tls(_) => "server-tls",
        }
    }
}

/// One handshake in `mode`: what the server answered and how long it took.
fn exchange(
    server: &ServerTarget,
    mode: Mode<'_>,
    operation: Operation,
    room: &str,
    user: &str,
) -> Result<(Outcome, Duration)> {
    match mode {
        Mode::Plain => {
            let done = handshake(server.tcp, operation, room, user)?;
            Ok((done.outcome, done.elapsed))
        }
        Mode::Tls(client) => {
            let done = client.handshake(server.tcp, operation, room, user)?;
            if matches!(done.outcome, Outcome::Granted(_)) {
                // What a member does next; the cost is an HKDF expansion.
                export_keys(&done.tls)?;
            }
            tls::close(done.tls);
            Ok((done.outcome, done.elapsed))
        }
    }
}

/// One attempt, filed under the operation's stats.
fn attempt(
    server: &ServerTarget,
    mode: Mode<'_>,
    operation: Operation,
    room: &str,
    user: &str,
    stats: &mut OpStats,
) -> bool {
    match exchange(server, mode, operation, room, user) {
        Ok((outcome, elapsed)) => match outcome {
            Outcome::Granted(_) => {
                stats.ok += 1;
                stats
                    .latency
                    .saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
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
        Err(BenchError::Tls(error)) => {
            tracing::debug!(%error, "TLS failed");
            stats.fail("tls");
            false
        }
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            stats.fail("bad_reply");
            false
        }
    }
}

/// The rows of one measurement: create, join, all.
struct Measured {
    create: OpStats,
    join: OpStats,
    elapsed: Duration,
    /// The server's CPU time over the run, when it can be read.
    server_cpu: Option<Duration>,
    /// This process's CPU time over the run: the client side of every handshake.
    bench_cpu: Option<Duration>,
}

impl Measured {
    fn rows(&self, target: &str, connections: usize) -> Result<[Row; 3]> {
        let mut all = OpStats::new();
        all.merge(&self.create)?;
        all.merge(&self.join)?;
        // CPU cannot be split by operation: only the `all` row carries it.
        let per_op = |cpu: Option<Duration>| {
            cpu.filter(|_| all.ok > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / all.ok as f64)
        };
        let all_row = all
            .row(target, "all", connections, self.elapsed)
            .with(
                "server_cpu_us_per_op",
                Cell::opt(per_op(self.server_cpu), 0),
            )
            .with("bench_cpu_us_per_op", Cell::opt(per_op(self.bench_cpu), 0));
        Ok([
            self.create.row(target, "create", connections, self.elapsed),
            self.join.row(target, "join", connections, self.elapsed),
            all_row,
        ])
    }
}

/// CPU time spent by `source` while `work` runs.
fn cpu_during<T>(
    source: CpuSource,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<Duration>)> {
    let before = source.cpu_time()?;
    let result = work()?;
    let after = source.cpu_time()?;
    Ok((
        result,
        before
            .zip(after)
            .map(|(before, after)| after.saturating_sub(before)),
    ))
}

/// Runs the workers against `server` in `mode` for the duration.
fn measure(server: &ServerTarget, mode: Mode<'_>, args: &HandshakeArgs) -> Result<Measured> {
    let joins_per_room = args.joins_per_room;
    let duration = seconds("--duration", args.duration)?;
    let tag = run_tag();
    let issued = AtomicU64::new(0);
    let server_before = server.cpu_source().cpu_time()?;
    let own = CpuSource::Process(std::process::id());
    let ((parts, elapsed), bench_cpu) = cpu_during(own, || {
        Ok(workers(
            server,
            mode,
            args,
            joins_per_room,
            duration,
            &tag,
            &issued,
        ))
    })?;
    let server_cpu = server_before
        .zip(server.cpu_source().cpu_time()?)
        .map(|(before, after)| after.saturating_sub(before));
    let mut create = OpStats::new();
    let mut join = OpStats::new();
    for part in parts {
        let (c, j) = part?;
        create.merge(&c)?;
        join.merge(&j)?;
    }
    Ok(Measured {
        create,
        join,
        elapsed,
        server_cpu,
        bench_cpu,
    })
}

/// The worker threads of one measurement: their stats, and how long they ran.
fn workers(
    server: &ServerTarget,
    mode: Mode<'_>,
    args: &HandshakeArgs,
    joins_per_room: u32,
    duration: Duration,
    tag: &str,
    issued: &AtomicU64,
) -> (Vec<Result<(OpStats, OpStats)>>, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let parts: Vec<Result<(OpStats, OpStats)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|worker| {
                let (server, tag, issued) = (server, tag, issued);
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
                            if attempt(server, mode, Operation::Create, &room, "host", &mut create)
                            {
                                for guest in 0..joins_per_room {
                                    if !take() {
                                        break;
                                    }
                                    let name = format!("guest{guest}");
                                    attempt(server, mode, Operation::Join, &room, &name, &mut join);
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
    (parts, started.elapsed())
}

/// `chat-bench handshake`.
pub fn run(context: &Context, args: &HandshakeArgs) -> Result<()> {
    in_range("--connections", args.connections, 1, 1024)?;
    in_range("--operations", args.operations, 1, 10_000_000)?;
    in_range("--joins-per-room", args.joins_per_room, 1, 255)?;
    seconds("--duration", args.duration)?;
    let mut printer = Printer::new("handshake", COLUMNS, context.json);
    // Each measurement gets its own server, started the same way.
    let plain = if !args.tls || args.compare_plain {
        let server = context.server()?;
        let measured = measure(&server, Mode::Plain, args)?;
        let rows = measured.rows(Mode::Plain.label(), args.connections)?;
        for row in &rows {
            printer.emit(row);
        }
        Some(rows)
    } else {
        None
    };
    if args.tls {
        let server = context.server()?;
        let client = server.tls()?;
        let mode = Mode::Tls(client);
        let rows = measure(&server, mode, args)?.rows(mode.label(), args.connections)?;
        for row in &rows {
            printer.emit(row);
        }
        if let Some(plain) = &plain {
            for (tls, plain) in rows.iter().zip(plain) {
                printer.emit(
                    &Row::ratio(tls, plain, RATIO_KEYS)
                        .set("target", Cell::Text("tls/plain".to_owned())),
                );
            }
        }
        if let Some(Cell::Float(rate, _)) = rows[2].get("ops_per_s") {
            tracing::info!(
                "TLS handshakes with {} connections: {rate:.0}/s (issue 11 asks for at least 2,000/s)",
                args.connections
            );
        }
    }
    Ok(())
}

/// Columns divided in a tls/plain row.
const RATIO_KEYS: &[&str] = &[
    "ops_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "server_cpu_us_per_op",
    "bench_cpu_us_per_op",
];
