//! `search`: full-text search of the room's history, on the history thread (SQLite FTS5),
//! for what the member may read. Counted by flood control like `history`; the words are
//! bounded and must hold at least one word.

use chat_protocol::v2::{MAX_SEARCH, ServerV2, V2ErrorCode};

use super::replay::unicast_v2;
use super::room::{MemberId, RoomId};
use super::{Effects, Endpoint, Engine, HistoryJob};

/// One search request, checked for size by the caller's decoder only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// What to look for.
    pub words: String,
    /// Only messages with a smaller id.
    pub before: Option<u64>,
    /// At most this many (already clamped to a page).
    pub limit: usize,
}

impl Engine {
    /// Hands a search to the history store, or refuses it with an `error` to `src`.
    pub(super) fn search(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        search: Search,
        src: Endpoint,
        fx: &mut Effects,
    ) {
        let refusal = if search.words.len() > MAX_SEARCH {
            Some((V2ErrorCode::TooLarge, "a search is at most 200 bytes"))
        } else if search.words.split_whitespace().next().is_none() {
            Some((V2ErrorCode::Invalid, "a search needs at least one word"))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            let error = ServerV2::Error {
                code,
                seq: None,
                message: message.to_owned(),
            };
            return unicast_v2(&mut fx.datagrams, src, &error);
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(member) = room.members.get(&member_id) else {
            return;
        };
        if self.history {
            fx.history.push(HistoryJob::Search {
                room_uid: room.uid,
                words: search.words,
                before: search.before,
                limit: search.limit,
                to: src,
                reader_uid: member.uid,
            });
        } else {
            let found = ServerV2::Found {
                words: search.words,
                messages: Vec::new(),
                more: false,
            };
            unicast_v2(&mut fx.datagrams, src, &found);
        }
    }
}
