//! The room manager: every room, member and token, and the rules that change them.
//!
//! It is plain synchronous state with no I/O, shared as `Arc<Mutex<RoomManager>>`. The TCP and
//! UDP front ends lock it for microseconds, never across an `.await`; datagrams it decides to
//! send are written into an [`Outbox`] and sent after the lock is released.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chat_protocol::names::{self, NameError};
use chat_protocol::tcrp::{ErrorCode, RoomList, RoomSummary};
use chat_protocol::ucrp::{self, ClientMessage, NOTICE_SENDER, ROOM_CLOSED};
use chat_protocol::v2::{CloseReason, LeaveReason, ServerV2};
use thiserror::Error;

use crate::flood::FloodPolicy;
use crate::outbox::Outbox;
use crate::persist::{PersistedMember, PersistedRoom, PersistedState, StateProblem};
use crate::room::{Member, MemberId, Room, RoomId, RoomKind, WireVersion};
use crate::token::{RandomError, Token};

/// Pair rooms hold two people.
pub const PAIR_ROOM_CAPACITY: usize = 2;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_members_per_room: 256,
        }
    }
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
}

/// Every room and member.
#[derive(Debug)]
pub struct RoomManager {
    rooms: HashMap<RoomId, Room>,
    room_ids: HashMap<String, RoomId>,
    tokens: HashMap<Token, (RoomId, MemberId)>,
    next_id: u64,
    /// Increases with every change the state file records; the writer compares it with what it
    /// last wrote.
    generation: u64,
    limits: Limits,
    flood: FloodPolicy,
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
            limits,
            flood,
        }
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

    fn changed(&mut self) {
        self.generation += 1;
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
        if self.room_ids.contains_key(room_name) {
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
        let host = Member::new(member_id, token, username.to_owned(), &self.flood, now);
        let mut room = Room {
            id: room_id,
            name: room_name.to_owned(),
            kind,
            created_at_ms: now_ms,
            host: member_id,
            members: BTreeMap::from([(member_id, host)]),
            v1_recipients: Arc::from([]),
            v2_recipients: Arc::from([]),
            waiting_since: room_id,
        };
        room.rebuild_recipients();
        self.rooms.insert(room_id, room);
        self.room_ids.insert(room_name.to_owned(), room_id);
        self.tokens.insert(token, (room_id, member_id));
        self.changed();
        Ok(Membership {
            token,
            room: room_name.to_owned(),
            username: username.to_owned(),
            host: true,
        })
    }

    /// The password hash a join must be checked against, with the room it belongs to (the room
    /// could be closed and re-created while the slow check runs outside the lock).
    pub fn password_hash(&self, room_name: &str) -> Option<(RoomId, String)> {
        let room = self.rooms.get(self.room_ids.get(room_name)?)?;
        match &room.kind {
            RoomKind::Private { password_hash } => Some((room.id, password_hash.clone())),
            RoomKind::Public | RoomKind::Pair => None,
        }
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
            .get(room_name)
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
        let token = Token::generate()?;
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
        room.members.insert(
            member_id,
            Member::new(member_id, token, username.to_owned(), &flood, now),
        );
        let room_name = room.name.clone();
        self.tokens.insert(token, (room_id, member_id));
        self.changed();
        Ok(Membership {
            token,
            room: room_name,
            username: username.to_owned(),
            host: false,
        })
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
            .min_by_key(|room| room.waiting_since)
            .map(|room| room.id);
        if let Some(room_id) = waiting {
            return self.add_member(room_id, username, PAIR_ROOM_CAPACITY, now);
        }
        let name = loop {
            let suffix = Token::generate()?.to_hex();
            let candidate = format!("pair-{}", &suffix[..8]);
            if !self.room_ids.contains_key(&candidate) {
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
        let token = Token::from_hex(token_hex).ok_or(DropReason::UnknownToken)?;
        let &(room_id, member_id) = self.tokens.get(&token).ok_or(DropReason::UnknownToken)?;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        if room.name != room_name {
            return Err(DropReason::WrongRoom);
        }
        let message = ClientMessage::decode(message).map_err(|_| DropReason::Malformed)?;
        if message == ClientMessage::Register {
            register(room, member_id, src, WireVersion::V1, now, out);
            return Ok(());
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
            ClientMessage::Register => Ok(()),
            ClientMessage::Leave => {
                self.remove_member(room_id, member_id, LeaveReason::Leave, out);
                Ok(())
            }
            ClientMessage::Chat(text) => {
                relay_v1_chat(room, member_id, text, &self.flood, now, out)
            }
            // Version 2 arrives with the reliable-delivery work; until then it is not understood.
            ClientMessage::V2(_) => Err(DropReason::Malformed),
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
            let close_reason = match reason {
                LeaveReason::Leave => CloseReason::HostLeft,
                LeaveReason::Timeout => CloseReason::HostTimeout,
            };
            self.close_room(room_id, close_reason, out);
            return;
        }
        let Some(member) = room.members.remove(&member_id) else {
            return;
        };
        self.tokens.remove(&member.token);
        room.rebuild_recipients();
        if room.kind == RoomKind::Pair {
            // Back in the queue, behind whoever was already waiting.
            room.waiting_since = self.next_id;
            self.next_id += 1;
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
        self.changed();
    }

    /// Closes a room: every registered member except the host is told, then the room and all
    /// its tokens are gone.
    fn close_room(&mut self, room_id: RoomId, reason: CloseReason, out: &mut Outbox) {
        let Some(room) = self.rooms.remove(&room_id) else {
            return;
        };
        self.room_ids.remove(&room.name);
        for member in room.members.values() {
            self.tokens.remove(&member.token);
        }
        let skip = Some(room.host);
        out.fanout(&room.v1_recipients, skip, |buf| {
            buf.extend_from_slice(ROOM_CLOSED);
            Ok(())
        });
        out.fanout(&room.v2_recipients, skip, |buf| {
            ucrp::encode_v2(&ServerV2::RoomClosed { reason }, buf);
            Ok(())
        });
        self.changed();
    }

    /// The durable part of the state: rooms, members, tokens.
    pub fn snapshot(&self) -> PersistedState {
        let mut rooms: Vec<PersistedRoom> = self
            .rooms
            .values()
            .map(|room| PersistedRoom {
                name: room.name.clone(),
                kind: room.kind.clone(),
                created_at_ms: room.created_at_ms,
                members: room
                    .members
                    .values()
                    .map(|member| PersistedMember {
                        username: member.username.clone(),
                        token: member.token.to_hex(),
                        host: member.id == room.host,
                    })
                    .collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        PersistedState::new(rooms)
    }

    /// Rebuilds the manager from a state file's contents, checking every rule the manager
    /// itself enforces, so a hand-edited file cannot smuggle in an impossible state.
    pub fn restore(
        state: PersistedState,
        limits: Limits,
        flood: FloodPolicy,
        now: Instant,
    ) -> Result<Self, StateProblem> {
        let mut manager = Self::new(limits, flood);
        for persisted in state.rooms {
            let problem =
                |what: String| StateProblem(format!("room \"{}\": {what}", persisted.name));
            names::validate_room_name(&persisted.name).map_err(|e| problem(e.to_string()))?;
            if manager.room_ids.contains_key(&persisted.name) {
                return Err(problem("appears twice".into()));
            }
            let room_id = manager.fresh_id();
            let mut members = BTreeMap::new();
            let mut host = None;
            for entry in &persisted.members {
                names::validate_username(&entry.username)
                    .map_err(|e| problem(format!("member \"{}\": {e}", entry.username)))?;
                let token = Token::from_hex(entry.token.as_bytes()).ok_or_else(|| {
                    problem(format!(
                        "member \"{}\" has a malformed token",
                        entry.username
                    ))
                })?;
                let key = names::username_key(&entry.username);
                if members
                    .values()
                    .any(|m: &Member| names::username_key(&m.username) == key)
                {
                    return Err(problem(format!(
                        "the name \"{}\" appears twice",
                        entry.username
                    )));
                }
                let member_id = manager.fresh_id();
                if manager.tokens.insert(token, (room_id, member_id)).is_some() {
                    return Err(problem(format!(
                        "member \"{}\" reuses a token",
                        entry.username
                    )));
                }
                if entry.host {
                    if host.is_some() {
                        return Err(problem("has more than one host".into()));
                    }
                    host = Some(member_id);
                }
                members.insert(
                    member_id,
                    Member::new(member_id, token, entry.username.clone(), &flood, now),
                );
            }
            let host = host.ok_or_else(|| problem("has no host".into()))?;
            if persisted.kind == RoomKind::Pair && members.len() > PAIR_ROOM_CAPACITY {
                return Err(problem("is a pair room with more than two members".into()));
            }
            manager.room_ids.insert(persisted.name.clone(), room_id);
            manager.rooms.insert(
                room_id,
                Room {
                    id: room_id,
                    name: persisted.name,
                    kind: persisted.kind,
                    created_at_ms: persisted.created_at_ms,
                    host,
                    members,
                    v1_recipients: Arc::from([]),
                    v2_recipients: Arc::from([]),
                    waiting_since: room_id,
                },
            );
        }
        Ok(manager)
    }
}

/// Binds a member's address (first registration, re-registration or roaming) and welcomes it.
fn register(
    room: &mut Room,
    member_id: MemberId,
    src: SocketAddr,
    version: WireVersion,
    now: Instant,
    out: &mut Outbox,
) {
    let Some(member) = room.members.get_mut(&member_id) else {
        return;
    };
    let first_time = member.addr.is_none();
    let moved = member.addr != Some(src) || member.version != version;
    member.addr = Some(src);
    member.version = version;
    member.last_seen = now;
    let username = member.username.clone();
    if moved {
        room.rebuild_recipients();
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
    let here = room.usernames().join(", ");
    let welcome = format!("welcome to {}, {username}; here now: {here}", room.name);
    out.unicast(src, |buf| {
        ucrp::encode_v1_chat(NOTICE_SENDER, &welcome, buf)
    });
}

/// Relays version-1 chat text to every other registered member.
fn relay_v1_chat(
    room: &mut Room,
    member_id: MemberId,
    text: &str,
    flood: &FloodPolicy,
    now: Instant,
    out: &mut Outbox,
) -> Result<(), DropReason> {
    let Room {
        members,
        v1_recipients,
        ..
    } = room;
    let member = members
        .get_mut(&member_id)
        .ok_or(DropReason::UnknownToken)?;
    if !member.flood.allow(flood, now) {
        warn_rate_limited(member, now, out);
        return Err(DropReason::RateLimited);
    }
    out.fanout(v1_recipients, Some(member_id), |buf| {
        ucrp::encode_v1_chat(&member.username, text, buf)
    });
    Ok(())
}

/// Tells a flooding member, at most once a second, that messages are being dropped.
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
