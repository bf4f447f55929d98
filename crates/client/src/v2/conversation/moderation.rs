//! The host's commands (`/kick`, `/ban`, `/host`: asked of the server, retried while
//! unanswered), what this member hears when they are used on it, and `/ignore`, which only
//! hides lines on this screen.

use std::time::Instant;

use chat_protocol::names;
use chat_protocol::v2::{ChatMessage, ClientV2};

use super::{Conversation, Effects, Ending};
use crate::ui::format;
use crate::v2::commands::Moderation;

/// Most names `/ignore` keeps.
const MAX_IGNORED: usize = 256;

impl Conversation {
    /// `/kick`, `/ban` or `/host` NAME: sent to the server, which refuses a non-host.
    pub(super) fn ask_moderation(
        &mut self,
        fx: &mut Effects,
        action: Moderation,
        name: String,
        now: Instant,
    ) {
        let (request, command) = match action {
            Moderation::Kick => (ClientV2::Kick { name }, "/kick"),
            Moderation::Ban => (ClientV2::Ban { name }, "/ban"),
            Moderation::Host => (ClientV2::Host { name }, "/host"),
        };
        // Counted by the server's flood control, like `/who`.
        self.unacked.try_spend(now);
        let request = self.outstanding(request, command, now);
        fx.send.push(request.request.clone());
        self.moderation = Some(request);
    }

    /// Whether an outstanding `/kick`, `/ban` or `/host` named `name`: its answer came.
    pub(super) fn moderation_answered(&mut self, name: &str) {
        let key = names::username_key(name);
        let answered = self.moderation.as_ref().is_some_and(|o| match &o.request {
            ClientV2::Kick { name } | ClientV2::Ban { name } | ClientV2::Host { name } => {
                names::username_key(name) == key
            }
            _ => false,
        });
        if answered {
            self.moderation = None;
        }
    }

    /// The host removed this member: say so and stop (the token is gone).
    pub(super) fn removed(&mut self, fx: &mut Effects, by: &str, ban: bool) {
        let line = if ban {
            format!("you were banned from this room by {by}")
        } else {
            format!("you were kicked out of this room by {by}")
        };
        self.say(fx, format::notice(&line));
        self.finish_registration_lines(fx);
        self.end(fx, Ending::Closed);
    }

    /// `/ignore NAME`, or the list with no name.
    pub(super) fn ignore(&mut self, fx: &mut Effects, name: Option<String>) {
        let Some(name) = name else {
            let line = if self.ignored.is_empty() {
                "you ignore nobody".to_owned()
            } else {
                let names: Vec<&str> = self.ignored.values().map(String::as_str).collect();
                format!("ignored: {}", names.join(", "))
            };
            return self.say(fx, format::notice(&line));
        };
        if names::username_key(&name) == names::username_key(&self.setup.me) {
            return self.say(fx, format::notice("you cannot ignore yourself"));
        }
        if self.ignored.len() >= MAX_IGNORED {
            return self.say(fx, format::notice("you ignore too many names already"));
        }
        let line = format!("ignoring {name}: their messages are hidden here (/unignore {name})");
        self.ignored.insert(names::username_key(&name), name);
        self.say(fx, format::notice(&line));
    }

    /// `/unignore NAME`.
    pub(super) fn unignore(&mut self, fx: &mut Effects, name: &str) {
        let line = match self.ignored.remove(&names::username_key(name)) {
            Some(_) => format!("no longer ignoring {name}"),
            None => format!("you were not ignoring {name}"),
        };
        self.say(fx, format::notice(&line));
    }

    /// Whether lines from `name` are hidden.
    pub(super) fn is_ignored(&self, name: &str) -> bool {
        !self.ignored.is_empty() && self.ignored.contains_key(&names::username_key(name))
    }

    /// Whether a message is shown: not a placeholder, and not from someone ignored.
    pub(super) fn shows(&self, message: &ChatMessage) -> bool {
        !message.from.is_empty() && !self.is_ignored(&message.from)
    }
}
