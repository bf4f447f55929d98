//! Getting into a room: check the names, do the handshake (asking for a password once when
//! a private room needs one), and work out where the room's datagrams go.
//!
//! The TCP exchange itself is the [`handshake`]; [`password_prompt`] asks for a private
//! room's password, [`room_table`] prints the list `rooms` asks for. Memberships are
//! [`saved`] so that a crashed client's place can be taken back, once [`resume`] has found
//! that the server still knows it.

pub mod handshake;
pub mod password_prompt;
pub mod resume;
pub mod room_table;
pub mod saved;

use std::io::IsTerminal;
use std::net::SocketAddr;

use chat_protocol::names::{validate_room_name, validate_username};
use chat_protocol::tcrp::{ErrorCode, Operation, UserRequest};

use crate::cli::{Cli, Command, DEFAULT_UDP_PORT};
use crate::error::ClientError;
use crate::secure::connector::{Connector, Entered};
use handshake::{Membership, Request};

/// Checks the names locally, so that an obvious mistake is explained without a round trip.
/// `None` for `rooms`, which joins nothing.
pub fn build_request(command: &Command) -> Result<Option<Request>, ClientError> {
    let Some(username) = command.username() else {
        return Ok(None);
    };
    validate_username(username).map_err(|source| ClientError::InvalidUsername {
        name: username.to_owned(),
        source,
    })?;
    let (operation, room, password) = match command {
        Command::Create(args) | Command::Join(args) => {
            validate_room_name(&args.room).map_err(|source| ClientError::InvalidRoomName {
                name: args.room.clone(),
                source,
            })?;
            let operation = if matches!(command, Command::Create(_)) {
                Operation::Create
            } else {
                Operation::Join
            };
            let password = args.password.as_ref().map(|pw| pw.expose().to_owned());
            (operation, args.room.clone(), password)
        }
        Command::Pair(_) | Command::Rooms => (Operation::Pair, String::new(), None),
    };
    Ok(Some(Request {
        operation,
        room,
        user: UserRequest {
            username: username.to_owned(),
            password,
        },
    }))
}

/// Performs the handshake. A join refused with `bad_password` while no password was given is
/// retried once with one typed at a prompt, when standard input is a terminal to type it on;
/// `request` then keeps it.
pub async fn admit(connector: &Connector, request: &mut Request) -> Result<Entered, ClientError> {
    let first = connector.handshake(request).await;
    match first {
        Err(ClientError::Refused { code, .. })
            if code == ErrorCode::BadPassword.as_str()
                && request.operation == Operation::Join
                && request.user.password.is_none()
                && std::io::stdin().is_terminal() =>
        {
            request.user.password = Some(password_prompt::ask(&request.room).await?);
            connector.handshake(request).await
        }
        // No password was given and there is no terminal to ask on: the password is not
        // wrong, it is missing.
        Err(ClientError::Refused { code, .. })
            if code == ErrorCode::BadPassword.as_str() && request.user.password.is_none() =>
        {
            Err(ClientError::Refused {
                code,
                message: needs_password(&request.room),
            })
        }
        other => other,
    }
}

/// The sentence for a private room joined without a password.
pub fn needs_password(room: &str) -> String {
    format!("the room {room:?} is private and needs a password: give it with --password PW")
}

/// The UDP endpoint: the address that answered the handshake, on the port from the command
/// line, else the one the server announced, else the default.
pub fn udp_server(cli: &Cli, membership: &Membership) -> SocketAddr {
    let announced = membership.grant.udp_port.filter(|&port| port != 0);
    let udp_port = cli.udp_port.or(announced).unwrap_or(DEFAULT_UDP_PORT);
    SocketAddr::new(membership.server.ip(), udp_port)
}

/// The room joined: as the server named it (pair rooms get generated names), else as asked.
pub fn room_name(request: &Request, membership: &Membership) -> String {
    membership
        .grant
        .room
        .clone()
        .unwrap_or_else(|| request.room.clone())
}

/// The username as the server stored it, else as asked.
pub fn username(request: &Request, membership: &Membership) -> String {
    membership
        .grant
        .username
        .clone()
        .unwrap_or_else(|| request.user.username.clone())
}

#[cfg(test)]
mod tests {
    use crate::cli::{PairArgs, RoomArgs};

    use super::*;

    fn join(room: &str, name: &str) -> Command {
        Command::Join(RoomArgs {
            room: room.into(),
            name: name.into(),
            password: None,
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
            password: Some(String::from("s3cret").into()),
        }))
        .unwrap()
        .unwrap();
        assert_eq!(request.operation, Operation::Create);
        let sent = UserRequest::parse(&request.user.to_payload()).unwrap();
        assert_eq!(sent.username, "alice");
        assert_eq!(sent.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn pairing_names_no_room() {
        let request = build_request(&Command::Pair(PairArgs { name: "bob".into() }))
            .unwrap()
            .unwrap();
        assert_eq!(request.operation, Operation::Pair);
        assert_eq!(request.room, "");
        assert_eq!(build_request(&Command::Rooms).unwrap(), None);
    }
}
