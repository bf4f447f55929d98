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
pub mod plane;
pub mod reorder;
pub mod typing;
pub mod unacked;

use std::io::IsTerminal;
use std::time::Instant;

use crate::cli::Cli;
use crate::entering::handshake::{Membership, Request};
use crate::entering::{room_name, udp_server, username};
use crate::error::ClientError;
use crate::failover::Failover;
use crate::files::FileLink;
use crate::pace;
use crate::secure::connector::{Connector, Entered};
use crate::secure::plane::SecurePlane;
use crate::secure::sealed_link::SealedLink;
use crate::signals;
use crate::transport::Link;
use crate::ui::format::{self, LineStyle};
use crate::ui::input::{self, Inputs};
use crate::ui::screen::{PlainScreen, Screen};
use crate::ui::terminal;
use crate::v2::conversation::{Conversation, Ending, Setup, Timing};
use crate::v2::plane::DataPlane;

/// Chats in the room `membership` let this member into, and in the next ones `/next` finds,
/// until the end.
pub async fn chat(
    cli: &Cli,
    connector: &Connector,
    request: &Request,
    entered: Entered,
) -> Result<(), ClientError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive {
        match terminal::start() {
            Ok((terminal, mut inputs)) => {
                let outcome = chat_in_rooms(
                    cli,
                    connector,
                    request,
                    entered,
                    &mut inputs,
                    &terminal,
                    true,
                )
                .await;
                terminal.finish().await;
                return outcome;
            }
            // A terminal the editor cannot drive (TERM=dumb...) still reads plain lines.
            Err(error) => tracing::info!(%error, "no line editing; reading plain lines"),
        }
    }
    let mut inputs = plain_inputs()?;
    chat_in_rooms(
        cli,
        connector,
        request,
        entered,
        &mut inputs,
        &PlainScreen,
        false,
    )
    .await
}

/// Standard input read line by line, and Ctrl-C, SIGTERM and SIGHUP, which leave like
/// `/quit`.
fn plain_inputs() -> Result<Inputs, ClientError> {
    let lines = input::spawn_stdin_reader().map_err(ClientError::Input)?;
    Ok(Inputs::new(lines, None, Some(signals::leave_signals())))
}

async fn chat_in_rooms(
    cli: &Cli,
    connector: &Connector,
    request: &Request,
    mut entered: Entered,
    inputs: &mut Inputs,
    screen: &dyn Screen,
    interactive: bool,
) -> Result<(), ClientError> {
    let pair = request.operation == chat_protocol::tcrp::Operation::Pair;
    loop {
        let (mut plane, membership) = open_plane(cli, connector, request, entered).await?;
        let server = udp_server(cli, &membership);
        let room = room_name(request, &membership);
        if let DataPlane::Plain(link) = &mut plane {
            link.set_failover(crate::failover::alternates(cli, server));
        }
        let mut failover = Failover::new(cli, &room, &membership.grant.token);
        let message_capacity = match &plane {
            DataPlane::Plain(link) => link.message_capacity(),
            DataPlane::Sealed(_) => SealedLink::message_capacity(),
        };
        let setup = Setup {
            me: username(request, &membership),
            room: room.clone(),
            pair,
            style: LineStyle { clock: interactive },
            typing_notices: interactive,
            bell: interactive && !cli.no_bell,
            message_capacity,
            timing: Timing::default(),
        };
        if interactive {
            screen.show(&banner(&setup, &membership))?;
        }
        let (mut conversation, first) = Conversation::start(setup, Instant::now());
        if let Some((burst, interval)) = pace::announced(&membership) {
            conversation.pace(burst, interval, Instant::now());
        }
        // Shared files carry the token: in an encrypted conversation they go inside TLS to
        // the pinned server (its HTTP port serves TLS too), never in clear.
        let files = match membership.grant.http_port {
            Some(port) => Ok(FileLink {
                base: format!("http://{}", host_port(&cli.server, port)),
                room: room.clone(),
                token: membership.grant.token.clone(),
                pinned: match &plane {
                    DataPlane::Sealed(sealed) => Some((cli.server.clone(), sealed.fingerprint())),
                    DataPlane::Plain(_) => None,
                },
            }),
            None => Err("this server does not share files (it serves no HTTP)"),
        };
        let ran = event_loop::run(
            &mut plane,
            &mut conversation,
            first,
            inputs,
            screen,
            files.as_ref().map_err(|why| *why),
            failover.as_mut(),
        );
        let ending = match ran.await {
            Ok(ending) => ending,
            Err(error) => {
                // Best effort, so that the name (or, for a host, the room) is not left behind.
                let _ = event_loop::leave(&mut plane).await;
                plane.close().await;
                return Err(error);
            }
        };
        tracing::info!(?ending, room = %room, "conversation over");
        if matches!(
            ending,
            Ending::Unregistered { .. } | Ending::ServerSilent { .. }
        ) {
            // The server may hear without being heard; leaving costs nothing if it is gone.
            event_loop::leave(&mut plane).await?;
        }
        plane.close().await;
        match ending {
            Ending::Quit | Ending::Closed | Ending::Gone => return Ok(()),
            Ending::Next => {
                screen.show(&format::notice("looking for someone new…"))?;
                entered = connector.handshake(request).await?;
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

/// The data plane of a membership: plaintext over UDP, or sealed over UDP and the tunnel.
async fn open_plane(
    cli: &Cli,
    connector: &Connector,
    request: &Request,
    entered: Entered,
) -> Result<(DataPlane, Membership), ClientError> {
    match entered {
        Entered::Plain(membership) => {
            let link = Link::open(
                udp_server(cli, &membership),
                room_name(request, &membership),
                membership.grant.token.clone(),
            )
            .await?;
            Ok((DataPlane::Plain(link), membership))
        }
        Entered::Secure(secured) => {
            let membership = secured.membership.clone();
            let reattach = connector.reattach(
                &room_name(request, &membership),
                &membership.grant.token,
                secured.fingerprint,
            );
            let plane = SecurePlane::open(
                udp_server(cli, &membership),
                *secured,
                reattach,
                cli.tcp,
                Instant::now(),
            )
            .await?;
            Ok((DataPlane::Sealed(Box::new(plane)), membership))
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
