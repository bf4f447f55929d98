//! The HTTP listener: the chat page, the JSON API, the WebSocket gateway, health and metrics,
//! in the same process and the same rooms as the TCP and UDP planes (docs/http-api.md).
//!
//! It is one more front end to the engine. Handshakes go through the control plane's own
//! [`grant`](crate::control::handshake::grant), so a token from either works on both; a
//! WebSocket is an [`Endpoint::Web`](crate::engine::Endpoint::Web) whose frames the one
//! sender hands to its bounded queue ([`peers`]); nothing here holds the engine's lock across
//! an `.await`.
//!
//! Layout: [`rooms`] has the room list and handshakes, [`member`] what a token may do,
//! [`health`] health, readiness and metrics, [`files`] shared files, [`ws`] the gateway, [`peers`] the connections'
//! queues, [`assets`] the page, [`nodes`] the other nodes (failover, trusted origins),
//! [`error`] the error answers.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use chat_protocol::limits::MAX_TCRP_PAYLOAD;
use tokio::sync::{Semaphore, watch};

use crate::cluster::Cluster;
use crate::control::ControlContext;
use crate::files::FileStore;
use crate::ip_limit::HandshakeRateLimiter;
use crate::metrics::Metrics;
use crate::secure::https::DualListener;

pub mod assets;
pub mod error;
pub mod files;
pub mod health;
pub mod member;
pub mod nodes;
pub mod peers;
pub mod rooms;
pub mod ws;

pub use peers::WebPeers;

/// The state every route is given.
type Ctx = axum::extract::State<Arc<WebContext>>;

/// What the HTTP routes share.
#[derive(Debug)]
pub struct WebContext {
    /// The control plane's context: the engine, the outlet, the writer, passwords, quotas.
    pub control: Arc<ControlContext>,
    /// The web connections' queues.
    pub peers: Arc<WebPeers>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Origins besides the server's own whose pages may open a WebSocket and use the API.
    pub allowed_origins: Vec<String>,
    /// Scale-out: the other nodes, whose pages are trusted too.
    pub cluster: Option<Arc<Cluster>>,
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
    /// The files members share.
    pub files: Arc<FileStore>,
    /// Uploads being stored at once (each holds its whole body in memory).
    pub uploads: Semaphore,
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
    let max_upload = context.max_upload();
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/api/rooms",
            get(rooms::list_rooms).post(rooms::create_room),
        )
        .route("/api/rooms/{room}/join", post(rooms::join_room))
        .route("/api/pair", post(rooms::pair))
        .route("/api/nodes", get(nodes::list))
        .route("/api/rooms/{room}/members", get(member::members))
        .route("/api/rooms/{room}/members/me", delete(member::leave))
        .route(
            "/api/rooms/{room}/messages",
            get(member::messages).post(member::post_message),
        )
        .route(
            "/api/rooms/{room}/files",
            post(files::upload)
                .layer(DefaultBodyLimit::max(max_upload))
                .get(files::list),
        )
        .route("/api/rooms/{room}/files/{id}", get(files::download))
        .route("/ws", get(ws::upgrade))
        .fallback(health::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Semaphore::new(MAX_REQUESTS)),
            bounded,
        ))
        // Outermost: a preflight is answered before routing, which knows no OPTIONS.
        .layer(nodes::cors(&context))
        .with_state(context)
}

/// HTTP requests in progress at once, all routes together (a WebSocket counts only while it
/// upgrades); more are answered `server_busy` at once, so slow or piled-up requests cannot
/// take the server's memory.
const MAX_REQUESTS: usize = 1024;

async fn bounded(
    axum::extract::State(slots): axum::extract::State<Arc<Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match slots.try_acquire() {
        Ok(_slot) => next.run(request).await,
        Err(_) => {
            error::ApiError::busy("the server is handling too many requests; try again shortly")
                .into_response()
        }
    }
}

/// Serves HTTP on `listener` until `shutdown` completes; WebSockets are told to close and
/// requests in flight finish.
pub async fn serve(
    listener: DualListener,
    context: Arc<WebContext>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(context).into_make_service_with_connect_info::<SocketAddr>();
    // `tap_io` only for its ConnectInfo: axum gives the peer's address through it for any
    // listener (TCP_NODELAY is set as connections are accepted, in secure::https).
    let listener = listener.tap_io(|_| {});
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "the HTTP listener stopped");
    }
}
