//! `chat-client`: create or join a chat room and talk in it from the terminal.
//!
//! Exit codes: 0 normal end (quit, end of input, room closed); 1 other error; 2 usage error;
//! 3 the server refused the request; 4 cannot reach the server; 5 the server is not trusted.
//! See `chat-client --help`.

use std::process::ExitCode;

use chat_client::settings::{self, Invocation, SettingsError};

fn main() -> ExitCode {
    let config = settings::config_path();
    let cli = match settings::parse(std::env::args_os().collect(), config.as_deref()) {
        Ok(Invocation::Chat(cli)) => cli,
        Ok(Invocation::Completions(shell)) => {
            let mut command = settings::command();
            clap_complete::generate(shell, &mut command, "chat-client", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Man) => {
            return match clap_mangen::Man::new(settings::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("chat-client: cannot write the manual page: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        // Prints the usage error, --help or --version, with clap's exit status.
        Err(SettingsError::Usage(error)) => error.exit(),
        Err(error @ SettingsError::File { .. }) => {
            eprintln!("chat-client: {error}");
            return ExitCode::from(2);
        }
    };
    chat_client::logging::init(cli.log_level.as_deref());
    match chat_client::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            chat_client::ui::screen::print_problem(&error.to_string());
            ExitCode::from(error.exit_code())
        }
    }
}
