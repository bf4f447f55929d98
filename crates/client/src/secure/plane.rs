//! The version-3 data plane of one membership: version-2 messages sealed ([`SealedLink`]),
//! sent over UDP or the tunnel as the [`PathState`] says, and datagrams received from both,
//! opened, and handed to the conversation. Nothing unsealed is ever sent or accepted.

use std::net::SocketAddr;
use std::time::Instant;

use chat_protocol::fingerprint::Fingerprint;
use chat_protocol::sealed::{TUNNEL_KEEPALIVE, tunnel_frame};
use chat_protocol::v2::{ClientV2, ServerV2, V2ErrorCode};
use tokio::net::UdpSocket;

use super::path::{PathAction, PathState, PathTiming, Route};
use super::sealed_link::SealedLink;
use super::tls::Secured;
use super::tunnel::{Tunnel, TunnelEvent};
use crate::error::ClientError;

/// What the plane has for the conversation.
#[derive(Debug)]
pub enum PlaneEvent {
    /// A message from the server.
    Message(ServerV2),
    /// The route changed or the keys did: register (with `last_id`) and retransmit.
    Reregister,
    /// On the tunnel: probe UDP with a `register` (with `last_id`) sent by
    /// [`SecurePlane::probe_udp`].
    ProbeUdp,
    /// Nothing for the conversation (a dropped datagram, a keepalive sent...).
    Nothing,
}

/// The sealed data plane.
#[derive(Debug)]
pub struct SecurePlane {
    udp: UdpSocket,
    server: SocketAddr,
    sealed: SealedLink,
    path: PathState,
    tunnel: Tunnel,
    tunnel_open: bool,
    generation: u64,
    fingerprint: Fingerprint,
    /// Datagrams dropped because they did not open (forged, replayed, plaintext...).
    pub dropped: u64,
}

impl SecurePlane {
    /// Opens the UDP socket towards `server` and starts the tunnel on the handshake's
    /// connection.
    pub async fn open(
        server: SocketAddr,
        secured: Secured,
        reattach: super::tls::Reattach,
        forced_tcp: bool,
        now: Instant,
    ) -> Result<Self, ClientError> {
        let udp = crate::transport::connected_socket(server).await?;
        let key_id =
            secured.membership.grant.key_id.ok_or_else(|| {
                ClientError::InvalidReply("a grant over TLS has no key_id".into())
            })?;
        let sealed = SealedLink::new(key_id, &secured.keys);
        let tunnel = Tunnel::spawn(secured.stream, secured.leftover, reattach);
        Ok(Self {
            udp,
            server,
            sealed,
            path: PathState::new(PathTiming::default(), forced_tcp, now),
            tunnel,
            tunnel_open: true,
            generation: 0,
            fingerprint: secured.fingerprint,
            dropped: 0,
        })
    }

    /// The server's UDP address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The route in use.
    pub fn route(&self) -> Route {
        self.path.route()
    }

    /// `udp`, `tunnel (UDP blocked)` or `tunnel (--tcp)`, for `/status`.
    pub fn route_name(&self) -> &'static str {
        match (self.path.route(), self.path.forced()) {
            (Route::Udp, _) => "udp",
            (Route::Tunnel, true) => "tunnel (--tcp)",
            (Route::Tunnel, false) => "tunnel (UDP blocked)",
        }
    }

    /// Whether the tunnel is connected now.
    pub fn tunnel_up(&self) -> bool {
        self.path.tunnel_up()
    }

    /// The server's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Sends a message on the route in use.
    pub fn send(&mut self, message: &ClientV2, now: Instant) -> Result<(), ClientError> {
        let route = self.path.route();
        self.send_via(route, message, now)
    }

    /// The `register` that probes UDP while on the tunnel.
    pub fn probe_udp(&mut self, register: &ClientV2, now: Instant) -> Result<(), ClientError> {
        self.send_via(Route::Udp, register, now)
    }

    fn send_via(
        &mut self,
        route: Route,
        message: &ClientV2,
        now: Instant,
    ) -> Result<(), ClientError> {
        let datagram = match self.sealed.seal_v2(message) {
            Ok(datagram) => datagram,
            Err(error) => {
                tracing::debug!(%error, "not sent");
                return Ok(());
            }
        };
        match route {
            Route::Udp => self.send_udp(&datagram),
            Route::Tunnel => {
                self.send_tunnel(datagram, now);
                Ok(())
            }
        }
    }

    fn send_udp(&self, datagram: &[u8]) -> Result<(), ClientError> {
        // Non-blocking: a full socket buffer loses the datagram as the network could.
        match self.udp.try_send(datagram) {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                tracing::debug!(%error, "datagram not sent");
                Ok(())
            }
            Err(source) => Err(ClientError::Udp {
                addr: self.server,
                source,
            }),
        }
    }

    fn send_tunnel(&mut self, datagram: Vec<u8>, now: Instant) {
        if !self.path.tunnel_up() {
            tracing::debug!("the tunnel is down; the datagram waits for a retransmission");
            return;
        }
        match tunnel_frame(&datagram) {
            Ok(frame) => {
                if self.tunnel.send(self.generation, frame) {
                    self.path.sent_on_tunnel(now);
                } else {
                    tracing::debug!("the tunnel's queue is full; frame dropped");
                }
            }
            Err(error) => tracing::debug!(%error, "not framed"),
        }
    }

    /// Waits for the next thing the conversation should know about, doing the path's own
    /// work (switching, keepalives) meanwhile. Cancel-safe: every await is a receive or a
    /// sleep, and sending never waits.
    pub async fn next(&mut self, buffer: &mut [u8]) -> Result<PlaneEvent, ClientError> {
        let wakeup = tokio::time::Instant::from_std(self.path.next_wakeup());
        tokio::select! {
            received = self.udp.recv_from(buffer) => match received {
                Ok((len, from)) if from == self.server => {
                    let datagram = buffer.get(..len).unwrap_or_default().to_vec();
                    self.on_datagram(Route::Udp, &datagram, Instant::now())
                }
                Ok((len, from)) => {
                    tracing::debug!(%from, len, "ignoring a datagram from another address");
                    Ok(PlaneEvent::Nothing)
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Ok(PlaneEvent::Nothing)
                }
                Err(source) => Err(ClientError::Udp { addr: self.server, source }),
            },
            event = self.tunnel.events.recv(), if self.tunnel_open => match event {
                Some(TunnelEvent::Datagram(datagram)) => {
                    self.on_datagram(Route::Tunnel, &datagram, Instant::now())
                }
                Some(TunnelEvent::Lost(reason)) => {
                    tracing::info!(%reason, "the tunnel is down");
                    self.path.tunnel_lost();
                    Ok(PlaneEvent::Nothing)
                }
                Some(TunnelEvent::Attached { keys, key_id, generation }) => {
                    tracing::info!("the tunnel is back, with fresh keys");
                    self.sealed = SealedLink::new(key_id, &keys);
                    self.generation = generation;
                    self.path.tunnel_back(Instant::now());
                    Ok(PlaneEvent::Reregister)
                }
                Some(TunnelEvent::Gone) => Ok(PlaneEvent::Message(ServerV2::Error {
                    code: V2ErrorCode::NoRoom,
                    seq: None,
                    message: "this room no longer exists".into(),
                })),
                Some(TunnelEvent::Failed(error)) => Err(error),
                None => {
                    self.tunnel_open = false;
                    self.path.tunnel_lost();
                    Ok(PlaneEvent::Nothing)
                }
            },
            () = tokio::time::sleep_until(wakeup) => {
                let now = Instant::now();
                Ok(match self.path.poll(now) {
                    Some(PathAction::MovedToTunnel) => {
                        tracing::info!("UDP gets no answer; continuing over the tunnel");
                        PlaneEvent::Reregister
                    }
                    Some(PathAction::ProbeUdp) => PlaneEvent::ProbeUdp,
                    Some(PathAction::Keepalive) => {
                        if self.tunnel.send(self.generation, TUNNEL_KEEPALIVE.to_vec()) {
                            self.path.sent_on_tunnel(now);
                        }
                        PlaneEvent::Nothing
                    }
                    None => PlaneEvent::Nothing,
                })
            }
        }
    }

    fn on_datagram(
        &mut self,
        via: Route,
        datagram: &[u8],
        now: Instant,
    ) -> Result<PlaneEvent, ClientError> {
        let message = match self.sealed.open(datagram) {
            Ok(message) => message,
            Err(reason) => {
                self.dropped += 1;
                tracing::debug!(%reason, ?via, len = datagram.len(), "dropping a datagram");
                return Ok(PlaneEvent::Nothing);
            }
        };
        if via == Route::Udp {
            if let ServerV2::Challenge { nonce } = &message {
                if self.path.udp_challenged(now) {
                    // UDP answers again: the echo from here moves the binding back, and the
                    // server answers it as a register (members, replay, pong).
                    tracing::info!("UDP answers again; back on UDP");
                    let echo = ClientV2::Echo {
                        nonce: nonce.clone(),
                    };
                    self.send_via(Route::Udp, &echo, now)?;
                    return Ok(PlaneEvent::Nothing);
                }
            } else {
                self.path.heard_udp(now);
            }
        }
        if matches!(message, ServerV2::Moved) && !self.path.moved_counts(via) {
            tracing::debug!(?via, "ignoring moved on the path just left");
            return Ok(PlaneEvent::Nothing);
        }
        Ok(PlaneEvent::Message(message))
    }

    /// Writes what is queued on the tunnel (a `leave`) and closes it.
    pub async fn close(&mut self) {
        self.tunnel.close().await;
    }
}
