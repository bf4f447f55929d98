//! One version-2 membership as a state machine without I/O: it takes what the server sent,
//! what the user typed and the passing of time, and answers with datagrams to send, lines to
//! print and, at the end, why it ended. [`crate::v2::event_loop`] does the I/O around it.
//!
//! It combines the [`UnackedQueue`] (seq, ack, retransmit), the [`ReorderBuffer`] (print each
//! message once, in id order) and the [`Keepalive`] (ping, re-register, silence notices).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use chat_protocol::time::unix_ms;
use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2, V2ErrorCode};

use crate::ui::format;
use crate::v2::keepalive::{Keepalive, Probe, Silence};
use crate::v2::reorder::ReorderBuffer;
use crate::v2::typing::TypingNotices;
use crate::v2::unacked::{MAX_PENDING, UnackedQueue};

mod effects;
mod leaving;
mod moderation;
mod presence;
mod registration;
mod requests;
mod room_info;
mod search;
mod sending;
mod setup;
mod typed;

pub use effects::{Effects, Ending, Transfer};
use leaving::Leaving;
use presence::Roster;
use registration::Registration;
use requests::Outstanding;
pub use sending::Outgoing;
pub use setup::{Setup, Timing};

/// What the user is told when the server does not know the room any more.
pub const ROOM_GONE: &str = "this room no longer exists";

/// The state of one version-2 membership.
#[derive(Debug)]
pub struct Conversation {
    setup: Setup,
    registration: Option<Registration>,
    keepalive: Keepalive,
    /// Scale-out: the link moved to another node, whose first answer after binding this
    /// address sends what is unacked again at once.
    failed_over: bool,
    unacked: UnackedQueue,
    reorder: ReorderBuffer,
    typing: TypingNotices,
    who: Option<Outstanding>,
    history: Option<Outstanding>,
    /// A `/topic` waiting for the server's `topic` event.
    topic_request: Option<Outstanding>,
    /// The room's topic, as the server last said.
    topic: Option<String>,
    /// Queued messages that are not plain lines, by seq.
    kinds: BTreeMap<u64, Outgoing>,
    /// A `/kick`, `/ban` or `/host` waiting for its answer.
    moderation: Option<Outstanding>,
    /// Names whose messages are hidden (`/ignore`), by key.
    ignored: BTreeMap<String, String>,
    /// An `/away` or `/back` waiting for its confirmation.
    away_request: Option<Outstanding>,
    /// Who is away, as the last `members` said.
    away: BTreeMap<String, String>,
    /// The local day of the last message shown with its date line (terminals).
    last_day: Option<chrono::NaiveDate>,
    /// The members' names as last heard.
    known: BTreeSet<String>,
    /// A `/search` waiting for its answer.
    search: Option<Outstanding>,
    /// The last search's words, its oldest match and whether older ones remain.
    last_search: Option<(String, Option<u64>, bool)>,
    oldest_shown: Option<u64>,
    leaving: Option<Leaving>,
    ended: bool,
}

impl Conversation {
    /// Starts registering: the returned effects hold the first `register`.
    pub fn start(setup: Setup, now: Instant) -> (Self, Effects) {
        let timing = setup.timing;
        let conversation = Self {
            registration: Some(Registration {
                attempts: 1,
                next_at: now + timing.register_every,
                members: None,
                held: Vec::new(),
            }),
            keepalive: Keepalive::new(timing.keepalive, now),
            failed_over: false,
            unacked: UnackedQueue::new(MAX_PENDING, timing.backoff),
            reorder: ReorderBuffer::default(),
            typing: TypingNotices::default(),
            who: None,
            history: None,
            topic_request: None,
            topic: None,
            kinds: BTreeMap::new(),
            moderation: None,
            ignored: BTreeMap::new(),
            away_request: None,
            away: BTreeMap::new(),
            last_day: None,
            known: BTreeSet::new(),
            search: None,
            last_search: None,
            oldest_shown: None,
            leaving: None,
            ended: false,
            setup,
        };
        let effects = Effects {
            send: vec![ClientV2::Register { last_id: None }],
            ..Effects::default()
        };
        (conversation, effects)
    }

    /// Whether the first registration has been confirmed.
    pub fn is_registered(&self) -> bool {
        self.registration.is_none()
    }

    /// How many typed messages still wait for the server's ack.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The newest id shown, for a `register` or `ping`.
    pub fn last_id(&self) -> Option<u64> {
        self.reorder.last_id()
    }

    /// The room and this member's name, for `/status`.
    pub fn who_where(&self) -> (&str, &str) {
        (&self.setup.room, &self.setup.me)
    }

    /// The data plane changed its route (UDP to the tunnel) or its keys (the tunnel came
    /// back): register there with `last_id`, which binds it and replays what was missed,
    /// and retransmit what is unacked. Ids keep it lossless and duplicate-free.
    pub fn path_changed(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended {
            return fx;
        }
        fx.send.push(ClientV2::Register {
            last_id: self.reorder.last_id(),
        });
        self.unacked.hurry(now);
        self.settle(&mut fx, now);
        fx
    }

    /// The next instant at which [`Conversation::on_tick`] has something to do.
    pub fn next_wakeup(&self) -> Instant {
        let requests = self.requests_due();
        if let Some(registration) = &self.registration {
            return requests.fold(registration.next_at, Instant::min);
        }
        let leaving = self.leaving.as_ref().and_then(|leaving| leaving.deadline);
        requests
            .chain(self.unacked.next_due())
            .chain(leaving)
            .fold(self.keepalive.next_wakeup(), Instant::min)
    }

    /// A datagram from the server.
    pub fn on_server(&mut self, message: ServerV2, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended {
            return fx;
        }
        if self.keepalive.heard(now) && self.is_registered() {
            self.say(&mut fx, format::notice("connection to the server restored"));
            self.unacked.hurry(now);
        }
        if self.failed_over && !matches!(message, ServerV2::Challenge { .. }) {
            self.failed_over = false;
            self.unacked.hurry(now);
        }
        match message {
            ServerV2::Ack { seq, id } => {
                if let Some(text) = self.unacked.acked(seq) {
                    let kind = self.kinds.remove(&seq);
                    let own = ChatMessage {
                        id,
                        from: self.setup.me.clone(),
                        text,
                        ts: unix_ms(SystemTime::now()),
                        me: kind == Some(Outgoing::Action),
                        to: match kind {
                            Some(Outgoing::Direct(to)) => Some(to),
                            _ => None,
                        },
                    };
                    let released = self.reorder.offer(own);
                    self.show(&mut fx, released);
                }
            }
            ServerV2::Msg(message) => {
                self.typing.forget(&message.from);
                let released = self.reorder.offer(message);
                self.show(&mut fx, released);
            }
            ServerV2::History { messages, more } => {
                if self.history.take().is_some() {
                    self.show_history(&mut fx, messages, more);
                }
            }
            ServerV2::Joined { name } => {
                self.roster(&mut fx, Roster::Joined(&name));
                self.say(&mut fx, format::joined(&name));
            }
            ServerV2::Left { name, reason } => {
                self.typing.forget(&name);
                self.moderation_answered(&name);
                self.roster(&mut fx, Roster::Left(&name));
                let line = format::left(&name, reason, self.setup.pair);
                self.say(&mut fx, line);
            }
            ServerV2::Typing { name } => {
                if self.setup.typing_notices
                    && name != self.setup.me
                    && !self.is_ignored(&name)
                    && self.typing.should_show(&name, now)
                {
                    self.say(&mut fx, format::typing(&name));
                }
            }
            ServerV2::Members {
                names,
                host,
                more,
                topic,
                away,
            } => {
                self.topic = topic;
                self.away = away;
                self.roster(&mut fx, Roster::All(&names));
                if let Some(registration) = &mut self.registration {
                    registration.members = Some((names, host, more));
                } else if self.who.take().is_some() {
                    let list = format::member_list_away(&names, &host, more, &self.away);
                    self.say(&mut fx, format::notice(&format!("here now: {list}")));
                    self.show_topic(&mut fx, false);
                }
            }
            ServerV2::Found {
                words,
                messages,
                more,
            } => self.found(&mut fx, &words, messages, more),
            ServerV2::Away { name, text } => {
                self.away_confirmed(&mut fx, &name, text.as_deref());
            }
            ServerV2::Topic { name, text } => self.topic_changed(&mut fx, &name, &text),
            ServerV2::Host { name } => {
                self.moderation_answered(&name);
                self.say(&mut fx, format::notice(&format!("{name} is now the host")));
            }
            ServerV2::Kicked { by, ban } => {
                self.removed(&mut fx, &by, ban);
                return fx;
            }
            ServerV2::Skip { id } => {
                // A direct message between two others: its id is taken, nothing to show.
                let placeholder = ChatMessage {
                    id,
                    ..ChatMessage::default()
                };
                let released = self.reorder.offer(placeholder);
                self.show(&mut fx, released);
            }
            // This socket's address is not bound yet: prove that it receives here.
            ServerV2::Challenge { nonce } => fx.send.push(ClientV2::Echo { nonce }),
            ServerV2::Moved => {
                // Either this client's own address changed (the register comes from the new
                // one, which is bound already) or someone else holds the token: registering
                // again from here takes it back, once this address answers the challenge.
                let line = format::notice(
                    "the server saw this membership at another address; registering again from here",
                );
                self.say(&mut fx, line);
                fx.send.push(ClientV2::Register {
                    last_id: self.reorder.last_id(),
                });
            }
            ServerV2::Pong { id } => {
                if self.reorder.is_synced() {
                    let released = self.reorder.pong(id);
                    self.show(&mut fx, released);
                } else {
                    let released = self.reorder.sync(id);
                    self.show_synced(&mut fx, released, id);
                }
            }
            ServerV2::RoomClosed { reason } => {
                self.say(&mut fx, format::closed(reason));
                self.finish_registration_lines(&mut fx);
                self.end(&mut fx, Ending::Closed);
                return fx;
            }
            ServerV2::Error {
                code: V2ErrorCode::NoRoom,
                ..
            } => {
                // The server no longer knows this token: the room expired or the server
                // restarted without it. Nothing will ever come; say so and stop.
                self.say(&mut fx, format::notice(ROOM_GONE));
                self.finish_registration_lines(&mut fx);
                self.end(&mut fx, Ending::Gone);
                return fx;
            }
            ServerV2::Error { code, seq, message } => match seq {
                Some(seq) => {
                    self.kinds.remove(&seq);
                    if let Some(text) = self.unacked.refused(seq) {
                        fx.problems.push(format::refused(code, &message, &text));
                    }
                }
                None => {
                    // Only `/topic`, `/away` and the host's commands are refused without a
                    // seq: they are not asked again.
                    self.topic_request = None;
                    self.moderation = None;
                    self.away_request = None;
                    self.search = None;
                    let line = format::notice(&format!("the server refused a request: {message}"));
                    self.say(&mut fx, line);
                }
            },
        }
        self.settle(&mut fx, now);
        fx
    }

    /// The user's input ended: leave, as `/quit` does.
    pub fn on_end_of_input(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if !self.ended && self.leaving.is_none() {
            self.leave(&mut fx, Ending::Quit, now);
            self.settle(&mut fx, now);
        }
        fx
    }

    /// Scale-out: the link moved to another node. Register there at once with `last_id` (it
    /// replays what came after, and challenges the new address first); what is unacked goes
    /// again once the node answers.
    pub fn on_failover(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended || !self.is_registered() {
            return fx;
        }
        self.failed_over = true;
        fx.send.push(ClientV2::Register {
            last_id: self.reorder.last_id(),
        });
        self.settle(&mut fx, now);
        fx
    }

    /// Time passed: retries, retransmissions, keepalive, patience.
    pub fn on_tick(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended {
            return fx;
        }
        if self.registration.is_some() {
            if self.retry_registration(&mut fx, now) {
                return fx;
            }
        } else {
            match self.keepalive.poll_silence(now) {
                Silence::Nothing => {}
                Silence::Noticed => {
                    let line = format::notice("no answer from the server; still trying…");
                    self.say(&mut fx, line);
                }
                Silence::GiveUp => {
                    let silent_for = self.keepalive.silent_for(now);
                    self.end(&mut fx, Ending::ServerSilent { silent_for });
                    return fx;
                }
            }
            if let Some(probe) = self.keepalive.poll_probe(now) {
                let last_id = self.reorder.last_id();
                fx.send.push(match probe {
                    Probe::Ping => ClientV2::Ping { last_id },
                    Probe::Register => ClientV2::Register { last_id },
                });
            }
        }
        self.retry_requests(&mut fx, now);
        if self.give_up_leaving(&mut fx, now) {
            return fx;
        }
        self.settle(&mut fx, now);
        fx
    }

    /// After every event: complete the registration, ask for missing messages, send what is
    /// due, and finish leaving once nothing is unacked.
    fn settle(&mut self, fx: &mut Effects, now: Instant) {
        if self.ended {
            return;
        }
        self.complete_registration(fx, now);
        if !self.is_registered() {
            return;
        }
        self.keepalive.want_fill(self.reorder.has_gap());
        for (seq, text) in self.unacked.due(now) {
            fx.send.push(self.message(seq, text));
        }
        if let Some(leaving) = &self.leaving
            && self.unacked.is_empty()
        {
            let then = leaving.then;
            self.end(fx, then);
        }
    }

    /// Prints a line, or holds it until the welcome while registering.
    fn say(&mut self, fx: &mut Effects, line: String) {
        match &mut self.registration {
            Some(registration) => registration.held.push(line),
            None => fx.lines.push(line),
        }
    }

    fn end(&mut self, fx: &mut Effects, ending: Ending) {
        self.ended = true;
        fx.ending = Some(ending);
    }
}

#[cfg(test)]
mod tests;
