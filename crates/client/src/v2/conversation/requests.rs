//! `/who` and `/history`: each asked once at a time, retried while unanswered, and the
//! answer printed; history pages reach back from the oldest message shown.

use std::time::Instant;

use chat_protocol::v2::{ChatMessage, ClientV2};

use super::{Conversation, Effects};
use crate::ui::format;

/// A `/who` or `/history` waiting for its answer.
#[derive(Debug)]
pub(super) struct Outstanding {
    pub(super) request: ClientV2,
    command: &'static str,
    attempts: u32,
    pub(super) next_at: Instant,
}

impl Conversation {
    pub(super) fn ask_history(&mut self, fx: &mut Effects, limit: u32, now: Instant) {
        if self.history.is_some() {
            self.say(
                fx,
                format::notice("still waiting for the previous /history"),
            );
            return;
        }
        let before = self
            .oldest_shown
            .or_else(|| self.reorder.last_id().map(|cursor| cursor + 1));
        if before.is_some_and(|before| before <= 1) {
            self.say(fx, format::notice("no earlier messages"));
            return;
        }
        let request = ClientV2::History {
            before,
            limit: Some(limit),
        };
        self.unacked.try_spend(now);
        let request = self.outstanding(request, "/history", now);
        fx.send.push(request.request.clone());
        self.history = Some(request);
    }

    pub(super) fn show_history(
        &mut self,
        fx: &mut Effects,
        mut messages: Vec<ChatMessage>,
        more: bool,
    ) {
        messages.sort_by_key(|message| message.id);
        messages.dedup_by_key(|message| message.id);
        if let Some(oldest) = self.oldest_shown {
            messages.retain(|message| message.id < oldest);
        }
        let Some(first) = messages.first() else {
            self.say(fx, format::notice("no earlier messages"));
            return;
        };
        self.oldest_shown = Some(first.id);
        self.say(fx, format::notice("earlier messages:"));
        for message in &messages {
            self.say(fx, format::chat_line(message, self.setup.style));
        }
        let last = if more {
            "(more: /history again)"
        } else {
            "end of earlier messages"
        };
        self.say(fx, format::notice(last));
    }

    /// When each unanswered request is due to be asked again.
    pub(super) fn requests_due(&self) -> impl Iterator<Item = Instant> + '_ {
        [
            &self.who,
            &self.history,
            &self.topic_request,
            &self.moderation,
            &self.away_request,
            &self.search,
        ]
        .into_iter()
        .flatten()
        .map(|outstanding| outstanding.next_at)
    }

    pub(super) fn outstanding(
        &self,
        request: ClientV2,
        command: &'static str,
        now: Instant,
    ) -> Outstanding {
        Outstanding {
            request,
            command,
            attempts: 1,
            next_at: now + self.setup.timing.request_every,
        }
    }

    pub(super) fn retry_requests(&mut self, fx: &mut Effects, now: Instant) {
        let max = self.setup.timing.request_attempts;
        let every = self.setup.timing.request_every;
        let mut unanswered = Vec::new();
        let slots = [
            &mut self.who,
            &mut self.history,
            &mut self.topic_request,
            &mut self.moderation,
            &mut self.away_request,
            &mut self.search,
        ];
        for slot in slots {
            let Some(outstanding) = slot else { continue };
            if now < outstanding.next_at {
                continue;
            }
            if outstanding.attempts >= max {
                unanswered.push(outstanding.command);
                *slot = None;
            } else {
                outstanding.attempts += 1;
                outstanding.next_at = now + every;
                fx.send.push(outstanding.request.clone());
            }
        }
        for command in unanswered {
            let line = format::notice(&format!("no answer to {command}; try again"));
            self.say(fx, line);
        }
    }
}
