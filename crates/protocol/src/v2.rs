//! Version-2 messages: a `0xFF` byte then one JSON object whose `t` field names the type.
//!
//! Encoding is serde's internally tagged form. Decoding is written by hand on top of flat
//! structs (see [`ClientV2`]'s `Deserialize`), because serde's derived decoder for an internally
//! tagged enum first copies the whole object, unknown fields included, into a tree of its own:
//! a datagram padded with `"x":[0,0,0,...]` then cost 16 to 32 bytes of heap per byte received.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};

/// What a version-2 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientV2 {
    /// Bind this address; replay what came after `last_id`, or recent history without it.
    Register {
        /// Newest message id the client already has.
        #[serde(skip_serializing_if = "Option::is_none")]
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
        #[serde(skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    /// The user is typing; relayed, never stored.
    Typing,
    /// Older messages, newest first page before `before`.
    History {
        /// Only messages with a smaller id; the newest when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// How many, at most 100.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Ask for the member list.
    Who,
    /// Leave the room (closes it if sent by the host).
    Leave,
    /// Answers a `challenge`: sent from the address the challenge reached, it proves that
    /// this address receives there, and only then does the server bind it.
    Echo {
        /// The challenge's nonce, unchanged.
        nonce: String,
    },
    /// An action (`/me waves`): stored and acked like `msg`, shown as `* alice waves`.
    Me {
        /// The sender's sequence number, shared with `msg`.
        seq: u64,
        /// The action, without the sender's name.
        text: String,
    },
    /// Sets the room's topic (at most [`MAX_TOPIC`] bytes; empty clears it).
    Topic {
        /// The new topic.
        text: String,
    },
    /// A direct message (`/msg bob hi`) to one member of the room: stored and acked like
    /// `msg`, delivered to that member only, readable in history by the two of them only.
    Dm {
        /// The sender's sequence number, shared with `msg`.
        seq: u64,
        /// The recipient's username (compared by key, as names are).
        to: String,
        /// The text.
        text: String,
    },
    /// The host removes a member, who may join again.
    Kick {
        /// The member's username.
        name: String,
    },
    /// The host removes a member and bans its address from the room for the room's life.
    Ban {
        /// The member's username.
        name: String,
    },
    /// The host hands the host role to another member.
    Host {
        /// The new host's username.
        name: String,
    },
    /// This member is away (`/away lunch`): shown beside its name in `members`.
    Away {
        /// Why, at most [`MAX_AWAY`] bytes; may be empty.
        text: String,
    },
    /// This member is back.
    Back,
    /// Full-text search of the room's history: the newest messages before `before` that
    /// contain every one of `words`; answered with `found`.
    Search {
        /// What to look for, at most [`MAX_SEARCH`] bytes.
        words: String,
        /// Only messages with a smaller id; the newest when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// How many, at most 100.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
}

/// Longest search, in bytes of UTF-8.
pub const MAX_SEARCH: usize = 200;

/// Longest away text, in bytes of UTF-8.
pub const MAX_AWAY: usize = 100;

/// Longest room topic, in bytes of UTF-8.
pub const MAX_TOPIC: usize = 200;

/// A stored chat message as members see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Room message id: +1 per message in the room.
    pub id: u64,
    /// Sender's username.
    pub from: String,
    /// The text.
    pub text: String,
    /// When the server accepted it, in Unix milliseconds.
    pub ts: u64,
    /// An action (`/me`): shown as `* from text`. Absent on the wire when false.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "read_bool"
    )]
    pub me: bool,
    /// A direct message: the one member it was sent to. Absent for the whole room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The member said goodbye.
    Leave,
    /// The member went silent for longer than the idle timeout.
    Timeout,
    /// The host removed the member (`/kick`).
    Kicked,
    /// The host removed the member and banned its address (`/ban`).
    Banned,
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
    /// The server knows no such token in that room: the room closed, expired, or the server
    /// restarted without it. The member should stop.
    NoRoom,
    /// A direct message or a host's command names someone who is not a member of the room.
    NoSuchMember,
    /// Only the host may do that (`kick`, `ban`, `host`).
    NotHost,
}

/// What the server sends a version-2 member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// The member list, cut to fit one datagram.
    Members {
        /// Members' usernames in join order, as many as fit.
        names: Vec<String>,
        /// The host's username.
        host: String,
        /// How many members did not fit in `names`; 0 (and absent on the wire) when none.
        #[serde(skip_serializing_if = "is_zero")]
        more: u64,
        /// The room's topic; absent when it has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// Away texts of the listed members who are away, by name; absent when none is.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        away: BTreeMap<String, String>,
    },
    /// The answer to `search`: matching messages, oldest first, as a `history` page.
    Found {
        /// The words searched for, as sent.
        words: String,
        /// The matches.
        messages: Vec<ChatMessage>,
        /// Whether older matches remain.
        more: bool,
    },
    /// This member's away state changed (its confirmation of `away` or `back`).
    Away {
        /// This member's username.
        name: String,
        /// The away text; absent when back.
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// The topic changed (also the setter's confirmation).
    Topic {
        /// Who set it.
        name: String,
        /// The new topic; empty when cleared.
        text: String,
    },
    /// Before an address is bound to a token, it must show that it receives there: echo
    /// `nonce` back in an `echo` from this address. Nothing else is sent to it until then.
    Challenge {
        /// Random, 32 lowercase hex characters.
        nonce: String,
    },
    /// This token's address moved to another address, which proved it receives there; this
    /// address gets nothing more. A client that did not move registers again to take it back.
    Moved,
    /// Room message `id` is one this member may not read (a direct message between two
    /// others): nothing to show, but the id is used, so there is no gap to wait for.
    Skip {
        /// The id.
        id: u64,
    },
    /// This member was removed by the host; the token is no longer valid.
    Kicked {
        /// The host's username.
        by: String,
        /// Whether its address is banned from the room too.
        #[serde(skip_serializing_if = "is_false")]
        ban: bool,
    },
    /// The host role passed to another member.
    Host {
        /// The new host's username.
        name: String,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// A sentence for the user.
        message: String,
    },
}

/// Every field a client message can carry, read in one pass: unknown fields are skipped
/// without being stored. A known field must have its contract type and appear at most once,
/// whatever `t` says (the derived decoder ignored fields that `t` did not use).
#[derive(Deserialize)]
struct ClientWire {
    t: ClientKind,
    last_id: Option<WireU64>,
    seq: Option<WireU64>,
    text: Option<String>,
    before: Option<WireU64>,
    limit: Option<WireU64>,
    nonce: Option<String>,
    to: Option<String>,
    name: Option<String>,
    words: Option<String>,
}

/// The `t` values of [`ClientV2`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ClientKind {
    Register,
    Msg,
    Ping,
    Typing,
    History,
    Who,
    Leave,
    Echo,
    Me,
    Topic,
    Dm,
    Kick,
    Ban,
    Host,
    Away,
    Back,
    Search,
    /// Refused after reading, without quoting: the derived refusal copies the unknown type
    /// name (attacker-chosen, up to a whole datagram) into the error message.
    #[serde(other)]
    Unknown,
}

impl<'de> Deserialize<'de> for ClientV2 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire: ClientWire = read_object(deserializer)?;
        Ok(match wire.t {
            ClientKind::Register => Self::Register {
                last_id: wire.last_id.map(WireU64::get),
            },
            ClientKind::Msg => Self::Msg {
                seq: required(wire.seq, "seq")?.get(),
                text: required(wire.text, "text")?,
            },
            ClientKind::Ping => Self::Ping {
                last_id: wire.last_id.map(WireU64::get),
            },
            ClientKind::Typing => Self::Typing,
            ClientKind::History => Self::History {
                before: wire.before.map(WireU64::get),
                limit: wire.limit.map(WireU64::to_u32).transpose()?,
            },
            ClientKind::Who => Self::Who,
            ClientKind::Leave => Self::Leave,
            ClientKind::Echo => Self::Echo {
                nonce: required(wire.nonce, "nonce")?,
            },
            ClientKind::Me => Self::Me {
                seq: required(wire.seq, "seq")?.get(),
                text: required(wire.text, "text")?,
            },
            ClientKind::Topic => Self::Topic {
                text: required(wire.text, "text")?,
            },
            ClientKind::Away => Self::Away {
                text: required(wire.text, "text")?,
            },
            ClientKind::Back => Self::Back,
            ClientKind::Search => Self::Search {
                words: required(wire.words, "words")?,
                before: wire.before.map(WireU64::get),
                limit: wire.limit.map(WireU64::to_u32).transpose()?,
            },
            ClientKind::Kick => Self::Kick {
                name: required(wire.name, "name")?,
            },
            ClientKind::Ban => Self::Ban {
                name: required(wire.name, "name")?,
            },
            ClientKind::Host => Self::Host {
                name: required(wire.name, "name")?,
            },
            ClientKind::Dm => Self::Dm {
                seq: required(wire.seq, "seq")?.get(),
                to: required(wire.to, "to")?,
                text: required(wire.text, "text")?,
            },
            ClientKind::Unknown => return Err(unknown_type()),
        })
    }
}

/// Every field a server message can carry, read in one pass like [`ClientWire`].
#[derive(Deserialize)]
struct ServerWire {
    t: ServerKind,
    seq: Option<WireU64>,
    id: Option<WireU64>,
    from: Option<String>,
    text: Option<String>,
    ts: Option<WireU64>,
    messages: Option<Vec<ChatMessage>>,
    name: Option<String>,
    reason: Option<WireReason>,
    names: Option<Vec<String>>,
    host: Option<String>,
    code: Option<V2ErrorCode>,
    message: Option<String>,
    more: Option<WireMore>,
    nonce: Option<String>,
    me: Option<WireBool>,
    to: Option<String>,
    topic: Option<String>,
    by: Option<String>,
    ban: Option<WireBool>,
    away: Option<BTreeMap<String, String>>,
    words: Option<String>,
}

/// `more` is a boolean in `history` and a count in `members`; the flat struct reads either
/// and the message type picks. Read by hand, like [`WireU64`], so that nothing else is
/// buffered or quoted.
#[derive(Clone, Copy)]
enum WireMore {
    Flag(bool),
    Count(u64),
}

impl<'de> Deserialize<'de> for WireMore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MoreVisitor;

        impl<'de> Visitor<'de> for MoreVisitor {
            type Value = WireMore;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a boolean or an unsigned integer")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<WireMore, E> {
                Ok(WireMore::Flag(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<WireMore, E> {
                Ok(WireMore::Count(value))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<WireMore, E> {
                Err(E::invalid_type(Unexpected::Other("a string"), &self))
            }
        }

        deserializer.deserialize_any(MoreVisitor)
    }
}

/// The `t` values of [`ServerV2`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ServerKind {
    Ack,
    Msg,
    History,
    Joined,
    Left,
    Typing,
    Members,
    Pong,
    RoomClosed,
    Error,
    Challenge,
    Moved,
    Topic,
    Skip,
    Kicked,
    Host,
    Away,
    Found,
    /// Refused after reading, like [`ClientKind::Unknown`].
    #[serde(other)]
    Unknown,
}

/// `reason` is a [`LeaveReason`] in `left` and a [`CloseReason`] in `room_closed`; the flat
/// struct reads either and the message type picks.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireReason {
    Leave,
    Timeout,
    Kicked,
    Banned,
    HostLeft,
    HostTimeout,
    ServerShutdown,
}

const LEAVE_REASONS: &[&str] = &["leave", "timeout", "kicked", "banned"];
const CLOSE_REASONS: &[&str] = &["host_left", "host_timeout", "server_shutdown"];

impl WireReason {
    fn name(self) -> &'static str {
        match self {
            Self::Leave => "leave",
            Self::Timeout => "timeout",
            Self::Kicked => "kicked",
            Self::Banned => "banned",
            Self::HostLeft => "host_left",
            Self::HostTimeout => "host_timeout",
            Self::ServerShutdown => "server_shutdown",
        }
    }

    fn leave<E: de::Error>(self) -> Result<LeaveReason, E> {
        match self {
            Self::Leave => Ok(LeaveReason::Leave),
            Self::Timeout => Ok(LeaveReason::Timeout),
            Self::Kicked => Ok(LeaveReason::Kicked),
            Self::Banned => Ok(LeaveReason::Banned),
            other => Err(E::unknown_variant(other.name(), LEAVE_REASONS)),
        }
    }

    fn close<E: de::Error>(self) -> Result<CloseReason, E> {
        match self {
            Self::HostLeft => Ok(CloseReason::HostLeft),
            Self::HostTimeout => Ok(CloseReason::HostTimeout),
            Self::ServerShutdown => Ok(CloseReason::ServerShutdown),
            other => Err(E::unknown_variant(other.name(), CLOSE_REASONS)),
        }
    }
}

impl<'de> Deserialize<'de> for ServerV2 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire: ServerWire = read_object(deserializer)?;
        Ok(match wire.t {
            ServerKind::Ack => Self::Ack {
                seq: required(wire.seq, "seq")?.get(),
                id: required(wire.id, "id")?.get(),
            },
            ServerKind::Msg => Self::Msg(ChatMessage {
                id: required(wire.id, "id")?.get(),
                from: required(wire.from, "from")?,
                text: required(wire.text, "text")?,
                ts: required(wire.ts, "ts")?.get(),
                me: wire.me.is_some_and(|me| me.0),
                to: wire.to,
            }),
            ServerKind::History => Self::History {
                messages: required(wire.messages, "messages")?,
                more: match required(wire.more, "more")? {
                    WireMore::Flag(more) => more,
                    WireMore::Count(_) => {
                        return Err(de::Error::custom("`more` must be a boolean"));
                    }
                },
            },
            ServerKind::Joined => Self::Joined {
                name: required(wire.name, "name")?,
            },
            ServerKind::Left => Self::Left {
                name: required(wire.name, "name")?,
                reason: required(wire.reason, "reason")?.leave()?,
            },
            ServerKind::Typing => Self::Typing {
                name: required(wire.name, "name")?,
            },
            ServerKind::Members => Self::Members {
                names: required(wire.names, "names")?,
                host: required(wire.host, "host")?,
                more: match wire.more {
                    None => 0,
                    Some(WireMore::Count(more)) => more,
                    Some(WireMore::Flag(_)) => {
                        return Err(de::Error::custom("`more` must be a count"));
                    }
                },
                topic: wire.topic,
                away: wire.away.unwrap_or_default(),
            },
            ServerKind::Found => Self::Found {
                words: required(wire.words, "words")?,
                messages: required(wire.messages, "messages")?,
                more: match required(wire.more, "more")? {
                    WireMore::Flag(more) => more,
                    WireMore::Count(_) => {
                        return Err(de::Error::custom("`more` must be a boolean"));
                    }
                },
            },
            ServerKind::Away => Self::Away {
                name: required(wire.name, "name")?,
                text: wire.text,
            },
            ServerKind::Topic => Self::Topic {
                name: required(wire.name, "name")?,
                text: required(wire.text, "text")?,
            },
            ServerKind::Challenge => Self::Challenge {
                nonce: required(wire.nonce, "nonce")?,
            },
            ServerKind::Moved => Self::Moved,
            ServerKind::Skip => Self::Skip {
                id: required(wire.id, "id")?.get(),
            },
            ServerKind::Kicked => Self::Kicked {
                by: required(wire.by, "by")?,
                ban: wire.ban.is_some_and(|ban| ban.0),
            },
            ServerKind::Host => Self::Host {
                name: required(wire.name, "name")?,
            },
            ServerKind::Pong => Self::Pong {
                id: required(wire.id, "id")?.get(),
            },
            ServerKind::RoomClosed => Self::RoomClosed {
                reason: required(wire.reason, "reason")?.close()?,
            },
            ServerKind::Error => Self::Error {
                code: required(wire.code, "code")?,
                seq: wire.seq.map(WireU64::get),
                message: required(wire.message, "message")?,
            },
            ServerKind::Unknown => return Err(unknown_type()),
        })
    }
}

/// Reads a JSON object into the flat struct `T` and refuses anything else without quoting it.
/// Found by fuzzing: serde_json's own refusal of a top-level string quotes it Debug-escaped,
/// six bytes of error message per DEL byte of a hostile datagram.
fn read_object<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
            Err(E::invalid_type(Unexpected::Other("a string"), &self))
        }
    }

    deserializer.deserialize_any(ObjectVisitor(PhantomData))
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(count: &u64) -> bool {
    *count == 0
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(flag: &bool) -> bool {
    !*flag
}

fn read_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    WireBool::deserialize(deserializer).map(|flag| flag.0)
}

/// A JSON boolean, read like [`WireU64`] so that a string in its place is refused without
/// quoting it.
#[derive(Clone, Copy)]
struct WireBool(bool);

impl<'de> Deserialize<'de> for WireBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoolVisitor;

        impl<'de> Visitor<'de> for BoolVisitor {
            type Value = WireBool;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a boolean")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<WireBool, E> {
                Ok(WireBool(value))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<WireBool, E> {
                Err(E::invalid_type(Unexpected::Other("a string"), &self))
            }
        }

        deserializer.deserialize_any(BoolVisitor)
    }
}

fn unknown_type<E: de::Error>() -> E {
    E::custom("unknown message type `t`")
}

fn required<T, E: de::Error>(field: Option<T>, name: &'static str) -> Result<T, E> {
    field.ok_or_else(|| E::missing_field(name))
}

/// A JSON unsigned integer. Read through `deserialize_any` so that a string in its place is
/// refused without quoting it: serde_json's own refusal quotes the string `Debug`-escaped, which
/// turned each DEL byte of a hostile datagram into six bytes of error message.
#[derive(Clone, Copy)]
struct WireU64(u64);

impl WireU64 {
    fn get(self) -> u64 {
        self.0
    }

    fn to_u32<E: de::Error>(self) -> Result<u32, E> {
        u32::try_from(self.0).map_err(|_| E::invalid_value(Unexpected::Unsigned(self.0), &"a u32"))
    }
}

impl<'de> Deserialize<'de> for WireU64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct U64Visitor;

        impl<'de> Visitor<'de> for U64Visitor {
            type Value = WireU64;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("an unsigned integer")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<WireU64, E> {
                Ok(WireU64(value))
            }

            // The default would quote the string; every other refusal is short already.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<WireU64, E> {
                Err(E::invalid_type(Unexpected::Other("a string"), &self))
            }
        }

        deserializer.deserialize_any(U64Visitor)
    }
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
            me: false,
            to: None,
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
        let members = ServerV2::Members {
            names: vec!["alice".into()],
            host: "alice".into(),
            more: 0,
            topic: None,
            away: Default::default(),
        };
        assert_eq!(
            serde_json::to_string(&members).unwrap(),
            r#"{"t":"members","names":["alice"],"host":"alice"}"#
        );
        let cut: ServerV2 =
            serde_json::from_str(r#"{"t":"members","names":["a"],"host":"a","more":255}"#).unwrap();
        assert!(matches!(cut, ServerV2::Members { more: 255, .. }));
        let challenge = ServerV2::Challenge { nonce: "0a".into() };
        assert_eq!(
            serde_json::to_string(&challenge).unwrap(),
            r#"{"t":"challenge","nonce":"0a"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerV2::Moved).unwrap(),
            r#"{"t":"moved"}"#
        );
        let echo: ClientV2 = serde_json::from_str(r#"{"t":"echo","nonce":"0a"}"#).unwrap();
        assert_eq!(echo, ClientV2::Echo { nonce: "0a".into() });
        assert!(
            serde_json::from_str::<ServerV2>(r#"{"t":"history","messages":[],"more":3}"#).is_err()
        );
        let register: ClientV2 = serde_json::from_str(r#"{"t":"register"}"#).unwrap();
        assert_eq!(register, ClientV2::Register { last_id: None });
    }

    #[test]
    fn actions_and_topics_have_their_wire_forms() {
        let me: ClientV2 = serde_json::from_str(r#"{"t":"me","seq":4,"text":"waves"}"#).unwrap();
        assert_eq!(
            me,
            ClientV2::Me {
                seq: 4,
                text: "waves".into()
            }
        );
        let action = ServerV2::Msg(ChatMessage {
            id: 17,
            from: "alice".into(),
            text: "waves".into(),
            ts: 5,
            me: true,
            to: None,
        });
        let json = r#"{"t":"msg","id":17,"from":"alice","text":"waves","ts":5,"me":true}"#;
        assert_eq!(serde_json::to_string(&action).unwrap(), json);
        assert_eq!(serde_json::from_str::<ServerV2>(json).unwrap(), action);
        let topic: ClientV2 = serde_json::from_str(r#"{"t":"topic","text":"hi"}"#).unwrap();
        assert_eq!(topic, ClientV2::Topic { text: "hi".into() });
        let event = ServerV2::Topic {
            name: "bob".into(),
            text: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"t":"topic","name":"bob","text":""}"#
        );
        let members = ServerV2::Members {
            names: vec!["a".into()],
            host: "a".into(),
            more: 0,
            topic: Some("x".into()),
            away: Default::default(),
        };
        assert_eq!(
            serde_json::to_string(&members).unwrap(),
            r#"{"t":"members","names":["a"],"host":"a","topic":"x"}"#
        );
        let dm: ClientV2 =
            serde_json::from_str(r#"{"t":"dm","seq":5,"to":"Bob","text":"six"}"#).unwrap();
        assert_eq!(
            dm,
            ClientV2::Dm {
                seq: 5,
                to: "Bob".into(),
                text: "six".into()
            }
        );
        assert!(serde_json::from_str::<ClientV2>(r#"{"t":"dm","seq":5,"text":"six"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&ServerV2::Skip { id: 18 }).unwrap(),
            r#"{"t":"skip","id":18}"#
        );
        // A string where a flag belongs is refused without being quoted.
        let long = "\u{7f}".repeat(100);
        let json = format!(r#"{{"t":"msg","id":1,"from":"a","text":"","ts":1,"me":"{long}"}}"#);
        let error = serde_json::from_str::<ServerV2>(&json).unwrap_err();
        assert!(error.to_string().len() < 100, "{error}");
    }

    #[test]
    fn unknown_fields_of_any_shape_are_skipped_and_t_may_come_last() {
        let msg: ClientV2 =
            serde_json::from_str(r#"{"x":[0,[1],{"a":"b"}],"text":"hi","seq":2,"t":"msg"}"#)
                .unwrap();
        assert_eq!(
            msg,
            ClientV2::Msg {
                seq: 2,
                text: "hi".into()
            }
        );
        let pong: ServerV2 =
            serde_json::from_str(r#"{"t":"pong","future":{"k":[]},"id":4}"#).unwrap();
        assert_eq!(pong, ServerV2::Pong { id: 4 });
    }

    #[test]
    fn refusals_do_not_quote_attacker_chosen_text() {
        // Found by the allocation test: serde_json quoted these strings into the error
        // message, the number-field one Debug-escaped at up to six bytes per input byte.
        // Fuzzing found the same with a string in place of the whole object.
        let long = "\u{7f}".repeat(100);
        for json in [
            format!(r#"{{"t":"{long}"}}"#),
            format!(r#"{{"t":"msg","text":"","seq":"{long}"}}"#),
            format!(r#""{long}""#),
        ] {
            let error = serde_json::from_str::<ClientV2>(&json).unwrap_err();
            assert!(error.to_string().len() < 100, "{error}");
            let error = serde_json::from_str::<ServerV2>(&json).unwrap_err();
            assert!(error.to_string().len() < 100, "{error}");
        }
        assert!(serde_json::from_str::<ServerV2>(r#"{"t":"nonsense"}"#).is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        for json in [
            r#"{"t":"msg","seq":1}"#,
            r#"{"t":"msg","text":"x","seq":-1}"#,
            r#"{"t":"history","limit":4294967296}"#,
            r#"{"t":"who","t":"who"}"#,
            r#"{"seq":1}"#,
        ] {
            assert!(serde_json::from_str::<ClientV2>(json).is_err(), "{json}");
        }
        for json in [
            r#"{"t":"left","name":"bob","reason":"host_left"}"#,
            r#"{"t":"room_closed","reason":"timeout"}"#,
            r#"{"t":"ack","seq":1}"#,
            r#"{"t":"history","messages":[]}"#,
        ] {
            assert!(serde_json::from_str::<ServerV2>(json).is_err(), "{json}");
        }
    }
}
