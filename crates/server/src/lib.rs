//! The chat server as a library: the `chat-server` binary is a thin wrapper around [`Server`],
//! and tests can run one in-process.
//!
//! Layers, each using only the ones before it: the protocol crate, then the sans-IO
//! [`engine`] (the one place where rooms, members and tokens change, with no socket, clock or
//! channel in it), then the I/O layer that feeds it and carries out its effects. In the I/O
//! layer [`control`] is the TCP handshake front end, [`relay`] the UDP data plane and [`web`]
//! the HTTP listener (page, JSON API, WebSocket gateway); every datagram and web event leaves
//! through [`send`]; [`metrics`] serves what they counted; [`writer`] makes the engine's changes durable in the
//! state file ([`persist`]) and its [`journal`]; chat history lives in SQLite ([`history`]),
//! written only by the [`history_writer`] thread; [`server`] wires them together.
//!
//! The binary's side: [`cli`] and [`config_file`] read the settings (flags, environment,
//! TOML file), [`preflight`] checks the state can be written before starting, and [`admin`]
//! holds the operator's commands (backup, restore, export).

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod control;
pub mod engine;
pub mod escape;
pub mod files;
pub mod flood;
pub mod history;
pub mod history_writer;
pub mod ip_limit;
pub mod journal;
pub mod metrics;
pub mod password;
pub mod password_gate;
pub mod persist;
pub mod preflight;
pub mod relay;
pub mod room_list;
pub mod room_quota;
pub mod secure;
pub mod send;
pub mod server;
pub mod shared;
pub mod stats;
pub mod token;
pub mod web;
pub mod writer;

pub use config::Config;
pub use server::{Server, StartError};
