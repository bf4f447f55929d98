//! Scale-out (`--redis`, issue 12): what the engine does differently when several nodes serve
//! the same rooms. The I/O layer (`crate::cluster`) feeds it two things, both sans-IO here:
//!
//! - other nodes' state changes ([`Engine::apply_remote`]): rooms, members and tokens appear
//!   and go as they do there, without being journaled again, so a token granted by one node
//!   works on every node. Their members are `remote`: this node neither relays to them nor
//!   times them out, until they register here (failover).
//! - every committed message of a room with local members, from any node, in id order
//!   ([`Engine::relay_shared`]): the relay to local members and the replay cache follow the
//!   room's channel, so each member hears each id once, in order, whichever node it came from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::names;
use chat_protocol::ucrp::{self, NOTICE_SENDER};
use chat_protocol::v2::{LeaveReason, ServerV2};

use super::direct::skip_frame;
use super::durable::{PersistedMember, PersistedRoom, StateChange};
use super::replay::notify;
use super::room::{CachedMessage, Member, MemberId, Room, RoomId};
use super::{Effects, Engine, Now, StoredMessage};
use crate::escape::quoted;
use crate::token::Token;

/// A message committed by some node, as it comes off the room's channel or stream.
#[derive(Debug, Clone)]
pub struct SharedMessage {
    /// The message, with the id Redis gave it.
    pub stored: StoredMessage,
    /// Whether the node that took it already relayed it to its version-1 members (version-1
    /// chat among version-1 members goes out before it is stored, as in one node).
    pub v1_relayed: bool,
    /// Whether it was taken by this node.
    pub from_here: bool,
}

/// What became of a message handed to [`Engine::relay_shared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedOutcome {
    /// Relayed to the local members, cached, `committed_id` moved on.
    Relayed,
    /// Already relayed (a duplicate from the stream after a gap fill): nothing done.
    Duplicate,
    /// Ids between the room's `committed_id` (given) and this one are missing: the caller
    /// fills them from the room's stream first, then hands this one again.
    Gap(u64),
    /// No such room here (it closed), or it is another room of the same id.
    UnknownRoom,
}

/// A room this node serves members of: the subscriber listens on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRoom {
    /// Process-local id, to hand messages back.
    pub id: RoomId,
    /// Stable id, which names the channel and the stream.
    pub uid: u64,
    /// Newest id relayed here.
    pub committed_id: u64,
}

impl Engine {
    /// Scale-out from now on: message ids come from Redis with the commit, and relays follow
    /// the room's channel.
    pub fn attach_cluster(&mut self) {
        self.cluster = true;
    }

    /// Whether the engine runs as one node of several.
    pub fn is_clustered(&self) -> bool {
        self.cluster
    }

    /// At start-up: marks every member remote but those this node served before it
    /// restarted (`ours`: they register again here, or time out here), none bound to an
    /// address yet, and sets each room's newest id from Redis.
    pub fn start_as_node(
        &mut self,
        last_ids: &dyn Fn(u64) -> Option<u64>,
        ours: &std::collections::HashSet<u64>,
    ) {
        for room in self.rooms.values_mut() {
            for member in room.members.values_mut() {
                member.remote = !ours.contains(&member.uid);
                // Redis keeps no addresses: whoever was registered anywhere was announced.
                member.remote_registered = true;
                member.addr = None;
            }
            if let Some(last) = last_ids(room.uid) {
                room.last_id = room.last_id.max(last);
                room.committed_id = room.committed_id.max(last);
            }
            room.rebuild_recipients();
        }
    }

    /// Rooms with at least one member served by this node.
    pub fn local_rooms(&self) -> Vec<LocalRoom> {
        self.rooms
            .values()
            .filter(|room| room.members.values().any(|member| !member.remote))
            .map(|room| LocalRoom {
                id: room.id,
                uid: room.uid,
                committed_id: room.committed_id,
            })
            .collect()
    }

    /// The newest id relayed in a room, if it is still the room of that uid.
    pub fn committed_id_of(&self, room_id: RoomId, uid: u64) -> Option<u64> {
        self.rooms
            .get(&room_id)
            .filter(|room| room.uid == uid)
            .map(|room| room.committed_id)
    }

    /// Members (stable ids) this node serves, for the presence set in Redis.
    pub fn local_member_uids(&self) -> Vec<u64> {
        self.rooms
            .values()
            .flat_map(|room| room.members.values())
            .filter(|member| !member.remote)
            .map(|member| member.uid)
            .collect()
    }

    /// Relays a committed message to this node's members of its room, in id order. A gap is
    /// reported rather than skipped unless `accept_gap` (the stream no longer has the
    /// missing ids).
    pub fn relay_shared(
        &mut self,
        room_id: RoomId,
        message: &SharedMessage,
        accept_gap: bool,
        fx: &mut Effects,
    ) -> SharedOutcome {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return SharedOutcome::UnknownRoom;
        };
        let stored = &message.stored;
        if room.uid != stored.room_uid {
            return SharedOutcome::UnknownRoom;
        }
        let id = stored.message.id;
        if id <= room.committed_id {
            return SharedOutcome::Duplicate;
        }
        if id > room.committed_id + 1 && !accept_gap {
            return SharedOutcome::Gap(room.committed_id);
        }
        room.committed_id = id;
        room.last_id = room.last_id.max(id);
        let mut v2_frame = Vec::with_capacity(stored.message.text.len() + 96);
        ucrp::encode_v2_msg(&stored.message, &mut v2_frame);
        let v2_frame: Arc<[u8]> = v2_frame.into();
        let audience = stored.recipient_uid.map(|to| (stored.member_uid, to));
        let freed = room.cache(CachedMessage {
            id,
            v2_frame: Arc::clone(&v2_frame),
            audience,
        });
        self.memory.uncached(freed);
        self.memory.cached_message(room.id, id, v2_frame.len());
        let member_by_uid = |uid: u64| {
            room.members
                .values()
                .find(|member| member.uid == uid)
                .map(|member| member.id)
        };
        let sender = member_by_uid(stored.member_uid);
        let out = &mut fx.datagrams;
        if let Some(recipient_uid) = stored.recipient_uid {
            let recipient = member_by_uid(recipient_uid);
            relay_direct(room, &v2_frame, stored, sender, recipient, out);
        } else {
            out.fanout(&room.v2_recipients, sender, |buf| {
                buf.extend_from_slice(&v2_frame);
                Ok(())
            });
            if !(message.from_here && message.v1_relayed) {
                let chat = &stored.message;
                out.fanout(&room.v1_recipients, sender, |buf| {
                    if chat.me {
                        let action = format!("{} {}", chat.from, chat.text);
                        ucrp::encode_v1_chat(NOTICE_SENDER, &action, buf)
                    } else {
                        ucrp::encode_v1_chat(&chat.from, &chat.text, buf)
                    }
                });
            }
        }
        self.evict_cached();
        SharedOutcome::Relayed
    }

    /// Applies a change another node made (and Redis committed), without journaling it
    /// again. Idempotent: a change this node already has (read at start-up, or a repeat) is
    /// skipped, so the start-up snapshot and the change stream may overlap.
    pub fn apply_remote(&mut self, change: StateChange, now: Now, fx: &mut Effects) {
        let mark = (self.journal_seq, self.unsaved.len());
        match change {
            StateChange::RoomCreated { room } => self.add_remote_room(room, now.instant, fx),
            StateChange::MemberJoined { room, member } => {
                if let Some(room_id) = self.room_id_of(&room) {
                    self.add_remote_member(room_id, &member, now.instant, fx);
                }
            }
            StateChange::MemberLeft { room, uid, reason } => {
                if let Some((room_id, member_id)) = self.member_of_uid(&room, uid) {
                    let reason = reason.unwrap_or(LeaveReason::Leave);
                    self.remove_member(room_id, member_id, reason, now.instant, fx);
                }
            }
            StateChange::RoomClosed { room, uid } => {
                if let Some(room_id) = self.room_id_of(&room).filter(|id| {
                    uid.is_none_or(|uid| self.rooms.get(id).is_some_and(|r| r.uid == uid))
                }) {
                    self.close_remote_room(room_id, fx);
                }
            }
            StateChange::HostChanged { room, uid } => {
                if let Some((room_id, member_id)) = self.member_of_uid(&room, uid)
                    && let Some(room) = self.rooms.get_mut(&room_id)
                {
                    room.host = member_id;
                }
            }
            StateChange::TopicChanged { room, topic, by } => {
                if let Some(room) = self
                    .room_id_of(&room)
                    .and_then(|id| self.rooms.get_mut(&id))
                    && room.topic != topic
                {
                    room.topic.clone_from(&topic);
                    // The members here hear it as the setter's node's members did.
                    let name = by.unwrap_or_default();
                    let (notice, text) = match &topic {
                        Some(topic) => (format!("{name} set the topic: {topic}"), topic.clone()),
                        None => (format!("{name} cleared the topic"), String::new()),
                    };
                    let event = ServerV2::Topic { name, text };
                    notify(room, None, &notice, &event, &mut fx.datagrams);
                }
            }
            StateChange::AddressesBanned { room, addresses } => {
                if let Some(room) = self
                    .room_id_of(&room)
                    .and_then(|id| self.rooms.get_mut(&id))
                {
                    for addr in addresses {
                        if !room.bans.contains(&addr) {
                            room.bans.push(addr);
                        }
                    }
                }
            }
            StateChange::MemberRegistered {
                room, uid, version, ..
            } => {
                if let Some((room_id, member_id)) = self.member_of_uid(&room, uid) {
                    self.registered_elsewhere(room_id, member_id, version, fx);
                }
            }
            // Never committed to Redis (see cluster::state::commit_batch).
            StateChange::IdsReserved { .. }
            | StateChange::MemberSealed { .. }
            | StateChange::Booted { .. } => {}
        }
        // What this node's own rules recorded while applying (a departure's `member_left`)
        // is the other node's change, already committed: it is not journaled again here.
        self.journal_seq = mark.0;
        self.unsaved.truncate(mark.1);
    }

    /// Removes members served by a node that stopped refreshing its presence (it died):
    /// as timed out, journaled, so every node hears it once. Only members still remote
    /// here: one that failed over to this node is served again.
    pub fn reap_remote(&mut self, member_uids: &[u64], now: Instant, fx: &mut Effects) -> usize {
        let mut reaped = 0;
        for &uid in member_uids {
            let found = self.rooms.values().find_map(|room| {
                room.members
                    .values()
                    .find(|member| member.uid == uid && member.remote)
                    .map(|member| (room.id, member.id))
            });
            if let Some((room_id, member_id)) = found {
                self.remove_member(room_id, member_id, LeaveReason::Timeout, now, fx);
                reaped += 1;
            }
        }
        reaped
    }

    /// A room's durable description without its members (kept apart in Redis), as it is now.
    pub fn room_meta(&self, room_name: &str) -> Option<PersistedRoom> {
        let room = self.rooms.get(&self.room_id_of(room_name)?)?;
        let mut meta = super::restore::persisted_room(room);
        meta.members.clear();
        Some(meta)
    }

    fn room_id_of(&self, room_name: &str) -> Option<RoomId> {
        self.room_ids.get(&names::room_key(room_name)).copied()
    }

    fn member_of_uid(&self, room_name: &str, uid: u64) -> Option<(RoomId, MemberId)> {
        let room_id = self.room_id_of(room_name)?;
        let room = self.rooms.get(&room_id)?;
        room.members
            .values()
            .find(|member| member.uid == uid)
            .map(|member| (room_id, member.id))
    }

    fn add_remote_room(&mut self, persisted: PersistedRoom, now: Instant, fx: &mut Effects) {
        let key = names::room_key(&persisted.name);
        if let Some(existing) = self.room_ids.get(&key).and_then(|id| self.rooms.get(id)) {
            if existing.uid == persisted.uid {
                return;
            }
            // Redis granted the name to the other node's room (the stream holds only what it
            // committed), so this node's room of that name is a create racing it, whose commit
            // is refused: it goes, and its handshake is answered server_busy.
            tracing::info!(room = %quoted(&persisted.name), "another node created this room first");
            let loser = existing.id;
            self.close_room(loser, chat_protocol::v2::CloseReason::HostLeft, fx);
        }
        if names::validate_room_name(&persisted.name).is_err() || persisted.uid == 0 {
            tracing::warn!(room = %quoted(&persisted.name), "invalid room from Redis ignored");
            return;
        }
        let room_id = self.fresh_id();
        let mut room = Room {
            id: room_id,
            uid: persisted.uid,
            name: persisted.name.clone(),
            kind: persisted.kind.clone(),
            created_at_ms: persisted.created_at_ms,
            host: 0,
            members: BTreeMap::new(),
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
            topic: persisted.topic.clone(),
            bans: persisted.banned.clone(),
        };
        room.rebuild_recipients();
        self.rooms.insert(room_id, room);
        self.room_ids.insert(key, room_id);
        for member in &persisted.members {
            self.add_remote_member(room_id, member, now, fx);
        }
    }

    fn add_remote_member(
        &mut self,
        room_id: RoomId,
        persisted: &PersistedMember,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(token) = Token::from_hex(persisted.token.as_bytes()) else {
            tracing::warn!("member with a malformed token from Redis ignored");
            return;
        };
        if self.tokens.contains_key(&token)
            || names::validate_username(&persisted.username).is_err()
        {
            return;
        }
        let name_key = names::username_key(&persisted.username);
        let holder = self
            .rooms
            .get(&room_id)
            .and_then(|room| room.member_named(&name_key))
            .map(|holder| (holder.id, holder.uid));
        if let Some((holder, uid)) = holder {
            if uid == persisted.uid {
                return;
            }
            // As for rooms: Redis gave the name to the other node's member; this node's
            // holder is a join racing it, refused at its commit.
            self.remove_member(room_id, holder, LeaveReason::Leave, now, fx);
        }
        let member_id = self.fresh_id();
        let flood = self.flood;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let mut member = Member::new(
            member_id,
            persisted.uid,
            token,
            persisted.username.clone(),
            &flood,
            now,
        );
        member.remote = true;
        member.version = persisted.version;
        if persisted.host || room.members.is_empty() {
            room.host = member_id;
        }
        room.members.insert(member_id, member);
        self.tokens.insert(token, (room_id, member_id));
    }

    /// Another node closed the room: its members here hear it, then it is gone.
    fn close_remote_room(&mut self, room_id: RoomId, fx: &mut Effects) {
        let reason = chat_protocol::v2::CloseReason::HostLeft;
        self.close_room(room_id, reason, fx);
    }

    /// A member registered at another node: that node serves it now. The first registration
    /// anywhere is the room's `joined`.
    fn registered_elsewhere(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        version: super::WireVersion,
        fx: &mut Effects,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(member) = room.members.get_mut(&member_id) else {
            return;
        };
        let first_time = !member.remote_registered && member.addr.is_none();
        member.remote = true;
        member.remote_registered = true;
        member.version = version;
        member.addr = None;
        let username = member.username.clone();
        room.rebuild_recipients();
        if first_time {
            notify(
                room,
                Some(member_id),
                &format!("{username} joined"),
                &ServerV2::Joined { name: username },
                &mut fx.datagrams,
            );
        }
    }
}

/// A direct message from the channel: the whole message to its recipient, `skip` to the
/// other version-2 members but the sender, a notice to a version-1 recipient.
fn relay_direct(
    room: &Room,
    v2_frame: &[u8],
    stored: &StoredMessage,
    sender: Option<MemberId>,
    recipient: Option<MemberId>,
    out: &mut super::Outbox,
) {
    let id = stored.message.id;
    for target in room.v2_recipients.iter() {
        if Some(target.member) == sender {
            continue;
        }
        out.unicast(target.addr, |buf| {
            if Some(target.member) == recipient {
                buf.extend_from_slice(v2_frame);
            } else {
                skip_frame(id, buf);
            }
            Ok(())
        });
    }
    if let Some(target) = room
        .v1_recipients
        .iter()
        .find(|r| Some(r.member) == recipient)
    {
        let text = format!("{} (to you): {}", stored.message.from, stored.message.text);
        out.unicast(target.addr, |buf| {
            ucrp::encode_v1_chat(NOTICE_SENDER, &text, buf)
        });
    }
}
