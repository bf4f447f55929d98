//! `relay` and `baseline`: one room, paced senders, delivered rate, loss, latency and relay
//! CPU. `relay` measures the chat server and then, by default, the bare relay under the same
//! load, and prints the ratio.

use crate::baseline::BareRelay;
use crate::cli::LoadTuning;
use crate::cli::{BaselineArgs, RelayArgs, in_range, rate, seconds};
use crate::error::Result;
use crate::load::{Fabric, run_load};
use crate::report::{Printer, Row};
use crate::scenario::{Context, LOAD_COLUMNS, LOAD_RATIO_KEYS, load_row, next_run_id};
use crate::setup::{RelayUnderTest, populate, run_tag};

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
        room_sizes: &rooms.sizes,
        relay: relay.udp(),
        cpu: relay.cpu(),
    };
    let outcome = run_load(
        &fabric,
        &tuning.spec(next_run_id(), shape.rate, shape.duration),
    )?;
    tracing::debug!(relay = relay.label(), ?outcome.stale, outcome.notices, outcome.other, "relay run done");
    Ok(load_row(
        relay.label(),
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
    let mut printer = Printer::new("relay", LOAD_COLUMNS, context.json);
    let ours = {
        let server = context.server()?;
        measure(RelayUnderTest::Server(&server), shape, &args.tuning)?
    };
    printer.emit(&ours);
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
