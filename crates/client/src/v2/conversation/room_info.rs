//! What the room is about: its topic, shown on entering, asked for and set with `/topic`.

use std::time::Instant;

use chat_protocol::v2::{ClientV2, MAX_TOPIC};

use super::{Conversation, Effects};
use crate::ui::format;

impl Conversation {
    /// `/topic`: shows the topic (`None`), or asks the server to set it (empty: clear it).
    pub(super) fn ask_topic(&mut self, fx: &mut Effects, text: Option<String>, now: Instant) {
        let Some(text) = text else {
            self.show_topic(fx, true);
            return;
        };
        if text.len() > MAX_TOPIC {
            let line = format!("not set: a topic is at most {MAX_TOPIC} bytes");
            fx.problems.push(format::notice(&line));
            return;
        }
        // Counted by the server's flood control, like `/who`.
        self.unacked.try_spend(now);
        let request = self.outstanding(ClientV2::Topic { text }, "/topic", now);
        fx.send.push(request.request.clone());
        self.topic_request = Some(request);
    }

    /// `* topic: TEXT`; with `always`, also `* no topic is set`.
    pub(super) fn show_topic(&mut self, fx: &mut Effects, always: bool) {
        let line = match &self.topic {
            Some(topic) => format::notice(&format!("topic: {topic}")),
            None if always => format::notice("no topic is set (set one with /topic TEXT)"),
            None => return,
        };
        self.say(fx, line);
    }

    /// The server's `topic` event: someone (maybe this member) set or cleared it.
    pub(super) fn topic_changed(&mut self, fx: &mut Effects, name: &str, text: &str) {
        if name == self.setup.me {
            self.topic_request = None;
        }
        self.topic = (!text.is_empty()).then(|| text.to_owned());
        let line = if text.is_empty() {
            format!("{name} cleared the topic")
        } else {
            format!("{name} set the topic: {text}")
        };
        self.say(fx, format::notice(&line));
    }
}
