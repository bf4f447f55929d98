//! Paging through the room list (operation 4). A list request's payload may ask for the page
//! after a room name, `{"after":"lobby","limit":50}`; the reply then says where the next page
//! starts, `{"rooms":[...],"next":"pub"}`. Anything else in the payload (nothing at all, as the
//! reference client and ours send, or a username) asks for the first page, and a list that
//! fits in one reply is answered exactly as before, without `next`. So however many rooms one
//! address creates, every room can be reached.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tcrp::RoomSummary;

/// Most rooms one page may ask for; a page also stops where the reply frame is full.
pub const MAX_LIST_PAGE: u64 = 1000;

/// A list request that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ListRequestError {
    /// The payload is not valid UTF-8.
    #[error("the payload is not valid UTF-8")]
    NotUtf8,
    /// The payload is a JSON object whose `after` or `limit` is not what it should be.
    #[error(
        "a list request's \"after\" must be a room name (a string) and \"limit\" a number from 1 to {MAX_LIST_PAGE}"
    )]
    BadField,
}

/// Which page of the room list is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only rooms whose name sorts after this one (byte order); None starts at the first.
    pub after: Option<String>,
    /// Most rooms wanted; None means as many as fit in one reply.
    pub limit: Option<u64>,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

impl ListRequest {
    /// Reads a list request's payload: a JSON object may carry `after` and `limit` (other
    /// keys are ignored); any other payload asks for the first page.
    pub fn parse(payload: &[u8]) -> Result<Self, ListRequestError> {
        let text = std::str::from_utf8(payload).map_err(|_| ListRequestError::NotUtf8)?;
        if !text.trim_start().starts_with('{') {
            return Ok(Self::default());
        }
        let fields: Fields = serde_json::from_str(text).map_err(|_| ListRequestError::BadField)?;
        if fields
            .limit
            .is_some_and(|limit| limit == 0 || limit > MAX_LIST_PAGE)
        {
            return Err(ListRequestError::BadField);
        }
        Ok(Self {
            after: fields.after,
            limit: fields.limit,
        })
    }
}

/// The State 2 reply to operation 4: a page of rooms in name order, and where the next page
/// starts when there is one (pass it back as `after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPage {
    /// The rooms, in name order.
    pub rooms: Vec<RoomSummary>,
    /// The last room of this page, when more rooms follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_but_an_object_asks_for_the_first_page() {
        for payload in [&b""[..], b"\"alice\"", b"alice", b"  "] {
            assert_eq!(ListRequest::parse(payload), Ok(ListRequest::default()));
        }
    }

    #[test]
    fn an_object_may_ask_for_a_later_page() {
        assert_eq!(
            ListRequest::parse(br#"{"after":"lobby","limit":5,"username":"x"}"#),
            Ok(ListRequest {
                after: Some("lobby".into()),
                limit: Some(5),
            })
        );
        assert_eq!(ListRequest::parse(b"{}"), Ok(ListRequest::default()));
    }

    #[test]
    fn bad_fields_are_refused() {
        for payload in [
            &br#"{"after":5}"#[..],
            br#"{"limit":0}"#,
            br#"{"limit":1001}"#,
            br#"{"limit":-1}"#,
            br#"{"after":"x""#,
        ] {
            assert_eq!(
                ListRequest::parse(payload),
                Err(ListRequestError::BadField),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(ListRequest::parse(b"\xff"), Err(ListRequestError::NotUtf8));
    }

    #[test]
    fn a_page_without_a_next_is_the_plain_list() {
        let page = RoomPage {
            rooms: vec![],
            next: None,
        };
        assert_eq!(serde_json::to_string(&page).unwrap(), r#"{"rooms":[]}"#);
    }
}
