//! Health, readiness, metrics, and the answer to any other path.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Ctx;
use super::error::ApiError;
use crate::shared::lock;

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
