//! Whether the server still knows a saved membership: its token is registered from a fresh
//! socket and any answer but "this room no longer exists" means yes. Silence means no (the
//! reference server never answers a registration, and it hands a returning name its old
//! token anyway).

use std::time::Duration;

use chat_protocol::ucrp::{REGISTER, ServerDatagram};
use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use tokio::time::Instant;

use crate::error::ClientError;
use crate::transport::{Link, receive_buffer};

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
