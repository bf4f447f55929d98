//! The UDP socket of a membership: every datagram wrapped in the room-and-token envelope, sent
//! to the server's address, and only the server's datagrams received. Both versions of the
//! data plane talk through it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::{Datagram, V2_MARKER};
use chat_protocol::v2::ClientV2;
use tokio::net::UdpSocket;

use crate::error::ClientError;

/// A UDP socket of the server's address family, connected to `server`, so that only its
/// datagrams are received.
pub async fn connected_socket(server: SocketAddr) -> Result<UdpSocket, ClientError> {
    let local = if server.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let setup_error = |source| ClientError::UdpSetup {
        addr: server,
        source,
    };
    let socket = UdpSocket::bind(local).await.map_err(setup_error)?;
    socket.connect(server).await.map_err(setup_error)?;
    Ok(socket)
}

/// A connected UDP socket plus the envelope of one membership.
#[derive(Debug)]
pub struct Link {
    socket: UdpSocket,
    server: SocketAddr,
    /// Scale-out: the nodes to move to, in turn, when this one stops answering.
    failover: crate::failover::Ring,
    room: String,
    token: String,
}

impl Link {
    /// Opens a UDP socket of the server's address family, connected to `server`.
    pub async fn open(
        server: SocketAddr,
        room: String,
        token: String,
    ) -> Result<Self, ClientError> {
        let socket = connected_socket(server).await?;
        Ok(Self {
            socket,
            server,
            failover: crate::failover::Ring::default(),
            room,
            token,
        })
    }

    /// The server's UDP address (the node in use, after a failover).
    pub fn server(&self) -> SocketAddr {
        self.failover.current().unwrap_or(self.server)
    }

    /// Sets the other nodes to fail over to.
    pub fn set_failover(&mut self, alternates: Vec<SocketAddr>) {
        self.failover = crate::failover::Ring::new(self.server, alternates);
    }

    /// Whether there is another node to move to.
    pub fn can_fail_over(&self) -> bool {
        self.failover.len() > 1
    }

    /// Moves to the next node: datagrams go there from now on, and only its datagrams are
    /// received. Returns where it moved.
    pub async fn fail_over(&self) -> Result<SocketAddr, ClientError> {
        let next = self.failover.advance();
        self.socket
            .connect(next)
            .await
            .map_err(|source| ClientError::UdpSetup { addr: next, source })?;
        Ok(next)
    }

    /// The room this membership belongs to.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Most bytes of message one datagram can carry beside this room and token.
    pub fn message_capacity(&self) -> usize {
        Datagram::message_capacity(&self.room, self.token.as_bytes())
    }

    /// Wraps a message body in this membership's envelope.
    pub fn envelope(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        Datagram {
            room: &self.room,
            token: self.token.as_bytes(),
            message,
        }
        .encode()
        .map_err(ClientError::Framing)
    }

    /// Frames a version-2 message: the envelope around `0xFF` and its JSON.
    pub fn encode_v2(&self, message: &ClientV2) -> Result<Vec<u8>, ClientError> {
        let mut body = vec![V2_MARKER];
        // Serializing these plain enums into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, message);
        self.envelope(&body)
    }

    /// Sends a version-2 message.
    pub async fn send_v2(&self, message: &ClientV2) -> Result<(), ClientError> {
        let datagram = self.encode_v2(message)?;
        self.send(&datagram).await
    }

    /// Sends a framed datagram. An ICMP error left by an earlier datagram is not a failure:
    /// UDP has no connection to lose, and the receive side notices the silence.
    pub async fn send(&self, datagram: &[u8]) -> Result<(), ClientError> {
        self.send_reporting_refusal(datagram).await.map(|_| ())
    }

    /// Sends a framed datagram; `Ok(true)` when the kernel reported instead that nothing
    /// listens at the server's address (an ICMP error left by an earlier datagram, which this
    /// send consumed, so the receive side will not see it).
    pub async fn send_reporting_refusal(&self, datagram: &[u8]) -> Result<bool, ClientError> {
        match self.socket.send(datagram).await {
            Ok(_) => Ok(false),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::debug!(server = %self.server(), "the server is not receiving datagrams");
                Ok(true)
            }
            Err(source) => Err(ClientError::Udp {
                addr: self.server(),
                source,
            }),
        }
    }

    /// Receives one datagram from the server into `buffer`: `Some(len)`, or `None` when the
    /// socket reported an ICMP error for an earlier send instead.
    pub async fn receive(&self, buffer: &mut [u8]) -> Result<Option<usize>, ClientError> {
        loop {
            match self.socket.recv_from(buffer).await {
                Ok((len, from)) if from == self.server() => return Ok(Some(len)),
                Ok((len, from)) => {
                    tracing::debug!(%from, len, "ignoring a datagram from another address");
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Ok(None);
                }
                Err(source) => {
                    return Err(ClientError::Udp {
                        addr: self.server(),
                        source,
                    });
                }
            }
        }
    }
}

/// One byte larger than the contract allows, so that an oversized datagram is seen as such
/// by the decoder instead of being silently truncated into something valid-looking.
pub fn receive_buffer() -> Vec<u8> {
    vec![0u8; MAX_DATAGRAM + 1]
}

#[cfg(test)]
mod tests {
    use chat_protocol::ucrp::ClientMessage;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn version_2_messages_are_marked_json_in_the_envelope() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let link = Link::open(server.local_addr().unwrap(), "lobby".into(), TOKEN.into())
            .await
            .unwrap();
        link.send_v2(&ClientV2::Ping { last_id: Some(7) })
            .await
            .unwrap();
        let mut buffer = receive_buffer();
        let (len, _) = server.recv_from(&mut buffer).await.unwrap();
        let datagram = Datagram::decode(&buffer[..len]).unwrap();
        assert_eq!(datagram.room, "lobby");
        assert_eq!(datagram.token, TOKEN.as_bytes());
        assert_eq!(datagram.message[0], V2_MARKER);
        assert_eq!(
            ClientMessage::decode(datagram.message).unwrap(),
            ClientMessage::V2(ClientV2::Ping { last_id: Some(7) })
        );
        assert_eq!(&datagram.message[1..], br#"{"t":"ping","last_id":7}"#);
    }
}
