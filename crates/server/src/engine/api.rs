//! Inputs that carry a token instead of coming from a bound endpoint: the HTTP API's requests.
//!
//! A datagram proves who sent it by its token and its registered address; an HTTP request
//! carries only the token (over a TCP connection, which cannot be spoofed), so these inputs
//! check the token and the room, count as a sign of life, and otherwise go through the same
//! rules as the datagrams: the same chat pipeline (flood control, `seq` deduplication, ids,
//! storage), the same leave, the same history pages.

use chat_protocol::limits::MAX_HISTORY_PAGE;
use chat_protocol::v2::LeaveReason;

use super::endpoint::SealedPath;
use super::room::{MemberId, RoomId, Said};
use super::seq_window::SeqStatus;
use super::{DropReason, Effects, Endpoint, Engine, HistoryJob, Now};
use crate::token::Token;

/// What an HTTP request names itself by: its token and the room in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The token, as sent (64 hex characters when well-formed).
    pub token: &'a str,
    /// The room the request names.
    pub room: &'a str,
}

/// The members of a room as the HTTP API lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    /// Names in join order (cut to what fits one datagram, as `who` is).
    pub names: Vec<String>,
    /// The host's name.
    pub host: String,
}

/// How many members receive where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounts {
    /// Plain UDP (versions 1 and 2).
    pub udp: usize,
    /// A WebSocket.
    pub web: usize,
    /// Sealed datagrams over UDP (version 3).
    pub sealed_udp: usize,
    /// Sealed datagrams over the TLS tunnel.
    pub tunnel: usize,
    /// Not registered anywhere, or HTTP only.
    pub unbound: usize,
}

impl Engine {
    /// The room and member a token names, if it is live and belongs to `room_name`; marks
    /// the member as seen, so an HTTP-only member does not time out while it uses the API.
    pub fn authorize(
        &mut self,
        who: Credentials<'_>,
        clock: Now,
    ) -> Result<(RoomId, MemberId), DropReason> {
        let (room_id, member_id) = self.member_of(who.token.as_bytes(), who.room)?;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        let member = room
            .members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        member.last_seen = clock.instant;
        Ok((room_id, member_id))
    }

    /// Accepts a chat message sent over HTTP, numbered `seq` in the member's own sequence
    /// (shared with its datagrams). Answers, if any, go to the member's bound endpoint; the
    /// caller reads the outcome with [`Engine::seq_status`].
    pub fn post(
        &mut self,
        who: Credentials<'_>,
        seq: u64,
        text: &str,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        self.accept_chat(room_id, member_id, Some(seq), text, Said::Line, clock, fx)
    }

    /// What became of the member's message `seq`: stored with an id, refused, or still on
    /// its way to the history database. `None` when the token is no longer live.
    pub fn seq_status(&self, token_hex: &str, seq: u64) -> Option<SeqStatus> {
        let token = Token::from_hex(token_hex.as_bytes())?;
        let &(room_id, member_id) = self.tokens.get(&token)?;
        let member = self.rooms.get(&room_id)?.members.get(&member_id)?;
        Some(member.seqs.status(seq))
    }

    /// Who is in the member's room.
    pub fn member_list(
        &mut self,
        who: Credentials<'_>,
        clock: Now,
    ) -> Result<MemberList, DropReason> {
        let (room_id, _) = self.authorize(who, clock)?;
        let room = self.rooms.get(&room_id).ok_or(DropReason::UnknownToken)?;
        Ok(MemberList {
            names: room.usernames(),
            host: room.host_name().to_owned(),
        })
    }

    /// Asks for one page of the room's history, answered to `to` as a `history` event (the
    /// same page a `history` datagram gets, counted by flood control like one).
    pub fn history_page(
        &mut self,
        who: Credentials<'_>,
        before: Option<u64>,
        limit: usize,
        to: Endpoint,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        let flood = self.flood;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(DropReason::UnknownToken)?;
        let member = room
            .members
            .get_mut(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        if !member.flood.allow(&flood, clock.instant) {
            return Err(DropReason::RateLimited);
        }
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        if self.history {
            fx.history.push(HistoryJob::Page {
                room_uid: room.uid,
                before,
                limit,
                to,
                reader_uid: member.uid,
            });
        } else {
            super::replay::unicast_v2(
                &mut fx.datagrams,
                to,
                &chat_protocol::v2::ServerV2::History {
                    messages: Vec::new(),
                    more: false,
                },
            );
        }
        Ok(())
    }

    /// The member leaves, as a `leave` datagram would make it; a host's leave closes the room.
    pub fn leave(
        &mut self,
        who: Credentials<'_>,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        self.remove_member(room_id, member_id, LeaveReason::Leave, clock.instant, fx);
        Ok(())
    }

    /// Whether the history database has fallen so far behind (a failing or full disk) that
    /// chat will soon be refused: half of what may wait is waiting.
    pub fn history_backlog_full(&self) -> bool {
        self.unstored > super::MAX_UNSTORED / 2
    }

    /// Members by where they receive, for the metrics. Costs one pass over the members.
    pub fn members_by_transport(&self) -> TransportCounts {
        let mut counts = TransportCounts::default();
        for member in self.rooms.values().flat_map(|room| room.members.values()) {
            match member.addr {
                Some(Endpoint::Udp(_)) => counts.udp += 1,
                Some(Endpoint::Web { .. }) => counts.web += 1,
                Some(Endpoint::Sealed {
                    path: SealedPath::Udp(_),
                    ..
                }) => counts.sealed_udp += 1,
                Some(Endpoint::Sealed {
                    path: SealedPath::Tunnel { .. },
                    ..
                }) => counts.tunnel += 1,
                None => counts.unbound += 1,
            }
        }
        counts
    }

    /// The room's stable id and the member's name, for a request that acts in its name.
    pub fn identify(
        &mut self,
        who: Credentials<'_>,
        clock: Now,
    ) -> Result<(u64, String), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        let room = self.rooms.get(&room_id).ok_or(DropReason::UnknownToken)?;
        let member = room
            .members
            .get(&member_id)
            .ok_or(DropReason::UnknownToken)?;
        Ok((room.uid, member.username.clone()))
    }

    /// Says `text` in the room in the member's name without a `seq` (as version-1 chat is:
    /// stored, relayed to everyone else, never acked), for what the server says on a
    /// member's behalf, such as a shared file.
    pub fn announce(
        &mut self,
        who: Credentials<'_>,
        text: &str,
        clock: Now,
        fx: &mut Effects,
    ) -> Result<(), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        self.accept_chat(room_id, member_id, None, text, Said::Line, clock, fx)
    }

    /// Whether flood control would let the member say something now (without counting it),
    /// so that work done on its behalf first, such as storing a shared file, is not wasted
    /// on a line that would then be refused.
    pub fn may_say(&mut self, who: Credentials<'_>, clock: Now) -> Result<(), DropReason> {
        let (room_id, member_id) = self.authorize(who, clock)?;
        let flood = self.flood;
        let member = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
            .ok_or(DropReason::UnknownToken)?;
        if member.flood.has_token(&flood, clock.instant) {
            Ok(())
        } else {
            Err(DropReason::RateLimited)
        }
    }
}
