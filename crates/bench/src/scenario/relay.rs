//! `relay` and `baseline`: one room, paced senders, delivered rate, loss, latency and relay
//! CPU. `relay` measures the chat server and then, by default, the bare relay under the same
//! load, and prints the ratio. With `--protocol v2 --compare-v1` it first measures the same
//! load in version 1 on a server started (or found) the same way, and prints v2 ÷ v1 too.

use crate::baseline::BareRelay;
use crate::cli::LoadTuning;
use crate::cli::{BaselineArgs, RelayArgs, in_range, rate, seconds};
use crate::error::{BenchError, Result};
use crate::load::{Fabric, run_load};
use crate::report::{Cell, Printer, Row};
use crate::scenario::{
    Context, LOAD_COLUMNS, LOAD_RATIO_KEYS, V2_OVER_V1, load_columns, load_row, next_run_id,
};
use crate::setup::{RelayUnderTest, populate, run_tag};
use crate::wire::Protocol;

/// Shape of a single-room load.
#[derive(Debug, Clone, Copy)]
struct OneRoom {
    members: usize,
    senders: usize,
    rate: f64,
    duration: std::time::Duration,
}

fn one_room(
    members: usize,
    senders: usize,
    offered: f64,
    duration: f64,
    tuning: &LoadTuning,
) -> Result<OneRoom> {
    in_range("--members", members, 2, 1000)?;
    in_range("--senders", senders, 1, members)?;
    tuning.validate()?;
    Ok(OneRoom {
        members,
        senders,
        rate: rate("--rate", offered)?,
        duration: seconds("--duration", duration)?,
    })
}

/// Populates one room on `relay` and runs the load once.
fn measure(relay: RelayUnderTest<'_>, shape: OneRoom, tuning: &LoadTuning) -> Result<Row> {
    let rooms = populate(relay, &[shape.members], &run_tag(), tuning.buffers())?;
    let senders: Vec<usize> = (0..shape.senders).collect();
    let fabric = Fabric {
        members: &rooms.members,
        senders: &senders,
        ws: None,
        relay: relay.udp(),
        member_relays: None,
        cpu: relay.cpu(),
        protocol: relay.protocol(),
    };
    let outcome = run_load(
        &fabric,
        &tuning.spec(next_run_id(), shape.rate, shape.duration),
    )?;
    tracing::debug!(relay = relay.label(), ?outcome.stale, outcome.notices, outcome.other, "relay run done");
    Ok(load_row(
        relay.label(),
        relay.protocol(),
        1,
        shape.members,
        shape.senders,
        &outcome,
    ))
}

/// `chat-bench relay`.
pub fn run(context: &Context, args: &RelayArgs) -> Result<()> {
    let shape = one_room(
        args.members,
        args.senders,
        args.rate,
        args.duration,
        &args.tuning,
    )?;
    if args.compare_v1 && args.protocol != Protocol::V2 {
        return Err(BenchError::InvalidArguments(
            "--compare-v1 compares a version-2 run with version 1; add --protocol v2".to_owned(),
        ));
    }
    let mut printer = Printer::new("relay", &load_columns(args.protocol), context.json);
    // Each run gets its own server, started the same way, so neither inherits the other's
    // history database or warmed caches.
    let v1 = if args.compare_v1 {
        let server = context.server()?;
        let row = measure(
            RelayUnderTest::Server(&server, Protocol::V1),
            shape,
            &args.tuning,
        )?;
        printer.emit(&row);
        Some(row)
    } else {
        None
    };
    let ours = {
        let server = context.server()?;
        measure(
            RelayUnderTest::Server(&server, args.protocol),
            shape,
            &args.tuning,
        )?
    };
    printer.emit(&ours);
    if let Some(v1) = &v1 {
        printer.emit(
            &Row::ratio(&ours, v1, LOAD_RATIO_KEYS)
                .set("target", Cell::Text(V2_OVER_V1.to_owned())),
        );
    }
    if args.compare_baseline {
        let baseline = BareRelay::start()?;
        let theirs = measure(RelayUnderTest::Baseline(&baseline), shape, &args.tuning)?;
        printer.emit(&theirs);
        printer.emit(&Row::ratio(&ours, &theirs, LOAD_RATIO_KEYS));
    }
    Ok(())
}

/// `chat-bench baseline`.
pub fn run_baseline(context: &Context, args: &BaselineArgs) -> Result<()> {
    let shape = one_room(
        args.members,
        args.senders,
        args.rate,
        args.duration,
        &args.tuning,
    )?;
    let baseline = BareRelay::start()?;
    let row = measure(RelayUnderTest::Baseline(&baseline), shape, &args.tuning)?;
    Printer::new("baseline", LOAD_COLUMNS, context.json).emit(&row);
    Ok(())
}
