//! The chat messenger's wire contract as pure data transformations: no sockets, no clocks, no
//! runtime. The server and the client do the I/O and call in here to encode and decode.
//!
//! - [`tcrp`]: the TCP control handshake (create, join, pair, list).
//! - [`ucrp`]: the UDP datagram envelope and version-1 frames.
//! - [`v2`]: version-2 JSON messages carried inside UCRP.
//! - [`names`]: room name and username rules.
//!
//! Every decoder treats input as hostile: incomplete input is `Ok(None)` where more can come,
//! malformed input is a typed error, and sizes are checked against [`limits`] before anything is
//! allocated.

pub mod fingerprint;
pub mod limits;
pub mod listing;
pub mod names;
#[cfg(feature = "pinning")]
pub mod pinning;
pub mod sealed;
pub mod tcrp;
pub mod time;
pub mod ucrp;
pub mod v2;
