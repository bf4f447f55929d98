//! The data plane a conversation talks through: plaintext version 2 over a [`Link`], or
//! version 3's sealed plane (UDP or the tunnel).

use std::time::Instant;

use chat_protocol::ucrp::ServerDatagram;
use chat_protocol::v2::{ClientV2, ServerV2};

use crate::error::ClientError;
use crate::secure::plane::{PlaneEvent, SecurePlane};
use crate::transport::Link;

/// Either plane.
#[derive(Debug)]
pub enum DataPlane {
    /// Version 2: the room and token in every datagram, in clear.
    Plain(Link),
    /// Version 3: sealed datagrams, over UDP or the tunnel.
    Sealed(Box<SecurePlane>),
}

/// What `/status` shows about the plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneStatus {
    /// The protocol version in use.
    pub version: u8,
    /// `udp`, `tunnel (UDP blocked)`, `tunnel (--tcp)`.
    pub path: String,
    /// The server's certificate, when encrypted.
    pub fingerprint: Option<String>,
    /// The server's UDP address.
    pub server: String,
}

impl DataPlane {
    /// Sends a version-2 message (sealed in version 3) on the route in use.
    pub async fn send_v2(&mut self, message: &ClientV2) -> Result<(), ClientError> {
        match self {
            Self::Plain(link) => link.send_v2(message).await,
            Self::Sealed(plane) => plane.send(message, Instant::now()),
        }
    }

    /// The next event for the conversation.
    pub async fn next(&mut self, buffer: &mut [u8]) -> Result<PlaneEvent, ClientError> {
        match self {
            Self::Plain(link) => Ok(match link.receive(buffer).await? {
                Some(len) => match buffer.get(..len).and_then(decode) {
                    Some(message) => PlaneEvent::Message(message),
                    None => PlaneEvent::Nothing,
                },
                // An ICMP error: nothing listens; the keepalive notices the silence.
                None => PlaneEvent::Nothing,
            }),
            Self::Sealed(plane) => plane.next(buffer).await,
        }
    }

    /// Sends the `register` that probes UDP (version 3 on the tunnel).
    pub fn probe_udp(&mut self, register: &ClientV2) -> Result<(), ClientError> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Sealed(plane) => plane.probe_udp(register, Instant::now()),
        }
    }

    /// For `/status`.
    pub fn status(&self) -> PlaneStatus {
        match self {
            Self::Plain(link) => PlaneStatus {
                version: 2,
                path: "udp".into(),
                fingerprint: None,
                server: link.server().to_string(),
            },
            Self::Sealed(plane) => PlaneStatus {
                version: 3,
                path: if plane.tunnel_up() || plane.route() == crate::secure::path::Route::Udp {
                    plane.route_name().into()
                } else {
                    format!("{} (reconnecting)", plane.route_name())
                },
                fingerprint: Some(plane.fingerprint().to_string()),
                server: plane.server().to_string(),
            },
        }
    }

    /// Ends the plane: the tunnel writes what is queued (a `leave`) and closes.
    pub async fn close(&mut self) {
        if let Self::Sealed(plane) = self {
            plane.close().await;
        }
    }
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
