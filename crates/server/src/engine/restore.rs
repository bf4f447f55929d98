//! Restore and snapshot: the engine from a state file's contents (checked against every rule
//! the engine enforces), and its durable part back out. A restore reads the history through
//! [`HistorySource`], passed in, so that message ids, the replay cache and deduplication
//! windows carry on.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::names;
use chat_protocol::sealed::KeyMaterial;
use chat_protocol::ucrp;
use thiserror::Error;

use super::durable::{
    PersistedMember, PersistedRoom, PersistedSealing, PersistedState, StateProblem,
};
use super::endpoint::SealedPath;
use super::room::{CachedMessage, Member, REPLAY_CACHE, Room, RoomKind};
use super::sealing::Sealing;
use super::seq_window::SEQ_WINDOW;
use super::{
    Endpoint, Engine, ID_RESERVATION, Limits, PAIR_ROOM_CAPACITY, StoredMessage, random_uid,
};
use crate::escape::quoted;
use crate::flood::FloodPolicy;
use crate::token::Token;

/// How many of a room's newest messages are read at start-up to rebuild deduplication windows:
/// well beyond what clients keep unacknowledged.
const RESTORE_SCAN: usize = 4 * SEQ_WINDOW;

/// Read access to stored history, which a restore needs; the SQLite store implements it.
pub trait HistorySource {
    /// The newest stored id in a room, 0 when it has none.
    fn latest_id(&self, room_uid: u64) -> Result<u64, HistoryReadError>;
    /// A room's stored messages with `after < id <= upto`, oldest first, at most `limit`.
    fn range(
        &self,
        room_uid: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, HistoryReadError>;
    /// A room's newest `limit` stored messages, newest first.
    fn recent(&self, room_uid: u64, limit: usize) -> Result<Vec<StoredMessage>, HistoryReadError>;
}

/// A read through a [`HistorySource`] failed; the source's own error inside.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct HistoryReadError(pub Box<dyn std::error::Error + Send + Sync>);

impl Engine {
    /// The durable part of the state: rooms, members, tokens, registered addresses, as of the
    /// latest change.
    pub fn snapshot(&self) -> PersistedState {
        let mut rooms: Vec<PersistedRoom> = self.rooms.values().map(persisted_room).collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        PersistedState {
            journal_seq: self.journal_seq,
            boot: self.boot,
            ..PersistedState::new(rooms)
        }
    }

    /// Rebuilds the engine from a state file's contents, checking every rule the engine
    /// itself enforces, so a hand-edited file cannot smuggle in an impossible state. With a
    /// history store, message ids, the replay cache and deduplication windows come back too.
    pub fn restore(
        state: PersistedState,
        limits: Limits,
        flood: FloodPolicy,
        history: Option<&dyn HistorySource>,
        now: Instant,
    ) -> Result<Self, RestoreError> {
        let mut engine = Self::new(limits, flood);
        // New changes carry on the numbering of the saved ones, so that their journal records
        // are told apart from older ones a crash may have left behind.
        engine.journal_seq = state.journal_seq;
        engine.boot = state.boot;
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
        let mut seen_uids = HashSet::new();
        for persisted in state.rooms {
            let problem =
                |what: String| StateProblem(format!("room {}: {what}", quoted(&persisted.name)));
            names::validate_room_name(&persisted.name).map_err(|e| problem(e.to_string()))?;
            if engine
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
            let room_id = engine.fresh_id();
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
            let mut keys = HashSet::new();
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
                let member_id = engine.fresh_id();
                if engine.tokens.insert(token, (room_id, member_id)).is_some() {
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
                if let Some(sealed) = &entry.sealed {
                    let keys = KeyMaterial::from_hex(&sealed.keys)
                        .filter(|_| sealed.key_id != 0)
                        .ok_or_else(|| problem(format!("member {name} has malformed keys")))?;
                    member.sealing = Some(Sealing {
                        key_id: sealed.key_id,
                        keys,
                    });
                    engine.key_ids.insert(sealed.key_id, token);
                }
                // A sealed member's address is reached sealed.
                member.addr = entry.addr.map(|addr| match &member.sealing {
                    Some(sealing) => Endpoint::Sealed {
                        path: SealedPath::Udp(addr),
                        key_id: sealing.key_id,
                    },
                    None => Endpoint::Udp(addr),
                });
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
            if persisted
                .topic
                .as_ref()
                .is_some_and(|topic| super::topic::check(topic).is_err())
            {
                return Err(problem("has a topic that breaks the topic rules".into()).into());
            }
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
                topic: persisted.topic,
                // The newest bans, as the room kept them.
                bans: persisted
                    .banned
                    .iter()
                    .skip(
                        persisted
                            .banned
                            .len()
                            .saturating_sub(super::moderation::MAX_BANS),
                    )
                    .map(|ip| ip.to_canonical())
                    .collect(),
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
                        audience: stored.recipient_uid.map(|to| (stored.member_uid, to)),
                    });
                    engine.memory.uncached(freed);
                    engine
                        .memory
                        .cached_message(room_id, stored.message.id, bytes);
                }
            }
            room.rebuild_recipients();
            engine.room_ids.insert(names::room_key(&room.name), room_id);
            engine.rooms.insert(room_id, room);
        }
        engine.evict_cached();
        Ok(engine)
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
    History(#[from] HistoryReadError),
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

pub(super) fn persisted_room(room: &Room) -> PersistedRoom {
    PersistedRoom {
        ids_reserved: room.ids_reserved,
        name: room.name.clone(),
        uid: room.uid,
        kind: room.kind.clone(),
        created_at_ms: room.created_at_ms,
        topic: room.topic.clone(),
        banned: room.bans.clone(),
        members: room
            .members
            .values()
            .map(|member| persisted_member(member, member.id == room.host))
            .collect(),
    }
}

pub(super) fn persisted_member(member: &Member, host: bool) -> PersistedMember {
    PersistedMember {
        username: member.username.clone(),
        uid: member.uid,
        token: member.token.to_hex(),
        host,
        addr: member.addr.and_then(|addr| addr.udp()),
        version: member.version,
        sealed: member.sealing.as_ref().map(|sealing| PersistedSealing {
            key_id: sealing.key_id,
            keys: sealing.keys.to_hex(),
        }),
    }
}
