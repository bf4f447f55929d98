//! The `chat-server` command line: the server's settings and the commands beside running it.
//!
//! Every setting comes from, in order of precedence: its flag, its environment variable
//! (`CHAT_SERVER_` and the flag's name in capitals, `-` as `_`), the configuration file given
//! by `--config`, its default. The file's keys are the flags' names ([`crate::config_file`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use thiserror::Error;

use crate::config::Config;
use crate::config_file::{self, ConfigFileError};

/// The version and the commit the binary was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHAT_BUILD_COMMIT"),
    ")"
);

/// Prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "CHAT_SERVER_";

/// chat-server: rooms over TCP, chat over UDP. With no command, it runs the server.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-server", version = VERSION, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// Read settings from this TOML file; its keys are the flags' names. Flags and
    /// environment variables win over it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The server's settings.
    #[command(flatten)]
    pub settings: Config,
    /// What to do instead of running the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands beside running the server.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the server (the same as no command).
    Run,
    /// Check a configuration file without starting: prints what is wrong, exits 0 if nothing.
    CheckConfig {
        /// The TOML file to check.
        path: PathBuf,
    },
    /// Print a shell completion script on standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output.
    Man,
    /// Copy the state and history into DIR, consistently, while the server runs.
    Backup {
        /// A new or empty directory.
        dir: PathBuf,
    },
    /// Check a backup and put it in place of the state and history (stop the server first).
    Restore {
        /// A directory written by `chat-server backup`.
        dir: PathBuf,
        /// Replace an existing state file and history database.
        #[arg(long)]
        force: bool,
    },
    /// Print the fingerprint of the server's TLS certificate (clients pin it), making the
    /// self-signed certificate first if there is none yet.
    Fingerprint,
    /// Write a room's history on standard output, oldest message first.
    Export {
        /// The room's name.
        room: String,
        /// `text`: one `time <name> text` line per message; `jsonl`: one JSON object per line.
        #[arg(long, value_enum, default_value_t = ExportFormat::Text)]
        format: ExportFormat,
    },
}

/// How `export` writes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `2026-12-01T10:00:00.000Z <alice> hello` (`* alice waves` for an action, `<alice> (to
    /// bob) hi` for a direct message), control characters escaped.
    Text,
    /// `{"id":1,"from":"alice","text":"hello","ts":1764583200000}`.
    Jsonl,
}

/// Why the command line was refused.
#[derive(Debug, Error)]
pub enum CliError {
    /// A bad flag or value, or `--help`/`--version` (clap prints those itself).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The configuration file is missing or invalid.
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

/// The environment variable that sets the flag `--name`.
pub fn env_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        flag.replace('-', "_").to_ascii_uppercase()
    )
}

/// The full command: [`Cli`] with an environment variable for every setting, each usable
/// before or after a command (`chat-server backup DIR --config FILE`).
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| {
        let Some(flag) = arg.get_long() else {
            return arg;
        };
        // clap keeps `&'static str`s; these few names are made once per process.
        let env: &'static str = Box::leak(env_name(flag).into_boxed_str());
        arg.env(env).global(true)
    })
}

/// Parses the command line, with the configuration file's settings under the flags and
/// environment variables.
pub fn parse<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = command().try_get_matches_from(&args)?;
    let Some(path) = first.get_one::<PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&first)?);
    };
    let file = config_file::load(path, &Cli::command())?;
    // The file's settings go first, as flags, and only for settings that neither a flag nor
    // an environment variable gave.
    let mut merged: Vec<OsString> = args.iter().take(1).cloned().collect();
    for setting in &file {
        match first.value_source(&setting.id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => {}
            _ => merged.extend(setting.as_flags()),
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    let matches = command().try_get_matches_from(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_work_before_and_after_a_command() {
        let cli = parse(["chat-server", "backup", "/tmp/b", "--state", "s.json"]).unwrap();
        assert_eq!(cli.settings.state, PathBuf::from("s.json"));
        assert_eq!(
            cli.command,
            Some(Command::Backup {
                dir: PathBuf::from("/tmp/b")
            })
        );
        let cli = parse(["chat-server", "--tcp-port", "0"]).unwrap();
        assert_eq!(cli.settings.tcp_port, 0);
        assert_eq!(cli.command, None);
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let command = command();
        for arg in command.get_arguments() {
            if let Some(flag) = arg.get_long() {
                assert_eq!(
                    arg.get_env().and_then(|env| env.to_str()),
                    Some(env_name(flag).as_str())
                );
            }
        }
        assert_eq!(env_name("v1-idle-timeout"), "CHAT_SERVER_V1_IDLE_TIMEOUT");
    }

    #[test]
    fn the_version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains("(commit "));
    }
}
