//! `nodes`: scale-out (docs/scaling.md). One room whose members speak version 2, measured
//! three ways in one run, each on servers of its own: one node alone (no Redis), one node with
//! `--redis`, and `--nodes` nodes sharing that Redis with the members dealt round-robin over
//! them, so that most deliveries cross nodes (sender on one node, receiver on another).
//! `cpu_s/M` is the CPU of the first node only; Redis's own CPU is in its row's log line.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_protocol::tcrp::Operation;

use crate::cli::{NodesArgs, in_range, rate, seconds};
use crate::error::{BenchError, Result};
use crate::load::{Fabric, run_load};
use crate::member::{Member, quiesce};
use crate::procfs::CpuSource;
use crate::report::Printer;
use crate::scenario::{Context, load_columns, load_row, next_run_id};
use crate::setup::{RelayUnderTest, populate, run_tag};
use crate::target::ServerTarget;
use crate::tcrp_client::must_grant;
use crate::wire::Protocol;

/// Longest a join may keep failing while the room's creation reaches the other nodes.
const JOIN_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the join notices to stop arriving.
const NOTICE_QUIET_LIMIT: Duration = Duration::from_secs(10);
/// Time for every node to subscribe to the room's channel once its members registered.
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(500);

/// A `redis-server` for one run, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(binary: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chat-bench-redis-")
            .tempdir()
            .map_err(BenchError::SpawnFailed)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(BenchError::SpawnFailed)?
            .port();
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::SpawnFailed)?;
        let redis = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(BenchError::ServerDidNotStart(format!(
                    "redis-server did not listen on {port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cpu(&self) -> CpuSource {
        CpuSource::Process(self.child.id())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chat-bench nodes`.
pub fn run(context: &Context, args: &NodesArgs) -> Result<()> {
    in_range("--members", args.members, 2, 1000)?;
    in_range("--senders", args.senders, 1, args.members)?;
    in_range("--nodes", args.nodes, 2, 16)?;
    args.tuning.validate()?;
    let offered = rate("--rate", args.rate)?;
    let duration = seconds("--duration", args.duration)?;
    let protocol = Protocol::V2;
    let mut printer = Printer::new("nodes", &load_columns(protocol), context.json);
    let senders: Vec<usize> = (0..args.senders).collect();

    // One node alone, as without scale-out.
    {
        let server = context.spawn_with(&[])?;
        let relay = RelayUnderTest::Server(&server, protocol);
        let rooms = populate(relay, &[args.members], &run_tag(), args.tuning.buffers())?;
        let fabric = Fabric {
            members: &rooms.members,
            senders: &senders,
            ws: None,
            relay: server.udp,
            member_relays: None,
            cpu: server.cpu_source(),
            protocol,
        };
        let outcome = run_load(&fabric, &args.tuning.spec(next_run_id(), offered, duration))?;
        printer.emit(&load_row(
            "one-node",
            protocol,
            1,
            args.members,
            args.senders,
            &outcome,
        ));
    }

    // One node, then several, each with a Redis of its own.
    for nodes in [1, args.nodes] {
        let redis = Redis::start(&args.redis_bin)?;
        let servers = (0..nodes)
            .map(|index| {
                context.spawn_with(&[
                    "--redis".to_owned(),
                    redis.url(),
                    "--node-id".to_owned(),
                    format!("bench{index}"),
                ])
            })
            .collect::<Result<Vec<ServerTarget>>>()?;
        let (members, relays) = spread(&servers, args.members, &args.tuning)?;
        let fabric = Fabric {
            members: &members,
            senders: &senders,
            ws: None,
            relay: servers[0].udp,
            member_relays: Some(&relays),
            cpu: servers[0].cpu_source(),
            protocol,
        };
        let redis_before = redis.cpu().cpu_time()?;
        let outcome = run_load(&fabric, &args.tuning.spec(next_run_id(), offered, duration))?;
        let redis_after = redis.cpu().cpu_time()?;
        if let (Some(before), Some(after)) = (redis_before, redis_after) {
            tracing::info!(
                nodes,
                redis_cpu_s = after.saturating_sub(before).as_secs_f64(),
                "redis-server CPU during the run"
            );
        }
        let label = if nodes == 1 {
            "redis-x1"
        } else {
            "redis-nodes"
        };
        printer.emit(&load_row(
            label,
            protocol,
            1,
            args.members,
            args.senders,
            &outcome,
        ));
    }
    Ok(())
}

/// Creates the room on the first node and joins the members round-robin over the nodes,
/// each registered at its own node; returns them with their nodes' addresses.
fn spread(
    servers: &[ServerTarget],
    members: usize,
    tuning: &crate::cli::LoadTuning,
) -> Result<(Vec<Member>, Vec<SocketAddr>)> {
    let room = format!("{}-0", run_tag());
    let mut joined = Vec::with_capacity(members);
    let mut relays = Vec::with_capacity(members);
    for position in 0..members {
        let server = &servers[position % servers.len()];
        let username = format!("m{position}");
        let operation = if position == 0 {
            Operation::Create
        } else {
            Operation::Join
        };
        // The room reaches the other nodes through Redis a moment after its creation.
        let deadline = Instant::now() + JOIN_LIMIT;
        let grant = loop {
            match must_grant(server.tcp, operation, &room, &username, deadline) {
                Ok(grant) => break grant,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "join not granted yet; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(error),
            }
        };
        let member = Member::new(username, 0, &room, grant.token.as_bytes(), tuning.buffers())?;
        member.register(server.udp, &room, Protocol::V2)?;
        joined.push(member);
        relays.push(server.udp);
    }
    quiesce(&joined, NOTICE_QUIET_LIMIT)?;
    std::thread::sleep(SUBSCRIBE_SETTLE);
    quiesce(&joined, NOTICE_QUIET_LIMIT)?;
    Ok((joined, relays))
}
