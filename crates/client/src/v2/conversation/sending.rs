//! What this member sends besides registration and requests: chat, queued on the unacked
//! queue and paced to the server's flood control, and typing indicators, which are skipped
//! rather than queued when the pace leaves no room for them.

use std::time::{Duration, Instant};

use chat_protocol::v2::ClientV2;

use super::{Conversation, Effects};
use crate::pace::Pacer;
use crate::ui::format;

impl Conversation {
    /// The user is editing a line (already paced by the caller).
    pub fn on_typing(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        // An indicator counts against flood control too; it is skipped, never queued, when
        // the pace leaves no room for it.
        if !self.ended
            && self.leaving.is_none()
            && self.is_registered()
            && self.unacked.try_spend(now)
        {
            fx.send.push(ClientV2::Typing);
        }
        fx
    }

    /// Paces chat to the flood control the server announced (`burst` messages at once, then
    /// one per `interval`), so that lines pasted at once wait their turn instead of being
    /// refused.
    pub fn pace(&mut self, burst: u32, interval: Duration, now: Instant) {
        self.unacked.pace(Pacer::new(burst, interval, now));
    }

    /// Queues a chat message (a line, or `kind`); it goes out at once when registered.
    pub(super) fn submit(
        &mut self,
        fx: &mut Effects,
        text: String,
        kind: Option<Outgoing>,
        now: Instant,
    ) {
        let encoded = encoded_len(&outgoing(u64::MAX, text.clone(), kind.as_ref()));
        if encoded > self.setup.message_capacity {
            let line = format::notice(&format!(
                "not sent, the message is too long for one datagram ({} bytes): {}",
                text.len(),
                format::quote(&text)
            ));
            fx.problems.push(line);
            return;
        }
        match self.unacked.submit(text, now) {
            Ok(seq) => {
                if let Some(kind) = kind {
                    self.kinds.insert(seq, kind);
                }
            }
            Err(full) => {
                let line = format::notice(&format!(
                    "not sent: {} messages are still waiting for the server; try again when it answers",
                    full.pending
                ));
                fx.problems.push(line);
            }
        }
    }

    /// The datagram that carries queued message `seq`.
    pub(super) fn message(&self, seq: u64, text: String) -> ClientV2 {
        outgoing(seq, text, self.kinds.get(&seq))
    }
}

/// A queued message that is not a plain line for the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// `/me TEXT`.
    Action,
    /// `/msg NAME TEXT`, to that member.
    Direct(String),
}

fn outgoing(seq: u64, text: String, kind: Option<&Outgoing>) -> ClientV2 {
    match kind {
        None => ClientV2::Msg { seq, text },
        Some(Outgoing::Action) => ClientV2::Me { seq, text },
        Some(Outgoing::Direct(to)) => ClientV2::Dm {
            seq,
            to: to.clone(),
            text,
        },
    }
}

/// Bytes of message body a version-2 message takes: the marker and its JSON.
fn encoded_len(message: &ClientV2) -> usize {
    serde_json::to_vec(message).map_or(usize::MAX, |json| 1 + json.len())
}
