//! One run of the client: list the rooms, or get into a room and chat in it over the version
//! of the data plane the command line asks for.

use crate::admission::{admit, build_request};
use crate::chat_v1;
use crate::chat_v2;
use crate::cli::Cli;
use crate::display::print_line;
use crate::error::ClientError;
use crate::handshake::{self, Timeouts};
use crate::rooms;

/// Runs the client to its end on a runtime of its own. `Ok` is a normal end: the user quit,
/// input ended, the room was closed, or the room list was printed.
pub fn run(cli: Cli) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    let outcome = runtime.block_on(chat(cli));
    // Nothing may be left to wait for: the input thread can stay blocked in a read forever.
    runtime.shutdown_background();
    outcome
}

/// The whole run, for callers that bring their own runtime.
pub async fn chat(cli: Cli) -> Result<(), ClientError> {
    let Some(mut request) = build_request(&cli.command)? else {
        let list = handshake::list_rooms(&cli.server, cli.tcp_port, Timeouts::default()).await?;
        for line in rooms::table(&list) {
            print_line(&line)?;
        }
        return Ok(());
    };
    let admission = admit(&cli, &mut request).await?;
    if cli.v1 {
        chat_v1::chat(&cli, &request, &admission).await
    } else {
        chat_v2::chat(&cli, &request, admission).await
    }
}
