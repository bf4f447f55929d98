//! The durable vocabulary: what the state file and its journal hold, as the engine produces
//! it. A snapshot is a [`PersistedState`]; every change after it is a [`JournalRecord`] whose
//! `seq` (the engine's `journal_seq`) is one above the previous change's. Reading and writing
//! the files is the I/O layer's business (the `persist` and `journal` modules).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::room::{RoomKind, WireVersion};

/// The format number written in the file, bumped on incompatible changes.
pub const STATE_FORMAT: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Always [`STATE_FORMAT`].
    pub format: u32,
    /// The `seq` of the last journal record this state includes (0 in files from before the
    /// journal existed): on load, only later records are applied.
    #[serde(default)]
    pub journal_seq: u64,
    /// Every room, by name.
    pub rooms: Vec<PersistedRoom>,
    /// How many times the server has started (version 3's counters start above it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot: u64,
}

impl PersistedState {
    /// A state of the current format that includes no journal record.
    pub fn new(rooms: Vec<PersistedRoom>) -> Self {
        Self {
            format: STATE_FORMAT,
            journal_seq: 0,
            rooms,
            boot: 0,
        }
    }
}

/// One room in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedRoom {
    /// The room's name.
    pub name: String,
    /// Stable id that keys the room's history (0 in files from before it existed: a new one
    /// is drawn on load).
    #[serde(default)]
    pub uid: u64,
    /// Public, private (with its password hash) or pair.
    #[serde(flatten)]
    pub kind: RoomKind,
    /// Unix milliseconds when it was created.
    pub created_at_ms: u64,
    /// Members in join order.
    pub members: Vec<PersistedMember>,
    /// No message id handed out in this room is above this (see `StateChange::IdsReserved`):
    /// if the history database is lost, ids go on from here rather than start again at 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ids_reserved: u64,
    /// The room's topic, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Addresses banned from joining (`/ban`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned: Vec<IpAddr>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One member in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMember {
    /// Display name.
    pub username: String,
    /// Stable id that names the member in the history (0: drawn on load).
    #[serde(default)]
    pub uid: u64,
    /// The 64-hex token, so that members keep it across a restart.
    pub token: String,
    /// Whether this member hosts the room.
    pub host: bool,
    /// The registered UDP address, so that members carry on after a restart without
    /// registering again (the reference client never would).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// The wire format the member registered with.
    #[serde(default = "default_version")]
    pub version: WireVersion,
    /// A version-3 member's key id and keys (hex): the file is mode 0600 like the tokens'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<PersistedSealing>,
}

/// A version-3 member's keys in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedSealing {
    /// The key id.
    pub key_id: u32,
    /// Both directions' keys, 128 hex digits.
    pub keys: String,
}

fn default_version() -> WireVersion {
    WireVersion::V1
}

/// A state file that parses but describes something impossible.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct StateProblem(pub String);

/// One change to rooms, members, tokens or registered addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum StateChange {
    /// A room was created, with its host as its only member.
    RoomCreated {
        /// The whole room.
        room: PersistedRoom,
    },
    /// Someone joined a room.
    MemberJoined {
        /// The room's name.
        room: String,
        /// The new member.
        member: PersistedMember,
    },
    /// A member other than the host left, timed out or was revoked.
    MemberLeft {
        /// The room's name.
        room: String,
        /// The member's stable id.
        uid: u64,
        /// Why, for the notice other nodes show their members (absent in journals written
        /// before scale-out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<chat_protocol::v2::LeaveReason>,
    },
    /// A room closed, with all its members.
    RoomClosed {
        /// The room's name.
        room: String,
        /// Its stable id (absent in journals written before scale-out): with several nodes,
        /// a close must not take another room of the same name with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u64>,
    },
    /// Message ids up to `upto` may be handed out in the room. Recorded well before the room
    /// gets there, so the state file always names an id at or above every id in use, and ids
    /// never go backwards even when the history database is lost.
    IdsReserved {
        /// The room's name.
        room: String,
        /// The highest id that may be in use.
        upto: u64,
    },
    /// The host role passed to another member (a pair room whose creator moved on).
    HostChanged {
        /// The room's name.
        room: String,
        /// The new host's stable id.
        uid: u64,
    },
    /// A member set the room's topic (`None`: cleared).
    TopicChanged {
        /// The room's name.
        room: String,
        /// The new topic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// Who set it, for the notice other nodes show their members (absent in journals
        /// written before scale-out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The host banned a member's addresses from joining the room again.
    AddressesBanned {
        /// The room's name.
        room: String,
        /// The addresses newly banned.
        addresses: Vec<IpAddr>,
    },
    /// A member registered for the first time, from a new address, or over another
    /// transport; in scale-out, also that this node serves it from now on.
    MemberRegistered {
        /// The room's name.
        room: String,
        /// The member's stable id.
        uid: u64,
        /// Where its datagrams go now; None for a WebSocket or a tunnel, whose peer
        /// reconnects rather than resumes (records written before this was optional have one).
        addr: Option<SocketAddr>,
        /// The wire format it registered with.
        version: WireVersion,
    },
    /// A member got its version-3 keys (granted over TLS), or new ones (attach).
    MemberSealed {
        /// The room's name.
        room: String,
        /// The member's stable id.
        uid: u64,
        /// Its key id.
        key_id: u32,
        /// Both directions' keys, hex.
        keys: String,
    },
    /// The server started, for the `boot`-th time.
    Booted {
        /// The boot number.
        boot: u64,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// One above the previous change's, across snapshots and restarts.
    pub seq: u64,
    /// What changed.
    #[serde(flatten)]
    pub change: StateChange,
}
