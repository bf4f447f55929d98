//! Test harness for end-to-end tests: start real `chat-server` and `chat-client` processes on
//! 127.0.0.1 with ephemeral ports, talk to them over real sockets, and wait on events with
//! generous timeouts (never on fixed sleeps: timing belongs in the benchmark).
//!
//! The binaries come from the same target directory as the test executable; `cargo test
//! --workspace` builds them before running any test.
//!
//! Modules: [`process`] (binaries, output lines, exits), [`server`] (`chat-server`),
//! [`client`] (`chat-client`), [`tcrp`] (control-plane exchanges), [`member`] (UDP members,
//! version 1 and 2), [`proxy`] (the loss proxy), [`reference`](mod@reference) (the reference
//! Python implementation), [`web`] (the HTTP API and WebSocket members), [`browser`] (headless
//! Chromium through chromedriver, for the chat page). Everything is re-exported here, so tests
//! name it `chat_tests::X`.

use std::time::Duration;

pub mod browser;
pub mod client;
pub mod member;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod reference;
pub mod sealed;
pub mod server;
pub mod tcrp;
pub mod tmux;
pub mod web;

pub use browser::{Chromedriver, Page, Shown, assert_shown_once, count_confirmed};
pub use client::ClientProcess;
pub use member::{Replay, UdpMember, V2Member, decode_v2, v1_frame};
pub use process::{binary, proc_status_kb, wait_with_timeout};
pub use proxy::{Faults, LossProxy, ProxyStats, REORDER_HOLD, TcpCapture, XorShift64Star};
pub use redis::RedisProcess;
pub use reference::{PythonProcess, free_port, reference_dir};
pub use sealed::{Capture, SealedMember};
pub use server::ServerProcess;
pub use tcrp::{Replies, create, decode_frames, handshake, join, raw_exchange, try_handshake};
pub use web::{Answer, Api, WebMember};

/// How long any single expected event may take before a test fails. Generous on purpose: CI
/// machines are slow and shared; a correct server answers in milliseconds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
