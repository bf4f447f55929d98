//! What a typed line does: chat, an action, a direct message, or one of the `/` commands.

use std::time::Instant;

use chat_protocol::v2::ClientV2;

use super::{Conversation, Effects, Ending, Outgoing, Transfer};
use crate::ui::format;
use crate::v2::commands::{self, COMMAND_LIST, HELP, Typed};

impl Conversation {
    /// A line the user typed.
    pub fn on_line(&mut self, line: &str, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended || self.leaving.is_some() {
            return fx;
        }
        match commands::parse(line) {
            Typed::Blank => {}
            Typed::Say(text) => self.submit(&mut fx, text, None, now),
            Typed::Action(text) => self.submit(&mut fx, text, Some(Outgoing::Action), now),
            Typed::Moderate(action, name) => self.ask_moderation(&mut fx, action, name, now),
            Typed::Ignore(name) => self.ignore(&mut fx, name),
            Typed::Away(text) => self.ask_away(&mut fx, Some(text), now),
            Typed::Back => self.ask_away(&mut fx, None, now),
            Typed::Unignore(name) => self.unignore(&mut fx, &name),
            Typed::Direct { to, text } => {
                self.submit(&mut fx, text, Some(Outgoing::Direct(to)), now);
            }
            Typed::Topic(text) => self.ask_topic(&mut fx, text, now),
            Typed::Help => {
                for line in HELP {
                    self.say(&mut fx, format::notice(line));
                }
            }
            Typed::Status => fx.status = true,
            Typed::Who => {
                // Counted by the server's flood control; never held back, it is one line.
                self.unacked.try_spend(now);
                let request = self.outstanding(ClientV2::Who, "/who", now);
                fx.send.push(request.request.clone());
                self.who = Some(request);
            }
            Typed::History(limit) => self.ask_history(&mut fx, limit, now),
            Typed::Search(words) => self.ask_search(&mut fx, words, now),
            Typed::Share(path) => {
                let shown = format::notice(&format!("sharing {path}…"));
                self.say(&mut fx, shown);
                fx.transfers.push(Transfer::Upload(path.into()));
            }
            Typed::Fetch { id, to } => {
                fx.transfers.push(Transfer::Download {
                    id,
                    to: to.map(Into::into),
                });
            }
            Typed::Next if self.setup.pair => self.leave(&mut fx, Ending::Next, now),
            Typed::Next => {
                let line = format::notice(
                    "/next only works in pair rooms (start one with: chat-client pair --name NAME)",
                );
                self.say(&mut fx, line);
            }
            Typed::Quit => self.leave(&mut fx, Ending::Quit, now),
            Typed::Misused(usage) => self.say(&mut fx, format::notice(usage)),
            Typed::Unknown(command) => {
                let line = format::notice(&format!(
                    "unknown command {command}; commands: {COMMAND_LIST}"
                ));
                self.say(&mut fx, line);
            }
        }
        self.settle(&mut fx, now);
        fx
    }
}
