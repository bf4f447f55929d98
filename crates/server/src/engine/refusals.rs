//! Refusals of chat messages: the sentence for each code, the `error` to a version-2 sender,
//! and the rate-limited warning to a flooding version-1 member.

use std::time::Instant;

use chat_protocol::ucrp::{self, NOTICE_SENDER};
use chat_protocol::v2::{ServerV2, V2ErrorCode};

use super::Endpoint;
use super::effects::Outbox;
use super::replay::{NO_ROOM_TEXT, unicast_v2};
use super::room::Member;

/// The sentence that goes with a refusal of a chat message.
pub(super) fn refusal_text(code: V2ErrorCode) -> &'static str {
    match code {
        V2ErrorCode::RateLimited => "you are sending too fast; this message was dropped",
        V2ErrorCode::TooLarge => "this message is too long to send in one datagram",
        V2ErrorCode::Invalid => "empty messages are not sent",
        V2ErrorCode::NoRoom => NO_ROOM_TEXT,
        V2ErrorCode::NoSuchMember => "there is no other member of that name in this room",
        V2ErrorCode::NotHost => "only the host can do that",
    }
}

pub(super) fn refuse_v2(
    out: &mut Outbox,
    to: Option<Endpoint>,
    code: V2ErrorCode,
    seq: u64,
    message: &str,
) {
    let Some(to) = to else { return };
    unicast_v2(
        out,
        to,
        &ServerV2::Error {
            code,
            seq: Some(seq),
            message: message.to_owned(),
        },
    );
}

/// Tells a flooding version-1 member, at most once a second, that messages are being dropped.
pub(super) fn warn_rate_limited(member: &mut Member, now: Instant, out: &mut Outbox) {
    let recently = member
        .warned_at
        .is_some_and(|at| now.saturating_duration_since(at).as_secs() < 1);
    let Some(addr) = member.addr else { return };
    if recently {
        return;
    }
    member.warned_at = Some(now);
    out.unicast(addr, |buf| {
        ucrp::encode_v1_chat(
            NOTICE_SENDER,
            "you are sending too fast; messages are being dropped",
            buf,
        )
    });
}
