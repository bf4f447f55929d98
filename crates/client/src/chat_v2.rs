//! A room over version 2 of the data plane, the default: reliable, ordered, with history,
//! presence and commands. In a terminal the line editor is used; otherwise plain lines in,
//! plain lines out. `/next` in a pair room pairs again without leaving the program.

use std::io::IsTerminal;
use std::time::Instant;

use crate::admission::{room_name, udp_server, username};
use crate::cli::Cli;
use crate::conversation::{Conversation, Ending, Settings, Timing};
use crate::error::ClientError;
use crate::format::{self, LineStyle};
use crate::handshake::{self, Admission, Request, Timeouts};
use crate::input;
use crate::room::{self, Inputs};
use crate::screen::{PlainScreen, Screen};
use crate::signals;
use crate::terminal;
use crate::transport::Link;

/// Chats in the room `admission` let this member into, and in the next ones `/next` finds,
/// until the end.
pub async fn chat(cli: &Cli, request: &Request, admission: Admission) -> Result<(), ClientError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive {
        match terminal::start() {
            Ok((terminal, mut inputs)) => {
                let outcome =
                    chat_in_rooms(cli, request, admission, &mut inputs, &terminal, true).await;
                terminal.finish().await;
                return outcome;
            }
            // A terminal the editor cannot drive (TERM=dumb...) still reads plain lines.
            Err(error) => tracing::info!(%error, "no line editing; reading plain lines"),
        }
    }
    let mut inputs = plain_inputs()?;
    chat_in_rooms(cli, request, admission, &mut inputs, &PlainScreen, false).await
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
    mut admission: Admission,
    inputs: &mut Inputs,
    screen: &dyn Screen,
    interactive: bool,
) -> Result<(), ClientError> {
    let pair = request.operation == chat_protocol::tcrp::Operation::Pair;
    loop {
        let server = udp_server(cli, &admission);
        let room = room_name(request, &admission);
        let link = Link::open(server, room.clone(), admission.grant.token.clone()).await?;
        let settings = Settings {
            me: username(request, &admission),
            room,
            pair,
            style: LineStyle { clock: interactive },
            typing_notices: interactive,
            message_capacity: link.message_capacity(),
            timing: Timing::default(),
        };
        if interactive {
            screen.show(&banner(&settings, &admission))?;
        }
        let (mut conversation, first) = Conversation::start(settings, Instant::now());
        if let Some((burst, interval)) = announced_pace(&admission) {
            conversation.pace(burst, interval, Instant::now());
        }
        let ending = match room::run(&link, &mut conversation, first, inputs, screen).await {
            Ok(ending) => ending,
            Err(error) => {
                // Best effort, so that the name (or, for a host, the room) is not left behind.
                let _ = room::leave(&link).await;
                return Err(error);
            }
        };
        tracing::info!(?ending, room = link.room(), "conversation over");
        if matches!(
            ending,
            Ending::Unregistered { .. } | Ending::ServerSilent { .. }
        ) {
            // The server may hear without being heard; leaving costs nothing if it is gone.
            room::leave(&link).await?;
        }
        match ending {
            Ending::Quit | Ending::Closed | Ending::Gone => return Ok(()),
            Ending::Next => {
                screen.show(&format::notice("looking for someone new…"))?;
                admission =
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

/// The flood control the grant announced, if any.
pub fn announced_pace(admission: &Admission) -> Option<(u32, std::time::Duration)> {
    let burst = admission.grant.send_burst?;
    let interval = admission.grant.send_interval_ms?;
    Some((burst, std::time::Duration::from_millis(interval)))
}

fn banner(settings: &Settings, admission: &Admission) -> String {
    let role = if admission.grant.host == Some(true) {
        " (host: the room closes when you leave)"
    } else {
        ""
    };
    format::notice(&format!(
        "in {:?} as {}{role}; type /help for commands, /quit to leave",
        settings.room, settings.me
    ))
}
