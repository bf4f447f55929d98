//! `/search WORDS`: the newest messages with every word, asked of the server (which searches
//! its history with FTS5, leaving out others' direct messages); the same words again page
//! back to older matches.

use std::time::Instant;

use chat_protocol::limits::MAX_HISTORY_PAGE;
use chat_protocol::v2::{ChatMessage, ClientV2, MAX_SEARCH};

use super::{Conversation, Effects};
use crate::ui::format;

/// Matches asked for at a time.
const SEARCH_PAGE: u32 = 20;

impl Conversation {
    /// `/search WORDS`.
    pub(super) fn ask_search(&mut self, fx: &mut Effects, words: String, now: Instant) {
        if words.len() > MAX_SEARCH {
            let line = format!("not searched: a search is at most {MAX_SEARCH} bytes");
            return fx.problems.push(format::notice(&line));
        }
        if self.search.is_some() {
            return self.say(fx, format::notice("still waiting for the previous /search"));
        }
        let before = match &self.last_search {
            Some((last, Some(oldest), true)) if *last == words => Some(*oldest),
            _ => None,
        };
        let request = ClientV2::Search {
            words,
            before,
            limit: Some(SEARCH_PAGE.min(MAX_HISTORY_PAGE as u32)),
        };
        // Counted by the server's flood control, like `/history`.
        self.unacked.try_spend(now);
        let request = self.outstanding(request, "/search", now);
        fx.send.push(request.request.clone());
        self.search = Some(request);
    }

    /// The server's `found`.
    pub(super) fn found(
        &mut self,
        fx: &mut Effects,
        words: &str,
        mut messages: Vec<ChatMessage>,
        more: bool,
    ) {
        let asked = match self.search.as_ref().map(|o| &o.request) {
            Some(ClientV2::Search { words: asked, .. }) => asked.clone(),
            _ => return,
        };
        if asked != words {
            return;
        }
        self.search = None;
        messages.sort_by_key(|message| message.id);
        messages.retain(|message| !self.is_ignored(&message.from));
        let continued = self
            .last_search
            .as_ref()
            .is_some_and(|(last, _, _)| last == words);
        let oldest = messages.first().map(|message| message.id);
        self.last_search = Some((words.to_owned(), oldest, more));
        let quoted = format::quote(words);
        if messages.is_empty() {
            let line = if continued {
                format!("no older messages match {quoted}")
            } else {
                format!("no messages match {quoted}")
            };
            return self.say(fx, format::notice(&line));
        }
        self.say(fx, format::notice(&format!("messages matching {quoted}:")));
        for message in &messages {
            let line = format::chat_line(message, self.setup.style);
            self.say(fx, line);
        }
        let last = if more {
            format!("(older matches: /search {words})")
        } else {
            "end of matches".to_owned()
        };
        self.say(fx, format::notice(&last));
    }
}
