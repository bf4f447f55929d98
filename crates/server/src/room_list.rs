//! Operation 4's reply: one page of the room list, in name order, cut where the reply frame
//! is full, with the cursor of the next page when rooms remain (see `chat_protocol::listing`).

use chat_protocol::limits::MAX_TCRP_PAYLOAD;
use chat_protocol::listing::{ListRequest, RoomPage};
use chat_protocol::tcrp::{RoomList, to_json_payload};

/// Room for `,"next":"…"` with a 64-byte name whose every byte JSON escaped as `\"`.
const NEXT_ROOM: usize = 2 * 64 + 16;

/// The page of `list` (sorted by name) that `request` asks for, as a reply payload. The
/// contract caps a payload at 16 KiB (a couple of hundred rooms): a longer page stops at the
/// last room that fits and names it as `next`.
pub fn page(list: RoomList, request: &ListRequest) -> Vec<u8> {
    let mut rooms = list.rooms;
    if let Some(after) = &request.after {
        let first = rooms.partition_point(|room| room.name.as_str() <= after.as_str());
        rooms.drain(..first);
    }
    let wanted = request.limit.map_or(rooms.len(), |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX)
    });
    let whole = RoomPage { rooms, next: None };
    if whole.rooms.len() <= wanted {
        let payload = to_json_payload(&whole);
        if payload.len() <= MAX_TCRP_PAYLOAD {
            return payload;
        }
    }
    // `{"rooms":[` entries joined by `,` `]}` and the cursor; a comma per entry errs short.
    let mut used = br#"{"rooms":[]}"#.len() + NEXT_ROOM;
    let fits = whole
        .rooms
        .iter()
        .take(wanted)
        .take_while(|room| {
            used += to_json_payload(room).len() + 1;
            used <= MAX_TCRP_PAYLOAD
        })
        .count();
    let mut rooms = whole.rooms;
    let more = rooms.len() > fits;
    rooms.truncate(fits);
    let next = more
        .then(|| rooms.last().map(|room| room.name.clone()))
        .flatten();
    tracing::debug!(listed = fits, more, "room list page");
    to_json_payload(&RoomPage { rooms, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::tcrp::RoomSummary;

    fn rooms(count: usize, name_len: usize) -> Vec<RoomSummary> {
        (0..count)
            .map(|i| RoomSummary {
                name: format!("{i:05}{}", "r".repeat(name_len - 5)),
                members: 256,
                private: false,
                topic: None,
            })
            .collect()
    }

    fn read(payload: &[u8]) -> RoomPage {
        assert!(payload.len() <= MAX_TCRP_PAYLOAD, "{}", payload.len());
        serde_json::from_slice(payload).unwrap()
    }

    #[test]
    fn a_short_list_is_one_page_as_before() {
        let list = RoomList { rooms: rooms(3, 8) };
        assert_eq!(
            page(list.clone(), &ListRequest::default()),
            to_json_payload(&list)
        );
    }

    #[test]
    fn paging_through_a_long_list_reaches_every_room() {
        let all = rooms(10_000, 64);
        let mut seen = Vec::new();
        let mut request = ListRequest::default();
        for _ in 0..200 {
            let got = read(&page(RoomList { rooms: all.clone() }, &request));
            assert!(!got.rooms.is_empty());
            seen.extend(got.rooms);
            match got.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn a_limit_makes_smaller_pages() {
        let all = rooms(10, 8);
        let request = ListRequest {
            after: Some(all[2].name.clone()),
            limit: Some(4),
        };
        let got = read(&page(RoomList { rooms: all.clone() }, &request));
        assert_eq!(got.rooms, all[3..7]);
        assert_eq!(got.next.as_deref(), Some(all[6].name.as_str()));
        let last = ListRequest {
            after: Some(all[6].name.clone()),
            limit: Some(4),
        };
        let got = read(&page(RoomList { rooms: all.clone() }, &last));
        assert_eq!(got.rooms, all[7..]);
        assert_eq!(got.next, None);
    }
}
