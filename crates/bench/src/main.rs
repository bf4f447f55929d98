//! chat-bench: drives a chat-server over loopback through the real wire protocol (TCRP
//! handshakes over TCP, UCRP version-1 or version-2 datagrams over UDP) and measures it beside
//! a bare UDP relay built into the tool. Only ever addresses 127.0.0.1.

mod baseline;
mod cli;
mod error;
mod http_client;
mod keepalive;
mod load;
mod member;
mod payload;
mod procfs;
mod report;
mod scenario;
mod sealed;
mod setup;
mod target;
mod tcrp_client;
mod tls;
mod wire;
mod ws_member;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Scenario};
use crate::error::{BenchError, Result};
use crate::scenario::Context;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log_level) {
        eprintln!("chat-bench: {error}");
        return ExitCode::FAILURE;
    }
    // Every scenario owns its spawned server; returning from `run` (or unwinding out of it)
    // drops the guard and kills the server before the process exits.
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) -> Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(level).map_err(|_| {
            BenchError::InvalidArguments(format!("--log-level {level:?} is not a log level"))
        })?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Load average per CPU above which figures are flagged as taken on a busy machine.
const BUSY_LOAD_PER_CPU: f64 = 0.5;

fn run(cli: Cli) -> Result<()> {
    let context = Context::new(cli.json, cli.target)?;
    if let Some((load, cpus)) = procfs::machine_load() {
        if load > BUSY_LOAD_PER_CPU * cpus as f64 {
            tracing::warn!(
                "the machine is busy (1-minute load {load:.2} on {cpus} CPUs); other work \
                 competes with the relay and the load generator, so figures will be noisy"
            );
        } else {
            tracing::info!("1-minute load {load:.2} on {cpus} CPUs");
        }
    }
    match &cli.scenario {
        Scenario::Handshake(args) => scenario::handshake::run(&context, args),
        Scenario::Relay(args) => scenario::relay::run(&context, args),
        Scenario::Ramp(args) => scenario::ramp::run(&context, args),
        Scenario::Rooms(args) => scenario::rooms::run(&context, args),
        Scenario::Members(args) => scenario::members::run(&context, args),
        Scenario::Baseline(args) => scenario::relay::run_baseline(&context, args),
        Scenario::Web(args) => scenario::web::run(&context, args),
        Scenario::Nodes(args) => scenario::nodes::run(&context, args),
    }
}
