//! `members`: registers many members (rooms of at most `--room-size`, each created by a host
//! and then joined) and reports the server's resident memory before and after, per member.
//! Each member registers from its own socket, which is closed once the welcome arrives: the
//! server keeps the binding, and this tool does not hold thousands of descriptors.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_protocol::tcrp::Operation;

use crate::cli::{MembersArgs, in_range, seconds};
use crate::error::{BenchError, Result};
use crate::member::{BufferSizes, Member};
use crate::procfs::resident_kib;
use crate::report::{Cell, Column, Printer, Row};
use crate::scenario::Context;
use crate::setup::run_tag;
use crate::target::ServerTarget;
use crate::tcrp_client::must_grant;
use crate::wire::Protocol;

/// The server's default idle timeout; members registered longer ago than this without
/// sending anything may already have been removed when memory is read.
const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Small buffers: these sockets only ever receive one welcome.
const REGISTRATION_BUFFERS: BufferSizes = BufferSizes {
    receive: 64 * 1024,
    send: 64 * 1024,
};

const COLUMNS: &[Column] = &[
    Column {
        key: "target",
        header: "target",
    },
    Column {
        key: "members",
        header: "members",
    },
    Column {
        key: "rooms",
        header: "rooms",
    },
    Column {
        key: "elapsed_s",
        header: "elapsed_s",
    },
    Column {
        key: "members_per_s",
        header: "members/s",
    },
    Column {
        key: "rss_before_kib",
        header: "rss_before_KiB",
    },
    Column {
        key: "rss_after_kib",
        header: "rss_after_KiB",
    },
    Column {
        key: "rss_delta_kib",
        header: "delta_KiB",
    },
    Column {
        key: "bytes_per_member",
        header: "bytes/member",
    },
    Column {
        key: "complete",
        header: "complete",
    },
];

struct Progress {
    next_room: AtomicUsize,
    registered: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<BenchError>>,
}

/// `chat-bench members`.
pub fn run(context: &Context, args: &MembersArgs) -> Result<()> {
    in_range("--members", args.members, 1, 200_000)?;
    in_range("--room-size", args.room_size, 1, 10_000)?;
    in_range("--connections", args.connections, 1, 256)?;
    in_range("--settle-ms", args.settle_ms, 0, 60_000)?;
    let time_limit = seconds("--time-limit", args.time_limit)?;
    let server = context.server()?;
    let pid = server.pid.ok_or_else(|| {
        BenchError::InvalidArguments(
            "members needs the server's PID to read its memory: use --spawn or --server-pid"
                .to_owned(),
        )
    })?;
    let sizes: Vec<usize> = (0..args.members.div_ceil(args.room_size))
        .map(|room| args.room_size.min(args.members - room * args.room_size))
        .collect();

    let rss_before = resident_kib(pid)?;
    let progress = Progress {
        next_room: AtomicUsize::new(0),
        registered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
    };
    let tag = run_tag();
    let started = Instant::now();
    let deadline = started + time_limit;
    std::thread::scope(|scope| {
        for worker in 0..args.connections.min(sizes.len()) {
            let (progress, sizes, tag, server) = (&progress, &sizes, &tag, &server);
            let spawned = std::thread::Builder::new()
                .name(format!("members-{worker}"))
                .spawn_scoped(scope, move || {
                    if let Err(error) = populate_rooms(server, sizes, tag, deadline, progress) {
                        progress.stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = progress.first_error.lock() {
                            slot.get_or_insert(error);
                        }
                    }
                });
            if let Err(error) = spawned {
                progress.stop.store(true, Ordering::Relaxed);
                tracing::warn!(%error, "could not start a registration worker");
            }
        }
    });
    let elapsed = started.elapsed();
    if let Some(error) = progress
        .first_error
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
    {
        return Err(error);
    }
    let registered = progress.registered.load(Ordering::Relaxed);
    if elapsed > SERVER_IDLE_TIMEOUT {
        tracing::warn!(
            elapsed_s = elapsed.as_secs(),
            "registration took longer than the server's idle timeout; early members may have \
             been removed before memory was read"
        );
    }
    std::thread::sleep(Duration::from_millis(args.settle_ms));
    let rss_after = resident_kib(pid)?;
    let delta = rss_after.saturating_sub(rss_before);
    let row = Row::new()
        .with("target", Cell::Text("server".to_owned()))
        .with("members", Cell::Int(registered))
        .with("rooms", Cell::Int(sizes.len() as u64))
        .with("elapsed_s", Cell::Float(elapsed.as_secs_f64(), 2))
        .with(
            "members_per_s",
            Cell::Float(registered as f64 / elapsed.as_secs_f64().max(1e-9), 0),
        )
        .with("rss_before_kib", Cell::Int(rss_before))
        .with("rss_after_kib", Cell::Int(rss_after))
        .with("rss_delta_kib", Cell::Int(delta))
        .with(
            "bytes_per_member",
            Cell::opt(
                (registered > 0).then(|| delta as f64 * 1024.0 / registered as f64),
                0,
            ),
        )
        .with(
            "complete",
            Cell::Text(
                if registered == args.members as u64 {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
            ),
        );
    Printer::new("members", COLUMNS, context.json).emit(&row);
    Ok(())
}

/// Takes rooms off the shared counter until none are left, time is up, or another worker
/// failed. A room is created by `m0` and joined by the rest, each registering over UDP.
fn populate_rooms(
    server: &ServerTarget,
    sizes: &[usize],
    tag: &str,
    deadline: Instant,
    progress: &Progress,
) -> Result<()> {
    loop {
        let room_index = progress.next_room.fetch_add(1, Ordering::Relaxed);
        let Some(&size) = sizes.get(room_index) else {
            return Ok(());
        };
        let room = format!("{tag}-{room_index}");
        for position in 0..size {
            if progress.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                return Ok(());
            }
            let operation = if position == 0 {
                Operation::Create
            } else {
                Operation::Join
            };
            let username = format!("m{position}");
            let grant = must_grant(server.tcp, operation, &room, &username, deadline)?;
            let member = Member::new(
                username,
                room_index,
                &room,
                grant.token.as_bytes(),
                REGISTRATION_BUFFERS,
            )?;
            member.register(server.udp, &room, Protocol::V1)?;
            progress.registered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
