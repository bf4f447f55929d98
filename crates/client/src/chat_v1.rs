//! A room over version 1 of the data plane (`--v1`), exactly as the reference server expects
//! it: register, relay stdin to the room and the room to stdout until the user quits or the
//! room closes.

use std::io::IsTerminal;

use tokio::sync::mpsc;

use crate::admission::{room_name, udp_server};
use crate::cli::Cli;
use crate::display::{print_line, print_problem, render};
use crate::error::ClientError;
use crate::handshake::{Admission, Request};
use crate::input::{self, InputLine, MAX_INPUT_LINE};
use crate::session::{Incoming, RegisterPolicy, Session};

/// The line that leaves the room, like end of input does.
pub const QUIT_COMMAND: &str = "/quit";

/// Chats in the room `admission` let this member into, until the end.
pub async fn chat(cli: &Cli, request: &Request, admission: &Admission) -> Result<(), ClientError> {
    let session = Session::open(
        udp_server(cli, admission),
        room_name(request, admission),
        admission.grant.token.clone(),
    )
    .await?;
    let first = session.register(RegisterPolicy::default()).await?;
    tracing::info!(server = %session.server(), room = session.room(), "registered");

    if std::io::stdin().is_terminal() {
        print_line(&banner(&session, admission))?;
    }
    if let Some(incoming) = first
        && show(&incoming)?
    {
        return Ok(());
    }
    let lines = input::spawn_stdin_reader().map_err(ClientError::Input)?;
    tokio::select! {
        received = receive_until_closed(&session) => received,
        typed = send_until_quit(&session, lines) => typed,
    }
}

fn banner(session: &Session, admission: &Admission) -> String {
    let name = admission.grant.username.as_deref().unwrap_or("you");
    let role = if admission.grant.host == Some(true) {
        " (host: the room closes when you leave)"
    } else {
        ""
    };
    format!(
        "* in {:?} as {name}{role}; type {QUIT_COMMAND} to leave",
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
) -> Result<(), ClientError> {
    while let Some(line) = lines.recv().await {
        match line.map_err(ClientError::Input)? {
            InputLine::Text(text) if text.is_empty() => {}
            InputLine::Text(text) if text.trim() == QUIT_COMMAND => break,
            InputLine::Text(text) => match session.encode_chat(&text) {
                Ok(datagram) => session.send_datagram(&datagram).await?,
                Err(rejection) => print_problem(&rejection.to_string()),
            },
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
