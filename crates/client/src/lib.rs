//! Terminal client for the chat messenger: creates, joins or pairs into a room over TCRP
//! (TCP), then chats in it over UCRP (UDP). Version 2 of the data plane is the default
//! (acked, ordered, with history and presence); `--v1` speaks version 1 for the reference
//! server.
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
//!
//! Modules:
//! - [`cli`]: command-line arguments.
//! - [`app`]: one run, choosing what to do.
//! - [`admission`]: names, handshake with password retry, where datagrams go.
//! - [`handshake`]: the TCP exchange that yields a grant, a room list or a typed error.
//! - [`rooms`]: the room list as a table.
//! - [`transport`]: the UDP socket and datagram envelope.
//! - [`chat_v1`], [`session`], [`display`]: the version-1 chat.
//! - [`chat_v2`]: the version-2 chat, room after room.
//! - [`room`]: the I/O loop around a [`conversation::Conversation`].
//! - [`conversation`]: the version-2 membership as a state machine without I/O, built from
//!   [`reliability`] (seq, ack, retransmit), [`ordering`] (each message once, in id order),
//!   [`keepalive`] (ping, re-register, silence) and [`typing`] (indicator pacing).
//! - [`commands`]: `/` commands; [`format`]: the lines printed.
//! - [`input`]: bounded lines from stdin; [`terminal`]: the line editor; [`screen`]: where
//!   lines go; [`password`]: the password prompt.
//! - [`saved`], [`resume`]: memberships saved so that a crashed client's place can be taken
//!   back.
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP, which leave like `/quit`.
//! - [`error`]: failures and their exit codes; [`logging`]: diagnostics on stderr.
//! - [`settings`]: the configuration file, `completions`, `man` and `--version`.

pub mod admission;
pub mod app;
pub mod chat_v1;
pub mod chat_v2;
pub mod cli;
pub mod commands;
pub mod conversation;
pub mod display;
pub mod error;
pub mod format;
pub mod handshake;
pub mod input;
pub mod keepalive;
pub mod logging;
pub mod ordering;
pub mod password;
pub mod reliability;
pub mod resume;
pub mod room;
pub mod rooms;
pub mod saved;
pub mod screen;
pub mod session;
pub mod settings;
pub mod signals;
pub mod terminal;
pub mod transport;
pub mod typing;

pub use app::run;
pub use error::ClientError;
