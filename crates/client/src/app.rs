//! One run of the client: check the names, do the handshake, register over UDP, then relay
//! stdin to the room and the room to stdout until the user quits or the room closes.

use std::io::IsTerminal;
use std::net::SocketAddr;

use chat_protocol::names::{validate_room_name, validate_username};
use chat_protocol::tcrp::{Operation, UserRequest};
use tokio::sync::mpsc;

use crate::cli::{Cli, Command, DEFAULT_UDP_PORT};
use crate::display::{print_line, print_problem, render};
use crate::error::ClientError;
use crate::handshake::{self, Admission, Request, Timeouts};
use crate::input::{self, InputLine, MAX_INPUT_LINE};
use crate::session::{Incoming, RegisterPolicy, Session};

/// The line that leaves the room, like end of input does.
pub const QUIT_COMMAND: &str = "/quit";

/// Runs the client to its end on a runtime of its own. `Ok` is a normal end: the user quit,
/// input ended, or the room was closed.
pub fn run(cli: Cli) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    let outcome = runtime.block_on(chat(cli));
    // Nothing may be left to wait for: the stdin thread can stay blocked in a read forever.
    runtime.shutdown_background();
    outcome
}

/// The whole session, for callers that bring their own runtime.
pub async fn chat(cli: Cli) -> Result<(), ClientError> {
    let request = build_request(&cli.command)?;
    let admission =
        handshake::perform(&cli.server, cli.tcp_port, &request, Timeouts::default()).await?;
    let session = open_session(&cli, &request, &admission).await?;
    let first = session.register(RegisterPolicy::default()).await?;
    tracing::info!(server = %session.server(), room = session.room(), "registered");

    if std::io::stdin().is_terminal() {
        print_line(&banner(&session, &admission))?;
    }
    if let Some(incoming) = first {
        if show(&incoming)? {
            return Ok(());
        }
    }
    let lines = input::spawn_stdin_reader().map_err(ClientError::Input)?;
    tokio::select! {
        received = receive_until_closed(&session) => received,
        typed = send_until_quit(&session, lines) => typed,
    }
}

/// Checks the names locally, so that an obvious mistake is explained without a round trip.
fn build_request(command: &Command) -> Result<Request, ClientError> {
    let args = command.room_args();
    validate_room_name(&args.room).map_err(|source| ClientError::InvalidRoomName {
        name: args.room.clone(),
        source,
    })?;
    validate_username(&args.name).map_err(|source| ClientError::InvalidUsername {
        name: args.name.clone(),
        source,
    })?;
    let operation = match command {
        Command::Create(_) => Operation::Create,
        Command::Join(_) => Operation::Join,
    };
    Ok(Request {
        operation,
        room: args.room.clone(),
        user: UserRequest {
            username: args.name.clone(),
            password: None,
        },
    })
}

/// The UDP endpoint is the address that answered the handshake, on the port from the command
/// line, else the one the server announced, else the default.
async fn open_session(
    cli: &Cli,
    request: &Request,
    admission: &Admission,
) -> Result<Session, ClientError> {
    let announced = admission.grant.udp_port.filter(|&port| port != 0);
    let udp_port = cli.udp_port.or(announced).unwrap_or(DEFAULT_UDP_PORT);
    let server = SocketAddr::new(admission.server.ip(), udp_port);
    let room = admission
        .grant
        .room
        .clone()
        .unwrap_or_else(|| request.room.clone());
    Session::open(server, room, admission.grant.token.clone()).await
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

#[cfg(test)]
mod tests {
    use crate::cli::RoomArgs;

    use super::*;

    fn join(room: &str, name: &str) -> Command {
        Command::Join(RoomArgs {
            room: room.into(),
            name: name.into(),
        })
    }

    #[test]
    fn invalid_names_are_caught_before_connecting() {
        let error = build_request(&join("lobby", "")).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidUsername { .. }),
            "{error:?}"
        );
        assert_eq!(error.exit_code(), 2);
        let error = build_request(&join(&"r".repeat(65), "bob")).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidRoomName { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn requests_use_the_object_payload() {
        let request = build_request(&Command::Create(RoomArgs {
            room: "lobby".into(),
            name: "alice".into(),
        }))
        .unwrap();
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.user.to_payload(), br#"{"username":"alice"}"#);
    }
}
