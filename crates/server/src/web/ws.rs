//! The WebSocket gateway: a browser (or any WebSocket client) as a version-2 member.
//!
//! The first message names the room and the token; the connection then becomes an
//! [`Endpoint::Web`] bound to that member, and every later message is fed to the engine
//! exactly as the same JSON in a datagram would be, so the rules (flood control, `seq`
//! deduplication, replay after `last_id`) are the datagrams' own. What the engine sends the
//! member arrives on the connection's bounded queue; a connection that stops reading is cut off
//! when the queue fills and never slows the room.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_protocol::limits::MAX_TCRP_PAYLOAD;
use chat_protocol::ucrp::{Datagram, V2_MARKER};
use chat_protocol::v2::{ServerV2, V2ErrorCode};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::WebContext;
use super::error::ApiError;
use super::peers::WEB_QUEUE;
use crate::engine::{DropReason, Endpoint, NO_ROOM_TEXT};
use crate::shared;

/// Largest WebSocket message read; chat itself is bounded by the engine (4 KiB frames).
const MAX_MESSAGE: usize = MAX_TCRP_PAYLOAD;
/// Most queued events written with one flush.
const WRITE_BATCH: usize = 32;
/// Bytes of frames gathered before they are written even without a flush.
const WRITE_BUFFER: usize = 1024;
/// What a connection reserves for reading: one typical message.
const READ_BUFFER: usize = 1024;
/// How long a registered connection may stay silent before it is closed: clients ping every
/// few seconds, and with the default `--idle-timeout` the engine removed the member long ago.
const SILENCE_LIMIT: Duration = Duration::from_secs(300);
/// How long a new connection has to send its register.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// The first message: a version-2 register that also names the room and the token.
#[derive(Debug, Deserialize)]
struct Hello {
    t: String,
    room: String,
    token: String,
    #[serde(default)]
    last_id: Option<u64>,
}

/// `GET /ws`: checks the origin and the caps, then upgrades.
pub async fn upgrade(
    State(context): State<Arc<WebContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &context) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "pages from this origin may not open the chat; see --allowed-origin",
        )
        .into_response();
    }
    let ip = peer.ip().to_canonical();
    if let Err(refusal) = take_slot(&context, ip) {
        return refusal.into_response();
    }
    let slot = Slot {
        context: Arc::clone(&context),
        ip,
    };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // The defaults reserve 128 KiB per connection for reading alone; chat messages are
        // small, and a thousand members must not cost a hundred megabytes.
        .read_buffer_size(READ_BUFFER)
        // Frames gather until the batch is flushed (one write for everything queued), and
        // never beyond this much before they are written anyway.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_MESSAGE * 4)
        .on_upgrade(move |socket| async move {
            session(socket, &slot.context, ip).await;
            drop(slot);
        })
        .into_response()
}

/// Whether a page from the request's origin may connect: its own origin, a trusted one
/// (`--allowed-origin`, another node's page), or no `Origin` at all (not a browser, so no page
/// to protect).
fn origin_allowed(headers: &HeaderMap, context: &WebContext) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let own = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
    own || context.trusts_origin(origin)
}

/// Counts a connection against the caps, or refuses it.
fn take_slot(context: &WebContext, ip: IpAddr) -> Result<(), ApiError> {
    let mut open = context.websockets();
    let total: usize = open.values().sum();
    if total >= context.max_websockets {
        return Err(ApiError::busy(
            "the server has too many open connections; try again later",
        ));
    }
    let mine = open.entry(ip).or_insert(0);
    if context.websockets_per_ip > 0 && *mine >= context.websockets_per_ip {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "your address has too many connections open; close one first",
        ));
    }
    *mine += 1;
    Ok(())
}

/// A connection's place under the caps, given back when it closes.
struct Slot {
    context: Arc<WebContext>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.context.websockets();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One connection, from its register to its close.
async fn session(mut socket: WebSocket, context: &WebContext, ip: IpAddr) {
    let hello = match tokio::time::timeout(REGISTER_WAIT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Hello>(text.as_str()).ok(),
        _ => None,
    };
    let Some(hello) = hello.filter(|hello| hello.t == "register") else {
        let _ = send_event(
            &mut socket,
            &error_event(
                V2ErrorCode::Invalid,
                "the first message must be {\"t\":\"register\",\"room\":…,\"token\":…}",
            ),
        )
        .await;
        close(&mut socket, close_code::POLICY, "register first").await;
        return;
    };
    let (endpoint, mut events) = context.peers.connect(ip, WEB_QUEUE);
    let member = Member {
        context,
        room: hello.room,
        token: hello.token,
        endpoint,
    };
    let register = serde_json::json!({"t": "register", "last_id": hello.last_id}).to_string();
    let end = match member.feed(register.as_bytes()) {
        Ok(()) => serve(&mut socket, &member, &mut events).await,
        Err(reason) => Some(reason),
    };
    context.peers.disconnect(endpoint);
    match end {
        Some(DropReason::UnknownToken) => {
            let _ = send_event(&mut socket, &error_event(V2ErrorCode::NoRoom, NO_ROOM_TEXT)).await;
            close(&mut socket, close_code::NORMAL, "no such room").await;
        }
        Some(DropReason::WrongRoom) => {
            let message = "this token belongs to another room";
            let _ = send_event(&mut socket, &error_event(V2ErrorCode::Invalid, message)).await;
            close(&mut socket, close_code::POLICY, message).await;
        }
        Some(DropReason::RateLimited) => {
            let message = "too many registrations; try again in a moment";
            let _ = send_event(&mut socket, &error_event(V2ErrorCode::RateLimited, message)).await;
            close(&mut socket, close_code::AGAIN, message).await;
        }
        Some(_) | None => {}
    }
}

/// Why a connection ends early: the reason the engine gave, or `None` when the client closed
/// or was closed for its own reasons (handled where they happen).
async fn serve(
    socket: &mut WebSocket,
    member: &Member<'_>,
    events: &mut mpsc::Receiver<Utf8Bytes>,
) -> Option<DropReason> {
    let mut stop = member.context.stop.clone();
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(heard + SILENCE_LIMIT) => {
                // A client this quiet is gone; free its slot under the caps.
                close(socket, close_code::AWAY, "nothing heard from this client").await;
                return None;
            }
            event = events.recv() => {
                let Some(text) = event else {
                    // The queue was dropped when it filled: this client does not read.
                    close(socket, close_code::POLICY, "too slow: messages were not read").await;
                    return None;
                };
                // Whatever else is already queued goes in the same write: with Nagle off,
                // each frame written alone would be a TCP segment (and a system call) of its
                // own.
                let mut last = is_final(&text);
                let mut written = socket.feed(Message::Text(text)).await;
                let mut batched = 1;
                while written.is_ok() && !last && batched < WRITE_BATCH {
                    let Ok(more) = events.try_recv() else { break };
                    last = is_final(&more);
                    written = socket.feed(Message::Text(more)).await;
                    batched += 1;
                }
                if written.is_err() || socket.flush().await.is_err() {
                    return None;
                }
                if last {
                    close(socket, close_code::NORMAL, "").await;
                    return None;
                }
            }
            received = socket.recv() => {
                heard = tokio::time::Instant::now();
                let text = match received {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let message = "messages are JSON text";
                        let _ = send_event(socket, &error_event(V2ErrorCode::Invalid, message)).await;
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Closed, or an error (a message over the limit among them).
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                };
                match member.feed(text.as_bytes()) {
                    Ok(()) => {}
                    Err(DropReason::Malformed) => {
                        let message = "not a message this server understands";
                        let _ = send_event(socket, &error_event(V2ErrorCode::Invalid, message)).await;
                    }
                    // Flood control on a request that has no seq to refuse: dropped, as for
                    // a datagram.
                    Err(DropReason::RateLimited | DropReason::HistoryBacklog) => {}
                    // Another connection took the member over: it was told `moved`.
                    Err(DropReason::WrongAddress) => return None,
                    Err(reason) => return Some(reason),
                }
            }
            () = stopping(&mut stop) => {
                close(socket, close_code::AWAY, "the server is restarting").await;
                return None;
            }
        }
    }
}

/// Resolves once shutdown starts. The guard `wait_for` returns is not `Send`, so it must not
/// live in the `select!` that owns it.
async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The events after which the server has nothing more for this connection.
fn is_final(text: &Utf8Bytes) -> bool {
    let text = text.as_str();
    text.starts_with(r#"{"t":"moved""#) || text.starts_with(r#"{"t":"room_closed""#)
}

/// A WebSocket member: what every message it sends is checked against.
struct Member<'a> {
    context: &'a WebContext,
    room: String,
    token: String,
    endpoint: Endpoint,
}

impl Member<'_> {
    /// Feeds one message to the engine as the datagram carrying it would be.
    fn feed(&self, json: &[u8]) -> Result<(), DropReason> {
        self.context
            .peers
            .stats
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut message = Vec::with_capacity(json.len() + 1);
        message.push(V2_MARKER);
        message.extend_from_slice(json);
        let datagram = Datagram {
            room: &self.room,
            token: self.token.as_bytes(),
            message: &message,
        };
        let control = &self.context.control;
        let (result, changed) = control.outlet.apply(&control.engine, |engine, fx| {
            let journal_seq = engine.journal_seq();
            let result = engine.datagram(&datagram, self.endpoint, shared::now(), fx);
            (result, engine.journal_seq() != journal_seq)
        });
        if changed {
            // A leave or a close: the state file catches up in the background.
            control.writer.schedule();
        }
        result
    }
}

fn error_event(code: V2ErrorCode, message: &str) -> ServerV2 {
    ServerV2::Error {
        code,
        seq: None,
        message: message.to_owned(),
    }
}

async fn send_event(socket: &mut WebSocket, event: &ServerV2) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
