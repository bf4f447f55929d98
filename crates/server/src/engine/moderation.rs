//! The host's powers: `kick` (remove a member, who may come back), `ban` (remove it and refuse
//! its addresses' joins for the room's life) and `host` (hand the role over). Anyone else is
//! refused with `not_host`. Bans are kept in the durable state with the room.

use std::net::IpAddr;
use std::time::Instant;

use chat_protocol::names;
use chat_protocol::ucrp::{self, NOTICE_SENDER, ROOM_CLOSED};
use chat_protocol::v2::{LeaveReason, ServerV2, V2ErrorCode};

use super::durable::StateChange;
use super::replay::{notify, unicast_v2};
use super::room::{MemberId, RoomId, WireVersion};
use super::{Effects, Endpoint, Engine};

/// Most addresses a room keeps banned; beyond that the oldest ban lapses.
pub const MAX_BANS: usize = 256;

/// What the host asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Remove the member.
    Kick,
    /// Remove the member and ban its addresses.
    Ban,
    /// Make the member the host.
    Host,
}

impl Engine {
    /// Whether the room called `room_name` has banned `ip` (checked before a join).
    pub fn is_banned(&self, room_name: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.room_ids
            .get(&names::room_key(room_name))
            .and_then(|id| self.rooms.get(id))
            .is_some_and(|room| room.bans.contains(&ip))
    }

    /// Carries out a host's `kick`, `ban` or `host` naming `name`, or refuses it with an
    /// `error` to `src`: `not_host` from anyone but the host, `no_such_member` for a name
    /// that is not another member's.
    #[expect(
        clippy::too_many_arguments,
        reason = "who asks what of whom, where the answer goes, the clock and the effects"
    )]
    pub(super) fn moderate(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        action: Moderation,
        name: &str,
        src: Endpoint,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let refuse = |fx: &mut Effects, code, message: &str| {
            let error = ServerV2::Error {
                code,
                seq: None,
                message: message.to_owned(),
            };
            unicast_v2(&mut fx.datagrams, src, &error);
        };
        if room.host != member_id {
            let text = "only the host can kick, ban or hand over the room";
            return refuse(fx, V2ErrorCode::NotHost, text);
        }
        let key = names::username_key(name);
        let Some(target) = room
            .members
            .values()
            .find(|m| m.id != member_id && names::username_key(&m.username) == key)
        else {
            let text = "there is no other member of that name in this room";
            return refuse(fx, V2ErrorCode::NoSuchMember, text);
        };
        let (target_id, target_uid, target_name) = (target.id, target.uid, target.username.clone());
        let host_name = room.host_name().to_owned();
        if action == Moderation::Host {
            room.host = target_id;
            let event = ServerV2::Host {
                name: target_name.clone(),
            };
            let text = format!("{target_name} is now the host");
            notify(room, None, &text, &event, &mut fx.datagrams);
            let change = StateChange::HostChanged {
                room: room.name.clone(),
                uid: target_uid,
            };
            self.changed(change);
            return;
        }
        let ban = action == Moderation::Ban;
        // The member hears why before it is gone.
        if let Some(addr) = target.addr {
            match target.version {
                WireVersion::V2 => {
                    let event = ServerV2::Kicked {
                        by: host_name.clone(),
                        ban,
                    };
                    unicast_v2(&mut fx.datagrams, addr, &event);
                }
                WireVersion::V1 => {
                    let how = if ban { "banned from" } else { "kicked out of" };
                    let text = format!("you were {how} {} by {host_name}", room.name);
                    fx.datagrams
                        .unicast(addr, |buf| ucrp::encode_v1_chat(NOTICE_SENDER, &text, buf));
                    fx.datagrams.unicast(addr, |buf| {
                        buf.extend_from_slice(ROOM_CLOSED);
                        Ok(())
                    });
                }
            }
        }
        if ban {
            let mut addresses: Vec<IpAddr> = target
                .home_ip
                .into_iter()
                .chain(target.addr.map(|addr| addr.ip()))
                .map(|ip| ip.to_canonical())
                .collect();
            addresses.dedup();
            addresses.retain(|ip| !room.bans.contains(ip));
            room.bans.extend(addresses.iter().copied());
            let over = room.bans.len().saturating_sub(MAX_BANS);
            room.bans.drain(..over);
            if !addresses.is_empty() {
                let change = StateChange::AddressesBanned {
                    room: room.name.clone(),
                    addresses,
                };
                self.changed(change);
            }
        }
        let reason = if ban {
            LeaveReason::Banned
        } else {
            LeaveReason::Kicked
        };
        self.remove_member(room_id, target_id, reason, now, fx);
    }
}
