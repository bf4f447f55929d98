//! Where the engine's datagrams come from and go to.
//!
//! The rules never look inside an endpoint beyond its IP (for the per-address checks), so a
//! second transport is a new variant here and a new I/O loop, not a change to the rules.
//! Version 3 is one more: a sealed endpoint, whose frames the sender seals first.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A member's address on one of the server's transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A UDP address, reached through the data-plane socket.
    Udp(SocketAddr),
    /// A connection of the HTTP listener (a WebSocket, or one HTTP request waiting for its
    /// answer), reached through [`crate::web::WebPeers`].
    Web {
        /// The connection's number, unique for the life of the process.
        conn: u64,
        /// The peer's IP.
        ip: IpAddr,
    },
    /// A version-3 member: what goes there is sealed under its keys first.
    Sealed {
        /// How its sealed datagrams travel.
        path: SealedPath,
        /// Whose keys (the grant's `key_id`).
        key_id: u32,
    },
}

/// How a version-3 member's sealed datagrams travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedPath {
    /// Through the data-plane socket, to this address.
    Udp(SocketAddr),
    /// Through the member's TLS control connection (the tunnel), when UDP does not get
    /// through.
    Tunnel {
        /// The connection's number, unique for the life of the process.
        conn: u64,
        /// The peer's IP.
        ip: IpAddr,
    },
}

impl Endpoint {
    /// The peer's IP, canonical (an IPv4-mapped IPv6 address is the IPv4 one), for checks
    /// that compare addresses across transports and handshakes.
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Udp(addr) => addr.ip().to_canonical(),
            Self::Web { ip, .. }
            | Self::Sealed {
                path: SealedPath::Tunnel { ip, .. },
                ..
            } => ip.to_canonical(),
            Self::Sealed {
                path: SealedPath::Udp(addr),
                ..
            } => addr.ip().to_canonical(),
        }
    }

    /// Whether the transport itself proves where the peer is (a TCP connection whose first
    /// message carried the token), so that registering from it needs no challenge.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::Web { .. }
                | Self::Sealed {
                    path: SealedPath::Tunnel { .. },
                    ..
                }
        )
    }

    /// The key id, for a version-3 member's endpoint.
    pub fn key_id(&self) -> Option<u32> {
        match self {
            Self::Sealed { key_id, .. } => Some(*key_id),
            _ => None,
        }
    }

    /// The UDP address, for the state file (which records UDP bindings only: another
    /// transport's peers reconnect rather than resume).
    pub fn udp(&self) -> Option<SocketAddr> {
        match self {
            Self::Udp(addr)
            | Self::Sealed {
                path: SealedPath::Udp(addr),
                ..
            } => Some(*addr),
            Self::Web { .. }
            | Self::Sealed {
                path: SealedPath::Tunnel { .. },
                ..
            } => None,
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::Udp(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Udp(addr) => write!(f, "udp:{addr}"),
            Self::Web { conn, ip } => write!(f, "web:{conn}@{ip}"),
            Self::Sealed {
                path: SealedPath::Udp(addr),
                key_id,
            } => write!(f, "sealed:{key_id}@udp:{addr}"),
            Self::Sealed {
                path: SealedPath::Tunnel { conn, ip },
                key_id,
            } => write!(f, "sealed:{key_id}@tunnel:{conn}@{ip}"),
        }
    }
}
