//! `ramp`: doubles the offered rate until a step loses more than the threshold (or the
//! sender cannot offer the rate), then bisects between the last good and the first bad
//! rate. Bounded in steps and in time. Reports the highest lossless rate, for the chat
//! server and for the bare relay under the same procedure.
//!
//! In version 2 a step that lost messages leaves gaps in its senders' `seq`: the server holds
//! each sender's later messages for seconds waiting for the missing ones, which this tool
//! never retransmits. So after such a step the next one starts on a freshly populated room.

use std::time::{Duration, Instant};

use crate::baseline::BareRelay;
use crate::cli::{RampArgs, in_range, rate, seconds};
use crate::error::Result;
use crate::load::{Fabric, LoadOutcome, run_load};
use crate::report::{Cell, Column, Printer, Row};
use crate::scenario::{Context, next_run_id, over, with_acked_column, with_acks};
use crate::setup::{RelayUnderTest, populate, run_tag};
use crate::wire::Protocol;

/// A step whose sender managed less than this share of the offered rate cannot vouch for it.
const MIN_OFFERED_SHARE: f64 = 0.95;
/// Bisection stops once the bracket is narrower than this share of the failing rate.
const BISECT_RESOLUTION: f64 = 0.02;

const STEP_COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "step",
        header: "step",
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
        key: "cpu_s_per_m",
        header: "cpu_s/M",
    },
    Column {
        key: "verdict",
        header: "verdict",
    },
];

const SUMMARY_COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "max_lossless_per_s",
        header: "max_lossless/s",
    },
    Column {
        key: "delivered_per_s",
        header: "deliv/s@max",
    },
    Column {
        key: "p99_us",
        header: "p99_us@max",
    },
    Column {
        key: "cpu_s_per_m",
        header: "cpu_s/M@max",
    },
    Column {
        key: "first_failing_per_s",
        header: "first_fail/s",
    },
    Column {
        key: "limited_by",
        header: "limited_by",
    },
    Column {
        key: "steps",
        header: "steps",
    },
];

const SUMMARY_RATIO_KEYS: &[&str] = &[
    "max_lossless_per_s",
    "delivered_per_s",
    "p99_us",
    "cpu_s_per_m",
    "first_failing_per_s",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Lossless,
    Lossy,
    SenderLimited,
}

impl Verdict {
    fn of(outcome: &LoadOutcome, threshold: f64) -> Self {
        if outcome.sent_per_second() < outcome.offered_rate * MIN_OFFERED_SHARE {
            Self::SenderLimited
        } else if outcome.loss_percent() > threshold {
            Self::Lossy
        } else {
            Self::Lossless
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Lossless => "ok",
            Self::Lossy => "loss",
            Self::SenderLimited => "sender",
        }
    }
}

struct Ramp<'a> {
    args: &'a RampArgs,
    step_duration: Duration,
    time_limit: Duration,
}

impl Ramp<'_> {
    /// Ramps one relay, printing a row per step; returns the summary row.
    fn climb(&self, relay: RelayUnderTest<'_>, steps_out: &mut Printer) -> Result<Row> {
        let args = self.args;
        let populate_room = || populate(relay, &[args.members], &run_tag(), args.tuning.buffers());
        let mut rooms = populate_room()?;
        let senders: Vec<usize> = (0..args.senders).collect();
        let started = Instant::now();
        let mut best: Option<LoadOutcome> = None;
        let mut first_failure: Option<(f64, Verdict)> = None;
        let mut steps = 0u32;
        let mut bisections = 0u32;
        let mut next_rate = Some(args.start_rate);
        let mut limited_by = "max_rate";
        while let Some(offered) = next_rate {
            if steps >= args.max_steps {
                limited_by = "steps";
                break;
            }
            if started.elapsed() >= self.time_limit {
                limited_by = "time";
                break;
            }
            steps += 1;
            if first_failure.is_some() {
                bisections += 1;
            }
            let spec = args.tuning.spec(next_run_id(), offered, self.step_duration);
            let fabric = Fabric {
                members: &rooms.members,
                senders: &senders,
                ws: None,
                relay: relay.udp(),
                member_relays: None,
                cpu: relay.cpu(),
                protocol: relay.protocol(),
            };
            let outcome = run_load(&fabric, &spec)?;
            if relay.protocol().has_acks() && outcome.acks < outcome.sent {
                // Populated before the next step, outside its measurement.
                rooms = populate_room()?;
            }
            let verdict = Verdict::of(&outcome, args.loss_threshold);
            steps_out.emit(&step_row(relay, steps, &outcome, verdict));
            if verdict == Verdict::Lossless {
                // Every later step offers more than the best so far, so this one is the best.
                best = Some(outcome);
            } else if first_failure.is_none_or(|(bad, _)| offered < bad) {
                first_failure = Some((offered, verdict));
            }
            let good = best.as_ref().map_or(0.0, |o| o.offered_rate);
            next_rate = match first_failure {
                None if good < args.max_rate => Some((good * 2.0).min(args.max_rate)),
                None => None,
                Some((bad, verdict)) => {
                    limited_by = verdict.label();
                    let mid = (good + bad) / 2.0;
                    let narrow = bad - good < bad * BISECT_RESOLUTION;
                    (!narrow && bisections < args.bisect_steps && mid >= 1.0).then_some(mid)
                }
            };
        }
        Ok(summary_row(
            relay,
            best.as_ref(),
            first_failure,
            limited_by,
            steps,
        ))
    }
}

fn step_row(relay: RelayUnderTest<'_>, step: u32, outcome: &LoadOutcome, verdict: Verdict) -> Row {
    let row = Row::new()
        .with("target", Cell::Text(relay.label().to_owned()))
        .with("protocol", Cell::Text(relay.protocol().name().to_owned()))
        .with("step", Cell::Int(u64::from(step)))
        .with("offered_per_s", Cell::Float(outcome.offered_rate, 0))
        .with("sent", Cell::Int(outcome.sent))
        .with("sent_per_s", Cell::Float(outcome.sent_per_second(), 0))
        .with("expected", Cell::Int(outcome.expected))
        .with("delivered", Cell::Int(outcome.delivered))
        .with(
            "delivered_per_s",
            Cell::Float(outcome.delivered_per_second(), 0),
        )
        .with("loss_pct", Cell::Float(outcome.loss_percent(), 3));
    let row = if relay.protocol().has_acks() {
        with_acks(row, outcome)
    } else {
        row
    };
    row.with("p50_us", Cell::opt(outcome.latency_us(0.50), 1))
        .with("p99_us", Cell::opt(outcome.latency_us(0.99), 1))
        .with("p999_us", Cell::opt(outcome.latency_us(0.999), 1))
        .with(
            "cpu_s_per_m",
            Cell::opt(outcome.cpu_seconds_per_million(), 2),
        )
        .with("verdict", Cell::Text(verdict.label().to_owned()))
}

fn summary_row(
    relay: RelayUnderTest<'_>,
    best: Option<&LoadOutcome>,
    first_failure: Option<(f64, Verdict)>,
    limited_by: &str,
    steps: u32,
) -> Row {
    Row::new()
        .with("target", Cell::Text(relay.label().to_owned()))
        .with("protocol", Cell::Text(relay.protocol().name().to_owned()))
        .with(
            "max_lossless_per_s",
            Cell::opt(best.map(|o| o.offered_rate), 0),
        )
        .with(
            "delivered_per_s",
            Cell::opt(best.map(LoadOutcome::delivered_per_second), 0),
        )
        .with(
            "p99_us",
            Cell::opt(best.and_then(|o| o.latency_us(0.99)), 1),
        )
        .with(
            "cpu_s_per_m",
            Cell::opt(best.and_then(LoadOutcome::cpu_seconds_per_million), 2),
        )
        .with(
            "first_failing_per_s",
            Cell::opt(first_failure.map(|(rate, _)| rate), 0),
        )
        .with("limited_by", Cell::Text(limited_by.to_owned()))
        .with("steps", Cell::Int(u64::from(steps)))
}

/// `chat-bench ramp`.
pub fn run(context: &Context, args: &RampArgs) -> Result<()> {
    in_range("--members", args.members, 2, 1000)?;
    in_range("--senders", args.senders, 1, args.members)?;
    in_range("--max-steps", args.max_steps, 1, 100)?;
    in_range("--bisect-steps", args.bisect_steps, 0, 20)?;
    in_range("--loss-threshold", args.loss_threshold, 0.0, 100.0)?;
    args.tuning.validate()?;
    rate("--start-rate", args.start_rate)?;
    rate("--max-rate", args.max_rate)?;
    if args.max_rate < args.start_rate {
        return Err(crate::error::BenchError::InvalidArguments(
            "--max-rate must not be below --start-rate".to_owned(),
        ));
    }
    let ramp = Ramp {
        args,
        step_duration: seconds("--step-duration", args.step_duration)?,
        time_limit: seconds("--time-limit", args.time_limit)?,
    };
    if args.compare_v2 && args.protocol != Protocol::V3 {
        return Err(crate::error::BenchError::InvalidArguments(
            "--compare-v2 compares a version-3 ramp with version 2; add --protocol v3".to_owned(),
        ));
    }
    let mut steps_out = Printer::new(
        "ramp-step",
        &with_acked_column(STEP_COLUMNS, args.protocol),
        context.json,
    );
    // Each relay gets its own server, started the same way.
    let v2 = if args.compare_v2 {
        let server = context.server()?;
        Some(ramp.climb(
            RelayUnderTest::Server(&server, Protocol::V2),
            &mut steps_out,
        )?)
    } else {
        None
    };
    let ours = {
        let server = context.server()?;
        ramp.climb(
            RelayUnderTest::Server(&server, args.protocol),
            &mut steps_out,
        )?
    };
    let theirs = if args.compare_baseline {
        let baseline = BareRelay::start()?;
        Some(ramp.climb(RelayUnderTest::Baseline(&baseline), &mut steps_out)?)
    } else {
        None
    };
    let mut summary = Printer::new("ramp", SUMMARY_COLUMNS, context.json);
    if let Some(v2) = &v2 {
        summary.emit(v2);
    }
    summary.emit(&ours);
    if let Some(v2) = &v2 {
        let ratio = Row::ratio(&ours, v2, SUMMARY_RATIO_KEYS)
            .set("target", Cell::Text(over(args.protocol, Protocol::V2)));
        if let Some(Cell::Float(lossless, _)) = ratio.get("max_lossless_per_s") {
            tracing::info!(
                "v3/v2 highest lossless rate: {lossless:.2} (issue 11 asks for at least 0.8)"
            );
        }
        summary.emit(&ratio);
    }
    if let Some(theirs) = theirs {
        summary.emit(&theirs);
        summary.emit(&Row::ratio(&ours, &theirs, SUMMARY_RATIO_KEYS));
    }
    Ok(())
}
