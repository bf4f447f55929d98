//! Messages a member's [`SeqWindow`] held back for an earlier `seq`: released in order once
//! the gap fills or expires, each with the kind it was sent as (line, action, direct).
//!
//! [`SeqWindow`]: super::seq_window::SeqWindow

use super::room::{MemberId, RoomId, Said};
use super::{Effects, Engine, Now};

impl Engine {
    /// Accepts messages a [`SeqWindow`] released, in order.
    ///
    /// [`SeqWindow`]: super::seq_window::SeqWindow
    pub(super) fn accept_ready(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        ready: Vec<(u64, String)>,
        clock: Now,
        fx: &mut Effects,
    ) {
        for (seq, text) in ready {
            let kind = self.held_kind(room_id, member_id, seq);
            // A refusal has already been sent to the member and counted there.
            let _ = self.accept_one(room_id, member_id, Some(seq), &text, &kind, clock, fx);
        }
    }

    /// The kind of a message that was held back for an earlier `seq`.
    pub(super) fn held_kind(&mut self, room_id: RoomId, member_id: MemberId, seq: u64) -> Said {
        self.rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
            .and_then(|member| member.held_kinds.remove(&seq))
            .unwrap_or(Said::Line)
    }

    /// Lets go of messages held behind a gap that has expired, for members who have nothing
    /// new to send that would notice it.
    pub(super) fn release_expired_gaps(&mut self, clock: Now, fx: &mut Effects) {
        let now = clock.instant;
        let holding: Vec<(RoomId, MemberId)> = self
            .rooms
            .values()
            .flat_map(|room| {
                room.members
                    .values()
                    .filter(|member| member.seqs.holds_any())
                    .map(move |member| (room.id, member.id))
            })
            .collect();
        for (room_id, member_id) in holding {
            let Some(member) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|room| room.members.get_mut(&member_id))
            else {
                continue;
            };
            let held_before = member.seqs.held_bytes();
            let ready = member.seqs.release_expired(now);
            self.memory
                .release_held(held_before, member.seqs.held_bytes());
            self.accept_ready(room_id, member_id, ready, clock, fx);
        }
    }
}
