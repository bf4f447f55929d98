//! The `chat-server` binary: parse flags, set up logging, run until SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use chat_server::{Config, Server};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    // RUST_LOG, when set, wins over --log-level so operators can use their usual filters.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(&config.log_level),
    };
    let filter = match filter {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!(
                "chat-server: invalid log level \"{}\": {error}",
                config.log_level
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chat-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let server = Server::bind(config).await.map_err(|e| e.to_string())?;
    let tcp = server.tcp_addr().map_err(|e| e.to_string())?;
    let udp = server.udp_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on tcp={tcp} udp={udp}");
    // One machine-readable line on stdout, so scripts and tests learn the ephemeral ports.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "chat-server listening tcp={tcp} udp={udp}");
    let _ = stdout.flush();
    drop(stdout);
    server
        .run(shutdown_signal())
        .await
        .map_err(|e| format!("stopped with an error: {e}"))
}

/// Completes on SIGINT (Ctrl-C), SIGTERM, SIGHUP or SIGQUIT: each is a graceful stop, so no
/// signal an operator or a closing terminal sends skips the final state write.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn next(stream: &mut Option<Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut quit = signal(SignalKind::quit()).ok();
        let name = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            () = next(&mut terminate) => "SIGTERM",
            () = next(&mut hangup) => "SIGHUP",
            () = next(&mut quit) => "SIGQUIT",
        };
        tracing::info!(signal = name, "stop requested");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
