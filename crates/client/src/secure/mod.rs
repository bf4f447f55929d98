//! Version 3, the default: the handshake inside TLS with the server pinned like SSH pins a
//! host ([`connector`], [`tls`], [`known_servers`]), and every datagram sealed
//! ([`sealed_link`]), sent over UDP or, when UDP does not get through, over the TLS
//! connection kept open as a tunnel ([`tunnel`]); [`path`] chooses which, and [`plane`] does
//! the I/O around both for the version-2 conversation. Shared files go over [`https`].

pub mod connector;
pub mod https;
pub mod known_servers;
pub mod path;
pub mod plane;
pub mod sealed_link;
pub mod tls;
pub mod tunnel;
