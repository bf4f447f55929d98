//! What the command line does beside chatting, and the defaults a user keeps in a file.
//!
//! `$XDG_CONFIG_HOME/chat-client/config.toml` (else `~/.config/chat-client/config.toml`) may
//! set `server`, `tcp-port`, `udp-port`, `name`, `log-level`, `fingerprint`, the switches
//! `v1`, `v2`, `tcp`, `trust-new-server` and `require-encryption` (`true` or `false`), and
//! `bell` (`false`: as `--no-bell`); a flag given on the
//! command line wins over the file. A bad key or value is refused with the file and line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, CommandFactory, FromArgMatches, value_parser};
use thiserror::Error;
use toml::{Spanned, Value};

use crate::cli::Cli;

/// The version and the commit the binary was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHAT_BUILD_COMMIT"),
    ")"
);

/// Largest configuration file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The keys of the file: the global flags, and `name` for create, join and pair.
const KEYS: [&str; 12] = [
    "server",
    "tcp-port",
    "udp-port",
    "log-level",
    "v1",
    "v2",
    "name",
    "bell",
    "fingerprint",
    "trust-new-server",
    "tcp",
    "require-encryption",
];

/// The keys that are switches: `true` gives the flag, `false` leaves it off.
const SWITCHES: [&str; 5] = ["v1", "v2", "trust-new-server", "tcp", "require-encryption"];

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Chat, or list the rooms.
    Chat(Cli),
    /// Print a completion script for this shell.
    Completions(clap_complete::Shell),
    /// Print the manual page.
    Man,
}

/// Why the command line or the configuration file was refused.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// A usage error, or `--help`/`--version` (clap prints those itself).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The configuration file cannot be read or has a bad key or value.
    #[error("{path} line {line}: {sentence}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Line in the file, from 1 (0 when the file cannot be read at all).
        line: usize,
        /// What is wrong.
        sentence: String,
    },
}

/// The full command: [`Cli`] with `completions` and `man`, which never reach a server.
pub fn command() -> clap::Command {
    Cli::command()
        .version(VERSION)
        .subcommand(
            clap::Command::new("completions")
                .about("Print a shell completion script on standard output")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(value_parser!(clap_complete::Shell))
                        .help("bash, zsh, fish, elvish or powershell"),
                ),
        )
        .subcommand(
            clap::Command::new("man").about("Print the manual page (roff) on standard output"),
        )
}

/// The configuration file's path: `$XDG_CONFIG_HOME/chat-client/config.toml`, else under
/// `$HOME/.config`; None when neither variable is set.
pub fn config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("chat-client").join("config.toml"))
}

/// Parses the command line, with the configuration file's defaults under the flags.
pub fn parse(args: Vec<OsString>, config: Option<&Path>) -> Result<Invocation, SettingsError> {
    let defaults = match config {
        Some(path) if path.exists() => load(path)?,
        _ => Vec::new(),
    };
    let given = |flag: &str| {
        let long = format!("--{flag}");
        let prefix = format!("--{flag}=");
        args.iter().any(|arg| {
            arg.to_str()
                .is_some_and(|arg| arg == long || arg.starts_with(&prefix))
        })
    };
    // The subcommand is the first word that names one; `--name` applies only to these.
    let joins = args.iter().skip(1).any(|arg| {
        arg.to_str()
            .is_some_and(|arg| ["create", "join", "pair"].contains(&arg))
    });
    let mut merged: Vec<OsString> = args.iter().take(1).cloned().collect();
    let mut trailing = Vec::new();
    for (flag, value) in &defaults {
        if given(flag) {
            continue;
        }
        let word = match value {
            Some(value) => OsString::from(format!("--{flag}={value}")),
            None => OsString::from(format!("--{flag}")),
        };
        if *flag == "name" {
            if joins {
                trailing.push(word);
            }
        } else {
            merged.push(word);
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    merged.extend(trailing);
    let matches = command().try_get_matches_from(merged)?;
    match matches.subcommand() {
        Some(("completions", sub)) => Ok(Invocation::Completions(
            *sub.get_one::<clap_complete::Shell>("shell")
                .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingRequiredArgument))?,
        )),
        Some(("man", _)) => Ok(Invocation::Man),
        _ => Ok(Invocation::Chat(Cli::from_arg_matches(&matches)?)),
    }
}

/// Reads the file: each key with its value as a flag takes it (None: a switch that is on).
fn load(path: &Path) -> Result<Vec<(&'static str, Option<String>)>, SettingsError> {
    let refuse = |line, sentence: String| SettingsError::File {
        path: path.to_owned(),
        line,
        sentence,
    };
    let size = std::fs::metadata(path)
        .map_err(|error| refuse(0, format!("cannot read it: {error}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(refuse(
            0,
            format!("it is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| refuse(0, format!("cannot read it: {error}")))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let entries: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(&text).map_err(|error| {
            refuse(
                error.span().map_or(1, |span| line_of(span.start)),
                format!("not valid TOML: {}", error.message().trim_end()),
            )
        })?;
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut settings = Vec::new();
    for (key, value) in entries {
        let line = line_of(key.span().start);
        let shown: String = key
            .get_ref()
            .chars()
            .take(80)
            .flat_map(char::escape_debug)
            .collect();
        let Some(flag) = KEYS.iter().find(|known| **known == key.get_ref().as_str()) else {
            return Err(refuse(
                line,
                format!("unknown key \"{shown}\"; the keys are {}", KEYS.join(", ")),
            ));
        };
        let text = match (value.get_ref(), *flag) {
            (Value::Boolean(true), switch) if SWITCHES.contains(&switch) => None,
            (Value::Boolean(false), switch) if SWITCHES.contains(&switch) => continue,
            (_, switch) if SWITCHES.contains(&switch) => {
                return Err(refuse(line, format!("\"{switch}\" must be true or false")));
            }
            (Value::Boolean(true), "bell") => continue,
            (Value::Boolean(false), "bell") => {
                settings.push(("no-bell", None));
                continue;
            }
            (_, "bell") => return Err(refuse(line, "\"bell\" must be true or false".into())),
            (Value::String(text), _) => Some(text.clone()),
            (Value::Integer(number), _) => Some(number.to_string()),
            _ => {
                return Err(refuse(
                    line,
                    format!("\"{shown}\" must be a string or a number"),
                ));
            }
        };
        // The flag's own parser decides, so the file accepts what the command line does.
        if let Some(value) = &text {
            let probe = if *flag == "name" {
                vec![
                    "chat-client".to_owned(),
                    "pair".into(),
                    format!("--name={value}"),
                ]
            } else {
                vec![
                    "chat-client".to_owned(),
                    format!("--{flag}={value}"),
                    "rooms".into(),
                ]
            };
            if let Err(error) = command().try_get_matches_from(probe) {
                let reason = std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| {
                        error
                            .render()
                            .to_string()
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .trim_start_matches("error: ")
                            .to_owned()
                    });
                let shown_value: String = value
                    .chars()
                    .take(80)
                    .flat_map(char::escape_debug)
                    .collect();
                return Err(refuse(
                    line,
                    format!("\"{flag}\" cannot be \"{shown_value}\": {reason}"),
                ));
            }
        }
        settings.push((*flag, text));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(file: &str, args: &[&str]) -> Result<Invocation, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file).unwrap();
        parse(args.iter().map(OsString::from).collect(), Some(&path))
    }

    fn chat(invocation: Result<Invocation, SettingsError>) -> Cli {
        match invocation.unwrap() {
            Invocation::Chat(cli) => cli,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_gives_defaults_and_flags_win() {
        let file = "server = \"chat.lan\"\ntcp-port = 7000\nname = \"bob\"\nv1 = true\n";
        let cli = chat(parse_with(file, &["chat-client", "join", "lobby"]));
        assert_eq!(cli.server, "chat.lan");
        assert_eq!(cli.tcp_port, 7000);
        assert_eq!(cli.command.username(), Some("bob"));
        assert!(cli.v1);
        let cli = chat(parse_with(
            file,
            &[
                "chat-client",
                "--tcp-port=7100",
                "join",
                "lobby",
                "--name",
                "eve",
            ],
        ));
        assert_eq!(cli.tcp_port, 7100);
        assert_eq!(cli.command.username(), Some("eve"));
        assert_eq!(cli.server, "chat.lan");
        // `rooms` takes no name: the file's is not forced on it.
        let cli = chat(parse_with(file, &["chat-client", "rooms"]));
        assert_eq!(cli.command, crate::cli::Command::Rooms);
    }

    #[test]
    fn the_encryption_switches_and_the_pin_can_live_in_the_file() {
        let print = format!("SHA256:{}", "cd".repeat(32));
        let file = format!(
            "fingerprint = \"{print}\"\ntrust-new-server = true\ntcp = true\nrequire-encryption = false\n"
        );
        let cli = chat(parse_with(
            &file,
            &["chat-client", "join", "lobby", "--name", "bob"],
        ));
        assert_eq!(cli.fingerprint.map(|f| f.to_string()), Some(print));
        assert!(cli.trust_new_server && cli.tcp && !cli.require_encryption);
        assert!(chat(parse_with("v2 = true\n", &["chat-client", "rooms"])).v2);
        assert!(parse_with("tcp = 1\n", &["chat-client", "rooms"]).is_err());
        assert!(parse_with("fingerprint = \"MD5:00\"\n", &["chat-client", "rooms"]).is_err());
    }

    #[test]
    fn the_bell_can_be_silenced_in_the_file_or_with_a_flag() {
        let join = ["chat-client", "join", "lobby", "--name", "bob"];
        assert!(!chat(parse_with("bell = true\n", &join)).no_bell);
        assert!(chat(parse_with("bell = false\n", &join)).no_bell);
        assert!(chat(parse_with("", &["chat-client", "--no-bell", "rooms"])).no_bell);
        assert!(parse_with("bell = \"no\"\n", &join).is_err());
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_their_line() {
        for (file, line, expected) in [
            ("server = \"a\"\nport = 1\n", 2, "unknown key \"port\""),
            (
                "\ntcp-port = 99999\n",
                2,
                "\"tcp-port\" cannot be \"99999\"",
            ),
            (
                "log-level = \"loud\"\n",
                1,
                "\"log-level\" cannot be \"loud\"",
            ),
            ("v1 = \"yes\"\n", 1, "must be true or false"),
            ("name = [1]\n", 1, "must be a string or a number"),
            ("server = \n", 1, "not valid TOML"),
        ] {
            match parse_with(file, &["chat-client", "rooms"]) {
                Err(SettingsError::File {
                    line: found,
                    sentence,
                    ..
                }) => {
                    assert_eq!(found, line, "{file}: {sentence}");
                    assert!(sentence.contains(expected), "{file}: {sentence}");
                }
                other => panic!("{file}: {other:?}"),
            }
        }
    }

    #[test]
    fn completions_and_man_are_commands() {
        let args = |words: &[&str]| words.iter().map(OsString::from).collect();
        assert!(matches!(
            parse(args(&["chat-client", "completions", "zsh"]), None),
            Ok(Invocation::Completions(clap_complete::Shell::Zsh))
        ));
        assert!(matches!(
            parse(args(&["chat-client", "man"]), None),
            Ok(Invocation::Man)
        ));
    }
}
