//! The room engine: every room, member and token, and the rules that change them, with no I/O.
//!
//! It is sans-IO in the way `quinn-proto` is. What goes in: a handshake ([`Engine::create`],
//! [`Engine::join`], [`Engine::pair`]), a datagram from an [`Endpoint`] ([`Engine::datagram`]),
//! a batch the history store committed ([`Engine::committed`]) and a clock tick
//! ([`Engine::tick`]), each with the time passed in as [`Now`]. What comes out: [`Effects`],
//! the datagrams to send to endpoints and the jobs for the history store, and the state
//! changes for the journal ([`Engine::take_changes`], numbered by [`Engine::journal_seq`]).
//! It owns no socket, reads no clock and sends on no channel: the I/O layer (relay thread,
//! control tasks, tick task, history thread) locks it, feeds it, and carries out the effects
//! after letting go of the lock.
//!
//! Layout: [`room`] is the model; [`membership`] and [`departures`] create, join, pair, leave
//! and time members out; [`dispatch`] decodes a datagram into an action and binds addresses;
//! [`chat`] orders, deduplicates, numbers and stores chat; [`replay`] sends notices and
//! catch-ups; [`api`] takes the HTTP API's token-carrying requests; [`restore`] takes and restores snapshots; [`durable`] is the vocabulary of the
//! state file and journal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_protocol::names::NameError;
use chat_protocol::tcrp::ErrorCode;
use rand::TryRng;
use rand::rngs::SysRng;
use thiserror::Error;

use crate::flood::FloodPolicy;
use crate::token::{RandomError, Token};

pub use api::{Credentials, MemberList};
pub use cluster::{SharedMessage, SharedOutcome};
pub use durable::{JournalRecord, StateChange};
pub use effects::{Effects, HistoryJob, Outbox, PendingMessage, StoredMessage};
pub use endpoint::Endpoint;
pub use memory::MemoryBudget;
pub use replay::{MAX_REPLAY, NO_ROOM_TEXT};
pub use restore::{HistoryReadError, HistorySource, RestoreError};
pub use room::{MemberId, RoomId, RoomKind, WireVersion};
pub use seq_window::SeqStatus;

use room::Room;

pub mod api;
pub mod chat;
mod checks;
pub mod cluster;
pub mod departures;
pub mod direct;
pub mod dispatch;
pub mod durable;
pub mod effects;
pub mod endpoint;
pub mod held;
pub mod membership;
pub mod memory;
pub mod moderation;
pub mod refusals;
pub mod replay;
pub mod requests;
pub mod restore;
pub mod room;
pub mod sealing;
pub mod search;
pub mod seq_window;
pub mod topic;

/// Most messages waiting for the history store before chat stops being accepted.
pub const MAX_UNSTORED: usize = 65_536;

/// How many message ids a room reserves in the durable state at a time; a new reservation
/// is recorded when half of the current one is used, long before it runs out.
pub const ID_RESERVATION: u64 = 1024;

/// Pair rooms hold two people.
pub const PAIR_ROOM_CAPACITY: usize = 2;

/// The time, as every input is given it: the engine never reads a clock, so a test can
/// drive it with a fake one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timeouts, flood control and challenges.
    pub instant: Instant,
    /// Unix milliseconds, for message timestamps and room creation times.
    pub unix_ms: u64,
}

impl Now {
    /// The same clock `elapsed` later (wall-clock time moves with it).
    pub fn later(self, elapsed: Duration) -> Self {
        Self {
            instant: self.instant + elapsed,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Caps that keep one server's memory bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most rooms at once.
    pub max_rooms: usize,
    /// Most members in one room.
    pub max_members_per_room: usize,
    /// Messages a version-2 member gets when it registers without `last_id`.
    pub join_history: u64,
    /// Messages kept per room (`--history-limit`); replays never reach further back.
    pub retention: u64,
    /// A version-2 (or never registered) member silent this long is removed.
    pub idle_timeout: Duration,
    /// A registered version-1 member silent this long is removed. Longer, because the
    /// reference client sends no keepalives: a reader who never types is still there.
    pub v1_idle_timeout: Duration,
    /// Bytes that replay caches, held-back messages and the history backlog may use together
    /// (`--memory-budget`; see [`memory`]).
    pub memory_budget: usize,
    /// What the server may send in answer to one datagram from an address that has not
    /// proven it receives there, as a multiple of that datagram's size (`--reply-budget`).
    pub reply_budget: usize,
    /// A registered version-2 member (not the host) silent this long has missed several
    /// pings and is proven gone: a join for its name frees the name at once.
    pub ghost_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_members_per_room: 256,
            join_history: 20,
            retention: 10_000,
            idle_timeout: Duration::from_secs(60),
            v1_idle_timeout: Duration::from_secs(3600),
            memory_budget: usize::try_from(memory::DEFAULT_BUDGET_MIB << 20).unwrap_or(usize::MAX),
            reply_budget: 4,
            ghost_after: Duration::from_secs(10),
        }
    }
}

/// A fresh random stable id (63 bits, so it is positive as an SQLite integer too).
fn random_uid() -> Result<u64, RandomError> {
    let mut bytes = [0u8; 8];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| RandomError::new(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes) >> 1)
}

/// What a successful create, join or pair hands the new member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The member's secret.
    pub token: Token,
    /// The room's name.
    pub room: String,
    /// The username as stored.
    pub username: String,
    /// Whether the member hosts the room.
    pub host: bool,
    /// A version-3 member's key id (granted over TLS), once sealed.
    pub key_id: Option<u32>,
}

/// Why a handshake was refused.
#[derive(Debug, Error)]
pub enum JoinError {
    /// The room name breaks the naming rules.
    #[error("invalid room name: {0}")]
    InvalidRoomName(#[source] NameError),
    /// The username breaks the naming rules.
    #[error("invalid username: {0}")]
    InvalidUsername(#[source] NameError),
    /// Create: the name is in use.
    #[error("a room named \"{0}\" already exists")]
    RoomExists(String),
    /// Join: no such room.
    #[error("there is no room named \"{0}\"")]
    RoomNotFound(String),
    /// Join: the username is in use in that room.
    #[error("the name \"{username}\" is already taken in \"{room}\"")]
    NameTaken {
        /// The room.
        room: String,
        /// The name asked for.
        username: String,
    },
    /// Join: wrong or missing password for a private room.
    #[error("wrong password for room \"{0}\"")]
    BadPassword(String),
    /// Join: the room has its maximum number of members.
    #[error("room \"{room}\" is full ({capacity} members)")]
    RoomFull {
        /// The room.
        room: String,
        /// Its capacity.
        capacity: usize,
    },
    /// Join: the room's host banned the address the request came from.
    #[error("you are banned from room \"{0}\"")]
    Banned(String),
    /// Create or pair: the server has its maximum number of rooms.
    #[error("the server has reached its limit of {0} rooms; try again later")]
    TooManyRooms(usize),
    /// No randomness for a token.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl JoinError {
    /// The contract's code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRoomName(_) => ErrorCode::InvalidRoomName,
            Self::InvalidUsername(_) => ErrorCode::InvalidUsername,
            Self::RoomExists(_) => ErrorCode::RoomExists,
            Self::RoomNotFound(_) => ErrorCode::RoomNotFound,
            Self::NameTaken { .. } => ErrorCode::NameTaken,
            Self::BadPassword(_) => ErrorCode::BadPassword,
            Self::RoomFull { .. } => ErrorCode::RoomFull,
            Self::Banned(_) => ErrorCode::Banned,
            Self::TooManyRooms(_) | Self::Random(_) => ErrorCode::ServerBusy,
        }
    }
}

/// Why a datagram was dropped without effect. Counted, logged at debug level, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum DropReason {
    /// Not a well-formed UCRP datagram or message.
    #[error("malformed datagram")]
    Malformed,
    /// The token is not a live token.
    #[error("unknown token")]
    UnknownToken,
    /// The token belongs to another room.
    #[error("token of another room")]
    WrongRoom,
    /// The token is registered to another address.
    #[error("token bound to another address")]
    WrongAddress,
    /// Over the member's flood limit.
    #[error("over the flood limit")]
    RateLimited,
    /// The history store is too far behind to take more chat.
    #[error("history store too far behind")]
    HistoryBacklog,
    /// A sealed datagram that does not authenticate: forged, corrupted, or under old keys.
    #[error("sealed datagram does not authenticate")]
    Forged,
    /// A sealed datagram whose counter was received before, or is too old.
    #[error("sealed datagram replayed")]
    Replayed,
    /// A sealed datagram under a key id no member has.
    #[error("unknown key id")]
    UnknownKey,
    /// A plaintext datagram for a sealed member, or any with `--require-encryption`.
    #[error("plaintext where encryption is required")]
    Plaintext,
}

/// Every room and member: the engine.
#[derive(Debug)]
pub struct Engine {
    rooms: HashMap<RoomId, Room>,
    /// Rooms by [`names::room_key`](chat_protocol::names::room_key), so that `Lobby` and
    /// `LOBBY` are one room.
    room_ids: HashMap<String, RoomId>,
    tokens: HashMap<Token, (RoomId, MemberId)>,
    next_id: u64,
    /// Increases by one with every change the state file records: it is the `seq` of the
    /// latest change, and the writer compares it with what it last wrote.
    journal_seq: u64,
    /// Changes not yet taken by the writer, for its journal.
    unsaved: Vec<JournalRecord>,
    limits: Limits,
    flood: FloodPolicy,
    /// Whether a history store takes [`HistoryJob`]s; without one, chat counts as stored at
    /// once and history lives in memory only (unit tests).
    history: bool,
    /// Messages handed to the history store and not yet committed; bounded by
    /// [`MAX_UNSTORED`] so a disk that stops taking writes cannot grow memory without end.
    unstored: usize,
    /// When the last tick came, to notice one that comes late (a stalled server).
    last_tick: Option<Instant>,
    /// What caches and queues use of `--memory-budget`.
    memory: MemoryBudget,
    /// This start's boot number (see [`Engine::next_boot`]).
    boot: u64,
    /// Key ids handed out, to draw fresh ones without a scan of every member; an entry whose
    /// member left is stale until [`Engine::prune_key_ids`] (a drawn id is checked live).
    key_ids: HashMap<u32, Token>,
    /// Scale-out (`--redis`): ids come from Redis, and every node relays what it hears on a
    /// room's channel rather than what it committed itself (see [`cluster`]).
    cluster: bool,
}

impl Engine {
    /// An empty engine.
    pub fn new(limits: Limits, flood: FloodPolicy) -> Self {
        Self {
            rooms: HashMap::new(),
            room_ids: HashMap::new(),
            tokens: HashMap::new(),
            next_id: 1,
            journal_seq: 0,
            unsaved: Vec::new(),
            limits,
            flood,
            history: false,
            unstored: 0,
            last_tick: None,
            memory: MemoryBudget::new(limits.memory_budget),
            boot: 0,
            key_ids: HashMap::new(),
            cluster: false,
        }
    }

    /// From now on, chat goes out as [`HistoryJob::Store`] and is acked and relayed only once
    /// [`Engine::committed`] reports it stored; replays beyond the cache and `history` pages
    /// become jobs too.
    pub fn attach_history(&mut self) {
        self.history = true;
    }

    /// The live rooms' stable ids.
    pub fn room_uids(&self) -> Vec<u64> {
        self.rooms.values().map(|room| room.uid).collect()
    }

    /// The `seq` of the latest change to the durable state (rooms, members, tokens,
    /// registered addresses): a handshake is durable once the writer has this on disk.
    pub fn journal_seq(&self) -> u64 {
        self.journal_seq
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// How many members exist across all rooms.
    pub fn member_count(&self) -> usize {
        self.tokens.len()
    }

    /// Memory the caches and queues use, for the status line and tests.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn changed(&mut self, change: StateChange) {
        self.journal_seq += 1;
        self.unsaved.push(JournalRecord {
            seq: self.journal_seq,
            change,
        });
    }

    /// The `journal_seq` of the newest change already taken by the writer (or loaded).
    pub fn saved_journal_seq(&self) -> u64 {
        self.unsaved
            .first()
            .map_or(self.journal_seq, |first| first.seq.saturating_sub(1))
    }

    /// The changes made since the last call, in order, for the state writer's journal. Taken
    /// under the lock, so it costs what changed, not what the state holds.
    pub fn take_changes(&mut self) -> Vec<JournalRecord> {
        std::mem::take(&mut self.unsaved)
    }
}

#[cfg(test)]
mod tests;
