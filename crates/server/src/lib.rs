//! The chat server as a library: the `chat-server` binary is a thin wrapper around [`Server`],
//! and tests can run one in-process.
//!
//! Layout: [`control`] is the TCP handshake front end, [`relay`] the UDP data plane; both drive
//! the [`manager::RoomManager`], the one place where rooms, members and tokens change.
//! [`writer`] makes those changes durable in the state file ([`persist`]) and its
//! [`journal`]; chat history lives in SQLite ([`history`]), written only by the
//! [`history_writer`] thread.
//!
//! The binary's side: [`cli`] and [`config_file`] read the settings (flags, environment,
//! TOML file), [`preflight`] checks the state can be written before starting, and [`admin`]
//! holds the operator's commands (backup, restore, export).

pub mod admin;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod control;
pub mod escape;
pub mod flood;
pub mod history;
pub mod history_writer;
pub mod ip_limit;
pub mod journal;
pub mod manager;
pub mod memory;
pub mod outbox;
pub mod password;
pub mod password_gate;
pub mod persist;
pub mod preflight;
pub mod relay;
pub mod room;
pub mod room_list;
pub mod room_quota;
pub mod seq_window;
pub mod server;
pub mod token;
pub mod writer;

pub use config::Config;
pub use server::{Server, StartError};
