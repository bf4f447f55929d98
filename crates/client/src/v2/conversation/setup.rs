//! Who and where a conversation is, and how often and how long it tries things.

use std::time::Duration;

use crate::ui::format::LineStyle;
use crate::v2::keepalive::KeepaliveTiming;
use crate::v2::unacked::Backoff;

/// Every pace and patience of a conversation; the defaults are the product's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Spacing of `register` while the first registration is unanswered.
    pub register_every: Duration,
    /// `register` datagrams sent before giving up on the server.
    pub register_attempts: u32,
    /// Pings, re-registration and silence.
    pub keepalive: KeepaliveTiming,
    /// Retransmission of unacked chat messages.
    pub backoff: Backoff,
    /// Spacing of retries of an unanswered `/who` or `/history`.
    pub request_every: Duration,
    /// Tries of a `/who` or `/history` before telling the user it went unanswered.
    pub request_attempts: u32,
    /// How long leaving waits for unacked messages to be acked.
    pub leave_drain: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            register_every: Duration::from_secs(1),
            register_attempts: 5,
            keepalive: KeepaliveTiming::default(),
            backoff: Backoff::default(),
            request_every: Duration::from_secs(1),
            request_attempts: 3,
            leave_drain: Duration::from_secs(3),
        }
    }
}

/// Who and where this conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// This member's username, as the server stored it.
    pub me: String,
    /// The room's name.
    pub room: String,
    /// Whether this is a pair room (op 3), where `/next` works.
    pub pair: bool,
    /// How chat lines look.
    pub style: LineStyle,
    /// Whether to show other members' typing indicators (terminals only).
    pub typing_notices: bool,
    /// Whether a line that names this member rings the terminal bell (terminals only; it is
    /// highlighted either way).
    pub bell: bool,
    /// Most bytes of message one datagram carries beside the room and token.
    pub message_capacity: usize,
    /// Paces and patience.
    pub timing: Timing,
}
