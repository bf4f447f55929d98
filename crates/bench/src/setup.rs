//! Populating rooms for a load run: on the chat server through real TCRP handshakes (the
//! first member creates, the rest join) and registration in the run's protocol; on the
//! baseline with a placeholder token, since the bare relay checks none, and always version 1.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_protocol::limits::TOKEN_HEX_LEN;
use chat_protocol::tcrp::Operation;

use crate::baseline::BareRelay;
use crate::error::Result;
use crate::keepalive::Keepalive;
use crate::member::{BufferSizes, Member, quiesce};
use crate::procfs::CpuSource;
use crate::sealed::{Sealing, Tunnel};
use crate::target::ServerTarget;
use crate::tcrp_client::must_grant;
use crate::tls;
use crate::wire::Protocol;

/// Longest a single create or join may keep being refused with `server_busy`.
const BUSY_RETRY_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the join notices of a fresh population to stop arriving.
const NOTICE_QUIET_LIMIT: Duration = Duration::from_secs(10);

/// The relay a run measures: the chat server or the in-process baseline.
#[derive(Debug, Clone, Copy)]
pub enum RelayUnderTest<'a> {
    /// The chat server, via TCRP and UCRP, its members speaking the given version.
    Server(&'a ServerTarget, Protocol),
    /// The bare relay inside this process; it speaks version 1 only.
    Baseline(&'a BareRelay),
}

impl RelayUnderTest<'_> {
    /// The label of its report rows: version-1 rows keep the plain `server` they always had.
    pub fn label(self) -> &'static str {
        match self {
            Self::Server(_, Protocol::V1) => "server",
            Self::Server(_, Protocol::V2) => "server-v2",
            Self::Server(_, Protocol::V3) => "server-v3",
            Self::Server(_, Protocol::V3Tunnel) => "server-v3-tunnel",
            Self::Baseline(_) => "baseline",
        }
    }

    /// The version its members speak.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::Server(_, protocol) => protocol,
            Self::Baseline(_) => Protocol::V1,
        }
    }

    /// Its UDP address.
    pub fn udp(self) -> SocketAddr {
        match self {
            Self::Server(server, _) => server.udp,
            Self::Baseline(relay) => relay.addr(),
        }
    }

    /// Whose CPU time its runs are charged.
    pub fn cpu(self) -> CpuSource {
        match self {
            Self::Server(server, _) => server.cpu_source(),
            Self::Baseline(relay) => relay.cpu_source(),
        }
    }
}

/// A populated set of rooms ready for load.
#[derive(Debug)]
pub struct Rooms {
    /// Every member, room by room.
    pub members: Vec<Member>,
    /// Pings silent version-2 members for as long as the rooms exist.
    _keepalive: Option<Keepalive>,
}

/// A short tag that keeps this run's room names apart from anything already on the server.
pub fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            elapsed.subsec_nanos() ^ elapsed.as_secs() as u32
        });
    format!("bench{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// A version-3 member: its create (first in the room) or join inside TLS, its keys exported
/// from that session; the connection kept as its tunnel when `protocol` sends through it,
/// closed otherwise (the membership does not depend on it).
fn sealed_member(
    server: &ServerTarget,
    protocol: Protocol,
    room_index: usize,
    room: &str,
    username: String,
    create: bool,
    buffers: BufferSizes,
) -> Result<Member> {
    let operation = if create {
        Operation::Create
    } else {
        Operation::Join
    };
    let granted = server.tls()?.must_grant(
        server.tcp,
        operation,
        room,
        &username,
        std::time::Instant::now() + BUSY_RETRY_LIMIT,
    )?;
    if granted
        .grant
        .udp_port
        .is_some_and(|port| port != server.udp.port())
    {
        tracing::warn!(
            granted = ?granted.grant.udp_port,
            used = server.udp.port(),
            "the grant names a different UDP port than the one in use"
        );
    }
    let tunnel = if protocol.is_tunnel() {
        Some(Tunnel::new(granted.tls, granted.leftover)?)
    } else {
        tls::close(granted.tls);
        None
    };
    let sealing = Sealing::new(granted.key_id, &granted.keys, tunnel);
    Member::sealed(username, room_index, sealing, buffers)
}

/// Creates rooms of the given sizes, registers every member and drains the join notices.
pub fn populate(
    relay: RelayUnderTest<'_>,
    sizes: &[usize],
    tag: &str,
    buffers: BufferSizes,
) -> Result<Rooms> {
    let placeholder_token = [b'0'; TOKEN_HEX_LEN];
    let protocol = relay.protocol();
    let keepalive = if protocol.has_acks() {
        Some(Keepalive::start(relay.udp())?)
    } else {
        None
    };
    let mut members = Vec::with_capacity(sizes.iter().sum());
    for (room_index, &size) in sizes.iter().enumerate() {
        let room = format!("{tag}-{room_index}");
        for position in 0..size {
            let username = format!("m{position}");
            let member = match relay {
                RelayUnderTest::Server(server, _) if protocol.is_sealed() => {
                    let create = position == 0;
                    sealed_member(
                        server, protocol, room_index, &room, username, create, buffers,
                    )?
                }
                RelayUnderTest::Server(server, _) => {
                    let operation = if position == 0 {
                        Operation::Create
                    } else {
                        Operation::Join
                    };
                    let grant = must_grant(
                        server.tcp,
                        operation,
                        &room,
                        &username,
                        std::time::Instant::now() + BUSY_RETRY_LIMIT,
                    )?;
                    if grant.udp_port.is_some_and(|port| port != server.udp.port()) {
                        tracing::warn!(
                            granted = ?grant.udp_port,
                            used = server.udp.port(),
                            "the grant names a different UDP port than the one in use"
                        );
                    }
                    Member::new(username, room_index, &room, grant.token.as_bytes(), buffers)?
                }
                RelayUnderTest::Baseline(_) => {
                    Member::new(username, room_index, &room, &placeholder_token, buffers)?
                }
            };
            member.register(relay.udp(), &room, protocol)?;
            if let Some(keepalive) = &keepalive {
                keepalive.watch(&member)?;
            }
            members.push(member);
        }
    }
    let drained = quiesce(&members, NOTICE_QUIET_LIMIT)?;
    tracing::debug!(
        relay = relay.label(),
        members = members.len(),
        drained,
        "rooms populated"
    );
    Ok(Rooms {
        members,
        _keepalive: keepalive,
    })
}
