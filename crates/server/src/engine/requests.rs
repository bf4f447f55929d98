//! A member's requests beside chat that change or read the room: the host's `kick`, `ban`
//! and `host`, `away` and `back`, `search` and `topic`. The caller has checked the address
//! and flood control.

use std::time::Instant;

use chat_protocol::limits::MAX_HISTORY_PAGE;
use chat_protocol::v2::ClientV2;

use super::dispatch::DEFAULT_HISTORY_PAGE;
use super::moderation::Moderation;
use super::room::{MemberId, RoomId};
use super::search::Search;
use super::{Effects, Endpoint, Engine};

impl Engine {
    /// Carries out one request; anything else is ignored (the caller routes only these).
    pub(super) fn request(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        request: ClientV2,
        src: Endpoint,
        now: Instant,
        fx: &mut Effects,
    ) {
        match request {
            ClientV2::Kick { name } => {
                self.moderate(room_id, member_id, Moderation::Kick, &name, src, now, fx);
            }
            ClientV2::Ban { name } => {
                self.moderate(room_id, member_id, Moderation::Ban, &name, src, now, fx);
            }
            ClientV2::Host { name } => {
                self.moderate(room_id, member_id, Moderation::Host, &name, src, now, fx);
            }
            ClientV2::Away { text } => self.set_away(room_id, member_id, Some(&text), src, fx),
            ClientV2::Back => self.set_away(room_id, member_id, None, src, fx),
            ClientV2::Search {
                words,
                before,
                limit,
            } => {
                let limit = limit
                    .map_or(DEFAULT_HISTORY_PAGE, |limit| limit as usize)
                    .clamp(1, MAX_HISTORY_PAGE);
                let search = Search {
                    words,
                    before,
                    limit,
                };
                self.search(room_id, member_id, search, src, fx);
            }
            ClientV2::Topic { text } => self.set_topic(room_id, member_id, &text, src, fx),
            ClientV2::Register { .. }
            | ClientV2::Msg { .. }
            | ClientV2::Ping { .. }
            | ClientV2::Typing
            | ClientV2::History { .. }
            | ClientV2::Who
            | ClientV2::Leave
            | ClientV2::Echo { .. }
            | ClientV2::Me { .. }
            | ClientV2::Dm { .. } => {}
        }
    }
}
