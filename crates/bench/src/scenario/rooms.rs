//! `rooms`: N members in N/2 rooms of two, every member sending in turn at an aggregate
//! rate: latency and loss when the load is spread over many small rooms.

use crate::baseline::BareRelay;
use crate::cli::{LoadTuning, RoomsArgs, in_range, rate, seconds};
use crate::error::Result;
use crate::load::{Fabric, run_load};
use crate::report::{Printer, Row};
use crate::scenario::{Context, LOAD_RATIO_KEYS, load_columns, load_row, next_run_id};
use crate::setup::{RelayUnderTest, populate, run_tag};

fn measure(
    relay: RelayUnderTest<'_>,
    members: usize,
    offered: f64,
    duration: std::time::Duration,
    tuning: &LoadTuning,
) -> Result<Row> {
    let sizes = vec![2; members / 2];
    let rooms = populate(relay, &sizes, &run_tag(), tuning.buffers())?;
    let senders: Vec<usize> = (0..rooms.members.len()).collect();
    let fabric = Fabric {
        members: &rooms.members,
        senders: &senders,
        ws: None,
        relay: relay.udp(),
        member_relays: None,
        cpu: relay.cpu(),
        protocol: relay.protocol(),
    };
    let outcome = run_load(&fabric, &tuning.spec(next_run_id(), offered, duration))?;
    Ok(load_row(
        relay.label(),
        relay.protocol(),
        sizes.len(),
        members,
        senders.len(),
        &outcome,
    ))
}

/// `chat-bench rooms`.
pub fn run(context: &Context, args: &RoomsArgs) -> Result<()> {
    in_range("--members", args.members, 2, 20_000)?;
    if !args.members.is_multiple_of(2) {
        return Err(crate::error::BenchError::InvalidArguments(format!(
            "--members must be even to pair everyone, not {}",
            args.members
        )));
    }
    args.tuning.validate()?;
    let offered = rate("--rate", args.rate)?;
    let duration = seconds("--duration", args.duration)?;
    let mut printer = Printer::new("rooms", &load_columns(args.protocol), context.json);
    let ours = {
        let server = context.server()?;
        measure(
            RelayUnderTest::Server(&server, args.protocol),
            args.members,
            offered,
            duration,
            &args.tuning,
        )?
    };
    printer.emit(&ours);
    if args.compare_baseline {
        let baseline = BareRelay::start()?;
        let theirs = measure(
            RelayUnderTest::Baseline(&baseline),
            args.members,
            offered,
            duration,
            &args.tuning,
        )?;
        printer.emit(&theirs);
        printer.emit(&Row::ratio(&ours, &theirs, LOAD_RATIO_KEYS));
    }
    Ok(())
}
