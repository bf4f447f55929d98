//! The first registration of a conversation: `register` until the server answers with both
//! `members` and `pong`, lines held back until the welcome that completes it.

use std::time::Instant;

use chat_protocol::v2::ClientV2;

use super::{Conversation, Effects, Ending};
use crate::ui::format;
use crate::v2::keepalive::Keepalive;

/// The first registration, until both `members` and `pong` have arrived.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) attempts: u32,
    pub(super) next_at: Instant,
    pub(super) members: Option<(Vec<String>, String, u64)>,
    /// Lines produced before the welcome, printed right after it.
    pub(super) held: Vec<String>,
}

impl Conversation {
    /// Sends `register` again when it is due; `true` when the server never answered and the
    /// conversation ended.
    pub(super) fn retry_registration(&mut self, fx: &mut Effects, now: Instant) -> bool {
        let Some(registration) = &mut self.registration else {
            return false;
        };
        if now < registration.next_at {
            return false;
        }
        if registration.attempts >= self.setup.timing.register_attempts {
            let attempts = registration.attempts;
            self.end(fx, Ending::Unregistered { attempts });
            return true;
        }
        registration.attempts += 1;
        registration.next_at = now + self.setup.timing.register_every;
        fx.send.push(ClientV2::Register {
            last_id: self.reorder.last_id(),
        });
        false
    }

    pub(super) fn complete_registration(&mut self, fx: &mut Effects, now: Instant) {
        let Some(registration) = &mut self.registration else {
            return;
        };
        if !self.reorder.is_synced() {
            return;
        }
        let Some((names, host, more)) = registration.members.take() else {
            return;
        };
        let held = std::mem::take(&mut registration.held);
        self.registration = None;
        self.keepalive = Keepalive::new(self.setup.timing.keepalive, now);
        let me = &self.setup.me;
        fx.lines.push(format::notice(&format!(
            "welcome to {}, {me}; here now: {}",
            self.setup.room,
            format::member_list_away(&names, &host, more, &self.away)
        )));
        if let Some(topic) = &self.topic {
            fx.lines.push(format::notice(&format!("topic: {topic}")));
        }
        if self.setup.pair && names.iter().all(|name| name == me) {
            fx.lines
                .push(format::notice("waiting for someone to pair with…"));
        }
        fx.lines.extend(held);
        if let Some(leaving) = &mut self.leaving {
            leaving.deadline = Some(now + self.setup.timing.leave_drain);
        }
        self.unacked.hurry(now);
    }

    /// Prints the lines held back during registration, for an ending that comes before it.
    pub(super) fn finish_registration_lines(&mut self, fx: &mut Effects) {
        if let Some(registration) = &mut self.registration {
            fx.lines.append(&mut registration.held);
        }
    }
}
