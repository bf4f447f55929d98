//! Leaving (`/quit`, `/next`, end of input): unacked messages get a little time to be acked
//! first, and the user is told how many were not.

use std::time::Instant;

use super::{Conversation, Effects, Ending};
use crate::ui::format;

/// The user asked to leave; unacked messages get a little time first.
#[derive(Debug)]
pub(super) struct Leaving {
    pub(super) then: Ending,
    /// Set once registered: the drain only starts when messages can be sent at all.
    pub(super) deadline: Option<Instant>,
}

impl Conversation {
    pub(super) fn leave(&mut self, fx: &mut Effects, then: Ending, now: Instant) {
        if self.unacked.is_empty() {
            self.end(fx, then);
            return;
        }
        let deadline = self
            .is_registered()
            .then(|| now + self.setup.timing.leave_drain);
        self.leaving = Some(Leaving { then, deadline });
    }

    /// Ends the conversation once leaving has waited long enough for acks; `true` when it did.
    pub(super) fn give_up_leaving(&mut self, fx: &mut Effects, now: Instant) -> bool {
        let Some(leaving) = &self.leaving else {
            return false;
        };
        if leaving.deadline.is_none_or(|deadline| now < deadline) {
            return false;
        }
        let then = leaving.then;
        let count = self.unacked.len();
        let line = format::notice(&format!(
            "{count} message(s) were not confirmed by the server and may be lost"
        ));
        self.say(fx, line);
        self.end(fx, then);
        true
    }
}
