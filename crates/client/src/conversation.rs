//! One version-2 membership as a state machine without I/O: it takes what the server sent,
//! what the user typed and the passing of time, and answers with datagrams to send, lines to
//! print and, at the end, why it ended. [`crate::room`] does the I/O around it.
//!
//! It combines the [`Outbox`] (seq, ack, retransmit), the [`Ordering`] buffer (print each
//! message once, in id order) and the [`Keepalive`] (ping, re-register, silence notices).

use std::time::{Duration, Instant, SystemTime};

use chat_protocol::v2::{ChatMessage, ClientV2, ServerV2, V2ErrorCode};

use crate::commands::{self, COMMAND_LIST, HELP, Typed};
use crate::format::{self, LineStyle};
use crate::keepalive::{Keepalive, KeepaliveTiming, Probe, Silence};
use crate::ordering::Ordering;
use crate::reliability::{Backoff, MAX_PENDING, Outbox, Pacer};
use crate::typing::TypingNotices;

/// What the user is told when the server does not know the room any more.
pub const ROOM_GONE: &str = "this room no longer exists";

/// Every pace and patience of a conversation; the defaults are the product's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Spacing of `register` while the first registration is unanswered.
    pub register_every: Duration,
    /// `register` datagrams sent before giving up on the server.
    pub register_attempts: u32,
    /// Pings, re-registration and silence.
    pub keepalive: KeepaliveTiming,
    /// Retransmission of unacked chat messages.
    pub backoff: Backoff,
    /// Spacing of retries of an unanswered `/who` or `/history`.
    pub request_every: Duration,
    /// Tries of a `/who` or `/history` before telling the user it went unanswered.
    pub request_attempts: u32,
    /// How long leaving waits for unacked messages to be acked.
    pub leave_drain: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            register_every: Duration::from_secs(1),
            register_attempts: 5,
            keepalive: KeepaliveTiming::default(),
            backoff: Backoff::default(),
            request_every: Duration::from_secs(1),
            request_attempts: 3,
            leave_drain: Duration::from_secs(3),
        }
    }
}

/// Who and where this conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This member's username, as the server stored it.
    pub me: String,
    /// The room's name.
    pub room: String,
    /// Whether this is a pair room (op 3), where `/next` works.
    pub pair: bool,
    /// How chat lines look.
    pub style: LineStyle,
    /// Whether to show other members' typing indicators (terminals only).
    pub typing_notices: bool,
    /// Most bytes of message one datagram carries beside the room and token.
    pub message_capacity: usize,
    /// Paces and patience.
    pub timing: Timing,
}

/// Why a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The user left (`/quit`, end of input): tell the server.
    Quit,
    /// The user asked for a new partner: tell the server, then pair again.
    Next,
    /// The room was closed; there is nobody to tell.
    Closed,
    /// The server no longer has the room (it expired, or the server restarted without it).
    Gone,
    /// The server never confirmed the registration.
    Unregistered {
        /// How many `register` datagrams were sent.
        attempts: u32,
    },
    /// The server stopped answering for good.
    ServerSilent {
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// What the conversation wants done after an event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Datagrams to send, in order.
    pub send: Vec<ClientV2>,
    /// Lines to print, in order.
    pub lines: Vec<String>,
    /// Notices about this user's own messages that were not sent: errors, which a plain
    /// session prints on stderr, apart from the room's transcript.
    pub problems: Vec<String>,
    /// Set once: the conversation is over.
    pub ending: Option<Ending>,
}

/// The first registration, until both `members` and `pong` have arrived.
#[derive(Debug)]
struct Registration {
    attempts: u32,
    next_at: Instant,
    members: Option<(Vec<String>, String, u64)>,
    /// Lines produced before the welcome, printed right after it.
    held: Vec<String>,
}

/// A `/who` or `/history` waiting for its answer.
#[derive(Debug)]
struct Outstanding {
    request: ClientV2,
    command: &'static str,
    attempts: u32,
    next_at: Instant,
}

/// The user asked to leave; unacked messages get a little time first.
#[derive(Debug)]
struct Leaving {
    then: Ending,
    /// Set once registered: the drain only starts when messages can be sent at all.
    deadline: Option<Instant>,
}

/// The state of one version-2 membership.
#[derive(Debug)]
pub struct Conversation {
    settings: Settings,
    registration: Option<Registration>,
    keepalive: Keepalive,
    outbox: Outbox,
    order: Ordering,
    typing: TypingNotices,
    who: Option<Outstanding>,
    history: Option<Outstanding>,
    oldest_shown: Option<u64>,
    leaving: Option<Leaving>,
    ended: bool,
}

impl Conversation {
    /// Starts registering: the returned effects hold the first `register`.
    pub fn start(settings: Settings, now: Instant) -> (Self, Effects) {
        let timing = settings.timing;
        let conversation = Self {
            registration: Some(Registration {
                attempts: 1,
                next_at: now + timing.register_every,
                members: None,
                held: Vec::new(),
            }),
            keepalive: Keepalive::new(timing.keepalive, now),
            outbox: Outbox::new(MAX_PENDING, timing.backoff),
            order: Ordering::default(),
            typing: TypingNotices::default(),
            who: None,
            history: None,
            oldest_shown: None,
            leaving: None,
            ended: false,
            settings,
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
        self.outbox.len()
    }

    /// The next instant at which [`Conversation::on_tick`] has something to do.
    pub fn next_wakeup(&self) -> Instant {
        let requests = [&self.who, &self.history]
            .into_iter()
            .flatten()
            .map(|outstanding| outstanding.next_at);
        if let Some(registration) = &self.registration {
            return requests.fold(registration.next_at, Instant::min);
        }
        let leaving = self.leaving.as_ref().and_then(|leaving| leaving.deadline);
        requests
            .chain(self.outbox.next_due())
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
            self.outbox.hurry(now);
        }
        match message {
            ServerV2::Ack { seq, id } => {
                if let Some(text) = self.outbox.acked(seq) {
                    let own = ChatMessage {
                        id,
                        from: self.settings.me.clone(),
                        text,
                        ts: unix_ms(),
                    };
                    let released = self.order.offer(own);
                    self.show(&mut fx, released);
                }
            }
            ServerV2::Msg(message) => {
                self.typing.forget(&message.from);
                let released = self.order.offer(message);
                self.show(&mut fx, released);
            }
            ServerV2::History { messages, more } => {
                if self.history.take().is_some() {
                    self.show_history(&mut fx, messages, more);
                }
            }
            ServerV2::Joined { name } => self.say(&mut fx, format::joined(&name)),
            ServerV2::Left { name, reason } => {
                self.typing.forget(&name);
                let line = format::left(&name, reason, self.settings.pair);
                self.say(&mut fx, line);
            }
            ServerV2::Typing { name } => {
                if self.settings.typing_notices
                    && name != self.settings.me
                    && self.typing.should_show(&name, now)
                {
                    self.say(&mut fx, format::typing(&name));
                }
            }
            ServerV2::Members { names, host, more } => {
                if let Some(registration) = &mut self.registration {
                    registration.members = Some((names, host, more));
                } else if self.who.take().is_some() {
                    self.say(&mut fx, format::here_now(&names, &host, more));
                }
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
                    last_id: self.order.last_id(),
                });
            }
            ServerV2::Pong { id } => {
                let released = if self.order.is_synced() {
                    self.order.pong(id)
                } else {
                    self.order.sync(id)
                };
                self.show(&mut fx, released);
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
                    if let Some(text) = self.outbox.refused(seq) {
                        fx.problems.push(format::refused(code, &message, &text));
                    }
                }
                None => {
                    let line = format::notice(&format!("the server refused a request: {message}"));
                    self.say(&mut fx, line);
                }
            },
        }
        self.settle(&mut fx, now);
        fx
    }

    /// A line the user typed.
    pub fn on_line(&mut self, line: &str, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended || self.leaving.is_some() {
            return fx;
        }
        match commands::parse(line) {
            Typed::Blank => {}
            Typed::Say(text) => self.submit(&mut fx, text, now),
            Typed::Help => {
                for line in HELP {
                    self.say(&mut fx, format::notice(line));
                }
            }
            Typed::Who => {
                // Counted by the server's flood control; never held back, it is one line.
                self.outbox.try_spend(now);
                let request = self.outstanding(ClientV2::Who, "/who", now);
                fx.send.push(request.request.clone());
                self.who = Some(request);
            }
            Typed::History(limit) => self.ask_history(&mut fx, limit, now),
            Typed::Next if self.settings.pair => self.leave(&mut fx, Ending::Next, now),
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

    /// The user's input ended: leave, as `/quit` does.
    pub fn on_end_of_input(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if !self.ended && self.leaving.is_none() {
            self.leave(&mut fx, Ending::Quit, now);
            self.settle(&mut fx, now);
        }
        fx
    }

    /// The user is editing a line (already paced by the caller).
    pub fn on_typing(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        // An indicator counts against flood control too; it is skipped, never queued, when
        // the pace leaves no room for it.
        if !self.ended
            && self.leaving.is_none()
            && self.is_registered()
            && self.outbox.try_spend(now)
        {
            fx.send.push(ClientV2::Typing);
        }
        fx
    }

    /// Paces chat to the flood control the server announced (`burst` messages at once, then
    /// one per `interval`), so that lines pasted at once wait their turn instead of being
    /// refused.
    pub fn pace(&mut self, burst: u32, interval: Duration, now: Instant) {
        self.outbox.pace(Pacer::new(burst, interval, now));
    }

    /// Time passed: retries, retransmissions, keepalive, patience.
    pub fn on_tick(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.ended {
            return fx;
        }
        if let Some(registration) = &mut self.registration {
            if now >= registration.next_at {
                if registration.attempts >= self.settings.timing.register_attempts {
                    let attempts = registration.attempts;
                    self.end(&mut fx, Ending::Unregistered { attempts });
                    return fx;
                }
                registration.attempts += 1;
                registration.next_at = now + self.settings.timing.register_every;
                fx.send.push(ClientV2::Register {
                    last_id: self.order.last_id(),
                });
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
                let last_id = self.order.last_id();
                fx.send.push(match probe {
                    Probe::Ping => ClientV2::Ping { last_id },
                    Probe::Register => ClientV2::Register { last_id },
                });
            }
        }
        self.retry_requests(&mut fx, now);
        if let Some(leaving) = &self.leaving
            && leaving.deadline.is_some_and(|deadline| now >= deadline)
        {
            let then = leaving.then;
            let count = self.outbox.len();
            let line = format::notice(&format!(
                "{count} message(s) were not confirmed by the server and may be lost"
            ));
            self.say(&mut fx, line);
            self.end(&mut fx, then);
            return fx;
        }
        self.settle(&mut fx, now);
        fx
    }

    /// Queues a chat message; it goes out at once when registered.
    fn submit(&mut self, fx: &mut Effects, text: String, now: Instant) {
        let encoded = encoded_len(&ClientV2::Msg {
            seq: u64::MAX,
            text: text.clone(),
        });
        if encoded > self.settings.message_capacity {
            let line = format::notice(&format!(
                "not sent, the message is too long for one datagram ({} bytes): {}",
                text.len(),
                format::quote(&text)
            ));
            fx.problems.push(line);
            return;
        }
        if let Err(full) = self.outbox.submit(text, now) {
            let line = format::notice(&format!(
                "not sent: {} messages are still waiting for the server; try again when it answers",
                full.pending
            ));
            fx.problems.push(line);
        }
    }

    fn ask_history(&mut self, fx: &mut Effects, limit: u32, now: Instant) {
        if self.history.is_some() {
            self.say(
                fx,
                format::notice("still waiting for the previous /history"),
            );
            return;
        }
        let before = self
            .oldest_shown
            .or_else(|| self.order.last_id().map(|cursor| cursor + 1));
        if before.is_some_and(|before| before <= 1) {
            self.say(fx, format::notice("no earlier messages"));
            return;
        }
        let request = ClientV2::History {
            before,
            limit: Some(limit),
        };
        self.outbox.try_spend(now);
        let request = self.outstanding(request, "/history", now);
        fx.send.push(request.request.clone());
        self.history = Some(request);
    }

    fn show_history(&mut self, fx: &mut Effects, mut messages: Vec<ChatMessage>, more: bool) {
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
            self.say(fx, format::chat_line(message, self.settings.style));
        }
        let last = if more {
            "(more: /history again)"
        } else {
            "end of earlier messages"
        };
        self.say(fx, format::notice(last));
    }

    fn outstanding(&self, request: ClientV2, command: &'static str, now: Instant) -> Outstanding {
        Outstanding {
            request,
            command,
            attempts: 1,
            next_at: now + self.settings.timing.request_every,
        }
    }

    fn retry_requests(&mut self, fx: &mut Effects, now: Instant) {
        let max = self.settings.timing.request_attempts;
        let every = self.settings.timing.request_every;
        let mut unanswered = Vec::new();
        for slot in [&mut self.who, &mut self.history] {
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

    fn leave(&mut self, fx: &mut Effects, then: Ending, now: Instant) {
        if self.outbox.is_empty() {
            self.end(fx, then);
            return;
        }
        let deadline = self
            .is_registered()
            .then(|| now + self.settings.timing.leave_drain);
        self.leaving = Some(Leaving { then, deadline });
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
        self.keepalive.want_fill(self.order.has_gap());
        for (seq, text) in self.outbox.due(now) {
            fx.send.push(ClientV2::Msg { seq, text });
        }
        if let Some(leaving) = &self.leaving
            && self.outbox.is_empty()
        {
            let then = leaving.then;
            self.end(fx, then);
        }
    }

    fn complete_registration(&mut self, fx: &mut Effects, now: Instant) {
        let Some(registration) = &mut self.registration else {
            return;
        };
        if !self.order.is_synced() {
            return;
        }
        let Some((names, host, more)) = registration.members.take() else {
            return;
        };
        let held = std::mem::take(&mut registration.held);
        self.registration = None;
        self.keepalive = Keepalive::new(self.settings.timing.keepalive, now);
        let me = &self.settings.me;
        fx.lines.push(format::notice(&format!(
            "welcome to {}, {me}; here now: {}",
            self.settings.room,
            format::member_list(&names, &host, more)
        )));
        if self.settings.pair && names.iter().all(|name| name == me) {
            fx.lines
                .push(format::notice("waiting for someone to pair with…"));
        }
        fx.lines.extend(held);
        if let Some(leaving) = &mut self.leaving {
            leaving.deadline = Some(now + self.settings.timing.leave_drain);
        }
        self.outbox.hurry(now);
    }

    /// Prints the lines held back during registration, for an ending that comes before it.
    fn finish_registration_lines(&mut self, fx: &mut Effects) {
        if let Some(registration) = &mut self.registration {
            fx.lines.append(&mut registration.held);
        }
    }

    fn show(&mut self, fx: &mut Effects, released: Vec<ChatMessage>) {
        for message in released {
            if self.oldest_shown.is_none() {
                self.oldest_shown = Some(message.id);
            }
            let line = format::chat_line(&message, self.settings.style);
            self.say(fx, line);
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

/// Bytes of message body a version-2 message takes: the marker and its JSON.
fn encoded_len(message: &ClientV2) -> usize {
    serde_json::to_vec(message).map_or(usize::MAX, |json| 1 + json.len())
}

fn unix_ms() -> u64 {
    chat_protocol::time::unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests;
