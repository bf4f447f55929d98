//! Terminal client for the chat messenger: creates, joins or pairs into a room over TCRP
//! (TCP), then chats in it over UCRP (UDP). Version 3 is the default: version 2's
//! conversation (acked, ordered, with history and presence) with the handshake inside TLS
//! (the server pinned like SSH pins hosts) and every datagram sealed, over UDP or, when UDP
//! is blocked, the TLS connection; `--v2` speaks version 2 in plaintext, `--v1` version 1
//! for the reference server.
//!
//! Incoming chat is printed to stdout as `NAME: TEXT` (`[HH:MM] NAME: TEXT` in a terminal),
//! notices as `* TEXT`, one flushed line each. Diagnostics go to stderr.
//!
//! Exit codes of the `chat-client` binary (see [`ClientError::exit_code`]):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | normal end: `/quit`, end of input, or the room was closed |
//! | 1 | any other error |
//! | 2 | usage error: bad arguments, or an invalid room name or username |
//! | 3 | the server refused the handshake; its error code and message are printed |
//! | 4 | cannot reach the server: connection refused or timed out, no reply, no UDP answer |
//! | 5 | the server is not trusted (unknown or changed certificate), or offers no encryption when it must |
//!
//! Modules, by stage:
//! - [`cli`], [`settings`]: the command line, the configuration file, `completions`, `man` and
//!   `--version`; [`app`]: one run, choosing what to do.
//! - [`entering`]: getting into a room: names, the TCP [`entering::handshake`] (with a
//!   [`entering::password_prompt`] for private rooms), the [`entering::room_table`] of
//!   `rooms`, and memberships [`entering::saved`] so that a crashed client's place can be
//!   taken back ([`entering::resume`]).
//! - [`secure`]: version 3: TLS and pinning ([`secure::connector`], [`secure::tls`],
//!   [`secure::known_servers`]), sealed datagrams ([`secure::sealed_link`]), the tunnel
//!   ([`secure::tunnel`]), the choice of path ([`secure::path`]) and the sealed data plane
//!   ([`secure::plane`]).
//! - [`transport`]: the UDP socket and datagram envelope, shared by both versions;
//!   [`pace`]: the flood control the server announced.
//! - [`v1`]: the version-1 chat (`--v1`, or a version-1-only server).
//! - [`v2`]: the version-2 chat: the [`v2::event_loop`] around a
//!   [`v2::conversation::Conversation`], a state machine without I/O built from the
//!   [`v2::unacked`] queue (seq, ack, retransmit), the [`v2::reorder`] buffer (each message
//!   once, in id order), [`v2::keepalive`] (ping, re-register, silence) and [`v2::typing`]
//!   (indicator pacing); [`v2::commands`] are the `/` commands.
//! - [`ui`]: the lines printed and their sanitising ([`ui::format`]), where they go
//!   ([`ui::screen`]), stdin ([`ui::input`]) and the line editor ([`ui::terminal`]).
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP, which leave like `/quit`.
//! - [`error`]: failures and their exit codes; [`logging`]: diagnostics on stderr.

pub mod app;
pub mod cli;
pub mod entering;
pub mod error;
pub mod failover;
pub mod files;
pub mod logging;
pub mod pace;
pub mod private_file;
pub mod secure;
pub mod settings;
pub mod signals;
pub mod transport;
pub mod ui;
pub mod v1;
pub mod v2;

pub use app::run;
pub use error::ClientError;
