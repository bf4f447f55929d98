//! What a token may do over HTTP: see who is here, read history, send, leave. Each request
//! names its room in the path and its token in `Authorization: Bearer`, and goes through the
//! engine's token-carrying inputs ([`crate::engine::api`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_protocol::limits::TOKEN_HEX_LEN;
use serde::{Deserialize, Serialize};

use super::Ctx;
use super::error::{ApiError, body, query};
use crate::engine::{Credentials, DropReason, SeqStatus};
use crate::shared::{self, lock};

/// How long a request waits for the history thread (a stored message, a history page) before
/// it answers `server_busy`. Longer than a held message's wait for its gap (5 s).
const STORE_WAIT: Duration = Duration::from_secs(15);

/// A history page's query.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

/// A message's body.
#[derive(Debug, Deserialize)]
pub struct MessageBody {
    /// The text.
    pub text: String,
    /// The member's sequence number for it (idempotency key).
    pub key: u64,
}

/// The token of `Authorization: Bearer TOKEN`, if it has a token's form.
pub(super) fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    if token.len() != TOKEN_HEX_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::unauthorized());
    }
    Ok(token.to_owned())
}

/// Who is in the room.
#[derive(Debug, Serialize)]
pub struct MembersBody {
    names: Vec<String>,
    host: String,
}

/// `GET /api/rooms/{room}/members`
pub async fn members(
    State(context): Ctx,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<MembersBody>, ApiError> {
    let token = bearer(&headers)?;
    let list = lock(&context.control.engine).member_list(
        Credentials {
            token: &token,
            room: &room,
        },
        shared::now(),
    )?;
    Ok(Json(MembersBody {
        names: list.names,
        host: list.host,
    }))
}

/// `GET /api/rooms/{room}/messages`: the same page a `history` datagram gets, read by the
/// history thread and sent to a one-answer endpoint of this request's own.
pub async fn messages(
    State(context): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    parsed: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let PageQuery { before, limit } = query(parsed)?;
    let (endpoint, mut answers) = context.peers.connect(peer.ip(), 1);
    let asked = context
        .control
        .outlet
        .apply(&context.control.engine, |engine, fx| {
            engine.history_page(
                Credentials {
                    token: &token,
                    room: &room,
                },
                before,
                limit.unwrap_or(crate::engine::dispatch::DEFAULT_HISTORY_PAGE),
                endpoint,
                shared::now(),
                fx,
            )
        });
    let answer = match asked {
        Ok(()) => tokio::time::timeout(STORE_WAIT, answers.recv()).await,
        Err(reason) => {
            context.peers.disconnect(endpoint);
            return Err(reason.into());
        }
    };
    context.peers.disconnect(endpoint);
    let Ok(Some(text)) = answer else {
        return Err(ApiError::busy(
            "the history database did not answer in time; try again",
        ));
    };
    // The `history` event without its type: `{"messages":[…],"more":…}`.
    let mut event: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text.as_str())
        .map_err(|_| ApiError::busy("the history page could not be read"))?;
    event.remove("t");
    Ok(Json(event).into_response())
}

/// What a stored message answers.
#[derive(Debug, Serialize)]
pub struct StoredBody {
    id: u64,
    key: u64,
}

/// `POST /api/rooms/{room}/messages`: answered once the message is stored, with its id; the
/// same key again gets the same answer.
pub async fn post_message(
    State(context): Ctx,
    Path(room): Path<String>,
    headers: HeaderMap,
    parsed: Result<Json<MessageBody>, JsonRejection>,
) -> Result<Json<StoredBody>, ApiError> {
    let token = bearer(&headers)?;
    let MessageBody { text, key } = body(parsed)?;
    if key == 0 {
        return Err(ApiError::invalid("key must be a positive integer"));
    }
    // Too long or empty is the engine's to refuse, so that the key is remembered as refused
    // and the keys after it do not wait for it.
    // Watching before posting, so that a commit between the two is not missed.
    let mut commits = context.peers.watch_commits();
    let posted = context
        .control
        .outlet
        .apply(&context.control.engine, |engine, fx| {
            let who = Credentials {
                token: &token,
                room: &room,
            };
            engine.post(who, key, &text, shared::now(), fx)
        });
    if let Err(
        reason @ (DropReason::UnknownToken | DropReason::WrongRoom | DropReason::WrongAddress),
    ) = posted
    {
        return Err(reason.into());
    }
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    loop {
        let status = lock(&context.control.engine).seq_status(&token, key);
        match status {
            None => return Err(DropReason::UnknownToken.into()),
            Some(SeqStatus::Stored(id)) => return Ok(Json(StoredBody { id, key })),
            Some(SeqStatus::Refused(code)) => return Err(code.into()),
            Some(SeqStatus::Forgotten) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "invalid_request",
                    "this key is older than the last 1024 messages; send with a new key",
                ));
            }
            // Refused before it reached the window (the history backlog): nothing to wait for.
            Some(SeqStatus::New) if posted.is_err() => {
                return Err(posted.err().unwrap_or(DropReason::HistoryBacklog).into());
            }
            Some(SeqStatus::Pending | SeqStatus::New) => {}
        }
        match tokio::time::timeout_at(deadline, commits.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(ApiError::busy(
                    "the message was not stored in time; send it again with the same key",
                ));
            }
        }
    }
}

/// `DELETE /api/rooms/{room}/members/me`
pub async fn leave(
    State(context): Ctx,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers)?;
    let journal_seq = context
        .control
        .outlet
        .apply(&context.control.engine, |engine, fx| {
            engine
                .leave(
                    Credentials {
                        token: &token,
                        room: &room,
                    },
                    shared::now(),
                    fx,
                )
                .map(|()| engine.journal_seq())
        })?;
    // Answered once the departure is on disk, like a handshake.
    context.control.writer.schedule();
    context
        .control
        .writer
        .durable(journal_seq)
        .await
        .map_err(|failure| {
            ApiError::busy(format!(
                "the server cannot save its state right now ({failure})"
            ))
        })?;
    Ok(StatusCode::NO_CONTENT)
}
