//! Sizes fixed by the wire contract. Every decoder checks these before it allocates.

/// Longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME: usize = 64;
/// Longest username, in bytes of UTF-8.
pub const MAX_USERNAME: usize = 32;
/// A token is 32 random bytes written as 64 lowercase hex characters.
pub const TOKEN_HEX_LEN: usize = 64;
/// Largest TCRP operation payload the server will read.
pub const MAX_TCRP_PAYLOAD: usize = 16 * 1024;
/// Largest UCRP datagram, in either direction.
pub const MAX_DATAGRAM: usize = 4096;
/// What sealing adds to a message (version 3): a 13-byte clear header and a 16-byte tag.
pub const SEALING_OVERHEAD: usize = 29;
/// Largest message the server fits into one datagram (a member list, a history or search
/// page): small enough to be sealed for a version-3 member, so that whatever fits a plain
/// datagram fits a sealed one too.
pub const MAX_SERVER_MESSAGE: usize = MAX_DATAGRAM - SEALING_OVERHEAD;
/// Size of the fixed TCRP header.
pub const TCRP_HEADER_LEN: usize = 32;
/// Most messages one version-2 `history` request may ask for.
pub const MAX_HISTORY_PAGE: usize = 100;
