//! Version 3: TLS on the control plane, sealed datagrams and the tunnel (docs/protocol.md,
//! "Version 3: encrypted"; docs/security.md).
//!
//! - `certificate`: the server's certificate (made on first start, or the operator's), its
//!   fingerprint, and the rustls configuration.
//! - `keys`: the key table, by key id: opening what arrives, sealing what leaves.
//! - `tunnel`: TLS connections that carry a member's sealed datagrams when UDP does not get
//!   through, and their bounded queues.
//! - `detect`: telling TLS from plain TCRP (or HTTP) by a connection's first bytes.
//! - `https`: HTTPS and WSS on the HTTP port, beside plain HTTP.

pub mod certificate;
pub mod detect;
pub mod https;
pub mod keys;
pub mod tunnel;

pub use certificate::ServerIdentity;
pub use keys::KeyTable;
pub use tunnel::Tunnels;
