//! Departures: a member leaving, timing out or being revoked, a host's departure closing its
//! room, and the clock tick that finds who went silent.

use std::time::{Duration, Instant};

use chat_protocol::names;
use chat_protocol::ucrp::{self, ROOM_CLOSED};
use chat_protocol::v2::{CloseReason, LeaveReason, ServerV2};

use super::durable::StateChange;
use super::replay::notify;
use super::room::{MemberId, RoomId, RoomKind, WireVersion};
use super::{Effects, Engine, HistoryJob, Now};
use crate::escape::quoted;

/// How much later than its period a tick may come before the server counts itself as
/// stalled rather than busy.
const STALL_GRACE: Duration = Duration::from_secs(2);

/// How many departures a pair room remembers, to keep `/next` from pairing someone straight
/// back with the partner they left.
const PAIR_MEMORY: usize = 8;

impl Engine {
    /// The clock tick: lets go of messages held behind an expired gap, and removes members
    /// that have been silent for longer than their idle timeout; a host's timeout closes its
    /// room. `period` is how often the caller ticks: a tick that comes much later than that
    /// means the whole server was stalled (stopped, swapped out, starved), and the members'
    /// keepalives from that time still wait unread in the socket buffer, so the stall does
    /// not count against anyone's idle time.
    pub fn tick(&mut self, clock: Now, period: Duration, fx: &mut Effects) {
        let now = clock.instant;
        if let Some(last) = self.last_tick.replace(now) {
            let late = now.saturating_duration_since(last).saturating_sub(period);
            if late > STALL_GRACE {
                self.forgive_stall(late, now);
                return;
            }
        }
        self.release_expired_gaps(clock, fx);
        let limits = self.limits;
        let expired: Vec<(RoomId, MemberId)> = self
            .rooms
            .values()
            .flat_map(|room| {
                room.members
                    .values()
                    .filter(|member| !member.remote)
                    .filter_map(move |member| {
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
            self.remove_member(room_id, member_id, LeaveReason::Timeout, now, fx);
        }
    }

    /// Moves every member's last sign of life forward by the length of a server stall, so
    /// that the stall is not taken for their silence. The relay reads what they sent meanwhile
    /// before the next tick.
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

    /// Removes a member; a host's departure closes the room.
    pub(super) fn remove_member(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        reason: LeaveReason,
        now: Instant,
        fx: &mut Effects,
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
                    LeaveReason::Leave | LeaveReason::Kicked | LeaveReason::Banned => {
                        CloseReason::HostLeft
                    }
                    LeaveReason::Timeout => CloseReason::HostTimeout,
                };
                self.close_room(room_id, close_reason, fx);
                return;
            };
            let handed_over = StateChange::HostChanged {
                room: room.name.clone(),
                uid: heir.uid,
            };
            room.host = heir.id;
            self.changed(handed_over);
            return self.remove_member(room_id, member_id, reason, now, fx);
        }
        let Some(member) = room.members.remove(&member_id) else {
            return;
        };
        self.memory.release_held(member.seqs.held_bytes(), 0);
        tracing::info!(room = %quoted(&room.name), user = %quoted(&member.username), ?reason, "member left");
        let left = StateChange::MemberLeft {
            room: room.name.clone(),
            uid: member.uid,
            reason: Some(reason),
        };
        self.tokens.remove(&member.token);
        room.rebuild_recipients();
        if room.kind == RoomKind::Pair {
            // Back in the queue, behind whoever was already waiting.
            room.waiting_since = self.next_id;
            self.next_id += 1;
            let (upto, freed) = room.end_conversation(self.next_id);
            self.memory.uncached(freed);
            if self.history {
                fx.history.push(HistoryJob::Forget {
                    room_uid: room.uid,
                    upto,
                });
            }
            room.left_lately
                .push_back((names::username_key(&member.username), now));
            if room.left_lately.len() > PAIR_MEMORY {
                room.left_lately.pop_front();
            }
        }
        if member.addr.is_some() || member.remote_registered {
            let text = match reason {
                LeaveReason::Leave => format!("{} left", member.username),
                LeaveReason::Timeout => format!("{} timed out", member.username),
                LeaveReason::Kicked => format!("{} was kicked out by the host", member.username),
                LeaveReason::Banned => format!("{} was banned by the host", member.username),
            };
            notify(
                room,
                None,
                &text,
                &ServerV2::Left {
                    name: member.username,
                    reason,
                },
                &mut fx.datagrams,
            );
        }
        self.changed(left);
    }

    /// Closes a room: every registered member except the host is told, then the room, its
    /// tokens and its history are gone.
    pub(super) fn close_room(&mut self, room_id: RoomId, reason: CloseReason, fx: &mut Effects) {
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
        fx.datagrams.fanout(&room.v1_recipients, skip, |buf| {
            buf.extend_from_slice(ROOM_CLOSED);
            Ok(())
        });
        fx.datagrams.fanout(&room.v2_recipients, skip, |buf| {
            ucrp::encode_v2(&ServerV2::RoomClosed { reason }, buf);
            Ok(())
        });
        if self.history {
            fx.history.push(HistoryJob::DeleteRoom(room.uid));
        }
        self.changed(StateChange::RoomClosed {
            room: room.name,
            uid: Some(room.uid),
        });
    }
}
