//! Who is around and what a person notices: `/away` and `/back`, lines that name this member
//! (highlighted, with a bell, in a terminal), the date before the first message of each day
//! and the marker between the messages replayed on entering and new ones (in a terminal).

use std::collections::BTreeSet;
use std::time::Instant;

use chat_protocol::v2::{ChatMessage, ClientV2, MAX_AWAY};

use super::{Conversation, Effects};
use crate::ui::format;

/// What changed in who is in the room.
pub(super) enum Roster<'a> {
    /// The whole list (`members`).
    All(&'a [String]),
    /// Someone joined.
    Joined(&'a str),
    /// Someone left.
    Left(&'a str),
}

/// Most names kept for completion.
const MAX_KNOWN: usize = 1024;

impl Conversation {
    /// Keeps the member names current and hands them out when they change.
    pub(super) fn roster(&mut self, fx: &mut Effects, change: Roster<'_>) {
        let before = self.known.len();
        let changed = match change {
            Roster::All(names) => {
                let names: BTreeSet<String> = names.iter().take(MAX_KNOWN).cloned().collect();
                let changed = names != self.known;
                self.known = names;
                changed
            }
            Roster::Joined(name) if before < MAX_KNOWN => self.known.insert(name.to_owned()),
            Roster::Joined(_) => false,
            Roster::Left(name) => self.known.remove(name),
        };
        if changed {
            fx.members = Some(self.known.iter().cloned().collect());
        }
    }

    /// `/away [TEXT]` (`Some`) or `/back` (`None`): asked of the server, retried unanswered.
    pub(super) fn ask_away(&mut self, fx: &mut Effects, text: Option<String>, now: Instant) {
        let request = match text {
            Some(text) if text.len() > MAX_AWAY => {
                let line = format!("not set: an away text is at most {MAX_AWAY} bytes");
                return fx.problems.push(format::notice(&line));
            }
            Some(text) => self.outstanding(ClientV2::Away { text }, "/away", now),
            None => self.outstanding(ClientV2::Back, "/back", now),
        };
        // Counted by the server's flood control, like `/who`.
        self.unacked.try_spend(now);
        fx.send.push(request.request.clone());
        self.away_request = Some(request);
    }

    /// The server's confirmation of `/away` or `/back`.
    pub(super) fn away_confirmed(&mut self, fx: &mut Effects, name: &str, text: Option<&str>) {
        if name != self.setup.me {
            return;
        }
        self.away_request = None;
        let line = match text {
            None => "you are back".to_owned(),
            Some("") => "you are marked away".to_owned(),
            Some(text) => format!("you are marked away: {text}"),
        };
        self.say(fx, format::notice(&line));
    }

    /// The line for a chat message, highlighted (after a bell, if wanted) in a terminal when
    /// it names this member; preceded by the date when a new day begins.
    pub(super) fn line_for(&mut self, fx: &mut Effects, message: &ChatMessage) -> String {
        let line = format::chat_line(message, self.setup.style);
        if !self.setup.style.clock {
            return line;
        }
        if let Some((day, day_line)) = format::day_line(message.ts)
            && self.last_day != Some(day)
        {
            self.last_day = Some(day);
            self.say(fx, day_line);
        }
        let me = &self.setup.me;
        if message.from != *me && format::mentions(&message.text, me) {
            format::highlighted(&line, self.setup.bell)
        } else {
            line
        }
    }

    /// The first `pong` of a membership: what it releases up to `latest` is what was replayed
    /// on entering, and a terminal marks where new messages begin.
    pub(super) fn show_synced(
        &mut self,
        fx: &mut Effects,
        released: Vec<ChatMessage>,
        latest: u64,
    ) {
        let replayed = released.iter().any(|m| m.id <= latest && self.shows(m));
        let (old, new): (Vec<_>, Vec<_>) = released.into_iter().partition(|m| m.id <= latest);
        self.show(fx, old);
        if replayed && self.setup.style.clock {
            self.say(fx, format::NEW_MESSAGES_MARKER.to_owned());
        }
        self.show(fx, new);
    }

    /// Prints released messages, skipping placeholders and the ignored.
    pub(super) fn show(&mut self, fx: &mut Effects, released: Vec<ChatMessage>) {
        for message in released {
            if !self.shows(&message) {
                // The placeholder of a skipped id, or someone ignored.
                continue;
            }
            if self.oldest_shown.is_none() {
                self.oldest_shown = Some(message.id);
            }
            let line = self.line_for(fx, &message);
            self.say(fx, line);
        }
    }
}
