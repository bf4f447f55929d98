//! `relay` and `baseline`: one room, paced senders, delivered rate, loss, latency and relay
//! CPU. `relay` measures the chat server and then, by default, the bare relay under the same
//! load, and prints the ratio. With `--protocol v2 --compare-v1` it first measures the same
//! load in version 1 on a server started (or found) the same way, and prints v2 ÷ v1 too;
//! `--protocol v3 --compare-v2` does the same for version 3 against version 2 (issue 11's
//! "CPU per delivered datagram at most 1.3x"), and `--transport both` measures version 3 over
//! UDP and then through the members' TLS tunnels, with a tunnel ÷ UDP row.

use crate::baseline::BareRelay;
use crate::cli::LoadTuning;
use crate::cli::{BaselineArgs, DataPath, RelayArgs, in_range, rate, seconds};
use crate::error::{BenchError, Result};
use crate::load::{Fabric, run_load};
use crate::report::{Cell, Printer, Row};
use crate::scenario::{
    Context, LOAD_COLUMNS, LOAD_RATIO_KEYS, load_columns, load_row, next_run_id, over,
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
    if args.compare_v1 && args.protocol == Protocol::V1 {
        return Err(BenchError::InvalidArguments(
            "--compare-v1 compares a version-2 (or 3) run with version 1; add --protocol v2"
                .to_owned(),
        ));
    }
    if args.compare_v2 && args.protocol != Protocol::V3 {
        return Err(BenchError::InvalidArguments(
            "--compare-v2 compares a version-3 run with version 2; add --protocol v3".to_owned(),
        ));
    }
    if args.transport != DataPath::Udp && args.protocol != Protocol::V3 {
        return Err(BenchError::InvalidArguments(
            "--transport tunnel or both is for version 3 members; add --protocol v3".to_owned(),
        ));
    }
    let mut printer = Printer::new("relay", &load_columns(args.protocol), context.json);
    // Each run gets its own server, started the same way, so none inherits another's
    // history database or warmed caches.
    let measure_on_fresh_server = |protocol: Protocol| -> Result<Row> {
        let server = context.server()?;
        measure(
            RelayUnderTest::Server(&server, protocol),
            shape,
            &args.tuning,
        )
    };
    let compared = match args.compared() {
        Some(protocol) => {
            let row = measure_on_fresh_server(protocol)?;
            printer.emit(&row);
            Some((protocol, row))
        }
        None => None,
    };
    let mut measured = Vec::new();
    for protocol in args.measured() {
        let row = measure_on_fresh_server(protocol)?;
        printer.emit(&row);
        measured.push((protocol, row));
    }
    let Some((first, ours)) = measured.first() else {
        return Ok(());
    };
    if let Some((theirs, compared)) = &compared {
        for (protocol, row) in &measured {
            let ratio = Row::ratio(row, compared, LOAD_RATIO_KEYS)
                .set("target", Cell::Text(over(*protocol, *theirs)));
            if let Some(Cell::Float(cpu, _)) = ratio.get("cpu_s_per_m") {
                tracing::info!(
                    "{} CPU per delivered datagram: {cpu:.2} ({} s/M against {} s/M)",
                    over(*protocol, *theirs),
                    cell_text(row.get("cpu_s_per_m")),
                    cell_text(compared.get("cpu_s_per_m")),
                );
            }
            printer.emit(&ratio);
        }
    }
    if let [(udp, udp_row), (tunnel, tunnel_row)] = &measured[..] {
        printer.emit(
            &Row::ratio(tunnel_row, udp_row, LOAD_RATIO_KEYS)
                .set("target", Cell::Text(over(*tunnel, *udp))),
        );
    }
    if args.compare_baseline {
        let baseline = BareRelay::start()?;
        let theirs = measure(RelayUnderTest::Baseline(&baseline), shape, &args.tuning)?;
        printer.emit(&theirs);
        let ratio = Row::ratio(ours, &theirs, LOAD_RATIO_KEYS);
        let ratio = if measured.len() > 1 {
            ratio.set("target", Cell::Text(format!("{}/baseline", first.name())))
        } else {
            ratio
        };
        printer.emit(&ratio);
    }
    Ok(())
}

/// A cell as the table shows it, for log lines.
fn cell_text(cell: Option<&Cell>) -> String {
    match cell {
        Some(Cell::Float(value, decimals)) => format!("{value:.decimals$}"),
        Some(Cell::Int(value)) => value.to_string(),
        Some(Cell::Text(text)) => text.clone(),
        Some(Cell::Missing) | None => "-".to_owned(),
    }
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
