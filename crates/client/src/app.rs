//! One run of the client: list the rooms, or get into a room and chat in it over the version
//! of the data plane the command line asks for.

use chat_protocol::tcrp::Operation;

use crate::cli::Cli;
use crate::entering::handshake::{self, Membership, Request, Timeouts};
use crate::entering::resume;
use crate::entering::room_table;
use crate::entering::saved::{Key, Saved, Store};
use crate::entering::{admit, build_request, room_name, udp_server};
use crate::error::ClientError;
use crate::transport::Link;
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
pub async fn chat(cli: Cli) -> Result<(), ClientError> {
    let Some(mut request) = build_request(&cli.command)? else {
        let list = handshake::list_rooms(&cli.server, cli.tcp_port, Timeouts::default()).await?;
        for line in room_table::table(&list) {
            print_line(&line)?;
        }
        return Ok(());
    };
    let saved = saved_key(&cli, &request).and_then(|key| Some((Store::for_user()?, key)));
    let membership = match resume(&cli, &request, saved.as_ref()).await? {
        Some(membership) => membership,
        None => admit(&cli, &mut request).await?,
    };
    if let Some((store, key)) = &saved
        && let Err(error) = store.save(key, &membership)
    {
        tracing::info!(%error, "cannot save the membership; a crash would leave it behind");
    }
    let outcome = chat_in(&cli, &request, membership).await;
    // Any end short of a crash: nothing is left to take back.
    if let Some((store, key)) = &saved
        && let Err(error) = store.forget(key)
    {
        tracing::info!(%error, "cannot forget the saved membership");
    }
    outcome
}

/// Which saved membership a create or join could take back.
fn saved_key(cli: &Cli, request: &Request) -> Option<Key> {
    matches!(request.operation, Operation::Create | Operation::Join).then(|| Key {
        server: cli.server.clone(),
        tcp_port: cli.tcp_port,
        room: request.room.clone(),
        username: request.user.username.clone(),
    })
}

/// The saved membership for this room and name, when the server still knows its token: a
/// client that crashed left it behind, and this one takes its place.
async fn resume(
    cli: &Cli,
    request: &Request,
    saved: Option<&(Store, Key)>,
) -> Result<Option<Membership>, ClientError> {
    let Some((store, key)) = saved else {
        return Ok(None);
    };
    // A client that still runs holds its place; only a crashed one's is taken back.
    let Some(found) = store.find(key).filter(Saved::holder_is_gone) else {
        return Ok(None);
    };
    let membership = found.membership();
    let link = Link::open(
        udp_server(cli, &membership),
        room_name(request, &membership),
        membership.grant.token.clone(),
    )
    .await?;
    let v1 = cli.v1 || membership.server_is_v1_only();
    if resume::still_known(&link, v1).await? {
        print_problem(&format!(
            "* taking back your place in {:?} (an earlier chat-client left it without leaving)",
            request.room
        ));
        Ok(Some(membership))
    } else {
        let _ = store.forget(key);
        Ok(None)
    }
}

/// Chats in the room `membership` opened, in the version the command line and server allow.
async fn chat_in(cli: &Cli, request: &Request, membership: Membership) -> Result<(), ClientError> {
    if cli.v1 {
        return v1::chat(cli, request, &membership).await;
    }
    if membership.server_is_v1_only() {
        // A version-2 register would go unanswered and look like a wrong UDP port. The
        // username went as a JSON string, so the membership is right for version 1 as it is.
        if request.user.password.is_some() {
            v1::abandon(cli, request, &membership).await?;
            return Err(ClientError::V1OnlyPrivate);
        }
        print_problem(V1_FALLBACK);
        return v1::chat(cli, request, &membership).await;
    }
    v2::chat(cli, request, membership).await
}

/// What the default client says when the server turns out to speak only version 1.
pub const V1_FALLBACK: &str = "* the server speaks only version 1 of the chat protocol; \
     continuing in version 1 (no history, no delivery confirmation, no /who)";
