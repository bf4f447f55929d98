//! Taking back the place of a client that crashed: the membership it saved for this server,
//! room and name is used again when the server still knows it. Whether it does: the token is
//! registered from a fresh socket and any answer but "this room no longer exists" means yes.
//! Silence means no (the reference server never answers a registration, and it hands a
//! returning name its old token anyway).

use std::time::Duration;

use chat_protocol::tcrp::Operation;
use chat_protocol::ucrp::{REGISTER, ServerDatagram};
use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use tokio::time::Instant;

use super::handshake::Request;
use super::saved::{Key, Saved, Store};
use super::{room_name, udp_server};
use crate::cli::Cli;
use crate::error::ClientError;
use crate::secure::connector::{Connector, Entered};
use crate::transport::{Link, receive_buffer};
use crate::ui::screen::print_problem;

/// Registrations sent before a silent server counts as not knowing the token.
pub const PROBE_ATTEMPTS: u32 = 3;
/// How long each waits for an answer.
pub const PROBE_WAIT: Duration = Duration::from_millis(700);

/// Registers `link`'s token (version 1 or 2) and says whether the server answered as one
/// that knows it.
pub async fn still_known(link: &Link, v1: bool) -> Result<bool, ClientError> {
    let mut buffer = receive_buffer();
    for _ in 0..PROBE_ATTEMPTS {
        if v1 {
            link.send(&link.envelope(REGISTER)?).await?;
        } else {
            link.send_v2(&ClientV2::Register { last_id: None }).await?;
        }
        let deadline = Instant::now() + PROBE_WAIT;
        while let Ok(received) = tokio::time::timeout_at(deadline, link.receive(&mut buffer)).await
        {
            let Some(len) = received? else {
                // Nothing listens on the port: no server knows anything there.
                return Ok(false);
            };
            match buffer.get(..len).map(ServerDatagram::decode) {
                Some(Ok(ServerDatagram::RoomClosed)) => return Ok(false),
                Some(Ok(ServerDatagram::V2(ServerV2::Error {
                    code: V2ErrorCode::NoRoom,
                    ..
                }))) => return Ok(false),
                Some(Ok(_)) => return Ok(true),
                _ => {}
            }
        }
    }
    Ok(false)
}

/// Which saved membership a create or join could take back.
pub fn saved_key(cli: &Cli, request: &Request) -> Option<Key> {
    matches!(request.operation, Operation::Create | Operation::Join).then(|| Key {
        server: cli.server.clone(),
        tcp_port: cli.tcp_port,
        room: request.room.clone(),
        username: request.user.username.clone(),
    })
}

/// The saved membership for this room and name, when the server still knows its token: a
/// client that crashed left it behind, and this one takes its place. A version-3 membership
/// is attached over TLS (fresh keys: its old counters are never reused) and never used in
/// plaintext; a plaintext one is not used with a server that now offers encryption (its
/// token would go in clear again).
pub async fn take_back(
    cli: &Cli,
    connector: &Connector,
    request: &Request,
    saved: Option<&(Store, Key)>,
) -> Result<Option<Entered>, ClientError> {
    let Some((store, key)) = saved else {
        return Ok(None);
    };
    // A client that still runs holds its place; only a crashed one's is taken back.
    let Some(found) = store.find(key).filter(Saved::holder_is_gone) else {
        return Ok(None);
    };
    let membership = found.membership();
    if membership.is_encrypted() {
        if !connector.encrypts() {
            return Ok(None);
        }
        let room = room_name(request, &membership);
        return match connector.attach(&room, &membership.grant.token).await {
            Ok(secured) => {
                say_taken_back(request);
                Ok(Some(Entered::Secure(Box::new(secured))))
            }
            // The server no longer knows it (or never granted it over TLS).
            Err(ClientError::Refused { code, .. }) => {
                tracing::debug!(%code, "the saved membership cannot be attached");
                let _ = store.forget(key);
                Ok(None)
            }
            Err(other) => Err(other),
        };
    }
    if connector.is_encrypted().await? {
        return Ok(None);
    }
    let link = Link::open(
        udp_server(cli, &membership),
        room_name(request, &membership),
        membership.grant.token.clone(),
    )
    .await?;
    let v1 = cli.v1 || membership.server_is_v1_only();
    if still_known(&link, v1).await? {
        say_taken_back(request);
        Ok(Some(Entered::Plain(membership)))
    } else {
        let _ = store.forget(key);
        Ok(None)
    }
}

fn say_taken_back(request: &Request) {
    print_problem(&format!(
        "* taking back your place in {:?} (an earlier chat-client left it without leaving)",
        request.room
    ));
}
