//! A room over version 1 of the data plane (`--v1`), exactly as the reference server expects
//! it: register, relay stdin to the room and the room to stdout until the user quits or the
//! room closes. Typed lines are read with version 2's [`commands`] parser, so that a command
//! that needs version 2 is answered here and never sent as chat.
//!
//! [`session`] is the membership's datagrams, [`incoming`] what the server sends and how it is
//! shown.

pub mod incoming;
pub mod session;

use std::io::IsTerminal;

use tokio::sync::mpsc;

use crate::cli::Cli;
use crate::entering::handshake::{Membership, Request};
use crate::entering::{room_name, udp_server};
use crate::error::ClientError;
use crate::pace::{self, Pacer};
use crate::signals;
use crate::ui::input::{self, InputLine, MAX_INPUT_LINE};
use crate::ui::screen::{print_line, print_problem};
use crate::v2::commands::{self, Typed};
use incoming::{Incoming, render};
use session::{RegisterPolicy, Session};

/// The line that leaves the room, like end of input does.
pub const QUIT_COMMAND: &str = "/quit";

/// What `/help` shows in a version-1 session.
pub const V1_HELP: [&str; 4] = [
    "* commands: /quit (or /exit) leaves the room; end of input and Ctrl-C do too",
    "* /who, /me, /msg, /topic, /away, /history, /search, /next, /ignore and the host's /kick, /ban and /host need version 2 of the chat protocol (run without --v1)",
    "* a line starting with // sends the rest of it starting with /",
    "* anything else is sent to the room",
];

/// Chats in the room `membership` let this member into, until the end. Whatever ends the
/// session short of the room closing, the server is told this member left, so that its name
/// (and, for a host, its room) is not left behind.
pub async fn chat(
    cli: &Cli,
    request: &Request,
    membership: &Membership,
) -> Result<(), ClientError> {
    let session = open(cli, request, membership).await?;
    let outcome = converse(&session, membership).await;
    if outcome.is_err() {
        // Best effort: the error is what the user needs to see.
        let _ = session.leave().await;
    }
    outcome
}

/// The version-1 session for the membership `membership` granted.
async fn open(
    cli: &Cli,
    request: &Request,
    membership: &Membership,
) -> Result<Session, ClientError> {
    Session::open(
        udp_server(cli, membership),
        room_name(request, membership),
        membership.grant.token.clone(),
    )
    .await
}

/// Leaves the membership `membership` granted without chatting in it, e.g. when it cannot be
/// what the user asked for.
pub async fn abandon(
    cli: &Cli,
    request: &Request,
    membership: &Membership,
) -> Result<(), ClientError> {
    let session = open(cli, request, membership).await?;
    session.register_blind().await?;
    session.leave().await
}

async fn converse(session: &Session, membership: &Membership) -> Result<(), ClientError> {
    // The reference server never answers a registration; only a server that announced our
    // contract in its grant sends the welcome notice worth waiting for.
    let first = if membership.server_is_v1_only() {
        session.register_blind().await?;
        None
    } else {
        session.register(RegisterPolicy::default()).await?
    };
    tracing::info!(server = %session.server(), room = session.room(), "registered");

    if std::io::stdin().is_terminal() {
        print_line(&banner(session, membership))?;
    }
    if let Some(incoming) = first
        && show(&incoming)?
    {
        return Ok(());
    }
    let lines = input::spawn_stdin_reader().map_err(ClientError::Input)?;
    let interrupts = signals::leave_signals();
    let pacer = pace::announced(membership)
        .map(|(burst, interval)| Pacer::new(burst, interval, std::time::Instant::now()));
    tokio::select! {
        received = receive_until_closed(session) => received,
        typed = send_until_quit(session, lines, interrupts, pacer) => typed,
    }
}

fn banner(session: &Session, membership: &Membership) -> String {
    let name = membership.grant.username.as_deref().unwrap_or("you");
    let role = if membership.grant.host == Some(true) {
        " (host: the room closes when you leave)"
    } else {
        ""
    };
    format!(
        "* in {:?} as {name}{role}; type {QUIT_COMMAND} to leave, /help for help",
        session.room()
    )
}

/// Prints an incoming event; `true` when it ends the session.
fn show(incoming: &Incoming) -> Result<bool, ClientError> {
    print_line(&render(incoming))?;
    Ok(*incoming == Incoming::RoomClosed)
}

async fn receive_until_closed(session: &Session) -> Result<(), ClientError> {
    loop {
        let incoming = session.receive().await?;
        if show(&incoming)? {
            return Ok(());
        }
    }
}

async fn send_until_quit(
    session: &Session,
    mut lines: mpsc::Receiver<std::io::Result<InputLine>>,
    mut interrupts: mpsc::Receiver<()>,
    mut pacer: Option<Pacer>,
) -> Result<(), ClientError> {
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            // Ctrl-C, SIGTERM, SIGHUP: leave like /quit.
            Some(()) = interrupts.recv() => None,
        };
        let Some(line) = line else { break };
        match line.map_err(ClientError::Input)? {
            InputLine::Text(text) => {
                if !act_on(session, &text, &mut pacer).await? {
                    break;
                }
            }
            InputLine::TooLong => print_problem(&format!(
                "message not sent: it is longer than {MAX_INPUT_LINE} bytes and at most {} fit \
                 in one datagram",
                session.message_capacity()
            )),
            InputLine::NotUtf8 => print_problem("message not sent: it is not valid UTF-8"),
        }
    }
    session.leave().await
}

/// Sends a typed line or answers the command in it; `false` when the user leaves.
async fn act_on(
    session: &Session,
    line: &str,
    pacer: &mut Option<Pacer>,
) -> Result<bool, ClientError> {
    let text = match commands::parse(line) {
        Typed::Blank => return Ok(true),
        Typed::Quit => return Ok(false),
        Typed::Say(text) => text,
        Typed::Help => {
            for line in V1_HELP {
                print_line(line)?;
            }
            return Ok(true);
        }
        Typed::Status => {
            print_line(
                "* protocol version 1, path: udp, not encrypted (version 1 has no encryption)",
            )?;
            return Ok(true);
        }
        Typed::Who
        | Typed::History(_)
        | Typed::Next
        | Typed::Action(_)
        | Typed::Direct { .. }
        | Typed::Moderate(..)
        | Typed::Ignore(_)
        | Typed::Unignore(_)
        | Typed::Away(_)
        | Typed::Back
        | Typed::Search(_)
        | Typed::Share(_)
        | Typed::Fetch { .. }
        | Typed::Topic(_) => {
            let command = line.split_whitespace().next().unwrap_or(line);
            print_line(&format!(
                "* {command} needs version 2 of the chat protocol; this session speaks \
                 version 1 (--v1, or a version-1-only server)"
            ))?;
            return Ok(true);
        }
        Typed::Misused(usage) => {
            print_line(&format!("* {usage}"))?;
            return Ok(true);
        }
        Typed::Unknown(command) => {
            print_line(&format!(
                "* unknown command {command}; /help lists them (start with // to send a line \
                 starting with /)"
            ))?;
            return Ok(true);
        }
    };
    match session.encode_chat(&text) {
        Ok(datagram) => {
            // Lines pasted faster than the server's flood control allows wait their turn:
            // version 1 has no refusal to tell the user which ones were dropped.
            if let Some(pacer) = pacer.as_mut() {
                while !pacer.try_take(std::time::Instant::now()) {
                    let wait = pacer
                        .ready_at()
                        .saturating_duration_since(std::time::Instant::now());
                    tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
                }
            }
            session.send_datagram(&datagram).await?;
        }
        Err(rejection) => print_problem(&rejection.to_string()),
    }
    Ok(true)
}
