//! Sharing files over HTTP: upload into the room (the room is told in the sharer's name),
//! list, download. Members only; the bytes are stored by [`FileStore`] on a blocking thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::{ApiError, query};
use super::member::bearer;
use super::{Ctx, WebContext};
use crate::engine::Credentials;
use crate::files::{FileError, FileStore, SharedFile};
use crate::shared::{self, SharedEngine, lock};

/// How often files of closed rooms are looked for.
const SWEEP_PERIOD: Duration = Duration::from_secs(5);

/// The upload's query.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    name: String,
}

/// The room's files.
#[derive(Debug, Serialize)]
pub struct FileList {
    files: Vec<SharedFile>,
}

impl From<FileError> for ApiError {
    fn from(error: FileError) -> Self {
        let status = match &error {
            FileError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FileError::QuotaFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            FileError::Invalid(_) => StatusCode::BAD_REQUEST,
            FileError::NotFound(_) => StatusCode::NOT_FOUND,
            FileError::Io(_) | FileError::Index(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match &error {
            FileError::TooLarge { .. } => "too_large",
            FileError::QuotaFull { .. } => "quota_full",
            FileError::Invalid(_) => "invalid_request",
            FileError::NotFound(_) => "not_found",
            FileError::Io(_) | FileError::Index(_) => "server_busy",
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(%error, "shared files");
        }
        ApiError::new(status, code, error.to_string())
    }
}

/// A human size: `12.3 KiB`.
fn human(size: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `POST /api/rooms/{room}/files?name=NAME`, the file as the body: stored, then the room is
/// told `shared NAME (SIZE): /get ID` in the sharer's name, as chat (stored in history too).
pub async fn upload(
    State(context): Ctx,
    Path(room): Path<String>,
    headers: HeaderMap,
    parsed: Result<Query<UploadQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let UploadQuery { name } = query(parsed)?;
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            FileError::TooLarge {
                size: context.files.max_size.saturating_add(1),
                limit: context.files.max_size,
            }
            .into()
        } else {
            ApiError::invalid(rejection.body_text())
        }
    })?;
    let who = Credentials {
        token: &token,
        room: &room,
    };
    let (room_uid, username) = {
        let mut engine = lock(&context.control.engine);
        // The room is told of the file as a line in the sharer's name, counted by flood
        // control: checked before the file is stored, not after.
        engine.may_say(who, shared::now())?;
        engine.identify(who, shared::now())?
    };
    let _turn = context
        .uploads
        .try_acquire()
        .map_err(|_| ApiError::busy("too many uploads at once; try again shortly"))?;
    let files = Arc::clone(&context.files);
    let ts = shared::now().unix_ms;
    let stored =
        tokio::task::spawn_blocking(move || files.put(room_uid, &name, &username, &bytes, ts))
            .await
            .map_err(|_| ApiError::busy("the upload was interrupted"))??;
    let line = format!(
        "shared {} ({}): /get {}",
        stored.name,
        human(stored.size),
        stored.id
    );
    context
        .control
        .outlet
        .apply(&context.control.engine, |engine, fx| {
            engine.announce(who, &line, shared::now(), fx)
        })?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// `GET /api/rooms/{room}/files`
pub async fn list(
    State(context): Ctx,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FileList>, ApiError> {
    let token = bearer(&headers)?;
    let who = Credentials {
        token: &token,
        room: &room,
    };
    let (room_uid, _) = lock(&context.control.engine).identify(who, shared::now())?;
    let files = Arc::clone(&context.files);
    let listed = tokio::task::spawn_blocking(move || files.list(room_uid))
        .await
        .map_err(|_| ApiError::busy("the list was interrupted"))??;
    Ok(Json(FileList { files: listed }))
}

/// `GET /api/rooms/{room}/files/{id}`: the bytes, as an attachment (never rendered by the
/// browser as a page of this site), with their SHA-256 for the downloader to check.
pub async fn download(
    State(context): Ctx,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let who = Credentials {
        token: &token,
        room: &room,
    };
    let (room_uid, _) = lock(&context.control.engine).identify(who, shared::now())?;
    let files = Arc::clone(&context.files);
    let (file, bytes) = tokio::task::spawn_blocking(move || {
        let (file, path) = files.find(room_uid, &id)?;
        let bytes = std::fs::read(path).map_err(FileError::Io)?;
        Ok::<_, FileError>((file, bytes))
    })
    .await
    .map_err(|_| ApiError::busy("the download was interrupted"))??;
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        ascii_fallback(&file.name),
        percent_encode(&file.name)
    );
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&file.sha256) {
        headers.insert("x-content-sha256", value);
    }
    Ok(response)
}

/// The name with anything but printable ASCII (and `"`, `\`) replaced, for old clients.
fn ascii_fallback(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// RFC 5987 percent-encoding of a UTF-8 name.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Removes the files of rooms that closed, now and every [`SWEEP_PERIOD`], until `stop`.
pub async fn sweep(files: Arc<FileStore>, engine: SharedEngine, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SWEEP_PERIOD);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let live: HashSet<u64> = lock(&engine).room_uids().into_iter().collect();
        let files = Arc::clone(&files);
        match tokio::task::spawn_blocking(move || files.retain_rooms(&live)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "shared files of closed rooms removed"),
            Ok(Err(error)) => tracing::warn!(%error, "removing the files of closed rooms failed"),
            Err(_) => {}
        }
    }
}

impl WebContext {
    /// The largest request body a file upload may have.
    pub fn max_upload(&self) -> usize {
        usize::try_from(self.files.max_size).unwrap_or(usize::MAX)
    }
}
