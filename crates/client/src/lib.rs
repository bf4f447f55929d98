//! Terminal client for the chat messenger: creates or joins a room over TCRP (TCP), then chats
//! in it over UCRP (UDP), version 1 of the data plane.
//!
//! Standard input is sent line by line; incoming chat is printed to stdout as `NAME: TEXT`,
//! server notices as `* TEXT`, one flushed line each. Diagnostics go to stderr.
//!
//! Exit codes of the `chat-client` binary (see [`ClientError::exit_code`]):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | normal end: `/quit`, end of input, or the room was closed by its host |
//! | 1 | any other error |
//! | 2 | usage error: bad arguments, or an invalid room name or username |
//! | 3 | the server refused the handshake; its error code and message are printed |
//! | 4 | cannot reach the server: connection refused or timed out, no reply, no UDP answer |
//!
//! Modules:
//! - [`cli`]: command-line arguments.
//! - [`handshake`]: the TCP exchange that yields a grant or a typed error.
//! - [`session`]: the UDP conversation (register, send, receive, leave).
//! - [`input`]: bounded lines from stdin.
//! - [`display`]: how incoming events are printed.
//! - [`app`]: one run, tying the above together.
//! - [`error`]: failures and their exit codes.
//! - [`logging`]: diagnostics on stderr.

pub mod app;
pub mod cli;
pub mod display;
pub mod error;
pub mod handshake;
pub mod input;
pub mod logging;
pub mod session;

pub use app::run;
pub use error::ClientError;
