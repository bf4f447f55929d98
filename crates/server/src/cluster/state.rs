//! Rooms, members, tokens and password hashes in Redis: how the engine's state changes become
//! writes (committed by [`scripts::COMMIT_STATE`]), and how a node reads the whole state when
//! it starts.
//!
//! Layout (`rk` is a room's name key, `uid`s are decimal):
//! - `chat:rooms` rk → the room without its members (JSON: name, uid, kind with the password
//!   hash, topic, bans); `chat:roomuid` rk → uid; `chat:host` rk → the host's uid;
//! - `chat:members:{rk}` uid → the member (JSON: name, uid, token, version);
//!   `chat:names:{rk}` name key → uid, which makes a name unique across nodes;
//! - `chat:owner` uid → the node serving the member, `chat:node:{node}:members` the reverse;
//! - `chat:journal`, the change stream (bounded) every node follows.

use serde::Serialize;

use chat_protocol::names;

use super::scripts;
use super::{ClusterError, MAX_REDIS_VALUE};
use crate::engine::durable::{PersistedMember, PersistedRoom, PersistedState};
use crate::engine::{Engine, JournalRecord, StateChange};

/// Changes kept in the change stream: a node that falls further behind than this while
/// running would miss changes, so it is far beyond what a few seconds produce.
pub const JOURNAL_LENGTH: usize = 100_000;

/// One change as the commit script takes it.
#[derive(Debug, Serialize)]
struct ChangeOps {
    checks: Vec<Vec<String>>,
    ops: Vec<Vec<String>>,
    event: String,
}

fn members_key(rk: &str) -> String {
    format!("chat:members:{rk}")
}

fn names_key(rk: &str) -> String {
    format!("chat:names:{rk}")
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The member as Redis keeps it: no address (each node knows only its own members').
fn member_json(member: &PersistedMember) -> Result<String, ClusterError> {
    let mut member = member.clone();
    member.addr = None;
    member.host = false;
    Ok(serde_json::to_string(&member)?)
}

fn join_ops(rk: &str, member: &PersistedMember, ops: &mut ChangeOps) -> Result<(), ClusterError> {
    let uid = member.uid.to_string();
    let nk = names::username_key(&member.username);
    ops.checks
        .push(strings(["absent", &names_key(rk), &nk, ""]));
    ops.ops.push(vec![
        "hset".into(),
        members_key(rk),
        uid.clone(),
        member_json(member)?,
    ]);
    ops.ops
        .push(vec!["hset".into(), names_key(rk), nk, uid.clone()]);
    ops.ops.push(vec!["own".into(), uid]);
    Ok(())
}

/// The commit script's argument for `records`, taken from the engine under its lock (a topic
/// or ban writes the room as it is now).
pub fn commit_batch(engine: &Engine, records: &[JournalRecord]) -> Result<String, ClusterError> {
    let mut batch = Vec::with_capacity(records.len());
    for record in records {
        let mut ops = ChangeOps {
            checks: Vec::new(),
            ops: Vec::new(),
            event: serde_json::to_string(&record.change)?,
        };
        match &record.change {
            StateChange::RoomCreated { room } => {
                let rk = names::room_key(&room.name);
                let mut meta = room.clone();
                meta.members.clear();
                ops.checks.push(strings(["absent", "chat:rooms", &rk, ""]));
                ops.ops.push(vec![
                    "hset".into(),
                    "chat:rooms".into(),
                    rk.clone(),
                    serde_json::to_string(&meta)?,
                ]);
                ops.ops.push(vec![
                    "hset".into(),
                    "chat:roomuid".into(),
                    rk.clone(),
                    room.uid.to_string(),
                ]);
                for member in &room.members {
                    if member.host {
                        ops.ops.push(vec![
                            "hset".into(),
                            "chat:host".into(),
                            rk.clone(),
                            member.uid.to_string(),
                        ]);
                    }
                    join_ops(&rk, member, &mut ops)?;
                }
            }
            StateChange::MemberJoined { room, member } => {
                join_ops(&names::room_key(room), member, &mut ops)?;
            }
            StateChange::MemberLeft { room, uid, .. } => {
                let rk = names::room_key(room);
                let uid = uid.to_string();
                ops.checks
                    .push(strings(["present", &members_key(&rk), &uid, ""]));
                ops.ops
                    .push(vec!["hdel".into(), members_key(&rk), uid.clone()]);
                ops.ops
                    .push(vec!["hdelval".into(), names_key(&rk), uid.clone()]);
                ops.ops.push(vec!["disown".into(), uid]);
            }
            StateChange::RoomClosed { room, uid } => {
                let rk = names::room_key(room);
                // Only this room: a room of the same name that another node created (this
                // node's conflicting create being withdrawn) stays.
                let uid = uid.map(|uid| uid.to_string()).unwrap_or_default();
                ops.checks
                    .push(strings(["equals", "chat:roomuid", &rk, &uid]));
                ops.ops.push(vec!["closeroom".into(), rk]);
            }
            StateChange::HostChanged { room, uid } => {
                let rk = names::room_key(room);
                ops.ops
                    .push(vec!["hset".into(), "chat:host".into(), rk, uid.to_string()]);
            }
            StateChange::TopicChanged { room, .. } | StateChange::AddressesBanned { room, .. } => {
                let rk = names::room_key(room);
                if let Some(meta) = engine.room_meta(room) {
                    ops.checks.push(strings(["present", "chat:rooms", &rk, ""]));
                    ops.ops.push(vec![
                        "hset".into(),
                        "chat:rooms".into(),
                        rk,
                        serde_json::to_string(&meta)?,
                    ]);
                }
            }
            StateChange::MemberRegistered { room, uid, .. } => {
                let rk = names::room_key(room);
                let uid = uid.to_string();
                ops.checks
                    .push(strings(["present", &members_key(&rk), &uid, ""]));
                ops.ops.push(vec!["own".into(), uid]);
            }
            // Ids come from Redis itself.
            StateChange::IdsReserved { .. } => continue,
            // Version 3's keys stay with the node that holds the member's TLS session: two
            // nodes sealing under one key with counters of their own could repeat a nonce.
            // A member that moves to another node attaches there (fresh keys), and a node
            // that restarts has no keys, so its members attach again; the boot number only
            // matters for keys that outlive a start, which in scale-out none do.
            StateChange::MemberSealed { .. } | StateChange::Booted { .. } => continue,
        }
        batch.push(ops);
    }
    Ok(serde_json::to_string(&batch)?)
}

/// Commits a batch built by [`commit_batch`]; returns how many changes Redis refused (a room
/// name or user name another node took first).
pub fn commit(con: &mut redis::Connection, node: &str, batch: &str) -> Result<usize, ClusterError> {
    let refused: usize = redis::Script::new(scripts::COMMIT_STATE)
        .arg(node)
        .arg(batch)
        .arg(JOURNAL_LENGTH)
        .invoke(con)?;
    Ok(refused)
}

/// The shared state as Redis holds it: the rooms, each room's newest message id, and where
/// the change stream stood.
#[derive(Debug)]
pub struct LoadedState {
    /// Rooms with their members, in the state file's form (no addresses).
    pub state: PersistedState,
    /// (room uid, newest message id).
    pub last_ids: Vec<(u64, u64)>,
    /// Members this node served before it restarted: served here again (they re-register,
    /// or time out here), not left to a reaper that never comes while this node lives.
    pub ours: Vec<u64>,
    /// The change stream's newest entry when this was read.
    pub cursor: String,
}

/// Reads the whole shared state, checking sizes: Redis is trusted no more than the network.
pub fn load(
    con: &mut redis::Connection,
    node: &str,
    max_rooms: usize,
) -> Result<LoadedState, ClusterError> {
    let value: redis::Value = redis::Script::new(scripts::LOAD_STATE)
        .arg(node)
        .invoke(con)?;
    let redis::Value::Array(items) = value else {
        return Err(ClusterError::Malformed("state is not an array"));
    };
    let mut items = items.into_iter();
    let cursor = bulk_string(items.next())?;
    if items.len() > max_rooms {
        return Err(ClusterError::Malformed("more rooms than --max-rooms"));
    }
    let mut rooms = Vec::new();
    let mut last_ids = Vec::new();
    let mut ours = Vec::new();
    for item in items {
        let redis::Value::Array(parts) = item else {
            return Err(ClusterError::Malformed("room entry is not an array"));
        };
        let mut parts = parts.into_iter();
        let meta = bulk_string(parts.next())?;
        let host = bulk_string(parts.next())?;
        let last = bulk_string(parts.next())?;
        let Some(redis::Value::Array(members)) = parts.next() else {
            return Err(ClusterError::Malformed("room members are not an array"));
        };
        let mut room: PersistedRoom = serde_json::from_str(&meta)?;
        let host: u64 = host.parse().unwrap_or(0);
        for member in members.into_iter().take(
            crate::engine::Limits::default()
                .max_members_per_room
                .max(4096),
        ) {
            let text = bulk_string(Some(member))?;
            let mut member: PersistedMember = serde_json::from_str(&text)?;
            member.host = member.uid == host;
            member.addr = None;
            room.members.push(member);
        }
        if let Some(redis::Value::Array(owned)) = parts.next() {
            for uid in owned.into_iter().take(room.members.len()) {
                if let Ok(uid) = bulk_string(Some(uid))?.parse::<u64>() {
                    ours.push(uid);
                }
            }
        }
        let last = last.parse().unwrap_or(0);
        last_ids.push((room.uid, last));
        rooms.push(room);
    }
    Ok(LoadedState {
        state: PersistedState::new(rooms),
        last_ids,
        ours,
        cursor,
    })
}

/// A bounded string from a Redis reply.
pub fn bulk_string(value: Option<redis::Value>) -> Result<String, ClusterError> {
    match value {
        Some(redis::Value::BulkString(bytes)) if bytes.len() <= MAX_REDIS_VALUE => {
            String::from_utf8(bytes).map_err(|_| ClusterError::Malformed("not UTF-8"))
        }
        Some(redis::Value::SimpleString(text)) if text.len() <= MAX_REDIS_VALUE => Ok(text),
        Some(redis::Value::Int(n)) => Ok(n.to_string()),
        _ => Err(ClusterError::Malformed("expected a string")),
    }
}
