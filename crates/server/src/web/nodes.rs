//! The nodes a page can move to (`GET /api/nodes`), and which pages besides this node's own
//! may use it: those of `--allowed-origin`, and in scale-out every node's page. A page served
//! by a node that died goes on with another node's WebSocket and API (CORS), so each node
//! trusts the others' origins.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, header};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{Ctx, WebContext};
use crate::cluster::directory::NodeEntry;

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Serialize)]
pub struct NodeList {
    /// The live nodes, this one included, by name; empty without `--redis`.
    nodes: Vec<NodeEntry>,
}

/// `GET /api/nodes`: read from memory (the follower refreshes it), never from Redis here.
pub async fn list(State(context): Ctx) -> Json<NodeList> {
    let nodes = context
        .cluster
        .as_ref()
        .map(|cluster| cluster.live_nodes())
        .unwrap_or_default();
    Json(NodeList { nodes })
}

impl WebContext {
    /// Whether a page from `origin` (besides this node's own) may open the WebSocket and
    /// read the API's answers.
    pub fn trusts_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
            || self
                .cluster
                .as_ref()
                .is_some_and(|cluster| cluster.trusts_origin(origin))
    }
}

/// CORS for the trusted origins: the API's methods, its two request headers (the token goes
/// in `Authorization`, never in a URL), and the checksum header a download is verified with.
/// No cookies are used, so no credentials are allowed.
pub fn cors(context: &Arc<WebContext>) -> CorsLayer {
    let context = Arc::clone(context);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|origin| context.trusts_origin(origin))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([HeaderName::from_static("x-content-sha256")])
        .max_age(PREFLIGHT_MAX_AGE)
}
