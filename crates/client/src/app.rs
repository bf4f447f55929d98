//! One run of the client: list the rooms, or get into a room and chat in it over the version
//! of the data plane the command line asks for.

use crate::cli::Cli;
use crate::entering::handshake::Request;
use crate::entering::resume;
use crate::entering::room_table;
use crate::entering::saved::Store;
use crate::entering::{admit, build_request};
use crate::error::ClientError;
use crate::secure::connector::{Connector, Entered};
use crate::ui::screen::{print_line, print_problem};
use crate::v1;
use crate::v2;

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
pub async fn chat(mut cli: Cli) -> Result<(), ClientError> {
    crate::failover::split_servers(&mut cli);
    let connector = Connector::new(&cli);
    let Some(mut request) = build_request(&cli.command)? else {
        let list = connector.list().await?;
        for line in room_table::table(&list) {
            print_line(&line)?;
        }
        return Ok(());
    };
    let saved = resume::saved_key(&cli, &request).and_then(|key| Some((Store::for_user()?, key)));
    let (connector, entered) =
        match resume::take_back(&cli, &connector, &request, saved.as_ref()).await? {
            Some(entered) => (connector, entered),
            None => admit_somewhere(&mut cli, connector, &mut request).await?,
        };
    if let Some((store, key)) = &saved
        && let Err(error) = store.save(key, entered.membership())
    {
        tracing::info!(%error, "cannot save the membership; a crash would leave it behind");
    }
    let outcome = chat_in(&cli, &connector, &request, entered).await;
    // Any end short of a crash: nothing is left to take back.
    if let Some((store, key)) = &saved
        && let Err(error) = store.forget(key)
    {
        tracing::info!(%error, "cannot forget the saved membership");
    }
    outcome
}

/// The handshake, with the node in use; when it cannot be reached and `--server` listed
/// others, with each of them in turn (the first that answers is used from then on).
async fn admit_somewhere(
    cli: &mut Cli,
    mut connector: Connector,
    request: &mut Request,
) -> Result<(Connector, Entered), ClientError> {
    let mut tries = cli.failover.len();
    loop {
        match admit(&connector, request).await {
            Err(error) if error.exit_code() == crate::error::EXIT_UNREACHABLE && tries > 0 => {
                tries -= 1;
                let next = crate::failover::rotate(cli);
                print_problem(&format!("{error}; trying {next}"));
                connector = Connector::new(cli);
            }
            other => return other.map(|entered| (connector, entered)),
        }
    }
}

/// Chats in the room `entered` opened, in the version the command line and server allow.
async fn chat_in(
    cli: &Cli,
    connector: &Connector,
    request: &Request,
    entered: Entered,
) -> Result<(), ClientError> {
    if let Entered::Plain(membership) = &entered {
        if cli.v1 {
            return v1::chat(cli, request, membership).await;
        }
        if membership.server_is_v1_only() {
            // A version-2 register would go unanswered and look like a wrong UDP port. The
            // username went as a JSON string, so the membership is right for version 1 as
            // it is.
            if request.user.password.is_some() {
                v1::abandon(cli, request, membership).await?;
                return Err(ClientError::V1OnlyPrivate);
            }
            print_problem(V1_FALLBACK);
            return v1::chat(cli, request, membership).await;
        }
    }
    v2::chat(cli, connector, request, entered).await
}

/// What the default client says when the server turns out to speak only version 1.
pub const V1_FALLBACK: &str = "* the server speaks only version 1 of the chat protocol; \
     continuing in version 1 (no history, no delivery confirmation, no /who)";
