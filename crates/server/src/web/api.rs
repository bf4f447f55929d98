//! The JSON routes: rooms and memberships, then what a token may do, then health and metrics.
//! Every answer is JSON; every refusal is an [`ApiError`] with the handshake's or the
//! datagrams' code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_protocol::limits::TOKEN_HEX_LEN;
use chat_protocol::listing::ListRequest;
use chat_protocol::tcrp::{ErrorCode, Operation, UserRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

use super::WebContext;
use super::error::ApiError;
use crate::control::handshake::{self, Refusal};
use crate::engine::{Credentials, DropReason, SeqStatus};
use crate::ip_limit::Admission;
use crate::room_list;
use crate::shared::{self, lock};

/// How long a request waits for the history thread (a stored message, a history page) before
/// it answers `server_busy`. Longer than a held message's wait for its gap (5 s).
const STORE_WAIT: Duration = Duration::from_secs(15);

type Ctx = State<Arc<WebContext>>;

/// A handshake's body.
#[derive(Debug, Deserialize)]
pub struct HandshakeBody {
    /// The room (create only; join names it in the path).
    #[serde(default)]
    pub room: Option<String>,
    /// The username asked for.
    pub username: String,
    /// A private room's password.
    #[serde(default)]
    pub password: Option<String>,
}

/// What a granted handshake answers.
#[derive(Debug, Serialize)]
pub struct GrantBody {
    /// The member's secret.
    pub token: String,
    /// The room's name as stored (a pair room's is the server's choice).
    pub room: String,
    /// The username as stored.
    pub username: String,
    /// Whether the member hosts the room.
    pub host: bool,
}

/// The room list's query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u64>,
}

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

fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed.map(|Json(body)| body).map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over 16 KiB",
            )
        } else {
            ApiError::invalid(rejection.body_text())
        }
    })
}

fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))
}

/// `GET /api/rooms`
pub async fn list_rooms(
    State(context): Ctx,
    parsed: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ListQuery { after, limit } = query(parsed)?;
    if limit.is_some_and(|limit| !(1..=1000).contains(&limit)) {
        return Err(ApiError::invalid("limit must be 1 to 1000"));
    }
    let request = ListRequest {
        after,
        limit: Some(limit.unwrap_or(100)),
    };
    let list = lock(&context.control.engine).list();
    let json = room_list::page(list, &request);
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// `POST /api/rooms`
pub async fn create_room(
    State(context): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parsed: Result<Json<HandshakeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(parsed)?;
    let room = request
        .room
        .clone()
        .ok_or_else(|| ApiError::invalid("the body needs \"room\""))?;
    let grant = handshake(&context, Operation::Create, &room, request, peer).await?;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// `POST /api/rooms/{room}/join`
pub async fn join_room(
    State(context): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    parsed: Result<Json<HandshakeBody>, JsonRejection>,
) -> Result<Json<GrantBody>, ApiError> {
    let request = body(parsed)?;
    handshake(&context, Operation::Join, &room, request, peer)
        .await
        .map(Json)
}

/// `POST /api/pair`
pub async fn pair(
    State(context): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parsed: Result<Json<HandshakeBody>, JsonRejection>,
) -> Result<Json<GrantBody>, ApiError> {
    let request = body(parsed)?;
    handshake(&context, Operation::Pair, "", request, peer)
        .await
        .map(Json)
}

/// A create, join or pair through the control plane's own path, under the same per-address
/// rate and the same cap on handshakes in progress as TCP's.
async fn handshake(
    context: &WebContext,
    operation: Operation,
    room: &str,
    request: HandshakeBody,
    peer: SocketAddr,
) -> Result<GrantBody, ApiError> {
    let _slot = admit_handshake(context, peer)?;
    let user = UserRequest {
        username: request.username,
        password: request.password,
    };
    let membership = tokio::time::timeout(
        context.control.request_timeout + Duration::from_secs(30),
        handshake::grant(operation, room, user, peer, &context.control),
    )
    .await
    .map_err(|_| ApiError::busy("the server took too long to answer; try again"))??;
    Ok(GrantBody {
        token: membership.token.to_hex(),
        room: membership.room,
        username: membership.username,
        host: membership.host,
    })
}

fn admit_handshake(
    context: &WebContext,
    peer: SocketAddr,
) -> Result<OwnedSemaphorePermit, ApiError> {
    let admission = context
        .handshake_rate
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(peer.ip(), std::time::Instant::now());
    if let Admission::Refused { .. } = admission {
        return Err(Refusal::new(
            ErrorCode::TooManyAttempts,
            "too many requests from your address; try again in a minute",
        )
        .into());
    }
    Arc::clone(&context.handshake_slots)
        .try_acquire_owned()
        .map_err(|_| ApiError::busy("the server is handling too many requests; try again shortly"))
}

/// The token of `Authorization: Bearer TOKEN`, if it has a token's form.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
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

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: sockets are bound (or this would not answer); the state and history take
/// writes; the server is not shutting down.
pub async fn readyz(State(context): Ctx) -> Response {
    if *context.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let Some(problem) = context.control.writer.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state file cannot be written: {problem}\n"),
        )
            .into_response();
    }
    let backlog = lock(&context.control.engine).history_backlog_full();
    if backlog {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the history database is not taking writes\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// `GET /metrics`
pub async fn metrics(State(context): Ctx) -> Response {
    match context.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::busy("metrics could not be encoded").into_response(),
    }
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "there is no such page or route",
    )
}
