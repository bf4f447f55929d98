//! Rooms and memberships over HTTP: the room list, and create, join and pair through the
//! control plane's own [`grant`](crate::control::handshake::grant), under the same limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_protocol::listing::ListRequest;
use chat_protocol::tcrp::{ErrorCode, Operation, UserRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

use super::error::{ApiError, body, query};
use super::{Ctx, WebContext};
use crate::control::handshake::{self, Refusal};
use crate::ip_limit::Admission;
use crate::room_list;
use crate::shared::lock;

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
    /// Flood control's burst, as TCP grants announce it, so clients pace themselves; absent
    /// when flood control is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_burst: Option<u32>,
    /// Flood control's milliseconds per message after the burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_interval_ms: Option<u64>,
}

/// The room list's query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u64>,
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
        handshake::grant(operation, room, user, peer, &context.control, None),
    )
    .await
    .map_err(|_| ApiError::busy("the server took too long to answer; try again"))??;
    Ok(GrantBody {
        token: membership.token.to_hex(),
        room: membership.room,
        username: membership.username,
        host: membership.host,
        send_burst: context.control.send_pace.map(|(burst, _)| burst),
        send_interval_ms: context.control.send_pace.map(|(_, interval)| interval),
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
