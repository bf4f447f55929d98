//! `chat-client`: create or join a chat room and talk in it from the terminal.
//!
//! Exit codes: 0 normal end (quit, end of input, room closed); 1 other error; 2 usage error;
//! 3 the server refused the request; 4 cannot reach the server. See `chat-client --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = chat_client::cli::Cli::parse();
    chat_client::logging::init(cli.log_level.as_deref());
    match chat_client::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            chat_client::display::print_problem(&error.to_string());
            ExitCode::from(error.exit_code())
        }
    }
}
