//! Version-2 messages: a `0xFF` byte then one JSON object whose `t` field names the type.

use serde::{Deserialize, Serialize};

/// What a version-2 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientV2 {
    /// Bind this address; replay what came after `last_id`, or recent history without it.
    Register {
        /// Newest message id the client already has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    /// A chat message; `seq` counts from 1 per token and makes retransmissions idempotent.
    Msg {
        /// The sender's sequence number.
        seq: u64,
        /// The text.
        text: String,
    },
    /// Keepalive; the server answers `pong` and replays what came after `last_id`.
    Ping {
        /// Newest message id the client already has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    /// The user is typing; relayed, never stored.
    Typing,
    /// Older messages, newest first page before `before`.
    History {
        /// Only messages with a smaller id; the newest when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// How many, at most 100.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Ask for the member list.
    Who,
    /// Leave the room (closes it if sent by the host).
    Leave,
}

/// A stored chat message as members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Room message id: +1 per message in the room.
    pub id: u64,
    /// Sender's username.
    pub from: String,
    /// The text.
    pub text: String,
    /// When the server accepted it, in Unix milliseconds.
    pub ts: u64,
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The member said goodbye.
    Leave,
    /// The member went silent for longer than the idle timeout.
    Timeout,
}

/// Why a room closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The host left.
    HostLeft,
    /// The host went silent for longer than the idle timeout.
    HostTimeout,
    /// The server is shutting down for good.
    ServerShutdown,
}

/// Why the server refused a version-2 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V2ErrorCode {
    /// The member sends faster than flood control allows; the message was dropped.
    RateLimited,
    /// The message would not fit in a datagram once framed.
    TooLarge,
    /// The message is not one the server understands.
    Invalid,
}

/// What the server sends a version-2 member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerV2 {
    /// The message with that `seq` is stored as room message `id`.
    Ack {
        /// The sender's sequence number.
        seq: u64,
        /// The room message id it was stored as.
        id: u64,
    },
    /// A chat message, live or replayed.
    Msg(ChatMessage),
    /// A page of older messages, oldest first.
    History {
        /// The messages.
        messages: Vec<ChatMessage>,
        /// Whether older messages remain.
        more: bool,
    },
    /// Someone joined.
    Joined {
        /// Their username.
        name: String,
    },
    /// Someone left.
    Left {
        /// Their username.
        name: String,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone is typing.
    Typing {
        /// Their username.
        name: String,
    },
    /// The member list.
    Members {
        /// Every member's username.
        names: Vec<String>,
        /// The host's username.
        host: String,
    },
    /// Answer to `ping`, with the newest message id in the room.
    Pong {
        /// Newest message id.
        id: u64,
    },
    /// The room closed; the token is no longer valid.
    RoomClosed {
        /// Why.
        reason: CloseReason,
    },
    /// A message was refused.
    Error {
        /// What went wrong.
        code: V2ErrorCode,
        /// The `seq` of the refused message, when it was a chat message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// A sentence for the user.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_match_the_contract() {
        let ack = serde_json::to_string(&ServerV2::Ack { seq: 3, id: 17 }).unwrap();
        assert_eq!(ack, r#"{"t":"ack","seq":3,"id":17}"#);
        let msg = ServerV2::Msg(ChatMessage {
            id: 1,
            from: "alice".into(),
            text: "hi".into(),
            ts: 5,
        });
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"t":"msg","id":1,"from":"alice","text":"hi","ts":5}"#
        );
        let left: ServerV2 =
            serde_json::from_str(r#"{"t":"left","name":"bob","reason":"timeout"}"#).unwrap();
        assert_eq!(
            left,
            ServerV2::Left {
                name: "bob".into(),
                reason: LeaveReason::Timeout
            }
        );
        let register: ClientV2 = serde_json::from_str(r#"{"t":"register"}"#).unwrap();
        assert_eq!(register, ClientV2::Register { last_id: None });
    }
}
