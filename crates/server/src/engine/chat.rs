//! The chat pipeline: ordering and deduplication (through each member's [`SeqWindow`]), flood
//! control, message ids and their reservation in the durable state, the jobs that store
//! chat, and what a commit releases (acks, relays, the replay cache).
//!
//! [`SeqWindow`]: super::seq_window::SeqWindow

use std::sync::Arc;

use chat_protocol::ucrp::{self, NOTICE_SENDER};
use chat_protocol::v2::{ChatMessage, ServerV2, V2ErrorCode};

use super::direct;
use super::durable::StateChange;
use super::memory;
use super::refusals::{refusal_text, refuse_v2, warn_rate_limited};
use super::replay::unicast_v2;
use super::room::{CachedMessage, MemberId, Room, RoomId, Said};
use super::seq_window::SeqStatus;
use super::{
    DropReason, Effects, Engine, HistoryJob, ID_RESERVATION, MAX_UNSTORED, Now, PendingMessage,
    StoredMessage,
};

impl Engine {
    /// Accepts a chat message. Version-2 messages go through the member's [`SeqWindow`]
    /// first: a retransmission is answered again, and an early arrival waits for the messages
    /// before it, so a person's lines keep the order they were typed in.
    ///
    /// [`SeqWindow`]: super::seq_window::SeqWindow
    #[expect(
        clippy::too_many_arguments,
        reason = "the message, its sender and kind, the clock and the effects it causes"
    )]
    pub(super) fn accept_chat(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        seq: Option<u64>,
        text: &str,
        said: Said,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let Some(seq) = seq else {
            return self.accept_one(room_id, member_id, None, text, &said, clock, fx);
        };
        let now = clock.instant;
        let member = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
            .ok_or(DropReason::UnknownToken)?;
        // Where answers go: none for a member posting over HTTP without a binding, who reads
        // the outcome from `seq_status`.
        let addr = member.addr;
        match member.seqs.status(seq) {
            SeqStatus::New => {}
            SeqStatus::Stored(id) => {
                if let Some(addr) = addr {
                    unicast_v2(&mut fx.datagrams, addr, &ServerV2::Ack { seq, id });
                }
                return Ok(());
            }
            SeqStatus::Refused(code) => {
                refuse_v2(&mut fx.datagrams, addr, code, seq, refusal_text(code));
                return Ok(());
            }
            SeqStatus::Pending | SeqStatus::Forgotten => {
                // A retransmission of a held message: its gap may have expired meanwhile.
                let held_before = member.seqs.held_bytes();
                let ready = member.seqs.release_expired(now);
                self.memory
                    .release_held(held_before, member.seqs.held_bytes());
                self.accept_ready(room_id, member_id, ready, clock, fx);
                return Ok(());
            }
        }
        let held_before = member.seqs.held_bytes();
        let ready = member
            .seqs
            .admit(seq, text, now, self.memory.hold_allowance());
        self.memory
            .release_held(held_before, member.seqs.held_bytes());
        let mut said = Some(said);
        if !ready.iter().any(|(ready_seq, _)| *ready_seq == seq)
            && let Some(kind) = said.take().filter(|kind| *kind != Said::Line)
            && member.seqs.status(seq) == SeqStatus::Pending
        {
            // Held for an earlier seq: what kind it is waits beside it.
            if member.held_kinds.len() >= 2 * super::seq_window::HOLD_LIMIT {
                member.held_kinds.pop_first();
            }
            member.held_kinds.insert(seq, kind);
        }
        let mut result = Ok(());
        for (ready_seq, ready_text) in ready {
            let kind = if ready_seq == seq {
                said.take().unwrap_or(Said::Line)
            } else {
                self.held_kind(room_id, member_id, ready_seq)
            };
            let accepted = self.accept_one(
                room_id,
                member_id,
                Some(ready_seq),
                &ready_text,
                &kind,
                clock,
                fx,
            );
            if ready_seq == seq {
                result = accepted;
            }
        }
        result
    }

    /// Accepts one chat message in order: applies flood control, assigns the next room id
    /// and hands it to the history thread. Version-1 text goes to version-1 members at once;
    /// everything else (the ack, the version-2 relay) waits for the commit, so an id a member
    /// has seen is never handed out again after a crash.
    #[expect(
        clippy::too_many_arguments,
        reason = "the message, its sender and kind, the clock and the effects it causes"
    )]
    pub(super) fn accept_one(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        seq: Option<u64>,
        text: &str,
        said: &Said,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let now = clock.instant;
        let out = &mut fx.datagrams;
        let flood = self.flood;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        let recipient = match said {
            Said::Direct(name) => direct::recipient(&room.members, member_id, name),
            Said::Line | Said::Action => None,
        };
        let Room {
            members,
            v1_recipients,
            ..
        } = room;
        let member = members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        let addr = member.addr;
        if let Some(seq) = seq
            && text.is_empty()
        {
            member.seqs.refused(seq, V2ErrorCode::Invalid);
            refuse_v2(
                out,
                addr,
                V2ErrorCode::Invalid,
                seq,
                refusal_text(V2ErrorCode::Invalid),
            );
            return Err(DropReason::Malformed);
        }
        if let (Some(seq), Said::Direct(_), None) = (seq, said, &recipient) {
            let code = V2ErrorCode::NoSuchMember;
            member.seqs.refused(seq, code);
            refuse_v2(out, addr, code, seq, refusal_text(code));
            return Err(DropReason::Malformed);
        }
        if !member.flood.allow(&flood, now) {
            match seq {
                Some(seq) => {
                    member.seqs.refused(seq, V2ErrorCode::RateLimited);
                    let text = refusal_text(V2ErrorCode::RateLimited);
                    refuse_v2(out, addr, V2ErrorCode::RateLimited, seq, text);
                }
                None => warn_rate_limited(member, now, out),
            }
            return Err(DropReason::RateLimited);
        }
        let ts = clock.unix_ms;
        let mut whole = msg_event(room.last_id + 1, &member.username, text, ts);
        if *said != Said::Line {
            whole.0.me = *said == Said::Action;
            whole.0.to = recipient.as_ref().map(|r| r.username.clone());
            whole.1.clear();
            ucrp::encode_v2_msg(&whole.0, &mut whole.1);
        }
        if seq.is_none() {
            // Version 1: relay now, on the hot path, as the reference server does.
            out.fanout(v1_recipients, Some(member_id), |buf| {
                ucrp::encode_v1_chat(&whole.0.from, &whole.0.text, buf)
            });
        }
        let events = if whole.1.len() <= ucrp::MAX_STORED_MSG_FRAME {
            vec![whole]
        } else if let Some(seq) = seq {
            member.seqs.refused(seq, V2ErrorCode::TooLarge);
            let text = refusal_text(V2ErrorCode::TooLarge);
            refuse_v2(out, addr, V2ErrorCode::TooLarge, seq, text);
            return Err(DropReason::Malformed);
        } else {
            // Version-1 text that fits the version-1 frame but not a version-2 one (JSON
            // escaping grows it): stored and shown to version-2 members in parts, each with
            // its own id, so that everyone reads all of it.
            let frame_without_text = whole.1.len() - ucrp::json_escaped_len(text);
            // Room for the ids of later parts, which may have more digits.
            let budget = ucrp::MAX_STORED_MSG_FRAME.saturating_sub(frame_without_text + 20);
            ucrp::split_escaped(text, budget.max(1))
                .into_iter()
                .zip(room.last_id + 1..)
                .map(|(part, id)| msg_event(id, &member.username, part, ts))
                .collect()
        };
        let backlog_bytes: usize = events.iter().map(|(_, frame)| backlog_cost(frame)).sum();
        if self.unstored + events.len() > MAX_UNSTORED || !self.memory.backlog_fits(backlog_bytes) {
            // The history cannot keep up (a failing disk): take no more until it does. A
            // version-2 sender retransmits; version-1 text was relayed above, unstored, and
            // no id was handed out, so nobody waits on a gap.
            return Err(DropReason::HistoryBacklog);
        }
        if let Some(seq) = seq {
            member.seqs.accept(seq);
        }
        let awaited = seq.is_some() || room.v2_recipients.iter().any(|r| r.member != member_id);
        let mut pendings = Vec::with_capacity(events.len());
        for (message, v2_frame) in events {
            room.last_id = message.id;
            pendings.push(PendingMessage {
                room_id,
                sender: member_id,
                recipient: recipient.as_ref().map(|r| r.id),
                v1_relayed: seq.is_none(),
                awaited,
                v2_frame: v2_frame.into(),
                stored: StoredMessage {
                    room_uid: room.uid,
                    member_uid: member.uid,
                    seq,
                    recipient_uid: recipient.as_ref().map(|r| r.uid),
                    message,
                },
            });
        }
        let reservation = (room.last_id + ID_RESERVATION / 2 > room.ids_reserved).then(|| {
            room.ids_reserved = room.last_id + ID_RESERVATION;
            StateChange::IdsReserved {
                room: room.name.clone(),
                upto: room.ids_reserved,
            }
        });
        if self.history {
            for pending in pendings {
                // In id order: the I/O layer hands these over before it lets go of the lock.
                self.unstored += 1;
                self.memory.unstored += backlog_cost(&pending.v2_frame);
                fx.history.push(HistoryJob::Store(pending));
            }
        } else {
            self.committed(&pendings, fx);
        }
        if let Some(reservation) = reservation {
            // Not waited for: it is recorded ID_RESERVATION / 2 messages before it is needed.
            self.changed(reservation);
        }
        Ok(())
    }

    /// Called once messages are stored: acks to their senders, relay to the other members,
    /// and the replay cache.
    pub fn committed(&mut self, batch: &[PendingMessage], fx: &mut Effects) {
        let out = &mut fx.datagrams;
        if self.history {
            self.unstored = self.unstored.saturating_sub(batch.len());
            let cost: usize = batch.iter().map(|p| backlog_cost(&p.v2_frame)).sum();
            self.memory.unstored = self.memory.unstored.saturating_sub(cost);
        }
        for pending in batch {
            let Some(room) = self.rooms.get_mut(&pending.room_id) else {
                continue;
            };
            if room.uid != pending.stored.room_uid {
                continue;
            }
            let id = pending.stored.message.id;
            if self.cluster {
                // Scale-out: the relay, the cache and `committed_id` follow the room's channel
                // (`relay_shared`), in id order across nodes; here only the sender hears.
                ack_sender(room, pending, out);
                continue;
            }
            room.committed_id = room.committed_id.max(id);
            // A pair conversation that ended while this was being stored: its sender still
            // gets the ack, but a newcomer never sees it.
            let forgotten = id <= room.forgotten_upto;
            if !forgotten {
                let freed = room.cache(CachedMessage {
                    id,
                    v2_frame: Arc::clone(&pending.v2_frame),
                    audience: pending
                        .stored
                        .recipient_uid
                        .map(|to| (pending.stored.member_uid, to)),
                });
                self.memory.uncached(freed);
                self.memory
                    .cached_message(room.id, id, pending.v2_frame.len());
            }
            if let (Some(seq), Some(sender)) =
                (pending.stored.seq, room.members.get_mut(&pending.sender))
            {
                sender.seqs.stored(seq, id);
                if let Some(addr) = sender.addr {
                    if pending.recipient.is_some() {
                        // A direct message: its sender sees it as stored, with the
                        // recipient's name as the room spells it, before the ack.
                        out.unicast(addr, |buf| {
                            buf.extend_from_slice(&pending.v2_frame);
                            Ok(())
                        });
                    }
                    unicast_v2(out, addr, &ServerV2::Ack { seq, id });
                }
            }
            if forgotten && room.members.keys().any(|&m| m >= room.new_members_from) {
                continue;
            }
            if let Some(recipient) = pending.recipient {
                direct::relay(room, pending, recipient, out);
                continue;
            }
            let skip = Some(pending.sender);
            out.fanout(&room.v2_recipients, skip, |buf| {
                buf.extend_from_slice(&pending.v2_frame);
                Ok(())
            });
            if !pending.v1_relayed {
                let message = &pending.stored.message;
                out.fanout(&room.v1_recipients, skip, |buf| {
                    if message.me {
                        // Version 1 has no actions: a notice reads the same.
                        let action = format!("{} {}", message.from, message.text);
                        ucrp::encode_v1_chat(NOTICE_SENDER, &action, buf)
                    } else {
                        ucrp::encode_v1_chat(&message.from, &message.text, buf)
                    }
                });
            }
        }
        self.evict_cached();
    }
}

/// Acks a stored message to its sender (a direct message's sender sees it first, as stored).
fn ack_sender(room: &mut Room, pending: &PendingMessage, out: &mut super::Outbox) {
    let id = pending.stored.message.id;
    if let (Some(seq), Some(sender)) = (pending.stored.seq, room.members.get_mut(&pending.sender)) {
        sender.seqs.stored(seq, id);
        if let Some(addr) = sender.addr {
            if pending.recipient.is_some() {
                out.unicast(addr, |buf| {
                    buf.extend_from_slice(&pending.v2_frame);
                    Ok(())
                });
            }
            unicast_v2(out, addr, &ServerV2::Ack { seq, id });
        }
    }
}

/// What a message waiting for the history database costs the memory budget.
fn backlog_cost(v2_frame: &[u8]) -> usize {
    // The frame, the stored copy of its text and sender, and the bookkeeping around them.
    2 * v2_frame.len() + memory::PER_MESSAGE_OVERHEAD
}

/// A chat message and its version-2 `msg` event, encoded once for every recipient.
fn msg_event(id: u64, from: &str, text: &str, ts: u64) -> (ChatMessage, Vec<u8>) {
    let message = ChatMessage {
        id,
        from: from.to_owned(),
        text: text.to_owned(),
        ts,
        me: false,
        to: None,
    };
    let mut frame = Vec::with_capacity(text.len() + 96);
    ucrp::encode_v2_msg(&message, &mut frame);
    (message, frame)
}
