//! The `chat-server` binary: read the settings, then run the server until SIGINT or SIGTERM,
//! or run one of the operator's commands.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use chat_server::admin;
use chat_server::cli::{self, CliError, Command};
use chat_server::config::LogFormat;
use chat_server::{Config, Server, config_file, preflight};
use clap::CommandFactory;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Exit status for a bad command line or configuration file, as clap uses.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        // Prints the usage error, --help or --version, with clap's exit status.
        Err(CliError::Usage(error)) => error.exit(),
        Err(CliError::File(error)) => {
            eprintln!("chat-server: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let settings = cli.settings;
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            drop(stdout);
            return serve(settings);
        }
        Command::CheckConfig { path } => return check_config(&path),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli::command(), "chat-server", &mut stdout);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cli::command())
            .render(&mut stdout)
            .map_err(|error| format!("cannot write the manual page: {error}")),
        Command::Backup { dir } => admin::backup(&settings, &dir)
            .map(|summary| {
                let _ = writeln!(
                    stdout,
                    "backed up {} rooms at journal seq {} and {} messages into {}",
                    summary.rooms,
                    summary.journal_seq,
                    summary.messages,
                    dir.display()
                );
            })
            .map_err(|error| format!("backup failed: {error}")),
        Command::Restore { dir, force } => admin::restore(&settings, &dir, force)
            .map(|summary| {
                let _ = writeln!(
                    stdout,
                    "restored {} rooms at journal seq {} and {} messages into {} and {}",
                    summary.rooms,
                    summary.journal_seq,
                    summary.messages,
                    settings.state.display(),
                    settings.history.display()
                );
            })
            .map_err(|error| format!("restore refused: {error}")),
        Command::Fingerprint => admin::fingerprint(&settings)
            .map(|fingerprint| {
                let _ = writeln!(stdout, "{fingerprint}");
            })
            .map_err(|error| format!("cannot read the TLS certificate: {error}")),
        Command::Export { room, format } => admin::export(&settings, &room, format, &mut stdout)
            .map(|_| ())
            .map_err(|error| format!("export failed: {error}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chat-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match config_file::load(path, &cli::Cli::command()) {
        Ok(settings) => {
            println!("{}: valid, {} settings", path.display(), settings.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chat-server: {error}");
            ExitCode::from(USAGE)
        }
    }
}

/// Runs the server until SIGINT or SIGTERM.
fn serve(config: Config) -> ExitCode {
    // RUST_LOG, when set, wins over --log-level so operators can use their usual filters.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(&config.log_level),
    };
    let filter = match filter {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("chat-server: invalid RUST_LOG filter: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }

    if let Err(error) = preflight::check_state_writable(&config.state) {
        eprintln!("chat-server: {error}");
        return ExitCode::FAILURE;
    }
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
    let http = match server.http_addr() {
        Some(addr) => format!(" http={}", addr.map_err(|e| e.to_string())?),
        None => String::new(),
    };
    // Before anyone learns that the server is up: a signal that came before its handler
    // would get the default action, and SIGHUP's is to end the process.
    let signals = Signals::install().map_err(|e| format!("cannot handle signals: {e}"))?;
    // Which protocol versions are on: 3 (encrypted) always; 1 and 2 (plaintext, the reference
    // client) unless --require-encryption.
    let versions = if server.requires_encryption() {
        "3"
    } else {
        "1,2,3"
    };
    let fingerprint = server.fingerprint();
    tracing::info!(
        %fingerprint,
        "listening on tcp={tcp} udp={udp}{http} versions={versions}; clients pin this certificate fingerprint"
    );
    // One machine-readable line on stdout, so scripts and tests learn the ephemeral ports.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "chat-server listening tcp={tcp} udp={udp}{http} versions={versions} fingerprint={fingerprint}"
    );
    let _ = stdout.flush();
    drop(stdout);
    // Under systemd (Type=notify): ready now that the state is loaded and both sockets bound.
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(error) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(%error, "cannot tell systemd that the server is ready");
    }
    server
        .run(async {
            signals.shutdown().await;
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        })
        .await
        .map_err(|e| format!("stopped with an error: {e}"))
}

/// The signals the server acts on.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Completes on SIGINT (Ctrl-C), SIGTERM, SIGHUP or SIGQUIT: each is a graceful stop, so
    /// no signal an operator or a closing terminal sends skips the final state write. There is
    /// no reload: settings are read at start only.
    async fn shutdown(mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
            _ = self.quit.recv() => "SIGQUIT",
        };
        tracing::info!(signal = name, "stop requested");
    }
}
