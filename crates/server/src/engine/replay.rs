//! Notices and replay: what a member hears besides chat. The welcome after a proven
//! registration (member list, catch-up, `pong`), replays from the in-memory cache or, beyond
//! it, from the history store, server notices to a whole room, and the cache's share of the
//! memory budget.

use std::collections::BTreeMap;
use std::time::Instant;

use chat_protocol::limits::{MAX_DATAGRAM, MAX_SERVER_MESSAGE};
use chat_protocol::ucrp::{self, NOTICE_SENDER};
use chat_protocol::v2::ServerV2;

use super::direct::{may_read, skip_frame};
use super::effects::Outbox;
use super::room::{MemberId, REPLAY_BUDGET, Room, RoomId};
use super::{Effects, Endpoint, Engine, HistoryJob};

/// Most stored messages replayed in answer to one register or ping; the client asks again.
pub const MAX_REPLAY: u64 = 256;

impl Engine {
    /// Confirms a version-2 registration at a proven address: the member list, then what
    /// came after `last_id` (or the latest `--join-history` messages), then `pong`.
    pub(super) fn welcome_v2(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        last_id: Option<u64>,
        to: Endpoint,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        unicast_v2(&mut fx.datagrams, to, &members_of(room));
        let after =
            last_id.unwrap_or_else(|| room.committed_id.saturating_sub(self.limits.join_history));
        let source = ReplaySource {
            history: self.history,
            retention: self.limits.retention,
        };
        catch_up(room, member_id, after, to, now, &source, fx);
    }

    /// Evicts the oldest cached messages across rooms while the caches exceed their share of
    /// the memory budget; replays of those come from the database instead.
    pub(super) fn evict_cached(&mut self) {
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
}

/// Where replayed messages come from, and how far back they may reach.
pub(super) struct ReplaySource {
    /// Whether a history store serves messages older than the in-memory cache.
    pub(super) history: bool,
    /// Messages kept per room: nothing older is replayed.
    pub(super) retention: u64,
}

/// Brings a version-2 member up to date after a register or ping: the stored messages after
/// `after`, then a `pong` with the newest stored id.
pub(super) fn catch_up(
    room: &mut Room,
    member_id: MemberId,
    after: u64,
    to: Endpoint,
    now: Instant,
    source: &ReplaySource,
    fx: &mut Effects,
) {
    replay(room, member_id, after, to, now, source, fx);
    unicast_v2(
        &mut fx.datagrams,
        to,
        &ServerV2::Pong {
            id: room.committed_id,
        },
    );
}

/// Queues stored messages after `after` for one member: from the in-memory cache when it
/// reaches back that far, otherwise as a job for the history store. At most
/// [`MAX_REPLAY`] at a time, and no more than the member's replay budget allows; the client
/// asks again with its new `last_id`.
fn replay(
    room: &mut Room,
    member_id: MemberId,
    after: u64,
    to: Endpoint,
    now: Instant,
    source: &ReplaySource,
    fx: &mut Effects,
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
    let reader_uid = member.uid;
    let allowed = member.replay_budget.take_up_to(wanted, &REPLAY_BUDGET, now);
    if allowed == 0 {
        return;
    }
    let upto = after + allowed;
    fx.replayed += allowed;
    let room = &*room;
    let cached_from = room.recent.front().map_or(u64::MAX, |first| first.id);
    if cached_from <= after + 1 {
        for cached in room.recent.iter().filter(|m| m.id > after && m.id <= upto) {
            fx.datagrams.unicast(to, |buf| {
                if may_read(cached.audience, reader_uid) {
                    buf.extend_from_slice(&cached.v2_frame);
                } else {
                    skip_frame(cached.id, buf);
                }
                Ok(())
            });
        }
    } else if source.history {
        fx.history.push(HistoryJob::Replay {
            room_uid: room.uid,
            after,
            upto,
            to,
            reader_uid,
        });
    }
}

/// The member list as one datagram: as many names (with their away texts) as fit in
/// [`MAX_SERVER_MESSAGE`], and how many more there are.
pub(super) fn members_of(room: &Room) -> ServerV2 {
    let host = room.host_name().to_owned();
    let total = room.members.len();
    // The frame without names, with the longest possible count and an away map's braces.
    let bare = ServerV2::Members {
        names: Vec::new(),
        host: host.clone(),
        more: u64::MAX,
        topic: room.topic.clone(),
        away: if room.members.values().any(|m| m.away.is_some()) {
            BTreeMap::from([(String::new(), String::new())])
        } else {
            BTreeMap::new()
        },
    };
    let json_len = |text: &str| serde_json::to_vec(text).map_or(MAX_DATAGRAM, |json| json.len());
    let mut used = 1 + serde_json::to_vec(&bare).map_or(MAX_DATAGRAM, |json| json.len());
    let mut names = Vec::new();
    let mut away = BTreeMap::new();
    for member in room.members.values() {
        // The quoted name and a comma; for one away, its entry too.
        let mut cost = json_len(&member.username) + 1;
        if let Some(text) = &member.away {
            cost += json_len(&member.username) + json_len(text) + 2;
        }
        if used + cost > MAX_SERVER_MESSAGE {
            break;
        }
        used += cost;
        names.push(member.username.clone());
        if let Some(text) = &member.away {
            away.insert(member.username.clone(), text.clone());
        }
    }
    ServerV2::Members {
        more: (total - names.len()) as u64,
        names,
        host,
        topic: room.topic.clone(),
        away,
    }
}

pub(super) fn unicast_v2(out: &mut Outbox, to: Endpoint, message: &ServerV2) {
    out.unicast(to, |buf| {
        ucrp::encode_v2(message, buf);
        Ok(())
    });
}

/// What a datagram for a room the server does not have is answered with.
pub const NO_ROOM_TEXT: &str = "this room no longer exists";

/// Sends a server notice to the room: `* text` to version-1 members, `v2` to version-2 ones.
pub(super) fn notify(
    room: &Room,
    skip: Option<MemberId>,
    text: &str,
    v2: &ServerV2,
    out: &mut Outbox,
) {
    out.fanout(&room.v1_recipients, skip, |buf| {
        ucrp::encode_v1_chat(NOTICE_SENDER, text, buf)
    });
    out.fanout(&room.v2_recipients, skip, |buf| {
        ucrp::encode_v2(v2, buf);
        Ok(())
    });
}

/// Answers a version-1 registration with the notice that confirms it, within `budget` bytes
/// (the reference protocol has no acknowledgement, and a version-1 address never proves it
/// receives): as many names as fit, then how many more there are.
pub(super) fn welcome_v1(
    room: &Room,
    member_id: MemberId,
    to: Endpoint,
    budget: usize,
    out: &mut Outbox,
) {
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
