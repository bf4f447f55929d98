//! Version-3 members: which members seal their datagrams, under which key id and keys, and the
//! server's boot number that keeps its counters from repeating across restarts. The keys are
//! data here, like tokens: the sealing and opening happen in the I/O layer (`crate::secure`).

use chat_protocol::sealed::KeyMaterial;
use chat_protocol::tcrp::ErrorCode;
use rand::TryRng;
use rand::rngs::SysRng;

use super::durable::StateChange;
use super::{Engine, JoinError, Membership};
use crate::token::{RandomError, Token};

/// A version-3 member's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    /// The id in its datagrams' clear header; never 0, unique among live members.
    pub key_id: u32,
    /// Both directions' keys, exported from the TLS session that granted (or last attached)
    /// the membership.
    pub keys: KeyMaterial,
}

/// One sealed member, for the I/O layer's key table.
#[derive(Debug, Clone)]
pub struct SealedMember {
    /// Its key id and keys.
    pub sealing: Sealing,
    /// Its room's name, as stored.
    pub room: String,
    /// Its token.
    pub token: Token,
}

/// Why an attach was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The token is not live (the room closed, or the member left or was removed).
    #[error("this room no longer exists, or you are no longer in it")]
    Unknown,
    /// No random key id could be drawn.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl AttachError {
    /// The TCRP code it is refused with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unknown => ErrorCode::RoomNotFound,
            Self::Random(_) => ErrorCode::ServerBusy,
        }
    }
}

impl Engine {
    /// Gives a membership just granted over TLS its keys and a fresh key id, recorded with
    /// it (called under the same lock as the grant, so one durable write covers both).
    pub fn seal(
        &mut self,
        membership: Membership,
        keys: KeyMaterial,
    ) -> Result<Membership, JoinError> {
        let key_id = self.fresh_key_id()?;
        self.set_sealing(&membership.token, Sealing { key_id, keys })
            .ok_or(JoinError::Random(RandomError::new(
                "the membership vanished while it was sealed".into(),
            )))?;
        Ok(Membership {
            key_id: Some(key_id),
            ..membership
        })
    }

    /// Renews the keys of a member (operation 5, attach) and answers with its membership.
    /// A sealed member keeps its key id; one this node holds no keys for (granted in plain
    /// TCRP, or, in scale-out, on another node or before this node restarted: keys never
    /// leave the node that made them) gets a fresh one and is a version-3 member from now on.
    pub fn attach(
        &mut self,
        token: &Token,
        room_name: &str,
        keys: KeyMaterial,
    ) -> Result<(Membership, u32), AttachError> {
        let (room_id, member_id) = self
            .member_of(token.to_hex().as_bytes(), room_name)
            .map_err(|_| AttachError::Unknown)?;
        let room = self.rooms.get(&room_id).ok_or(AttachError::Unknown)?;
        let member = room.members.get(&member_id).ok_or(AttachError::Unknown)?;
        let key_id = match member.sealing.as_ref().map(|sealing| sealing.key_id) {
            Some(key_id) => key_id,
            None => self.fresh_key_id()?,
        };
        let membership = Membership {
            token: *token,
            room: room.name.clone(),
            username: member.username.clone(),
            host: room.host == member_id,
            key_id: Some(key_id),
        };
        self.set_sealing(token, Sealing { key_id, keys })
            .ok_or(AttachError::Unknown)?;
        Ok((membership, key_id))
    }

    /// Every sealed member, for the key table at start.
    pub fn sealed_members(&self) -> Vec<SealedMember> {
        self.rooms
            .values()
            .flat_map(|room| {
                room.members.values().filter_map(|member| {
                    member.sealing.clone().map(|sealing| SealedMember {
                        sealing,
                        room: room.name.clone(),
                        token: member.token,
                    })
                })
            })
            .collect()
    }

    /// Whether `token` is a live member's and sealed under `key_id`: the key table drops
    /// entries for which this turns false.
    pub fn is_sealed_member(&self, token: &Token, key_id: u32) -> bool {
        self.tokens.get(token).is_some_and(|(room_id, member_id)| {
            self.rooms
                .get(room_id)
                .and_then(|room| room.members.get(member_id))
                .and_then(|member| member.sealing.as_ref())
                .is_some_and(|sealing| sealing.key_id == key_id)
        })
    }

    /// This start's boot number: one more than the last start's, recorded in the state file
    /// (the server waits for it to be durable before it seals anything).
    pub fn next_boot(&mut self) -> u64 {
        self.boot += 1;
        self.changed(StateChange::Booted { boot: self.boot });
        self.boot
    }

    fn set_sealing(&mut self, token: &Token, sealing: Sealing) -> Option<()> {
        let &(room_id, member_id) = self.tokens.get(token)?;
        let room = self.rooms.get_mut(&room_id)?;
        let member = room.members.get_mut(&member_id)?;
        let change = StateChange::MemberSealed {
            room: room.name.clone(),
            uid: member.uid,
            key_id: sealing.key_id,
            keys: sealing.keys.to_hex(),
        };
        self.key_ids.insert(sealing.key_id, member.token);
        member.sealing = Some(sealing);
        self.changed(change);
        Some(())
    }

    /// A random key id that no live member has (ids say nothing about who or how many).
    /// Checked against the index, not a scan of every member: a handshake costs the same in
    /// a full server as in an empty one.
    fn fresh_key_id(&self) -> Result<u32, RandomError> {
        for _ in 0..64 {
            let mut bytes = [0u8; 4];
            SysRng
                .try_fill_bytes(&mut bytes)
                .map_err(|e| RandomError::new(e.to_string()))?;
            let id = u32::from_le_bytes(bytes);
            let taken = self
                .key_ids
                .get(&id)
                .is_some_and(|token| self.is_sealed_member(token, id));
            if id != 0 && !taken {
                return Ok(id);
            }
        }
        Err(RandomError::new("no free key id".into()))
    }

    /// Forgets the key ids of members who left (the tick calls it every few seconds).
    pub fn prune_key_ids(&mut self) {
        let live: Vec<u32> = self
            .key_ids
            .iter()
            .filter(|(id, token)| self.is_sealed_member(token, **id))
            .map(|(id, _)| *id)
            .collect();
        if live.len() < self.key_ids.len() {
            self.key_ids.retain(|id, _| live.contains(id));
        }
    }
}
