//! Diagnostics on stderr through `tracing`, filtered by `--log-level` or `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` is given.
pub const DEFAULT_LOG_LEVEL: &str = "warn";

const LEVEL_NAMES: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `--log-level` value: a level name, or a `RUST_LOG`-style directive list such as
/// `warn,chat_client=debug`. A bare word that is not a level is refused because `EnvFilter`
/// would read it as a target name and silently log nothing useful.
pub fn parse_log_level(value: &str) -> Result<String, String> {
    let is_level = LEVEL_NAMES
        .iter()
        .any(|name| name.eq_ignore_ascii_case(value));
    let is_directive_list = value.contains(['=', ',']) && EnvFilter::try_new(value).is_ok();
    if is_level || is_directive_list {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "expected one of {} or a filter such as `chat_client=debug`",
            LEVEL_NAMES.join(", ")
        ))
    }
}

/// Sends `tracing` output to stderr. `--log-level` wins over `RUST_LOG`, which wins over the
/// default `warn`; stdout stays reserved for chat lines.
pub fn init(log_level: Option<&str>) {
    let from_flag = log_level.and_then(|level| EnvFilter::try_new(level).ok());
    let filter = from_flag
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_LEVEL));
    // Fails only if a subscriber is already installed, in which case that one keeps working.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_levels_and_directives_and_refuses_typos() {
        assert!(parse_log_level("warn").is_ok());
        assert!(parse_log_level("DEBUG").is_ok());
        assert!(parse_log_level("info,chat_client=trace").is_ok());
        assert!(parse_log_level("loud").is_err());
    }
}
