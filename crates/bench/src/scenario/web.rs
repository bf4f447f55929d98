//! `web`: one room of UDP members (version 2) and WebSocket members (docs/http-api.md), paced
//! senders taken from both transports in turn, and the figures per transport: the `udp` row
//! is what the UDP members received (and the acks of the UDP senders), the `ws` row what the
//! WebSocket members received, `all` both, with the server's CPU per delivered message (the
//! server's CPU cannot be split by transport within one run), and `ws/udp` divides the two.
//!
//! Before the load it reports the server's resident memory per WebSocket member: VmRSS just
//! before the members' HTTP joins, after them, and once every member is connected and
//! registered. `--crowd` is 1000 WebSocket members at 100 msg/s.

use std::time::{Duration, Instant};

use crate::cli::{WebArgs, in_range, rate, seconds};
use crate::error::{BenchError, Result};
use crate::load::{Fabric, LoadOutcome, Transport, run_load};
use crate::procfs::resident_kib;
use crate::report::{Cell, Column, Printer, Row};
use crate::scenario::{Context, LOAD_RATIO_KEYS, load_columns, load_row, next_run_id};
use crate::setup::{RelayUnderTest, populate, run_tag};
use crate::wire::Protocol;
use crate::ws_member::{WsFleet, WsSeat};

/// The most members the scenario populates.
const MAX_MEMBERS: usize = 5000;
/// Room for the server's own count of members above the scenario's.
const MAX_MEMBERS_HEADROOM: usize = 16;

/// The target label of the row dividing the WebSocket figures by the UDP ones.
const WS_OVER_UDP: &str = "ws/udp";

const MEMORY_COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "ws_members",
        header: "ws_members",
    },
    Column {
        key: "join_s",
        header: "join_s",
    },
    Column {
        key: "connect_s",
        header: "connect_s",
    },
    Column {
        key: "rss_before_kib",
        header: "rss_before_KiB",
    },
    Column {
        key: "rss_joined_kib",
        header: "rss_joined_KiB",
    },
    Column {
        key: "rss_after_kib",
        header: "rss_after_KiB",
    },
    Column {
        key: "kib_per_ws_member",
        header: "KiB/ws_member",
    },
    Column {
        key: "kib_per_ws_connection",
        header: "KiB/ws_conn",
    },
];

const PATH_COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "path",
    },
    Column {
        key: "delivered",
        header: "delivered",
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
];

/// Latency by path, sender's transport to receiver's (`udp>ws`: sent over UDP, received on
/// a WebSocket), for every path that delivered something.
fn path_rows(outcome: &LoadOutcome) -> Vec<Row> {
    let us = |nanos: u64| Cell::Float(nanos as f64 / 1_000.0, 1);
    let mut rows = Vec::new();
    for part in &outcome.parts {
        for (from, latency) in Transport::ALL.iter().zip(&part.latency_by_sender) {
            if latency.is_empty() {
                continue;
            }
            let path = format!("{}>{}", from.name(), part.transport.name());
            rows.push(
                Row::new()
                    .with("target", Cell::Text(path))
                    .with("delivered", Cell::Int(latency.len()))
                    .with("p50_us", us(latency.value_at_quantile(0.50)))
                    .with("p99_us", us(latency.value_at_quantile(0.99)))
                    .with("p999_us", us(latency.value_at_quantile(0.999)))
                    .with("max_us", us(latency.max())),
            );
        }
    }
    rows
}

/// `chat-bench web`.
pub fn run(context: &Context, args: &WebArgs) -> Result<()> {
    let (udp_members, ws_members, offered) = args.shape();
    let members = udp_members + ws_members;
    in_range("--udp-members", udp_members, 0, MAX_MEMBERS)?;
    in_range("--ws-members", ws_members, 0, MAX_MEMBERS)?;
    in_range("members in all", members, 2, MAX_MEMBERS)?;
    in_range("--senders", args.senders, 1, members)?;
    in_range("--connect-concurrency", args.connect_concurrency, 1, 256)?;
    in_range("--ws-threads", args.ws_threads, 1, 16)?;
    in_range("--settle-ms", args.settle_ms, 0, 60_000)?;
    args.tuning.validate()?;
    let offered = rate("--rate", offered)?;
    let duration = seconds("--duration", args.duration)?;
    let setup_limit = seconds("--setup-limit", args.setup_limit)?;

    // The server's default of 256 members per room would refuse the crowd.
    let max_members = (members + MAX_MEMBERS_HEADROOM).to_string();
    let server = context.server_with(&[("--max-members", max_members)])?;
    let http = match (ws_members, server.http) {
        (0, _) => None,
        (_, Some(http)) => Some(http),
        (_, None) => {
            return Err(BenchError::InvalidArguments(
                "this chat-server announced no HTTP listener (http=IP:PORT): WebSocket members \
                 need a build with the WebSocket gateway, its HTTP listener on"
                    .to_owned(),
            ));
        }
    };
    let tag = run_tag();
    let room = format!("{tag}-0");
    let relay = RelayUnderTest::Server(&server, Protocol::V2);
    let udp = if udp_members > 0 {
        Some(populate(
            relay,
            &[udp_members],
            &tag,
            args.tuning.buffers(),
        )?)
    } else {
        None
    };

    let setup_deadline = Instant::now() + setup_limit;
    let fleet = match http {
        Some(http) => {
            let (fleet, memory) = connect_fleet(
                http,
                server.pid,
                &room,
                ws_members,
                udp_members == 0,
                args,
                setup_deadline,
            )?;
            if let Some(memory) = memory {
                Printer::new("web-memory", MEMORY_COLUMNS, context.json).emit(&memory);
            }
            Some(fleet)
        }
        None => None,
    };

    let senders = interleaved_senders(udp_members, ws_members, args.senders);
    let udp_list = udp.as_ref().map_or(&[][..], |rooms| &rooms.members[..]);
    let fabric = Fabric {
        members: udp_list,
        ws: fleet.as_ref(),
        senders: &senders,
        relay: server.udp,
        member_relays: None,
        cpu: server.cpu_source(),
        protocol: Protocol::V2,
    };
    let outcome = run_load(&fabric, &args.tuning.spec(next_run_id(), offered, duration))?;
    let closed = fleet.as_ref().map_or(0, WsFleet::closed);
    if closed > 0 {
        tracing::warn!(
            closed,
            "WebSocket connections were closed during the run; their members count as loss"
        );
    }
    let mut printer = Printer::new("web", &load_columns(Protocol::V2), context.json);
    for row in load_rows(&outcome, closed) {
        printer.emit(&row);
    }
    let mut printer = Printer::new("web-paths", PATH_COLUMNS, context.json);
    for row in path_rows(&outcome) {
        printer.emit(&row);
    }
    Ok(())
}

/// Grants and connects the WebSocket members of `room`; with `creates`, the first one creates
/// it. Returns the fleet and, when the server's PID is known, the memory row.
fn connect_fleet(
    http: std::net::SocketAddr,
    pid: Option<u32>,
    room: &str,
    ws_members: usize,
    creates: bool,
    args: &WebArgs,
    deadline: Instant,
) -> Result<(WsFleet, Option<Row>)> {
    let rss = || pid.map(resident_kib).transpose();
    let mut fleet = WsFleet::new(http, args.ws_threads)?;
    let asks: Vec<(String, String, bool)> = (0..ws_members)
        .map(|index| (room.to_owned(), format!("w{index}"), creates && index == 0))
        .collect();
    let rss_before = rss()?;
    let started = Instant::now();
    let tokens = fleet.grant(&asks, args.connect_concurrency, deadline)?;
    let join_elapsed = started.elapsed();
    let rss_joined = rss()?;
    let seats = asks
        .into_iter()
        .zip(tokens)
        .map(|((room, username, _), token)| WsSeat {
            username,
            room_index: 0,
            room,
            token,
        })
        .collect();
    let started = Instant::now();
    fleet.connect(seats, args.connect_concurrency, deadline)?;
    let connect_elapsed = started.elapsed();
    tracing::info!(
        members = ws_members,
        join_s = join_elapsed.as_secs_f64(),
        connect_s = connect_elapsed.as_secs_f64(),
        "WebSocket members registered"
    );
    std::thread::sleep(Duration::from_millis(args.settle_ms));
    let rss_after = rss()?;
    let row = memory_row(
        ws_members,
        join_elapsed,
        connect_elapsed,
        rss_before.zip(rss_joined).zip(rss_after),
    );
    Ok((fleet, row))
}

/// The memory row: `readings` is VmRSS before the joins, after them, and after connecting.
fn memory_row(
    ws_members: usize,
    join: Duration,
    connect: Duration,
    readings: Option<((u64, u64), u64)>,
) -> Option<Row> {
    let ((before, joined), after) = readings?;
    let per_member = |from: u64| {
        Cell::opt(
            (ws_members > 0).then(|| after.saturating_sub(from) as f64 / ws_members as f64),
            2,
        )
    };
    Some(
        Row::new()
            .with("target", Cell::Text("server".to_owned()))
            .with("ws_members", Cell::Int(ws_members as u64))
            .with("join_s", Cell::Float(join.as_secs_f64(), 2))
            .with("connect_s", Cell::Float(connect.as_secs_f64(), 2))
            .with("rss_before_kib", Cell::Int(before))
            .with("rss_joined_kib", Cell::Int(joined))
            .with("rss_after_kib", Cell::Int(after))
            .with("kib_per_ws_member", per_member(before))
            .with("kib_per_ws_connection", per_member(joined)),
    )
}

/// Sender indices (UDP members first in the numbering, WebSocket members after them): UDP,
/// WebSocket, UDP, ... while each transport has members left, `senders` in all.
fn interleaved_senders(udp_members: usize, ws_members: usize, senders: usize) -> Vec<usize> {
    let mut udp = 0..udp_members;
    let mut ws = udp_members..udp_members + ws_members;
    let mut chosen = Vec::with_capacity(senders);
    while chosen.len() < senders {
        let before = chosen.len();
        chosen.extend(udp.next());
        if chosen.len() < senders {
            chosen.extend(ws.next());
        }
        if chosen.len() == before {
            break;
        }
    }
    chosen
}

/// The `udp` and `ws` rows (receivers of each), `all`, and `ws/udp` when both exist.
fn load_rows(outcome: &LoadOutcome, ws_closed: usize) -> Vec<Row> {
    let mut rows = Vec::with_capacity(4);
    let mut parts = Vec::with_capacity(2);
    for transport in Transport::ALL {
        let Some(part) = outcome.part(transport) else {
            continue;
        };
        let shape = outcome
            .parts
            .iter()
            .find(|part| part.transport == transport)
            .map_or((0, 0), |part| (part.receivers, part.senders));
        let row = load_row(transport.name(), Protocol::V2, 1, shape.0, shape.1, &part);
        parts.push(row.clone());
        rows.push(row);
    }
    let (members, senders) = outcome.parts.iter().fold((0, 0), |(m, s), part| {
        (m + part.receivers, s + part.senders)
    });
    rows.push(
        load_row("all", Protocol::V2, 1, members, senders, outcome)
            .with("ws_closed", Cell::Int(ws_closed as u64)),
    );
    if let [udp, ws] = &parts[..] {
        rows.push(
            Row::ratio(ws, udp, LOAD_RATIO_KEYS).set("target", Cell::Text(WS_OVER_UDP.to_owned())),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_alternate_between_transports_while_both_have_members() {
        assert_eq!(interleaved_senders(10, 10, 4), [0, 10, 1, 11]);
        assert_eq!(interleaved_senders(2, 10, 6), [0, 2, 1, 3, 4, 5]);
        assert_eq!(interleaved_senders(0, 5, 3), [0, 1, 2]);
        assert_eq!(
            interleaved_senders(3, 0, 5),
            [0, 1, 2],
            "never more than the members"
        );
        assert_eq!(interleaved_senders(1, 1, 1), [0]);
    }

    #[test]
    fn memory_is_per_websocket_member_in_kib() {
        let row = memory_row(
            4,
            Duration::from_secs(1),
            Duration::from_secs(2),
            Some(((1000, 1010), 1040)),
        )
        .unwrap();
        assert_eq!(row.get("kib_per_ws_member"), Some(&Cell::Float(10.0, 2)));
        assert_eq!(row.get("kib_per_ws_connection"), Some(&Cell::Float(7.5, 2)));
        assert!(memory_row(4, Duration::ZERO, Duration::ZERO, None).is_none());
    }
}
