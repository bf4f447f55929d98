//! The room manager: every room, member and token, and the rules that change them.
//!
//! It is plain synchronous state with no I/O, shared as `Arc<Mutex<RoomManager>>`. The TCP and
//! UDP front ends lock it for microseconds, never across an `.await`; datagrams it decides to
//! send are written into an [`Outbox`] and sent after the lock is released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use chat_protocol::limits::{MAX_DATAGRAM, MAX_HISTORY_PAGE};
use chat_protocol::names::{self, NameError};
use chat_protocol::tcrp::{ErrorCode, RoomList, RoomSummary};
use chat_protocol::ucrp::{self, ClientMessage, NOTICE_SENDER, ROOM_CLOSED};
use chat_protocol::v2::{ChatMessage, ClientV2, CloseReason, LeaveReason, ServerV2, V2ErrorCode};
use rand::TryRng;
use rand::rngs::SysRng;
use thiserror::Error;

use crate::escape::quoted;
use crate::flood::FloodPolicy;
use crate::history::{HistoryError, HistoryStore, StoredMessage};
use crate::history_writer::{HistoryJob, PendingMessage};
use crate::journal::{JournalRecord, StateChange};
use crate::memory::{self, MemoryBudget};
use crate::outbox::Outbox;
use crate::persist::{PersistedMember, PersistedRoom, PersistedState, StateProblem};
use crate::room::{
    CHALLENGE_LIFETIME, CachedMessage, Challenge, MAX_CHALLENGES, Member, MemberId, REPLAY_BUDGET,
    REPLAY_CACHE, Room, RoomId, RoomKind, WireVersion,
};
use crate::seq_window::{SEQ_WINDOW, SeqStatus};
use crate::token::{RandomError, Token};

/// Most stored messages replayed in answer to one register or ping; the client asks again.
pub const MAX_REPLAY: u64 = 256;
/// How many of a room's newest messages are read at start-up to rebuild deduplication windows:
/// well beyond what clients keep unacknowledged.
const RESTORE_SCAN: usize = 4 * SEQ_WINDOW;
/// Most messages waiting for the history thread before chat stops being accepted.
pub const MAX_UNSTORED: usize = 65_536;
/// Default page size of a `history` request without `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 50;

/// How much later than its period an idle sweep may run before the server counts itself as
/// stalled rather than busy.
const STALL_GRACE: Duration = Duration::from_secs(2);

/// How many message ids a room reserves in the durable state at a time; a new reservation
/// is recorded when half of the current one is used, long before it runs out.
pub const ID_RESERVATION: u64 = 1024;

/// Pair rooms hold two people.
pub const PAIR_ROOM_CAPACITY: usize = 2;
/// How long someone who left a pair room is kept out of it when pairing again.
const PAIR_REJOIN_WINDOW: Duration = Duration::from_secs(300);
/// How many departures a pair room remembers for that.
const PAIR_MEMORY: usize = 8;

/// The manager as the front ends share it.
pub type SharedManager = Arc<Mutex<RoomManager>>;

/// Locks the manager. A panic while it was held cannot leave it half-updated in a way that
/// matters more than stopping every room would, so a poisoned lock is taken over, not fatal.
pub fn lock(manager: &SharedManager) -> MutexGuard<'_, RoomManager> {
    manager.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// (`--memory-budget`; see [`crate::memory`]).
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

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    chat_protocol::time::unix_ms(SystemTime::now())
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
            Self::TooManyRooms(_) | Self::Random(_) => ErrorCode::ServerBusy,
        }
    }
}

/// Why a datagram was dropped without effect. Counted, logged at debug level, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a well-formed UCRP datagram or message.
    Malformed,
    /// The token is not a live token.
    UnknownToken,
    /// The token belongs to another room.
    WrongRoom,
    /// The token is registered to another address.
    WrongAddress,
    /// Over the member's flood limit.
    RateLimited,
    /// The history store is too far behind to take more chat.
    HistoryBacklog,
}

/// Every room and member.
#[derive(Debug)]
pub struct RoomManager {
    rooms: HashMap<RoomId, Room>,
    /// Rooms by [`names::room_key`], so that `Lobby` and `LOBBY` are one room.
    room_ids: HashMap<String, RoomId>,
    tokens: HashMap<Token, (RoomId, MemberId)>,
    next_id: u64,
    /// Increases by one with every change the state file records: it is the `seq` of the
    /// latest change, and the writer compares it with what it last wrote.
    generation: u64,
    /// Changes not yet taken by the writer, for its journal.
    unsaved: Vec<JournalRecord>,
    limits: Limits,
    flood: FloodPolicy,
    /// Where chat goes to be stored; None keeps history in memory only (unit tests).
    history: Option<Sender<HistoryJob>>,
    /// Messages handed to the history thread and not yet committed; bounded by
    /// [`MAX_UNSTORED`] so a disk that stops taking writes cannot grow memory without end.
    unstored: usize,
    /// When the idle sweep last ran, to notice a sweep that comes late (a stalled server).
    last_sweep: Option<Instant>,
    /// What caches and queues use of `--memory-budget`.
    memory: MemoryBudget,
    /// Notices decided on the control plane (a ghost evicted by a join), which has no UDP
    /// socket: the next datagram or idle sweep sends them. At most one per join.
    deferred: Outbox,
}

impl RoomManager {
    /// An empty manager.
    pub fn new(limits: Limits, flood: FloodPolicy) -> Self {
        Self {
            rooms: HashMap::new(),
            room_ids: HashMap::new(),
            tokens: HashMap::new(),
            next_id: 1,
            generation: 0,
            unsaved: Vec::new(),
            limits,
            flood,
            history: None,
            unstored: 0,
            last_sweep: None,
            memory: MemoryBudget::new(limits.memory_budget),
            deferred: Outbox::default(),
        }
    }

    /// Sends chat to the history thread from now on.
    pub fn attach_history(&mut self, jobs: Sender<HistoryJob>) {
        self.history = Some(jobs);
    }

    /// The live rooms' stable ids.
    pub fn room_uids(&self) -> Vec<u64> {
        self.rooms.values().map(|room| room.uid).collect()
    }

    /// Generation of the durable state: changes whenever rooms or tokens change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// How many members exist across all rooms.
    pub fn member_count(&self) -> usize {
        self.tokens.len()
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn changed(&mut self, change: StateChange) {
        self.generation += 1;
        self.unsaved.push(JournalRecord {
            seq: self.generation,
            change,
        });
    }

    /// The changes made since the last call, in order, for the state writer's journal. Taken
    /// under the lock, so it costs what changed, not what the state holds.
    pub fn take_changes(&mut self) -> Vec<JournalRecord> {
        std::mem::take(&mut self.unsaved)
    }

    /// Creates a room with `username` as its host.
    pub fn create(
        &mut self,
        room_name: &str,
        username: &str,
        kind: RoomKind,
        now_ms: u64,
        now: Instant,
    ) -> Result<Membership, JoinError> {
        names::validate_room_name(room_name).map_err(JoinError::InvalidRoomName)?;
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        if self.room_ids.contains_key(&names::room_key(room_name)) {
            return Err(JoinError::RoomExists(room_name.to_owned()));
        }
        self.insert_room(room_name, username, kind, now_ms, now)
    }

    fn insert_room(
        &mut self,
        room_name: &str,
        username: &str,
        kind: RoomKind,
        now_ms: u64,
        now: Instant,
    ) -> Result<Membership, JoinError> {
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(JoinError::TooManyRooms(self.limits.max_rooms));
        }
        let token = Token::generate()?;
        let room_id = self.fresh_id();
        let member_id = self.fresh_id();
        let host = Member::new(
            member_id,
            random_uid()?,
            token,
            username.to_owned(),
            &self.flood,
            now,
        );
        let mut room = Room {
            id: room_id,
            uid: random_uid()?,
            name: room_name.to_owned(),
            kind,
            created_at_ms: now_ms,
            host: member_id,
            members: BTreeMap::from([(member_id, host)]),
            v1_recipients: Arc::from([]),
            v2_recipients: Arc::from([]),
            waiting_since: room_id,
            left_lately: VecDeque::new(),
            last_id: 0,
            committed_id: 0,
            ids_reserved: 0,
            recent: VecDeque::new(),
            forgotten_upto: 0,
            new_members_from: 0,
        };
        room.rebuild_recipients();
        let created = StateChange::RoomCreated {
            room: persisted_room(&room),
        };
        self.rooms.insert(room_id, room);
        self.room_ids.insert(names::room_key(room_name), room_id);
        self.tokens.insert(token, (room_id, member_id));
        self.changed(created);
        Ok(Membership {
            token,
            room: room_name.to_owned(),
            username: username.to_owned(),
            host: true,
        })
    }

    /// Adds `username` to an existing room. `password_verified_for` names the room whose
    /// password the caller checked, for private rooms.
    pub fn join(
        &mut self,
        room_name: &str,
        username: &str,
        password_verified_for: Option<RoomId>,
        now: Instant,
    ) -> Result<Membership, JoinError> {
        names::validate_room_name(room_name).map_err(JoinError::InvalidRoomName)?;
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        let room_id = *self
            .room_ids
            .get(&names::room_key(room_name))
            .ok_or_else(|| JoinError::RoomNotFound(room_name.to_owned()))?;
        let (capacity, private) = {
            let room = self.room(room_id)?;
            let capacity = match room.kind {
                RoomKind::Pair => PAIR_ROOM_CAPACITY,
                RoomKind::Public | RoomKind::Private { .. } => self.limits.max_members_per_room,
            };
            (capacity, matches!(room.kind, RoomKind::Private { .. }))
        };
        if private && password_verified_for != Some(room_id) {
            return Err(JoinError::BadPassword(room_name.to_owned()));
        }
        self.add_member(room_id, username, capacity, now)
    }

    fn room(&self, room_id: RoomId) -> Result<&Room, JoinError> {
        self.rooms
            .get(&room_id)
            .ok_or_else(|| JoinError::RoomNotFound(String::new()))
    }

    fn add_member(
        &mut self,
        room_id: RoomId,
        username: &str,
        capacity: usize,
        now: Instant,
    ) -> Result<Membership, JoinError> {
        self.evict_ghost(room_id, username, now);
        let token = Token::generate()?;
        let uid = random_uid()?;
        let member_id = self.fresh_id();
        let flood = self.flood;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or_else(|| JoinError::RoomNotFound(String::new()))?;
        if room.members.len() >= capacity {
            return Err(JoinError::RoomFull {
                room: room.name.clone(),
                capacity,
            });
        }
        if room.member_named(&names::username_key(username)).is_some() {
            return Err(JoinError::NameTaken {
                room: room.name.clone(),
                username: username.to_owned(),
            });
        }
        let member = Member::new(member_id, uid, token, username.to_owned(), &flood, now);
        let joined = StateChange::MemberJoined {
            room: room.name.clone(),
            member: persisted_member(&member, false),
        };
        room.members.insert(member_id, member);
        let room_name = room.name.clone();
        self.tokens.insert(token, (room_id, member_id));
        self.changed(joined);
        Ok(Membership {
            token,
            room: room_name,
            username: username.to_owned(),
            host: false,
        })
    }

    /// Frees `username` in the room when its holder is proven gone: a registered version-2
    /// member, not the host (whose departure would close the room), that has sent nothing,
    /// not even a ping, for [`Limits::ghost_after`]. It is removed as timed out, so the others
    /// hear `left` with reason `timeout`. Version-1 members send no keepalive, so their
    /// silence proves nothing.
    fn evict_ghost(&mut self, room_id: RoomId, username: &str, now: Instant) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(holder) = room.member_named(&names::username_key(username)) else {
            return;
        };
        if self.is_ghost(room, holder, now) {
            let member_id = holder.id;
            let mut notices = std::mem::take(&mut self.deferred);
            self.remove_member(room_id, member_id, LeaveReason::Timeout, &mut notices);
            self.deferred = notices;
        }
    }

    /// Whether `holder` is proven gone: a registered version-2 member other than the host that
    /// has missed several pings (`--ghost-after`). Version-1 clients send no keepalive, so
    /// their silence proves nothing; a host's removal would close the room.
    pub(crate) fn is_ghost(&self, room: &Room, holder: &Member, now: Instant) -> bool {
        holder.id != room.host
            && holder.addr.is_some()
            && holder.version == WireVersion::V2
            && now.saturating_duration_since(holder.last_seen) >= self.limits.ghost_after
    }

    /// Operation 3: the oldest pair room waiting for a partner (whose occupant has another
    /// name), or a new pair room with a generated name.
    pub fn pair(
        &mut self,
        username: &str,
        now_ms: u64,
        now: Instant,
    ) -> Result<Membership, JoinError> {
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        let key = names::username_key(username);
        let waiting = self
            .rooms
            .values()
            .filter(|room| room.kind == RoomKind::Pair && room.members.len() < PAIR_ROOM_CAPACITY)
            .filter(|room| room.member_named(&key).is_none())
            .filter(|room| !room.left_lately(&key, now, PAIR_REJOIN_WINDOW))
            .min_by_key(|room| room.waiting_since)
            .map(|room| room.id);
        if let Some(room_id) = waiting {
            return self.add_member(room_id, username, PAIR_ROOM_CAPACITY, now);
        }
        let name = loop {
            let suffix = Token::generate()?.to_hex();
            let candidate = format!("pair-{}", &suffix[..8]);
            if !self.room_ids.contains_key(&names::room_key(&candidate)) {
                break candidate;
            }
        };
        self.insert_room(&name, username, RoomKind::Pair, now_ms, now)
    }

    /// Operation 4: public rooms with their member counts, by name. Pair rooms are listed only
    /// while waiting so that no one barges into a conversation.
    pub fn list(&self) -> RoomList {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .values()
            .filter(|room| room.kind != RoomKind::Pair)
            .map(|room| RoomSummary {
                name: room.name.clone(),
                members: room.members.len(),
                private: matches!(room.kind, RoomKind::Private { .. }),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        RoomList { rooms }
    }

    /// Takes back a membership whose handshake could not be made durable: the member (or, for
    /// a host, its new room) disappears as if it had never been granted.
    pub fn revoke(&mut self, token: &Token) {
        let Some(&(room_id, member_id)) = self.tokens.get(token) else {
            return;
        };
        let mut outbox = Outbox::default();
        self.remove_member(room_id, member_id, LeaveReason::Leave, &mut outbox);
    }

    /// Records the IP that made the handshake for `token`: the only IP a version-1 client,
    /// which cannot answer a challenge, may register from.
    pub fn set_home_ip(&mut self, token: &Token, ip: IpAddr) {
        let Some(&(room_id, member_id)) = self.tokens.get(token) else {
            return;
        };
        if let Some(member) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
        {
            member.home_ip = Some(ip.to_canonical());
        }
    }

    /// Handles one datagram's message from `src`, queueing what must be sent in `out`.
    pub fn handle_datagram(
        &mut self,
        room_name: &str,
        token_hex: &[u8],
        message: &[u8],
        src: SocketAddr,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), DropReason> {
        out.append(&mut self.deferred);
        let token = Token::from_hex(token_hex).ok_or(DropReason::UnknownToken)?;
        let &(room_id, member_id) = self.tokens.get(&token).ok_or(DropReason::UnknownToken)?;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        // The name as the member typed it may differ from the stored one in case or form;
        // the key is computed only then, off the common path.
        if room.name != room_name && names::room_key(&room.name) != names::room_key(room_name) {
            return Err(DropReason::WrongRoom);
        }
        // The whole datagram, for the budget of what an unproven address may be sent back.
        let received = 2 + room_name.len() + token_hex.len() + message.len();
        let message = ClientMessage::decode(message).map_err(|_| DropReason::Malformed)?;
        let flood = self.flood;
        match message {
            ClientMessage::Register => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                // Version 1 cannot answer a challenge: it may bind only from the IP that
                // made the handshake (or, restored from a state file, the IP it is bound to).
                let allowed = member.home_ip.or(member.addr.map(|addr| addr.ip()));
                if member.addr != Some(src)
                    && allowed.is_some_and(|ip| ip.to_canonical() != src.ip().to_canonical())
                {
                    return Err(DropReason::WrongAddress);
                }
                if !member.probes.allow(&flood, now) {
                    return Err(DropReason::RateLimited);
                }
                let budget = received.saturating_mul(self.limits.reply_budget);
                let moved = bind(room, member_id, src, WireVersion::V1, now, out);
                welcome_v1(room, member_id, src, budget, out);
                if let Some(moved) = moved {
                    self.changed(moved);
                }
                return Ok(());
            }
            ClientMessage::V2(ClientV2::Register { last_id }) => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                if !member.probes.allow(&flood, now) {
                    return Err(DropReason::RateLimited);
                }
                if member.addr != Some(src) {
                    // Not bound here yet: all this address gets is a challenge, smaller than
                    // the register itself, until it echoes it from here.
                    let nonce = challenge(member, src, last_id, now)?;
                    unicast_v2(out, src, &ServerV2::Challenge { nonce });
                    return Ok(());
                }
                let moved = bind(room, member_id, src, WireVersion::V2, now, out);
                self.welcome_v2(room_id, member_id, last_id, src, now, out);
                if let Some(moved) = moved {
                    self.changed(moved);
                }
                return Ok(());
            }
            ClientMessage::V2(ClientV2::Echo { nonce }) => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                member
                    .challenges
                    .retain(|c| now.saturating_duration_since(c.sent_at) < CHALLENGE_LIFETIME);
                let Some(position) = member
                    .challenges
                    .iter()
                    .position(|c| c.addr == src && c.nonce == nonce)
                else {
                    return Err(DropReason::WrongAddress);
                };
                let last_id = member.challenges.get(position).and_then(|c| c.last_id);
                member.challenges.clear();
                let moved = bind(room, member_id, src, WireVersion::V2, now, out);
                self.welcome_v2(room_id, member_id, last_id, src, now, out);
                if let Some(moved) = moved {
                    self.changed(moved);
                }
                return Ok(());
            }
            _ => {}
        }
        let member = room
            .members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        if member.addr != Some(src) {
            return Err(DropReason::WrongAddress);
        }
        member.last_seen = now;
        match message {
            ClientMessage::Register
            | ClientMessage::V2(ClientV2::Register { .. } | ClientV2::Echo { .. }) => Ok(()),
            ClientMessage::Leave | ClientMessage::V2(ClientV2::Leave) => {
                self.remove_member(room_id, member_id, LeaveReason::Leave, out);
                Ok(())
            }
            ClientMessage::Chat(text) => self.accept_chat(room_id, member_id, None, text, now, out),
            ClientMessage::V2(ClientV2::Msg { seq, text }) => {
                self.accept_chat(room_id, member_id, Some(seq), &text, now, out)
            }
            ClientMessage::V2(ClientV2::Ping { .. }) if !member.probes.allow(&flood, now) => {
                Err(DropReason::RateLimited)
            }
            ClientMessage::V2(ClientV2::Ping { last_id }) => {
                let after = last_id.unwrap_or(room.committed_id);
                let source = ReplaySource {
                    history: self.history.as_ref(),
                    retention: self.limits.retention,
                };
                catch_up(room, member_id, after, src, now, &source, out);
                Ok(())
            }
            ClientMessage::V2(ClientV2::Typing) => {
                if !member.flood.allow(&self.flood, now) {
                    return Err(DropReason::RateLimited);
                }
                let typing = ServerV2::Typing {
                    name: member.username.clone(),
                };
                out.fanout(&room.v2_recipients, Some(member_id), |buf| {
                    ucrp::encode_v2(&typing, buf);
                    Ok(())
                });
                Ok(())
            }
            // `who` and `history` cost work (`history` a database read), so they count
            // against flood control like chat; only keepalives and leave never do.
            ClientMessage::V2(ClientV2::Who | ClientV2::History { .. })
                if !member.flood.allow(&self.flood, now) =>
            {
                Err(DropReason::RateLimited)
            }
            ClientMessage::V2(ClientV2::Who) => {
                unicast_v2(out, src, &members_of(room));
                Ok(())
            }
            ClientMessage::V2(ClientV2::History { before, limit }) => {
                let limit = limit
                    .map_or(DEFAULT_HISTORY_PAGE, |limit| limit as usize)
                    .clamp(1, MAX_HISTORY_PAGE);
                match &self.history {
                    Some(history) => {
                        let _ = history.send(HistoryJob::Page {
                            room_uid: room.uid,
                            before,
                            limit,
                            to: src,
                        });
                    }
                    None => unicast_v2(
                        out,
                        src,
                        &ServerV2::History {
                            messages: Vec::new(),
                            more: false,
                        },
                    ),
                }
                Ok(())
            }
        }
    }

    /// Confirms a version-2 registration at a proven address: the member list, then what
    /// came after `last_id` (or the latest `--join-history` messages), then `pong`.
    fn welcome_v2(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        last_id: Option<u64>,
        to: SocketAddr,
        now: Instant,
        out: &mut Outbox,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        unicast_v2(out, to, &members_of(room));
        let after =
            last_id.unwrap_or_else(|| room.committed_id.saturating_sub(self.limits.join_history));
        let source = ReplaySource {
            history: self.history.as_ref(),
            retention: self.limits.retention,
        };
        catch_up(room, member_id, after, to, now, &source, out);
    }

    /// Accepts a chat message. Version-2 messages go through the member's [`SeqWindow`]
    /// first: a retransmission is answered again, and an early arrival waits for the messages
    /// before it, so a person's lines keep the order they were typed in.
    ///
    /// [`SeqWindow`]: crate::seq_window::SeqWindow
    fn accept_chat(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        seq: Option<u64>,
        text: &str,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), DropReason> {
        let Some(seq) = seq else {
            return self.accept_one(room_id, member_id, None, text, now, out);
        };
        let member = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
            .ok_or(DropReason::UnknownToken)?;
        let addr = member.addr.ok_or(DropReason::WrongAddress)?;
        match member.seqs.status(seq) {
            SeqStatus::New => {}
            SeqStatus::Stored(id) => {
                unicast_v2(out, addr, &ServerV2::Ack { seq, id });
                return Ok(());
            }
            SeqStatus::Refused(code) => {
                refuse_v2(out, addr, code, seq, refusal_text(code));
                return Ok(());
            }
            SeqStatus::Pending | SeqStatus::Forgotten => {
                // A retransmission of a held message: its gap may have expired meanwhile.
                let held_before = member.seqs.held_bytes();
                let ready = member.seqs.release_expired(now);
                self.memory
                    .release_held(held_before, member.seqs.held_bytes());
                self.accept_ready(room_id, member_id, ready, now, out);
                return Ok(());
            }
        }
        let held_before = member.seqs.held_bytes();
        let ready = member
            .seqs
            .admit(seq, text, now, self.memory.hold_allowance());
        self.memory
            .release_held(held_before, member.seqs.held_bytes());
        let mut result = Ok(());
        for (ready_seq, ready_text) in ready {
            let accepted =
                self.accept_one(room_id, member_id, Some(ready_seq), &ready_text, now, out);
            if ready_seq == seq {
                result = accepted;
            }
        }
        result
    }

    /// Accepts messages a [`SeqWindow`] released, in order.
    ///
    /// [`SeqWindow`]: crate::seq_window::SeqWindow
    fn accept_ready(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        ready: Vec<(u64, String)>,
        now: Instant,
        out: &mut Outbox,
    ) {
        for (seq, text) in ready {
            // A refusal has already been sent to the member and counted there.
            let _ = self.accept_one(room_id, member_id, Some(seq), &text, now, out);
        }
    }

    /// Accepts one chat message in order: applies flood control, assigns the next room id
    /// and hands it to the history thread. Version-1 text goes to version-1 members at once;
    /// everything else (the ack, the version-2 relay) waits for the commit, so an id a member
    /// has seen is never handed out again after a crash.
    fn accept_one(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        seq: Option<u64>,
        text: &str,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), DropReason> {
        let flood = self.flood;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        let Room {
            members,
            v1_recipients,
            ..
        } = room;
        let member = members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        let addr = member.addr.ok_or(DropReason::WrongAddress)?;
        if let Some(seq) = seq
            && text.is_empty()
        {
            member.seqs.refused(seq, V2ErrorCode::Invalid);
            refuse_v2(
                out,
                addr,
                V2ErrorCode::Invalid,
                seq,
                refusal_text(V2ErrorCode::Invalid),
            );
            return Err(DropReason::Malformed);
        }
        if !member.flood.allow(&flood, now) {
            match seq {
                Some(seq) => {
                    member.seqs.refused(seq, V2ErrorCode::RateLimited);
                    let text = refusal_text(V2ErrorCode::RateLimited);
                    refuse_v2(out, addr, V2ErrorCode::RateLimited, seq, text);
                }
                None => warn_rate_limited(member, now, out),
            }
            return Err(DropReason::RateLimited);
        }
        let ts = unix_ms();
        let whole = msg_event(room.last_id + 1, &member.username, text, ts);
        if seq.is_none() {
            // Version 1: relay now, on the hot path, as the reference server does.
            out.fanout(v1_recipients, Some(member_id), |buf| {
                ucrp::encode_v1_chat(&whole.0.from, &whole.0.text, buf)
            });
        }
        let events = if whole.1.len() <= ucrp::MAX_STORED_MSG_FRAME {
            vec![whole]
        } else if let Some(seq) = seq {
            member.seqs.refused(seq, V2ErrorCode::TooLarge);
            let text = refusal_text(V2ErrorCode::TooLarge);
            refuse_v2(out, addr, V2ErrorCode::TooLarge, seq, text);
            return Err(DropReason::Malformed);
        } else {
            // Version-1 text that fits the version-1 frame but not a version-2 one (JSON
            // escaping grows it): stored and shown to version-2 members in parts, each with
            // its own id, so that everyone reads all of it.
            let frame_without_text = whole.1.len() - ucrp::json_escaped_len(text);
            // Room for the ids of later parts, which may have more digits.
            let budget = ucrp::MAX_STORED_MSG_FRAME.saturating_sub(frame_without_text + 20);
            ucrp::split_escaped(text, budget.max(1))
                .into_iter()
                .zip(room.last_id + 1..)
                .map(|(part, id)| msg_event(id, &member.username, part, ts))
                .collect()
        };
        let backlog_bytes: usize = events.iter().map(|(_, frame)| backlog_cost(frame)).sum();
        if self.unstored + events.len() > MAX_UNSTORED || !self.memory.backlog_fits(backlog_bytes) {
            // The history cannot keep up (a failing disk): take no more until it does. A
            // version-2 sender retransmits; version-1 text was relayed above, unstored, and
            // no id was handed out, so nobody waits on a gap.
            return Err(DropReason::HistoryBacklog);
        }
        if let Some(seq) = seq {
            member.seqs.accept(seq);
        }
        let mut pendings = Vec::with_capacity(events.len());
        for (message, v2_frame) in events {
            room.last_id = message.id;
            pendings.push(PendingMessage {
                room_id,
                sender: member_id,
                v1_relayed: seq.is_none(),
                v2_frame: v2_frame.into(),
                stored: StoredMessage {
                    room_uid: room.uid,
                    member_uid: member.uid,
                    seq,
                    message,
                },
            });
        }
        let reservation = (room.last_id + ID_RESERVATION / 2 > room.ids_reserved).then(|| {
            room.ids_reserved = room.last_id + ID_RESERVATION;
            StateChange::IdsReserved {
                room: room.name.clone(),
                upto: room.ids_reserved,
            }
        });
        match &self.history {
            Some(history) => {
                for pending in pendings {
                    // Sent under the lock, so the history thread sees messages in id order.
                    let cost = backlog_cost(&pending.v2_frame);
                    if history.send(HistoryJob::Store(pending)).is_ok() {
                        self.unstored += 1;
                        self.memory.unstored += cost;
                    }
                }
            }
            None => self.committed(&pendings, out),
        }
        if let Some(reservation) = reservation {
            // Not waited for: it is recorded ID_RESERVATION / 2 messages before it is needed.
            self.changed(reservation);
        }
        Ok(())
    }

    /// Called once messages are stored: acks to their senders, relay to the other members,
    /// and the replay cache.
    pub fn committed(&mut self, batch: &[PendingMessage], out: &mut Outbox) {
        if self.history.is_some() {
            self.unstored = self.unstored.saturating_sub(batch.len());
            let cost: usize = batch.iter().map(|p| backlog_cost(&p.v2_frame)).sum();
            self.memory.unstored = self.memory.unstored.saturating_sub(cost);
        }
        for pending in batch {
            let Some(room) = self.rooms.get_mut(&pending.room_id) else {
                continue;
            };
            if room.uid != pending.stored.room_uid {
                continue;
            }
            let id = pending.stored.message.id;
            room.committed_id = room.committed_id.max(id);
            // A pair conversation that ended while this was being stored: its sender still
            // gets the ack, but a newcomer never sees it.
            let forgotten = id <= room.forgotten_upto;
            if !forgotten {
                let freed = room.cache(CachedMessage {
                    id,
                    v2_frame: Arc::clone(&pending.v2_frame),
                });
                self.memory.uncached(freed);
                self.memory
                    .cached_message(room.id, id, pending.v2_frame.len());
            }
            if let (Some(seq), Some(sender)) =
                (pending.stored.seq, room.members.get_mut(&pending.sender))
            {
                sender.seqs.stored(seq, id);
                if let Some(addr) = sender.addr {
                    unicast_v2(out, addr, &ServerV2::Ack { seq, id });
                }
            }
            if forgotten && room.members.keys().any(|&m| m >= room.new_members_from) {
                continue;
            }
            let skip = Some(pending.sender);
            out.fanout(&room.v2_recipients, skip, |buf| {
                buf.extend_from_slice(&pending.v2_frame);
                Ok(())
            });
            if !pending.v1_relayed {
                let message = &pending.stored.message;
                out.fanout(&room.v1_recipients, skip, |buf| {
                    ucrp::encode_v1_chat(&message.from, &message.text, buf)
                });
            }
        }
        self.evict_cached();
    }

    /// Evicts the oldest cached messages across rooms while the caches exceed their share of
    /// the memory budget; replays of those come from the database instead.
    fn evict_cached(&mut self) {
        while let Some((room_id, id)) = self.memory.next_to_evict() {
            let Some(room) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            if room.recent.front().is_some_and(|oldest| oldest.id == id)
                && let Some(evicted) = room.recent.pop_front()
            {
                self.memory.uncached(evicted.v2_frame.len());
            }
        }
        let live: usize = self.rooms.values().map(|room| room.recent.len()).sum();
        let rooms = &self.rooms;
        self.memory.compact_cache_order(live, |room_id, id| {
            rooms.get(&room_id).is_some_and(|room| {
                room.recent.front().is_some_and(|oldest| oldest.id <= id)
                    && room.recent.back().is_some_and(|newest| newest.id >= id)
            })
        });
    }

    /// Memory the caches and queues use, for the status line and tests.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// Removes members that have been silent for longer than their idle timeout; a host's
    /// timeout closes its room. `period` is how often the caller sweeps: a sweep that comes
    /// much later than that means the whole server was stalled (stopped, swapped out, starved),
    /// and the members' keepalives from that time still wait unread in the socket buffer, so
    /// the stall does not count against anyone's idle time.
    pub fn sweep_idle(&mut self, now: Instant, period: Duration, out: &mut Outbox) {
        out.append(&mut self.deferred);
        if let Some(last) = self.last_sweep.replace(now) {
            let late = now.saturating_duration_since(last).saturating_sub(period);
            if late > STALL_GRACE {
                self.forgive_stall(late, now);
                return;
            }
        }
        self.release_expired_gaps(now, out);
        let limits = self.limits;
        let expired: Vec<(RoomId, MemberId)> = self
            .rooms
            .values()
            .flat_map(|room| {
                room.members.values().filter_map(move |member| {
                    let timeout = match (member.addr, member.version) {
                        (Some(_), WireVersion::V1) => limits.v1_idle_timeout,
                        _ => limits.idle_timeout,
                    };
                    (now.saturating_duration_since(member.last_seen) > timeout)
                        .then_some((room.id, member.id))
                })
            })
            .collect();
        for (room_id, member_id) in expired {
            self.remove_member(room_id, member_id, LeaveReason::Timeout, out);
        }
    }

    /// Moves every member's last sign of life forward by the length of a server stall, so
    /// that the stall is not taken for their silence. The relay reads what they sent meanwhile
    /// before the next sweep.
    fn forgive_stall(&mut self, stall: Duration, now: Instant) {
        tracing::warn!(
            stalled_for = ?stall,
            "the server was stalled; idle timers are extended by as long"
        );
        for member in self
            .rooms
            .values_mut()
            .flat_map(|room| room.members.values_mut())
        {
            member.last_seen = (member.last_seen + stall).min(now);
        }
    }

    /// Lets go of messages held behind a gap that has expired, for members who have nothing
    /// new to send that would notice it.
    fn release_expired_gaps(&mut self, now: Instant, out: &mut Outbox) {
        let holding: Vec<(RoomId, MemberId)> = self
            .rooms
            .values()
            .flat_map(|room| {
                room.members
                    .values()
                    .filter(|member| member.seqs.holds_any())
                    .map(move |member| (room.id, member.id))
            })
            .collect();
        for (room_id, member_id) in holding {
            let Some(member) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|room| room.members.get_mut(&member_id))
            else {
                continue;
            };
            let held_before = member.seqs.held_bytes();
            let ready = member.seqs.release_expired(now);
            self.memory
                .release_held(held_before, member.seqs.held_bytes());
            self.accept_ready(room_id, member_id, ready, now, out);
        }
    }

    /// Removes a member; a host's departure closes the room.
    fn remove_member(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        reason: LeaveReason,
        out: &mut Outbox,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.host == member_id {
            // A pair room belongs to both: when its creator moves on, the partner stays and
            // waits for someone new, as the creator would have.
            let heir = match room.kind {
                RoomKind::Pair => room.members.keys().copied().find(|&id| id != member_id),
                RoomKind::Public | RoomKind::Private { .. } => None,
            };
            let Some(heir) = heir.and_then(|heir| room.members.get(&heir)) else {
                let close_reason = match reason {
                    LeaveReason::Leave => CloseReason::HostLeft,
                    LeaveReason::Timeout => CloseReason::HostTimeout,
                };
                self.close_room(room_id, close_reason, out);
                return;
            };
            let handed_over = StateChange::HostChanged {
                room: room.name.clone(),
                uid: heir.uid,
            };
            room.host = heir.id;
            self.changed(handed_over);
            return self.remove_member(room_id, member_id, reason, out);
        }
        let Some(member) = room.members.remove(&member_id) else {
            return;
        };
        self.memory.release_held(member.seqs.held_bytes(), 0);
        tracing::info!(room = %quoted(&room.name), user = %quoted(&member.username), ?reason, "member left");
        let left = StateChange::MemberLeft {
            room: room.name.clone(),
            uid: member.uid,
        };
        self.tokens.remove(&member.token);
        room.rebuild_recipients();
        if room.kind == RoomKind::Pair {
            // Back in the queue, behind whoever was already waiting.
            room.waiting_since = self.next_id;
            self.next_id += 1;
            let (upto, freed) = room.end_conversation(self.next_id);
            self.memory.uncached(freed);
            if let Some(history) = &self.history {
                let _ = history.send(HistoryJob::Forget {
                    room_uid: room.uid,
                    upto,
                });
            }
            room.left_lately
                .push_back((names::username_key(&member.username), Instant::now()));
            if room.left_lately.len() > PAIR_MEMORY {
                room.left_lately.pop_front();
            }
        }
        if member.addr.is_some() {
            let text = match reason {
                LeaveReason::Leave => format!("{} left", member.username),
                LeaveReason::Timeout => format!("{} timed out", member.username),
            };
            notify(
                room,
                None,
                &text,
                &ServerV2::Left {
                    name: member.username,
                    reason,
                },
                out,
            );
        }
        self.changed(left);
    }

    /// Closes a room: every registered member except the host is told, then the room, its
    /// tokens and its history are gone.
    fn close_room(&mut self, room_id: RoomId, reason: CloseReason, out: &mut Outbox) {
        let Some(room) = self.rooms.remove(&room_id) else {
            return;
        };
        self.memory.uncached(room.cached_bytes());
        self.memory.release_held(room.held_bytes(), 0);
        tracing::info!(room = %quoted(&room.name), ?reason, "room closed");
        self.room_ids.remove(&names::room_key(&room.name));
        for member in room.members.values() {
            self.tokens.remove(&member.token);
        }
        // A host that timed out is not there to hear it; one that left said so itself.
        let skip = Some(room.host);
        out.fanout(&room.v1_recipients, skip, |buf| {
            buf.extend_from_slice(ROOM_CLOSED);
            Ok(())
        });
        out.fanout(&room.v2_recipients, skip, |buf| {
            ucrp::encode_v2(&ServerV2::RoomClosed { reason }, buf);
            Ok(())
        });
        if let Some(history) = &self.history {
            let _ = history.send(HistoryJob::DeleteRoom(room.uid));
        }
        self.changed(StateChange::RoomClosed { room: room.name });
    }

    /// The durable part of the state: rooms, members, tokens, registered addresses, as of the
    /// latest change.
    pub fn snapshot(&self) -> PersistedState {
        let mut rooms: Vec<PersistedRoom> = self.rooms.values().map(persisted_room).collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        PersistedState {
            journal_seq: self.generation,
            ..PersistedState::new(rooms)
        }
    }

    /// Rebuilds the manager from a state file's contents, checking every rule the manager
    /// itself enforces, so a hand-edited file cannot smuggle in an impossible state. With a
    /// history store, message ids, the replay cache and deduplication windows come back too.
    pub fn restore(
        state: PersistedState,
        limits: Limits,
        flood: FloodPolicy,
        history: Option<&HistoryStore>,
        now: Instant,
    ) -> Result<Self, RestoreError> {
        let mut manager = Self::new(limits, flood);
        // New changes carry on the numbering of the saved ones, so that their journal records
        // are told apart from older ones a crash may have left behind.
        manager.generation = state.journal_seq;
        // The caps apply to a restored state too: a file that breaks them is refused rather
        // than loaded past the limits the operator set.
        if state.rooms.len() > limits.max_rooms {
            return Err(StateProblem(format!(
                "it holds {} rooms, more than --max-rooms {}; start with a larger --max-rooms",
                state.rooms.len(),
                limits.max_rooms
            ))
            .into());
        }
        let mut seen_uids = std::collections::HashSet::new();
        for persisted in state.rooms {
            let problem =
                |what: String| StateProblem(format!("room {}: {what}", quoted(&persisted.name)));
            names::validate_room_name(&persisted.name).map_err(|e| problem(e.to_string()))?;
            if manager
                .room_ids
                .contains_key(&names::room_key(&persisted.name))
            {
                return Err(problem("appears twice".into()).into());
            }
            let room_uid = match persisted.uid {
                0 => random_uid().map_err(|e| problem(e.to_string()))?,
                uid => uid,
            };
            if !seen_uids.insert(room_uid) {
                return Err(problem("shares its uid with another room".into()).into());
            }
            let room_id = manager.fresh_id();
            // The room's recent messages rebuild each member's deduplication window, so a
            // retransmission of something stored just before a crash is acked, not stored twice.
            let recent = match history {
                Some(history) => history.recent(room_uid, RESTORE_SCAN)?,
                None => Vec::new(),
            };
            let capacity = match persisted.kind {
                RoomKind::Pair => PAIR_ROOM_CAPACITY,
                RoomKind::Public | RoomKind::Private { .. } => limits.max_members_per_room,
            };
            if persisted.members.len() > capacity {
                return Err(problem(format!(
                    "it has {} members, more than its limit of {capacity} (--max-members for \
                     rooms other than pair rooms)",
                    persisted.members.len()
                ))
                .into());
            }
            // Each member's own stored messages, gathered in one pass (newest first).
            let mut recent_by_member: HashMap<u64, Vec<&StoredMessage>> = HashMap::new();
            for stored in recent.iter().rev() {
                recent_by_member
                    .entry(stored.member_uid)
                    .or_default()
                    .push(stored);
            }
            let mut members = BTreeMap::new();
            // Keys seen so far: a set, so that a room of many members restores in linear time.
            let mut keys = std::collections::HashSet::new();
            let mut host = None;
            for entry in &persisted.members {
                let name = quoted(&entry.username);
                names::validate_username(&entry.username)
                    .map_err(|e| problem(format!("member {name}: {e}")))?;
                let token = Token::from_hex(entry.token.as_bytes())
                    .ok_or_else(|| problem(format!("member {name} has a malformed token")))?;
                if !keys.insert(names::username_key(&entry.username)) {
                    return Err(problem(format!("the name {name} appears twice")).into());
                }
                let member_id = manager.fresh_id();
                if manager.tokens.insert(token, (room_id, member_id)).is_some() {
                    return Err(problem(format!("member {name} reuses a token")).into());
                }
                if entry.host {
                    if host.is_some() {
                        return Err(problem("has more than one host".into()).into());
                    }
                    host = Some(member_id);
                }
                let member_uid = match entry.uid {
                    0 => random_uid().map_err(|e| problem(e.to_string()))?,
                    uid => uid,
                };
                let mut member = Member::new(
                    member_id,
                    member_uid,
                    token,
                    entry.username.clone(),
                    &flood,
                    now,
                );
                member.addr = entry.addr;
                member.version = entry.version;
                for stored in recent_by_member.get(&member_uid).into_iter().flatten() {
                    if let Some(seq) = stored.seq {
                        member.seqs.stored(seq, stored.message.id);
                    }
                }
                member.seqs.restored();
                members.insert(member_id, member);
            }
            let host = host.ok_or_else(|| problem("has no host".into()))?;
            if persisted.kind == RoomKind::Pair && members.len() > PAIR_ROOM_CAPACITY {
                return Err(problem("is a pair room with more than two members".into()).into());
            }
            let mut room = Room {
                id: room_id,
                uid: room_uid,
                name: persisted.name,
                kind: persisted.kind,
                created_at_ms: persisted.created_at_ms,
                host,
                members,
                v1_recipients: Arc::from([]),
                v2_recipients: Arc::from([]),
                waiting_since: room_id,
                left_lately: VecDeque::new(),
                last_id: 0,
                committed_id: 0,
                ids_reserved: persisted.ids_reserved,
                recent: VecDeque::new(),
                forgotten_upto: 0,
                new_members_from: 0,
            };
            if let Some(history) = history {
                let latest = continue_ids_from(history.latest_id(room_uid)?, room.ids_reserved);
                room.last_id = latest;
                room.committed_id = latest;
                let first = latest.saturating_sub(REPLAY_CACHE as u64);
                for stored in history.range(room_uid, first, latest, REPLAY_CACHE)? {
                    let mut frame = Vec::new();
                    ucrp::encode_v2_msg(&stored.message, &mut frame);
                    let bytes = frame.len();
                    let freed = room.cache(CachedMessage {
                        id: stored.message.id,
                        v2_frame: frame.into(),
                    });
                    manager.memory.uncached(freed);
                    manager
                        .memory
                        .cached_message(room_id, stored.message.id, bytes);
                }
            }
            room.rebuild_recipients();
            manager
                .room_ids
                .insert(names::room_key(&room.name), room_id);
            manager.rooms.insert(room_id, room);
        }
        manager.evict_cached();
        Ok(manager)
    }
}

/// Why the saved state could not be restored.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// The state file describes something impossible.
    #[error(transparent)]
    State(#[from] StateProblem),
    /// The history database could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// Where a restored room's ids go on from: the newest stored id, unless the history looks
/// lost (nothing stored, or far behind the reservation), in which case the reservation, so
/// that no id a member has already seen is handed out again.
fn continue_ids_from(latest_stored: u64, reserved: u64) -> u64 {
    if latest_stored == 0 || latest_stored + 2 * ID_RESERVATION < reserved {
        reserved.max(latest_stored)
    } else {
        latest_stored
    }
}

fn persisted_room(room: &Room) -> PersistedRoom {
    PersistedRoom {
        ids_reserved: room.ids_reserved,
        name: room.name.clone(),
        uid: room.uid,
        kind: room.kind.clone(),
        created_at_ms: room.created_at_ms,
        members: room
            .members
            .values()
            .map(|member| persisted_member(member, member.id == room.host))
            .collect(),
    }
}

fn persisted_member(member: &Member, host: bool) -> PersistedMember {
    PersistedMember {
        username: member.username.clone(),
        uid: member.uid,
        token: member.token.to_hex(),
        host,
        addr: member.addr,
        version: member.version,
    }
}

/// Binds a member's address (first registration, re-registration or a proven move), tells
/// the room about a first registration and the old address about a move. Returns the change
/// to save when the binding changed.
fn bind(
    room: &mut Room,
    member_id: MemberId,
    src: SocketAddr,
    version: WireVersion,
    now: Instant,
    out: &mut Outbox,
) -> Option<StateChange> {
    let member = room.members.get_mut(&member_id)?;
    let old = member.addr.filter(|old| *old != src);
    let old_version = member.version;
    let first_time = member.addr.is_none();
    let moved = member.addr != Some(src) || member.version != version;
    member.addr = Some(src);
    member.version = version;
    member.last_seen = now;
    member.challenges.retain(|c| c.addr != src);
    let username = member.username.clone();
    let change = moved.then(|| StateChange::MemberRegistered {
        room: room.name.clone(),
        uid: member.uid,
        addr: src,
        version,
    });
    if moved {
        room.rebuild_recipients();
    }
    if let Some(old) = old {
        // Whoever is at the old address learns that it no longer receives the room: if it
        // did not move itself, someone else holds its token.
        match old_version {
            WireVersion::V1 => out.unicast(old, |buf| {
                ucrp::encode_v1_chat(NOTICE_SENDER, MOVED_NOTICE, buf)
            }),
            WireVersion::V2 => unicast_v2(out, old, &ServerV2::Moved),
        }
    }
    if first_time {
        notify(
            room,
            Some(member_id),
            &format!("{username} joined"),
            &ServerV2::Joined {
                name: username.clone(),
            },
            out,
        );
    }
    change
}

/// What a version-1 address hears when its member registered from another address.
const MOVED_NOTICE: &str =
    "your name is now used from another address; this one no longer receives the room";

/// Answers a version-1 registration with the notice that confirms it, within `budget` bytes
/// (the reference protocol has no acknowledgement, and a version-1 address never proves it
/// receives): as many names as fit, then how many more there are.
fn welcome_v1(room: &Room, member_id: MemberId, to: SocketAddr, budget: usize, out: &mut Outbox) {
    let Some(member) = room.members.get(&member_id) else {
        return;
    };
    let names = room.usernames();
    let mut text = format!("welcome to {}, {}; here now: ", room.name, member.username);
    // The frame adds a length byte and the sender `*`.
    let limit = budget.min(MAX_DATAGRAM).saturating_sub(2);
    let all = names.join(", ");
    if text.len() + all.len() <= limit {
        text.push_str(&all);
    } else {
        let reserve = format!(" and {} more", names.len()).len();
        let mut listed = 0;
        for name in &names {
            let separator = if listed == 0 { 0 } else { 2 };
            if text.len() + separator + name.len() + reserve > limit {
                break;
            }
            if listed > 0 {
                text.push_str(", ");
            }
            text.push_str(name);
            listed += 1;
        }
        if listed == 0 {
            text.push_str(&format!("{} members", names.len()));
        } else {
            text.push_str(&format!(" and {} more", names.len() - listed));
        }
    }
    out.unicast(to, |buf| ucrp::encode_v1_chat(NOTICE_SENDER, &text, buf));
}

/// Sends (or sends again) a challenge to `src` for this member and returns its nonce. A
/// retransmitted register gets the same nonce, so an echo of either attempt works.
fn challenge(
    member: &mut Member,
    src: SocketAddr,
    last_id: Option<u64>,
    now: Instant,
) -> Result<String, DropReason> {
    member
        .challenges
        .retain(|c| now.saturating_duration_since(c.sent_at) < CHALLENGE_LIFETIME);
    if let Some(pending) = member.challenges.iter_mut().find(|c| c.addr == src) {
        pending.last_id = last_id;
        return Ok(pending.nonce.clone());
    }
    // 128 random bits from the OS CSPRNG, as tokens are. Without randomness there is no
    // challenge to send, and the register is dropped like any unanswerable datagram.
    let nonce = Token::generate()
        .map_err(|_| DropReason::Malformed)?
        .to_hex()[..32]
        .to_owned();
    if member.challenges.len() >= MAX_CHALLENGES {
        member.challenges.pop_front();
    }
    member.challenges.push_back(Challenge {
        addr: src,
        nonce: nonce.clone(),
        last_id,
        sent_at: now,
    });
    Ok(nonce)
}

/// Where replayed messages come from, and how far back they may reach.
struct ReplaySource<'a> {
    /// The history thread, for messages older than the in-memory cache.
    history: Option<&'a Sender<HistoryJob>>,
    /// Messages kept per room: nothing older is replayed.
    retention: u64,
}

/// Brings a version-2 member up to date after a register or ping: the stored messages after
/// `after`, then a `pong` with the newest stored id.
fn catch_up(
    room: &mut Room,
    member_id: MemberId,
    after: u64,
    to: SocketAddr,
    now: Instant,
    source: &ReplaySource<'_>,
    out: &mut Outbox,
) {
    replay(room, member_id, after, to, now, source, out);
    unicast_v2(
        out,
        to,
        &ServerV2::Pong {
            id: room.committed_id,
        },
    );
}

/// Queues stored messages after `after` for one member: from the in-memory cache when it
/// reaches back that far, otherwise from the database on the history thread. At most
/// [`MAX_REPLAY`] at a time, and no more than the member's replay budget allows; the client
/// asks again with its new `last_id`.
fn replay(
    room: &mut Room,
    member_id: MemberId,
    after: u64,
    to: SocketAddr,
    now: Instant,
    source: &ReplaySource<'_>,
    out: &mut Outbox,
) {
    // What retention has deleted is not replayed from memory either, nor an earlier pair
    // conversation.
    let after = after
        .max(room.committed_id.saturating_sub(source.retention))
        .max(room.forgotten_upto);
    if after >= room.committed_id {
        return;
    }
    let wanted = (room.committed_id - after).min(MAX_REPLAY);
    let Some(member) = room.members.get_mut(&member_id) else {
        return;
    };
    let allowed = member.replay_budget.take_up_to(wanted, &REPLAY_BUDGET, now);
    if allowed == 0 {
        return;
    }
    let upto = after + allowed;
    let room = &*room;
    let cached_from = room.recent.front().map_or(u64::MAX, |first| first.id);
    if cached_from <= after + 1 {
        for cached in room.recent.iter().filter(|m| m.id > after && m.id <= upto) {
            out.unicast(to, |buf| {
                buf.extend_from_slice(&cached.v2_frame);
                Ok(())
            });
        }
    } else if let Some(history) = source.history {
        let _ = history.send(HistoryJob::Replay {
            room_uid: room.uid,
            after,
            upto,
            to,
        });
    }
}

/// What a message waiting for the history database costs the memory budget.
fn backlog_cost(v2_frame: &[u8]) -> usize {
    // The frame, the stored copy of its text and sender, and the bookkeeping around them.
    2 * v2_frame.len() + memory::PER_MESSAGE_OVERHEAD
}

/// A chat message and its version-2 `msg` event, encoded once for every recipient.
fn msg_event(id: u64, from: &str, text: &str, ts: u64) -> (ChatMessage, Vec<u8>) {
    let message = ChatMessage {
        id,
        from: from.to_owned(),
        text: text.to_owned(),
        ts,
    };
    let mut frame = Vec::with_capacity(text.len() + 96);
    ucrp::encode_v2_msg(&message, &mut frame);
    (message, frame)
}

/// The member list as one datagram: as many names as fit in [`MAX_DATAGRAM`], and how many
/// more there are.
fn members_of(room: &Room) -> ServerV2 {
    let mut names = room.usernames();
    let host = room.host_name().to_owned();
    let total = names.len();
    // The frame without names, with the longest possible count.
    let bare = ServerV2::Members {
        names: Vec::new(),
        host: host.clone(),
        more: u64::MAX,
    };
    let mut used = 1 + serde_json::to_vec(&bare).map_or(MAX_DATAGRAM, |json| json.len());
    let mut fits = 0;
    for name in &names {
        // The quoted name and a comma.
        let cost = serde_json::to_vec(name).map_or(MAX_DATAGRAM, |json| json.len()) + 1;
        if used + cost > MAX_DATAGRAM {
            break;
        }
        used += cost;
        fits += 1;
    }
    names.truncate(fits);
    ServerV2::Members {
        names,
        host,
        more: (total - fits) as u64,
    }
}

fn unicast_v2(out: &mut Outbox, to: SocketAddr, message: &ServerV2) {
    out.unicast(to, |buf| {
        ucrp::encode_v2(message, buf);
        Ok(())
    });
}

/// What a datagram for a room the server does not have is answered with.
pub const NO_ROOM_TEXT: &str = "this room no longer exists";

/// The sentence that goes with a refusal of a chat message.
fn refusal_text(code: V2ErrorCode) -> &'static str {
    match code {
        V2ErrorCode::RateLimited => "you are sending too fast; this message was dropped",
        V2ErrorCode::TooLarge => "this message is too long to send in one datagram",
        V2ErrorCode::Invalid => "empty messages are not sent",
        V2ErrorCode::NoRoom => NO_ROOM_TEXT,
    }
}

fn refuse_v2(out: &mut Outbox, to: SocketAddr, code: V2ErrorCode, seq: u64, message: &str) {
    unicast_v2(
        out,
        to,
        &ServerV2::Error {
            code,
            seq: Some(seq),
            message: message.to_owned(),
        },
    );
}

/// Tells a flooding version-1 member, at most once a second, that messages are being dropped.
fn warn_rate_limited(member: &mut Member, now: Instant, out: &mut Outbox) {
    let recently = member
        .warned_at
        .is_some_and(|at| now.saturating_duration_since(at).as_secs() < 1);
    let Some(addr) = member.addr else { return };
    if recently {
        return;
    }
    member.warned_at = Some(now);
    out.unicast(addr, |buf| {
        ucrp::encode_v1_chat(
            NOTICE_SENDER,
            "you are sending too fast; messages are being dropped",
            buf,
        )
    });
}

/// Sends a server notice to the room: `* text` to version-1 members, `v2` to version-2 ones.
fn notify(room: &Room, skip: Option<MemberId>, text: &str, v2: &ServerV2, out: &mut Outbox) {
    out.fanout(&room.v1_recipients, skip, |buf| {
        ucrp::encode_v1_chat(NOTICE_SENDER, text, buf)
    });
    out.fanout(&room.v2_recipients, skip, |buf| {
        ucrp::encode_v2(v2, buf);
        Ok(())
    });
}

#[path = "manager_checks.rs"]
mod checks;

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
