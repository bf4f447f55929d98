//! The HTTP listener: the chat page, the JSON API, the WebSocket gateway, health and metrics,
//! in the same process and the same rooms as the TCP and UDP planes (docs/http-api.md).
//!
//! It is one more front end to the engine. Handshakes go through the control plane's own
//! [`grant`](crate::control::handshake::grant), so a token from either works on both; a
//! WebSocket is an [`Endpoint::Web`](crate::engine::Endpoint::Web) whose frames the one
//! sender hands to its bounded queue ([`peers`]); nothing here holds the engine's lock across
//! an `.await`.
//!
//! Layout: [`api`] has the JSON routes, [`ws`] the gateway, [`peers`] the connections'
//! queues, [`assets`] the page, [`metrics`] the Prometheus text, [`error`] the error answers.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use chat_protocol::limits::MAX_TCRP_PAYLOAD;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::control::ControlContext;
use crate::ip_limit::HandshakeRateLimiter;
use crate::metrics::Metrics;

pub mod api;
pub mod assets;
pub mod error;
pub mod peers;
pub mod ws;

pub use peers::WebPeers;

/// What the HTTP routes share.
#[derive(Debug)]
pub struct WebContext {
    /// The control plane's context: the engine, the outlet, the writer, passwords, quotas.
    pub control: Arc<ControlContext>,
    /// The web connections' queues.
    pub peers: Arc<WebPeers>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Origins besides the server's own whose pages may open a WebSocket.
    pub allowed_origins: Vec<String>,
    /// Most WebSockets at once.
    pub max_websockets: usize,
    /// WebSockets one address may hold open (0: no limit).
    pub websockets_per_ip: usize,
    /// Open WebSockets by address.
    pub websockets: Mutex<HashMap<IpAddr, usize>>,
    /// HTTP handshakes (create, join, pair) per address, as the TCP plane limits its own.
    pub handshake_rate: Mutex<HandshakeRateLimiter>,
    /// HTTP handshakes in progress at once.
    pub handshake_slots: Arc<Semaphore>,
    /// Turns true once shutdown starts: open WebSockets close, `/readyz` answers 503.
    pub stop: watch::Receiver<bool>,
}

impl WebContext {
    /// Locks the per-address WebSocket counts.
    pub fn websockets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.websockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bodies are bounded before they are read: the largest request is a handshake's.
const MAX_BODY: usize = MAX_TCRP_PAYLOAD;

/// Every route.
pub fn router(context: Arc<WebContext>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/rooms", get(api::list_rooms).post(api::create_room))
        .route("/api/rooms/{room}/join", post(api::join_room))
        .route("/api/pair", post(api::pair))
        .route("/api/rooms/{room}/members", get(api::members))
        .route("/api/rooms/{room}/members/me", delete(api::leave))
        .route(
            "/api/rooms/{room}/messages",
            get(api::messages).post(api::post_message),
        )
        .route("/ws", get(ws::upgrade))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(context)
}

/// Serves HTTP on `listener` until `shutdown` completes; WebSockets are told to close and
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    context: Arc<WebContext>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(context).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "the HTTP listener stopped");
    }
}
