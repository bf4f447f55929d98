//! The chat page, embedded in the binary: no CDN, no build step, nothing fetched at run time.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{Ctx, WebContext};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

/// The page's content security policy: its own files only, never framed; it connects to
/// its own node, WebSockets, and (`{nodes}`) the other nodes' pages, which it moves to when
/// its own dies.
const POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:{nodes}; img-src 'self' data:; frame-ancestors 'none'";

/// The policy sent with the script and the style sheet (only a document's own counts, so
/// these need no nodes).
const STATIC_POLICY: &str =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";

/// Pages that must never be framed by another site or sniffed as another type.
const HARDENING: [(header::HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// The policy with the nodes known now, each as `host:port` (no scheme: it matches the
/// page's own, and HTTPS from an HTTP page).
fn policy(context: &WebContext) -> String {
    let nodes: String = context
        .cluster
        .as_ref()
        .map(|cluster| cluster.page_origins())
        .unwrap_or_default()
        .iter()
        .map(|origin| format!(" {origin}"))
        .collect();
    POLICY.replace("{nodes}", &nodes)
}

/// `GET /`
pub async fn index(State(context): Ctx) -> Response {
    let policy = HeaderValue::from_str(&policy(&context))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        HARDENING,
        [(header::CONTENT_SECURITY_POLICY, policy)],
        INDEX,
    )
        .into_response()
}

/// `GET /app.js`
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        HARDENING,
        [(header::CONTENT_SECURITY_POLICY, STATIC_POLICY)],
        SCRIPT,
    )
}

/// `GET /style.css`
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        HARDENING,
        [(header::CONTENT_SECURITY_POLICY, STATIC_POLICY)],
        STYLE,
    )
}
