//! The I/O around a [`Conversation`]: datagrams from the server, lines and typing from the
//! user, and timers go in; datagrams and printed lines come out, until the conversation ends.

use std::time::{Duration, Instant};

use chat_protocol::ucrp::ServerDatagram;
use chat_protocol::v2::{ClientV2, ServerV2};

use crate::error::ClientError;
use crate::transport::{Link, receive_buffer};
use crate::ui::format;
use crate::ui::input::{InputLine, Inputs, MAX_INPUT_LINE, UserEvent};
use crate::ui::screen::Screen;
use crate::v2::conversation::{Conversation, Effects, Ending};

/// `leave` is sent this many times, since UDP may drop one.
pub const LEAVE_COPIES: usize = 3;
/// Spacing of the `leave` copies.
pub const LEAVE_SPACING: Duration = Duration::from_millis(50);

/// Runs `conversation` on `link` until it ends, starting with the effects `first` that
/// [`Conversation::start`] returned. On `/quit` and `/next` the server is told, `leave` sent
/// [`LEAVE_COPIES`] times.
pub async fn run(
    link: &Link,
    conversation: &mut Conversation,
    first: Effects,
    inputs: &mut Inputs,
    screen: &dyn Screen,
) -> Result<Ending, ClientError> {
    let mut buffer = receive_buffer();
    let mut effects = first;
    loop {
        if let Some(ending) = apply(link, screen, effects).await? {
            if matches!(ending, Ending::Quit | Ending::Next) {
                leave(link).await?;
            }
            return Ok(ending);
        }
        let wakeup = tokio::time::Instant::from_std(conversation.next_wakeup());
        effects = tokio::select! {
            received = link.receive(&mut buffer) => match received? {
                Some(len) => match buffer.get(..len).and_then(decode) {
                    Some(message) => conversation.on_server(message, Instant::now()),
                    None => Effects::default(),
                },
                // An ICMP error: nothing listens; the keepalive notices the silence.
                None => Effects::default(),
            },
            event = inputs.next() => match event? {
                UserEvent::Line(InputLine::Text(text)) => {
                    conversation.on_line(&text, Instant::now())
                }
                UserEvent::Line(InputLine::TooLong) => problem(&format!(
                    "not sent, the line is longer than {MAX_INPUT_LINE} bytes"
                )),
                UserEvent::Line(InputLine::NotUtf8) => {
                    problem("not sent, the line is not valid UTF-8")
                }
                UserEvent::EndOfInput | UserEvent::Interrupted => {
                    conversation.on_end_of_input(Instant::now())
                }
                UserEvent::Typing => conversation.on_typing(Instant::now()),
            },
            () = tokio::time::sleep_until(wakeup) => conversation.on_tick(Instant::now()),
        };
    }
}

/// Sends and prints what the conversation asked for; returns its ending, if it ended.
async fn apply(
    link: &Link,
    screen: &dyn Screen,
    effects: Effects,
) -> Result<Option<Ending>, ClientError> {
    for message in &effects.send {
        tracing::trace!(?message, "sending");
        link.send_v2(message).await?;
    }
    for line in &effects.lines {
        screen.show(line)?;
    }
    for line in &effects.problems {
        screen.problem(line)?;
    }
    if let Some(names) = &effects.members {
        screen.names(names);
    }
    Ok(effects.ending)
}

/// Tells the server this member leaves: `leave`, [`LEAVE_COPIES`] times.
pub async fn leave(link: &Link) -> Result<(), ClientError> {
    for copy in 0..LEAVE_COPIES {
        if copy > 0 {
            tokio::time::sleep(LEAVE_SPACING).await;
        }
        link.send_v2(&ClientV2::Leave).await?;
    }
    Ok(())
}

/// A version-2 message from the server; anything else is logged and dropped.
fn decode(datagram: &[u8]) -> Option<ServerV2> {
    match ServerDatagram::decode(datagram) {
        Ok(ServerDatagram::V2(message)) => Some(message),
        Ok(other) => {
            tracing::debug!(?other, "ignoring a version-1 datagram");
            None
        }
        Err(error) => {
            tracing::debug!(%error, len = datagram.len(), "ignoring an undecodable datagram");
            None
        }
    }
}

/// A problem with a line the user typed, which never reached the conversation.
fn problem(text: &str) -> Effects {
    Effects {
        problems: vec![format::notice(text)],
        ..Effects::default()
    }
}
