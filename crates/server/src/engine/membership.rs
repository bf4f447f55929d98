//! Membership: the handshakes that create, join and pair, and the operator-side changes
//! (listing, revoking, the handshake's home IP). Departures and timeouts are in
//! [`super::departures`].

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::names;
use chat_protocol::tcrp::{RoomList, RoomSummary};
use chat_protocol::v2::LeaveReason;

use super::durable::StateChange;
use super::restore::{persisted_member, persisted_room};
use super::room::{Member, Room, RoomId, RoomKind, WireVersion};
use super::{Effects, Engine, JoinError, Membership, Now, PAIR_ROOM_CAPACITY, random_uid};
use crate::token::Token;

/// How long someone who left a pair room is kept out of it when pairing again.
const PAIR_REJOIN_WINDOW: Duration = Duration::from_secs(300);

impl Engine {
    /// Creates a room with `username` as its host.
    pub fn create(
        &mut self,
        room_name: &str,
        username: &str,
        kind: RoomKind,
        now: Now,
    ) -> Result<Membership, JoinError> {
        names::validate_room_name(room_name).map_err(JoinError::InvalidRoomName)?;
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        if self.room_ids.contains_key(&names::room_key(room_name)) {
            return Err(JoinError::RoomExists(room_name.to_owned()));
        }
        self.insert_room(room_name, username, kind, now)
    }

    fn insert_room(
        &mut self,
        room_name: &str,
        username: &str,
        kind: RoomKind,
        now: Now,
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
            now.instant,
        );
        let mut room = Room {
            id: room_id,
            uid: random_uid()?,
            name: room_name.to_owned(),
            kind,
            created_at_ms: now.unix_ms,
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
            topic: None,
            bans: Vec::new(),
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
            key_id: None,
        })
    }

    /// Adds `username` to an existing room. `password_verified_for` names the room whose
    /// password the caller checked, for private rooms.
    pub fn join(
        &mut self,
        room_name: &str,
        username: &str,
        password_verified_for: Option<RoomId>,
        now: Now,
        fx: &mut Effects,
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
        self.add_member(room_id, username, capacity, now, fx)
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
        now: Now,
        fx: &mut Effects,
    ) -> Result<Membership, JoinError> {
        self.evict_ghost(room_id, username, now.instant, fx);
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
        let member = Member::new(
            member_id,
            uid,
            token,
            username.to_owned(),
            &flood,
            now.instant,
        );
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
            key_id: None,
        })
    }

    /// Frees `username` in the room when its holder is proven gone: a registered version-2
    /// member, not the host (whose departure would close the room), that has sent nothing,
    /// not even a ping, for [`Limits::ghost_after`]. It is removed as timed out, so the others
    /// hear `left` with reason `timeout`. Version-1 members send no keepalive, so their
    /// silence proves nothing.
    fn evict_ghost(&mut self, room_id: RoomId, username: &str, now: Instant, fx: &mut Effects) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(holder) = room.member_named(&names::username_key(username)) else {
            return;
        };
        if self.is_ghost(room, holder, now) {
            let member_id = holder.id;
            self.remove_member(room_id, member_id, LeaveReason::Timeout, now, fx);
        }
    }

    /// Whether `holder` is proven gone: a registered version-2 member other than the host that
    /// has missed several pings (`--ghost-after`). Version-1 clients send no keepalive, so
    /// their silence proves nothing; a host's removal would close the room.
    pub(super) fn is_ghost(&self, room: &Room, holder: &Member, now: Instant) -> bool {
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
        now: Now,
        fx: &mut Effects,
    ) -> Result<Membership, JoinError> {
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        let key = names::username_key(username);
        let waiting = self
            .rooms
            .values()
            .filter(|room| room.kind == RoomKind::Pair && room.members.len() < PAIR_ROOM_CAPACITY)
            .filter(|room| room.member_named(&key).is_none())
            .filter(|room| !room.left_lately(&key, now.instant, PAIR_REJOIN_WINDOW))
            .min_by_key(|room| room.waiting_since)
            .map(|room| room.id);
        if let Some(room_id) = waiting {
            return self.add_member(room_id, username, PAIR_ROOM_CAPACITY, now, fx);
        }
        let name = loop {
            let suffix = Token::generate()?.to_hex();
            let candidate = format!("pair-{}", &suffix[..8]);
            if !self.room_ids.contains_key(&names::room_key(&candidate)) {
                break candidate;
            }
        };
        self.insert_room(&name, username, RoomKind::Pair, now)
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
                topic: room.topic.clone(),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        RoomList { rooms }
    }

    /// Takes back a membership whose handshake could not be made durable: the member (or, for
    /// a host, its new room) disappears as if it had never been granted.
    pub fn revoke(&mut self, token: &Token, now: Instant, fx: &mut Effects) {
        let Some(&(room_id, member_id)) = self.tokens.get(token) else {
            return;
        };
        self.remove_member(room_id, member_id, LeaveReason::Leave, now, fx);
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
}
