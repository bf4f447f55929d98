//! Datagram dispatch: a datagram from an endpoint is checked against its token, decoded into
//! an action and handed to the rule that takes it. Binding an address is here too: a
//! version-2 address is bound only once it echoes a challenge sent there, a version-1 one only
//! from the IP that made the handshake.

use std::time::Instant;

use chat_protocol::limits::MAX_HISTORY_PAGE;
use chat_protocol::names;
use chat_protocol::ucrp::{self, ClientMessage, Datagram, NOTICE_SENDER, ROOM_CLOSED, V2_MARKER};
use chat_protocol::v2::{ClientV2, LeaveReason, ServerV2, V2ErrorCode};

use super::durable::StateChange;
use super::effects::Outbox;
use super::replay::{
    NO_ROOM_TEXT, ReplaySource, catch_up, members_of, notify, unicast_v2, welcome_v1,
};
use super::room::{
    CHALLENGE_LIFETIME, Challenge, MAX_CHALLENGES, Member, MemberId, Room, RoomId, Said,
    WireVersion,
};
use super::{DropReason, Effects, Endpoint, Engine, HistoryJob, Now};
use crate::token::Token;

/// Default page size of a `history` request without `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 50;

impl Engine {
    /// Handles one datagram from `src`, queueing what must be done in `fx`.
    pub fn datagram(
        &mut self,
        datagram: &Datagram<'_>,
        src: Endpoint,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let (room_name, token_hex, message) = (datagram.room, datagram.token, datagram.message);
        let now = clock.instant;
        let (room_id, member_id) = self.member_of(token_hex, room_name)?;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        // A sealed member's token is good only inside its sealed datagrams (the I/O layer
        // found the token by the key id that opened them), never in plaintext.
        let sealed_as = room
            .members
            .get(&member_id)
            .and_then(|member| member.sealing.as_ref())
            .map(|sealing| sealing.key_id);
        if sealed_as != src.key_id() {
            return Err(DropReason::Plaintext);
        }
        // The whole datagram, for the budget of what an unproven address may be sent back.
        let received = 2 + room_name.len() + token_hex.len() + message.len();
        let message = ClientMessage::decode(message).map_err(|_| DropReason::Malformed)?;
        let flood = self.flood;
        match message {
            ClientMessage::Register => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                // Version 1 cannot answer a challenge: it may bind only from the IP that
                // made the handshake (or, restored from a state file, the IP it is bound to).
                let allowed = member.home_ip.or(member.addr.map(|addr| addr.ip()));
                if member.addr != Some(src)
                    && allowed.is_some_and(|ip| ip.to_canonical() != src.ip().to_canonical())
                {
                    return Err(DropReason::WrongAddress);
                }
                if !member.probes.allow(&flood, now) {
                    return Err(DropReason::RateLimited);
                }
                let budget = received.saturating_mul(self.limits.reply_budget);
                let moved = bind(
                    room,
                    member_id,
                    src,
                    WireVersion::V1,
                    self.cluster,
                    now,
                    &mut fx.datagrams,
                );
                welcome_v1(room, member_id, src, budget, &mut fx.datagrams);
                if let Some(moved) = moved {
                    self.changed(moved);
                }
                return Ok(());
            }
            ClientMessage::V2(ClientV2::Register { last_id }) => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                if !member.probes.allow(&flood, now) {
                    return Err(DropReason::RateLimited);
                }
                if member.addr != Some(src) && !src.is_connection() {
                    // Not bound here yet: all this address gets is a challenge, smaller than
                    // the register itself, until it echoes it from here. A connection needs
                    // none: it cannot be spoofed, and the token came over it.
                    let nonce = challenge(member, src, last_id, now)?;
                    unicast_v2(&mut fx.datagrams, src, &ServerV2::Challenge { nonce });
                    return Ok(());
                }
                return self.bind_v2(room_id, member_id, last_id, src, now, fx);
            }
            ClientMessage::V2(ClientV2::Echo { nonce }) => {
                let member = room
                    .members
                    .get_mut(&member_id)
                    .ok_or(DropReason::UnknownToken)?;
                member
                    .challenges
                    .retain(|c| now.saturating_duration_since(c.sent_at) < CHALLENGE_LIFETIME);
                let Some(position) = member
                    .challenges
                    .iter()
                    .position(|c| c.addr == src && c.nonce == nonce)
                else {
                    return Err(DropReason::WrongAddress);
                };
                let last_id = member.challenges.get(position).and_then(|c| c.last_id);
                member.challenges.clear();
                return self.bind_v2(room_id, member_id, last_id, src, now, fx);
            }
            _ => {}
        }
        let member = room
            .members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        if member.addr != Some(src) {
            return Err(DropReason::WrongAddress);
        }
        member.last_seen = now;
        match message {
            ClientMessage::Register
            | ClientMessage::V2(ClientV2::Register { .. } | ClientV2::Echo { .. }) => Ok(()),
            ClientMessage::Leave | ClientMessage::V2(ClientV2::Leave) => {
                self.remove_member(room_id, member_id, LeaveReason::Leave, now, fx);
                Ok(())
            }
            ClientMessage::Chat(text) => {
                self.accept_chat(room_id, member_id, None, text, Said::Line, clock, fx)
            }
            ClientMessage::V2(ClientV2::Msg { seq, text }) => {
                self.accept_chat(room_id, member_id, Some(seq), &text, Said::Line, clock, fx)
            }
            ClientMessage::V2(ClientV2::Me { seq, text }) => self.accept_chat(
                room_id,
                member_id,
                Some(seq),
                &text,
                Said::Action,
                clock,
                fx,
            ),
            ClientMessage::V2(ClientV2::Dm { seq, to, text }) => {
                let said = Said::Direct(to);
                self.accept_chat(room_id, member_id, Some(seq), &text, said, clock, fx)
            }
            // The host's commands, away, search and topic: requests that change or read
            // the room, each counted by flood control.
            ClientMessage::V2(
                request @ (ClientV2::Kick { .. }
                | ClientV2::Ban { .. }
                | ClientV2::Host { .. }
                | ClientV2::Away { .. }
                | ClientV2::Back
                | ClientV2::Search { .. }
                | ClientV2::Topic { .. }),
            ) => {
                if !member.flood.allow(&self.flood, now) {
                    return Err(DropReason::RateLimited);
                }
                self.request(room_id, member_id, request, src, now, fx);
                Ok(())
            }
            ClientMessage::V2(ClientV2::Ping { .. }) if !member.probes.allow(&flood, now) => {
                Err(DropReason::RateLimited)
            }
            ClientMessage::V2(ClientV2::Ping { last_id }) => {
                let after = last_id.unwrap_or(room.committed_id);
                let source = ReplaySource {
                    history: self.history,
                    retention: self.limits.retention,
                };
                catch_up(room, member_id, after, src, now, &source, fx);
                Ok(())
            }
            ClientMessage::V2(ClientV2::Typing) => {
                if !member.flood.allow(&self.flood, now) {
                    return Err(DropReason::RateLimited);
                }
                let typing = ServerV2::Typing {
                    name: member.username.clone(),
                };
                fx.datagrams
                    .fanout(&room.v2_recipients, Some(member_id), |buf| {
                        ucrp::encode_v2(&typing, buf);
                        Ok(())
                    });
                Ok(())
            }
            // `who` and `history` cost work (`history` a database read), so they count
            // against flood control like chat; only keepalives and leave never do.
            ClientMessage::V2(ClientV2::Who | ClientV2::History { .. })
                if !member.flood.allow(&self.flood, now) =>
            {
                Err(DropReason::RateLimited)
            }
            ClientMessage::V2(ClientV2::Who) => {
                unicast_v2(&mut fx.datagrams, src, &members_of(room));
                Ok(())
            }
            ClientMessage::V2(ClientV2::History { before, limit }) => {
                let limit = limit
                    .map_or(DEFAULT_HISTORY_PAGE, |limit| limit as usize)
                    .clamp(1, MAX_HISTORY_PAGE);
                if self.history {
                    fx.history.push(HistoryJob::Page {
                        room_uid: room.uid,
                        before,
                        limit,
                        to: src,
                        reader_uid: member.uid,
                    });
                } else {
                    unicast_v2(
                        &mut fx.datagrams,
                        src,
                        &ServerV2::History {
                            messages: Vec::new(),
                            more: false,
                        },
                    );
                }
                Ok(())
            }
        }
    }

    /// The room and member a token names, if it is live and belongs to `room_name`.
    pub(super) fn member_of(
        &self,
        token_hex: &[u8],
        room_name: &str,
    ) -> Result<(RoomId, MemberId), DropReason> {
        let token = Token::from_hex(token_hex).ok_or(DropReason::UnknownToken)?;
        let &(room_id, member_id) = self.tokens.get(&token).ok_or(DropReason::UnknownToken)?;
        let room = self.rooms.get(&room_id).ok_or(DropReason::UnknownToken)?;
        // The name as the member typed it may differ from the stored one in case or form;
        // the key is computed only then, off the common path.
        if room.name != room_name && names::room_key(&room.name) != names::room_key(room_name) {
            return Err(DropReason::WrongRoom);
        }
        Ok((room_id, member_id))
    }

    /// Binds a version-2 member at an address it has proven (already bound there, or an
    /// echoed challenge), welcomes it, and records the move if it moved.
    fn bind_v2(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        last_id: Option<u64>,
        src: Endpoint,
        now: Instant,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        let moved = bind(
            room,
            member_id,
            src,
            WireVersion::V2,
            self.cluster,
            now,
            &mut fx.datagrams,
        );
        self.welcome_v2(room_id, member_id, last_id, src, now, fx);
        if let Some(moved) = moved {
            self.changed(moved);
        }
        Ok(())
    }
}

/// Binds a member's address (first registration, re-registration or a proven move), tells
/// the room about a first registration and the old address about a move. Returns the change
/// to save when the binding changed.
fn bind(
    room: &mut Room,
    member_id: MemberId,
    src: Endpoint,
    version: WireVersion,
    clustered: bool,
    now: Instant,
    out: &mut Outbox,
) -> Option<StateChange> {
    let member = room.members.get_mut(&member_id)?;
    let old = member.addr.filter(|old| *old != src);
    let old_version = member.version;
    // A member failing over from another node was heard joining already.
    let first_time = member.addr.is_none() && !member.remote_registered;
    let moved = member.addr != Some(src) || member.version != version || member.remote;
    // What the state keeps changes when a UDP binding comes or goes. In scale-out the other
    // nodes also hear a first registration (their members hear `joined`, and later the
    // departure) and a member taken over from another node (or they would reap it with the
    // node it left), whatever the transport.
    let recorded = src.udp().is_some() || member.addr.and_then(|a| a.udp()).is_some();
    let announced = clustered && (first_time || member.remote);
    let record = moved && (recorded || announced);
    // Scale-out: a member that fails over to this node is served here from now on. What it
    // sent before went to another node, so its next seq starts the window here instead of
    // waiting out a gap that will never fill (Redis still answers a repeated seq).
    if member.remote {
        member.seqs.restored();
    }
    member.remote = false;
    member.addr = Some(src);
    member.version = version;
    member.last_seen = now;
    member.challenges.retain(|c| c.addr != src);
    let username = member.username.clone();
    // The state file keeps UDP bindings only; another transport's peers register again.
    let change = record.then(|| StateChange::MemberRegistered {
        room: room.name.clone(),
        uid: member.uid,
        addr: src.udp(),
        version,
    });
    if moved {
        room.rebuild_recipients();
    }
    if let Some(old) = old {
        // Whoever is at the old address learns that it no longer receives the room: if it
        // did not move itself, someone else holds its token.
        match old_version {
            WireVersion::V1 => out.unicast(old, |buf| {
                ucrp::encode_v1_chat(NOTICE_SENDER, MOVED_NOTICE, buf)
            }),
            WireVersion::V2 => unicast_v2(out, old, &ServerV2::Moved),
        }
    }
    if first_time {
        notify(
            room,
            Some(member_id),
            &format!("{username} joined"),
            &ServerV2::Joined {
                name: username.clone(),
            },
            out,
        );
    }
    change
}

/// What a version-1 address hears when its member registered from another address.
const MOVED_NOTICE: &str =
    "your name is now used from another address; this one no longer receives the room";

/// Sends (or sends again) a challenge to `src` for this member and returns its nonce. A
/// retransmitted register gets the same nonce, so an echo of either attempt works.
fn challenge(
    member: &mut Member,
    src: Endpoint,
    last_id: Option<u64>,
    now: Instant,
) -> Result<String, DropReason> {
    member
        .challenges
        .retain(|c| now.saturating_duration_since(c.sent_at) < CHALLENGE_LIFETIME);
    if let Some(pending) = member.challenges.iter_mut().find(|c| c.addr == src) {
        pending.last_id = last_id;
        return Ok(pending.nonce.clone());
    }
    // 128 random bits from the OS CSPRNG, as tokens are. Without randomness there is no
    // challenge to send, and the register is dropped like any unanswerable datagram.
    let nonce = Token::generate()
        .map_err(|_| DropReason::Malformed)?
        .to_hex()[..32]
        .to_owned();
    if member.challenges.len() >= MAX_CHALLENGES {
        member.challenges.pop_front();
    }
    member.challenges.push_back(Challenge {
        addr: src,
        nonce: nonce.clone(),
        last_id,
        sent_at: now,
    });
    Ok(nonce)
}

/// Tells the sender of a datagram whose token the server does not know that its room is gone,
/// in the version the datagram speaks: a version-2 `error` with code `no_room`, or the bare
/// `__ROOM_CLOSED__` of version 1 (the only word version 1 has for it). The answer is never
/// larger than the datagram, so a forged source address gains an attacker nothing; a
/// datagram too short for it gets none. `true` when an answer was queued.
pub fn answer_no_room(bytes: &[u8], src: Endpoint, out: &mut Outbox) -> bool {
    let Ok(datagram) = Datagram::decode(bytes) else {
        return false;
    };
    let mut reply = Vec::new();
    if datagram.message.first() == Some(&V2_MARKER) {
        ucrp::encode_v2(
            &ServerV2::Error {
                code: V2ErrorCode::NoRoom,
                seq: None,
                message: NO_ROOM_TEXT.to_owned(),
            },
            &mut reply,
        );
    } else {
        reply.extend_from_slice(ROOM_CLOSED);
    }
    if reply.len() > bytes.len() {
        return false;
    }
    out.unicast(src, |buf| {
        buf.extend_from_slice(&reply);
        Ok(())
    });
    true
}
