//! One run of the client: list the rooms, or get into a room and chat in it over the version
//! of the data plane the command line asks for.

use crate::admission::{admit, build_request};
use crate::chat_v1;
use crate::chat_v2;
use crate::cli::Cli;
use crate::display::{print_line, print_problem};
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
        return chat_v1::chat(&cli, &request, &admission).await;
    }
    if admission.server_is_v1_only() {
        // A version-2 register would go unanswered and look like a wrong UDP port. The
        // username went as a JSON string, so the membership is right for version 1 as it is.
        if request.user.password.is_some() {
            chat_v1::abandon(&cli, &request, &admission).await?;
            return Err(ClientError::V1OnlyPrivate);
        }
        print_problem(V1_FALLBACK);
        return chat_v1::chat(&cli, &request, &admission).await;
    }
    chat_v2::chat(&cli, &request, admission).await
}

/// What the default client says when the server turns out to speak only version 1.
pub const V1_FALLBACK: &str = "* the server speaks only version 1 of the chat protocol; \
     continuing in version 1 (no history, no delivery confirmation, no /who)";
