//! The configuration file: TOML, one top-level key per flag, named as the flag
//! (`tcp-port = 9090`). Every key is checked with the flag's own parser, so the file accepts
//! exactly what the command line does; a problem is reported with the file and line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use thiserror::Error;
use toml::{Spanned, Value};

/// Largest configuration file read: a file with every key is about 2 KiB.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a configuration file was refused.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file is not valid TOML, or a key or value is refused. Each problem is one line.
    #[error("{}", problems.iter().map(|p| format!("{} line {}: {}", path.display(), p.line, p.sentence)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// One refused key, value or syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line in the file, from 1.
    pub line: usize,
    /// What is wrong, as a sentence.
    pub sentence: String,
}

/// One valid setting from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The clap id of the flag it sets.
    pub id: String,
    /// The flag's long name, which is also the key.
    pub flag: String,
    /// The value as the flag would be given it; None for a switch set to true.
    pub value: Option<String>,
    /// Line in the file, from 1.
    pub line: usize,
}

impl Setting {
    /// The command-line words that give this setting.
    pub fn as_flags(&self) -> Vec<OsString> {
        match &self.value {
            Some(value) => vec![format!("--{}={value}", self.flag).into()],
            None => vec![format!("--{}", self.flag).into()],
        }
    }
}

/// Reads and checks a configuration file against `flags`, the command line's definition
/// (passed in, so that this module sits below the command line that reads it).
pub fn load(path: &Path, flags: &clap::Command) -> Result<Vec<Setting>, ConfigFileError> {
    let read_error = |reason: String| ConfigFileError::Read {
        path: path.to_owned(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(read_error(format!(
            "it is {size} bytes, more than the {MAX_FILE_BYTES} a configuration file may be"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    parse(&text, flags).map_err(|problems| ConfigFileError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Checks the text of a configuration file against `flags`: every problem, or every setting.
pub fn parse(text: &str, flags: &clap::Command) -> Result<Vec<Setting>, Vec<Problem>> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let entries: Vec<(Spanned<String>, Spanned<Value>)> =
        match toml::from_str::<std::collections::BTreeMap<Spanned<String>, Spanned<Value>>>(text) {
            Ok(entries) => entries.into_iter().collect(),
            Err(error) => {
                return Err(vec![Problem {
                    line: error.span().map_or(1, |span| line_of(span.start)),
                    sentence: format!("not valid TOML: {}", error.message().trim_end()),
                }]);
            }
        };
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in entries {
        let line = line_of(key.span().start);
        match check(flags, key.get_ref(), value.get_ref()) {
            Ok((id, value)) => settings.push(Setting {
                id,
                flag: key.get_ref().clone(),
                value,
                line,
            }),
            Err(sentence) => problems.push(Problem { line, sentence }),
        }
    }
    if problems.is_empty() {
        settings.sort_by_key(|setting| setting.line);
        Ok(settings)
    } else {
        problems.sort_by_key(|problem| problem.line);
        Err(problems)
    }
}

/// Checks one key and value against the flag of that name: the flag's id and its value.
fn check(
    command: &clap::Command,
    key: &str,
    value: &Value,
) -> Result<(String, Option<String>), String> {
    let shown = escape(key);
    if key == "config" {
        return Err("\"config\" cannot be set in a configuration file".into());
    }
    let Some(arg) = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(key))
    else {
        let hint = if command
            .get_arguments()
            .any(|arg| arg.get_long() == Some(&key.replace('_', "-")))
        {
            format!(" (did you mean \"{}\"?)", key.replace('_', "-"))
        } else {
            String::new()
        };
        return Err(format!(
            "unknown key \"{shown}\"{hint}; the keys are the flags' names, listed by \
             chat-server --help"
        ));
    };
    let takes_value = arg.get_action().takes_values();
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Integer(number) => number.to_string(),
        Value::Float(number) => number.to_string(),
        Value::Boolean(true) if !takes_value => return Ok((arg.get_id().to_string(), None)),
        Value::Boolean(flag) => flag.to_string(),
        other => {
            return Err(format!(
                "\"{shown}\" must be a number or a string, not {}",
                match other {
                    Value::Array(_) => "an array",
                    Value::Table(_) => "a table",
                    _ => "a date",
                }
            ));
        }
    };
    // The flag's own parser decides, so the file and the command line accept the same values.
    let flag = format!("--{key}={text}");
    match command
        .clone()
        .try_get_matches_from(["chat-server", flag.as_str()])
    {
        Ok(_) => Ok((arg.get_id().to_string(), Some(text))),
        Err(error) => {
            let mut reason = std::error::Error::source(&error).map_or_else(
                || {
                    let rendered = error.render().to_string();
                    let first = rendered.lines().next().unwrap_or_default();
                    first.trim_start_matches("error: ").to_owned()
                },
                |source| source.to_string(),
            );
            if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
                reason.push_str(&format!("; expected one of: {}", valid.join(", ")));
            }
            let shown_value = match value {
                Value::String(_) => format!("\"{}\"", escape(&text)),
                _ => escape(&text),
            };
            Err(format!("\"{shown}\" cannot be {shown_value}: {reason}"))
        }
    }
}

/// A key or value as it may be shown in a message: control characters escaped, long ones cut.
fn escape(text: &str) -> String {
    const SHOWN: usize = 80;
    let mut shown: String = text
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > SHOWN {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    fn parse(text: &str) -> Result<Vec<Setting>, Vec<Problem>> {
        super::parse(text, &Cli::command())
    }

    fn sentences(text: &str) -> Vec<(usize, String)> {
        parse(text)
            .expect_err("refused")
            .into_iter()
            .map(|p| (p.line, p.sentence))
            .collect()
    }

    #[test]
    fn keys_are_flag_names_and_values_are_checked_by_the_flags() {
        let settings = parse("tcp-port = 7000\nflood-rate = 2.5\nstate = \"s.json\"\n").unwrap();
        let flags: Vec<_> = settings.iter().flat_map(Setting::as_flags).collect();
        assert_eq!(
            flags,
            ["--tcp-port=7000", "--flood-rate=2.5", "--state=s.json"].map(OsString::from)
        );
    }

    #[test]
    fn every_refusal_names_its_line() {
        let refused = sentences(
            "# settings\ntcp-port = 70000\nwho = 1\nmax_rooms = 3\nlog-level = \"loud\"\n\
             idle-timeout = [1]\nconfig = \"x\"\nlog-format = \"xml\"\n",
        );
        let lines: Vec<usize> = refused.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8], "{refused:?}");
        assert!(
            refused[0].1.contains("\"tcp-port\" cannot be 70000"),
            "{refused:?}"
        );
        assert!(refused[1].1.contains("unknown key \"who\""), "{refused:?}");
        assert!(
            refused[2].1.contains("did you mean \"max-rooms\""),
            "{refused:?}"
        );
        assert!(refused[3].1.contains("is not a log level"), "{refused:?}");
        assert!(refused[4].1.contains("not an array"), "{refused:?}");
        assert!(refused[5].1.contains("cannot be set"), "{refused:?}");
        assert!(
            refused[6].1.contains("\"log-format\" cannot be"),
            "{refused:?}"
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let refused = sentences("tcp-port = 1\n\nudp-port = = 2\n");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 3, "{refused:?}");
        assert!(refused[0].1.starts_with("not valid TOML"), "{refused:?}");
        let twice = sentences("tcp-port = 1\ntcp-port = 2\n");
        assert_eq!(twice[0].0, 2, "{twice:?}");
    }

    #[test]
    fn hostile_keys_are_escaped_and_cut() {
        let key = format!("\"a\\u001b[31m{}\" = 1\n", "x".repeat(10_000));
        let refused = sentences(&key);
        assert!(!refused[0].1.contains('\u{1b}'));
        assert!(refused[0].1.len() < 300, "{}", refused[0].1.len());
    }
}
