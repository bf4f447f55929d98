//! A room over version 2 of the data plane, the default: reliable, ordered, with history,
//! presence and commands. In a terminal the line editor is used; otherwise plain lines in,
//! plain lines out. `/next` in a pair room pairs again without leaving the program.
//!
//! The [`event_loop`] does the I/O around a [`conversation::Conversation`], a state machine
//! built from the [`unacked`] queue (seq, ack, retransmit), the [`reorder`] buffer (each
//! message once, in id order), the [`keepalive`] (ping, re-register, silence) and [`typing`]
//! (indicator pacing); [`commands`] reads what the user typed.

pub mod commands;
pub mod conversation;
pub mod event_loop;
pub mod keepalive;
pub mod reorder;
pub mod typing;
pub mod unacked;

use std::io::IsTerminal;
use std::time::Instant;

use crate::cli::Cli;
use crate::entering::handshake::{self, Membership, Request, Timeouts};
use crate::entering::{room_name, udp_server, username};
use crate::error::ClientError;
use crate::files::FileLink;
use crate::pace;
use crate::signals;
use crate::transport::Link;
use crate::ui::format::{self, LineStyle};
use crate::ui::input::{self, Inputs};
use crate::ui::screen::{PlainScreen, Screen};
use crate::ui::terminal;
use crate::v2::conversation::{Conversation, Ending, Setup, Timing};

/// Chats in the room `membership` let this member into, and in the next ones `/next` finds,
/// until the end.
pub async fn chat(cli: &Cli, request: &Request, membership: Membership) -> Result<(), ClientError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive {
        match terminal::start() {
            Ok((terminal, mut inputs)) => {
                let outcome =
                    chat_in_rooms(cli, request, membership, &mut inputs, &terminal, true).await;
                terminal.finish().await;
                return outcome;
            }
            // A terminal the editor cannot drive (TERM=dumb...) still reads plain lines.
            Err(error) => tracing::info!(%error, "no line editing; reading plain lines"),
        }
    }
    let mut inputs = plain_inputs()?;
    chat_in_rooms(cli, request, membership, &mut inputs, &PlainScreen, false).await
}

/// Standard input read line by line, and Ctrl-C, SIGTERM and SIGHUP, which leave like
/// `/quit`.
fn plain_inputs() -> Result<Inputs, ClientError> {
    let lines = input::spawn_stdin_reader().map_err(ClientError::Input)?;
    Ok(Inputs::new(lines, None, Some(signals::leave_signals())))
}

async fn chat_in_rooms(
    cli: &Cli,
    request: &Request,
    mut membership: Membership,
    inputs: &mut Inputs,
    screen: &dyn Screen,
    interactive: bool,
) -> Result<(), ClientError> {
    let pair = request.operation == chat_protocol::tcrp::Operation::Pair;
    loop {
        let server = udp_server(cli, &membership);
        let room = room_name(request, &membership);
        let mut link = Link::open(server, room.clone(), membership.grant.token.clone()).await?;
        link.set_failover(crate::failover::alternates(cli, server));
        let setup = Setup {
            me: username(request, &membership),
            room,
            pair,
            style: LineStyle { clock: interactive },
            typing_notices: interactive,
            bell: interactive && !cli.no_bell,
            message_capacity: link.message_capacity(),
            timing: Timing::default(),
        };
        if interactive {
            screen.show(&banner(&setup, &membership))?;
        }
        let (mut conversation, first) = Conversation::start(setup, Instant::now());
        if let Some((burst, interval)) = pace::announced(&membership) {
            conversation.pace(burst, interval, Instant::now());
        }
        let files = membership.grant.http_port.map(|port| FileLink {
            base: format!("http://{}", host_port(&cli.server, port)),
            room: link.room().to_owned(),
            token: membership.grant.token.clone(),
        });
        let ran = event_loop::run(
            &link,
            &mut conversation,
            first,
            inputs,
            screen,
            files.as_ref(),
        );
        let ending = match ran.await {
            Ok(ending) => ending,
            Err(error) => {
                // Best effort, so that the name (or, for a host, the room) is not left behind.
                let _ = event_loop::leave(&link).await;
                return Err(error);
            }
        };
        tracing::info!(?ending, room = link.room(), "conversation over");
        if matches!(
            ending,
            Ending::Unregistered { .. } | Ending::ServerSilent { .. }
        ) {
            // The server may hear without being heard; leaving costs nothing if it is gone.
            event_loop::leave(&link).await?;
        }
        match ending {
            Ending::Quit | Ending::Closed | Ending::Gone => return Ok(()),
            Ending::Next => {
                screen.show(&format::notice("looking for someone new…"))?;
                membership =
                    handshake::perform(&cli.server, cli.tcp_port, request, Timeouts::default())
                        .await?;
            }
            Ending::Unregistered { attempts } => {
                return Err(ClientError::RegistrationUnanswered {
                    addr: server,
                    attempts,
                });
            }
            Ending::ServerSilent { silent_for } => {
                return Err(ClientError::ServerSilent {
                    addr: server,
                    silent_for,
                });
            }
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn banner(setup: &Setup, membership: &Membership) -> String {
    let role = if membership.grant.host == Some(true) {
        " (host: the room closes when you leave)"
    } else {
        ""
    };
    format::notice(&format!(
        "in {:?} as {}{role}; type /help for commands, /quit to leave",
        setup.room, setup.me
    ))
}
