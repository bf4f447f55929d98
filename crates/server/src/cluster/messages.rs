//! Chat messages through Redis: the body each node publishes and reads back, the publish
//! step of a commit (id and channel in one script), and reads of a room's stream.

use chat_protocol::v2::ChatMessage;
use serde::{Deserialize, Serialize};

use super::scripts;
use super::{ClusterError, MAX_REDIS_VALUE};
use crate::engine::{SharedMessage, StoredMessage};

/// Longest text a message body may carry: a datagram's worth.
const MAX_TEXT: usize = chat_protocol::limits::MAX_DATAGRAM;
/// Longest sender or recipient name.
const MAX_NAME: usize = 64;

/// A message as the channel and the stream carry it; the id travels beside it, since Redis
/// assigns it in the same script.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// The node that took it.
    node: String,
    from: String,
    text: String,
    ts: u64,
    #[serde(default)]
    me: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    member_uid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipient_uid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default)]
    v1_relayed: bool,
}

/// The channel a room's messages are published on.
pub fn channel(room_uid: u64) -> String {
    format!("chat:room:{room_uid}")
}

fn stream(room_uid: u64) -> String {
    format!("chat:room:{room_uid}:stream")
}

/// Publishes a batch of messages, in order, in one round trip: each gets the room's next id
/// (or, for a retransmission Redis has seen, the id it already has). Returns `(id, dup)` per
/// message.
pub fn publish(
    con: &mut redis::Connection,
    node: &str,
    messages: &[(&StoredMessage, bool)],
    stream_length: u64,
) -> Result<Vec<(u64, bool)>, ClusterError> {
    let script = redis::Script::new(scripts::PUBLISH);
    let mut pipe = redis::pipe();
    for (stored, v1_relayed) in messages {
        let body = Body {
            node: node.to_owned(),
            from: stored.message.from.clone(),
            text: stored.message.text.clone(),
            ts: stored.message.ts,
            me: stored.message.me,
            to: stored.message.to.clone(),
            member_uid: stored.member_uid,
            recipient_uid: stored.recipient_uid,
            seq: stored.seq,
            v1_relayed: *v1_relayed,
        };
        let dedup = stored
            .seq
            .map(|seq| format!("chat:seq:{}:{seq}", stored.member_uid))
            .unwrap_or_default();
        pipe.invoke_script(
            script
                .arg(stored.room_uid)
                .arg(dedup)
                .arg(stream_length.max(1))
                .arg(serde_json::to_string(&body)?),
        );
    }
    // EVALSHA; a Redis that does not know the script yet (new, or restarted) is given it
    // once, and the batch goes again (nothing in a refused pipeline ran).
    let results: Vec<(u64, u8)> = match pipe.query(con) {
        Ok(results) => results,
        Err(error) if error.to_string().contains("NoScript") => {
            script.load(con)?;
            pipe.query(con)?
        }
        Err(error) => return Err(error.into()),
    };
    if results.len() != messages.len() {
        return Err(ClusterError::Malformed("publish answered the wrong count"));
    }
    Ok(results
        .into_iter()
        .map(|(id, dup)| (id, dup != 0))
        .collect())
}

/// Parses a message from the channel (`"<id> <body>"`) or the stream.
pub fn parse(
    room_uid: u64,
    id: u64,
    body: &[u8],
    this_node: &str,
) -> Result<SharedMessage, ClusterError> {
    if body.len() > MAX_REDIS_VALUE {
        return Err(ClusterError::Malformed("message body too long"));
    }
    let body: Body = serde_json::from_slice(body)?;
    if body.text.len() > MAX_TEXT
        || body.from.len() > MAX_NAME
        || body.to.as_ref().is_some_and(|to| to.len() > MAX_NAME)
        || id == 0
    {
        return Err(ClusterError::Malformed("message out of bounds"));
    }
    Ok(SharedMessage {
        from_here: body.node == this_node,
        v1_relayed: body.v1_relayed,
        stored: StoredMessage {
            room_uid,
            member_uid: body.member_uid,
            seq: body.seq,
            recipient_uid: body.recipient_uid,
            message: ChatMessage {
                id,
                from: body.from,
                text: body.text,
                ts: body.ts,
                me: body.me,
                to: body.to,
            },
        },
    })
}

/// Parses a channel payload: `"<id> <body>"`.
pub fn parse_published(
    room_uid: u64,
    payload: &[u8],
    this_node: &str,
) -> Result<SharedMessage, ClusterError> {
    let space = payload
        .iter()
        .position(|&b| b == b' ')
        .filter(|&at| at <= 20)
        .ok_or(ClusterError::Malformed("no id before the body"))?;
    let id = std::str::from_utf8(&payload[..space])
        .ok()
        .and_then(|id| id.parse().ok())
        .ok_or(ClusterError::Malformed("bad id"))?;
    parse(room_uid, id, &payload[space + 1..], this_node)
}

/// A room's messages with `after < id <= upto` from its stream, oldest first, at most
/// `limit`; ids the stream no longer has are simply absent.
pub fn range(
    con: &mut redis::Connection,
    room_uid: u64,
    after: u64,
    upto: Option<u64>,
    limit: usize,
    this_node: &str,
) -> Result<Vec<SharedMessage>, ClusterError> {
    let start = format!("{}-0", after.saturating_add(1));
    let end = upto.map_or_else(|| "+".to_owned(), |upto| format!("{upto}-0"));
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream(room_uid))
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(limit.max(1))
        .query(con)?;
    let mut messages = Vec::with_capacity(reply.ids.len());
    for entry in reply.ids.into_iter().take(limit) {
        let id = entry
            .id
            .split('-')
            .next()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or(ClusterError::Malformed("bad stream id"))?;
        let Some(redis::Value::BulkString(body)) = entry.map.get("m") else {
            return Err(ClusterError::Malformed("stream entry without a body"));
        };
        messages.push(parse(room_uid, id, body, this_node)?);
    }
    Ok(messages)
}
