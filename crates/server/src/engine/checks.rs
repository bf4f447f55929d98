//! The cheap part of a handshake, checked before anything slow: a create or join that is
//! going to be refused anyway (bad name, no such room, room full, name taken, too many rooms)
//! must never cost a password hash. Read-only; the real create or join checks everything
//! again under the lock, since the state can change while a password is hashed.

use std::time::Instant;

use chat_protocol::names;

use super::room::{RoomId, RoomKind};
use super::{Engine, JoinError, PAIR_ROOM_CAPACITY};

impl Engine {
    /// Whether `create` could succeed now, as far as can be told without the password.
    pub fn check_create(&self, room_name: &str, username: &str) -> Result<(), JoinError> {
        names::validate_room_name(room_name).map_err(JoinError::InvalidRoomName)?;
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        if self.room_ids.contains_key(&names::room_key(room_name)) {
            return Err(JoinError::RoomExists(room_name.to_owned()));
        }
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(JoinError::TooManyRooms(self.limits.max_rooms));
        }
        Ok(())
    }

    /// Whether `join` could succeed now, as far as can be told without the password: for a
    /// private room, the password hash to check and the room it belongs to (the room could be
    /// closed and re-created while the slow check runs outside the lock).
    /// A name held by a member proven gone counts as free: the join will evict it.
    pub fn check_join(
        &self,
        room_name: &str,
        username: &str,
        now: Instant,
    ) -> Result<Option<(RoomId, String)>, JoinError> {
        names::validate_room_name(room_name).map_err(JoinError::InvalidRoomName)?;
        names::validate_username(username).map_err(JoinError::InvalidUsername)?;
        let room = self
            .room_ids
            .get(&names::room_key(room_name))
            .and_then(|id| self.rooms.get(id))
            .ok_or_else(|| JoinError::RoomNotFound(room_name.to_owned()))?;
        let capacity = match room.kind {
            RoomKind::Pair => PAIR_ROOM_CAPACITY,
            RoomKind::Public | RoomKind::Private { .. } => self.limits.max_members_per_room,
        };
        let ghost = room
            .member_named(&names::username_key(username))
            .map(|holder| self.is_ghost(room, holder, now));
        if room.members.len() >= capacity && ghost != Some(true) {
            return Err(JoinError::RoomFull {
                room: room.name.clone(),
                capacity,
            });
        }
        if ghost == Some(false) {
            return Err(JoinError::NameTaken {
                room: room.name.clone(),
                username: username.to_owned(),
            });
        }
        Ok(match &room.kind {
            RoomKind::Private { password_hash } => Some((room.id, password_hash.clone())),
            RoomKind::Public | RoomKind::Pair => None,
        })
    }
}

impl Engine {
    /// The stable id of the room called `room_name` (in any form with the same key).
    pub fn room_uid(&self, room_name: &str) -> Option<u64> {
        let id = self.room_ids.get(&names::room_key(room_name))?;
        self.rooms.get(id).map(|room| room.uid)
    }
}
