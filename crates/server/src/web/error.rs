//! The HTTP API's errors: the handshake's and the datagrams' codes, with a status.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_protocol::tcrp::ErrorCode;
use chat_protocol::v2::V2ErrorCode;
use serde::Serialize;

use crate::control::handshake::Refusal;
use crate::engine::DropReason;
use crate::engine::NO_ROOM_TEXT;

/// An error answer: `{"error": code, "message": sentence}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The code, as the TCP handshake or the version-2 datagrams name it.
    pub code: &'static str,
    /// A sentence for the user.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with this status, code and sentence.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request the API cannot read.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// No token, or not a token's form.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs the header Authorization: Bearer TOKEN, with the token a create, join or pair gave",
        )
    }

    /// The server cannot take the request now.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = match refusal.code {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidRoomName
            | ErrorCode::InvalidUsername
            | ErrorCode::UnsupportedOperation => StatusCode::BAD_REQUEST,
            ErrorCode::BadPassword | ErrorCode::Banned | ErrorCode::EncryptionRequired => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::RoomNotFound => StatusCode::NOT_FOUND,
            ErrorCode::RoomExists | ErrorCode::NameTaken | ErrorCode::RoomFull => {
                StatusCode::CONFLICT
            }
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyAttempts | ErrorCode::TooManyRooms => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, refusal.code.as_str(), refusal.message)
    }
}

impl From<DropReason> for ApiError {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::UnknownToken => Self::new(StatusCode::NOT_FOUND, "no_room", NO_ROOM_TEXT),
            DropReason::WrongRoom => Self::new(
                StatusCode::FORBIDDEN,
                "wrong_room",
                "this token belongs to another room",
            ),
            DropReason::WrongAddress => Self::unauthorized(),
            DropReason::Malformed => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "empty messages are not sent",
            ),
            DropReason::RateLimited => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "you are sending too fast; this message was dropped",
            ),
            DropReason::HistoryBacklog => {
                Self::busy("the server is behind on storing messages; try again shortly")
            }
            // Sealed datagrams never come through the HTTP API; a plaintext request for a
            // sealed member is refused like a wrong address.
            DropReason::Forged
            | DropReason::Replayed
            | DropReason::UnknownKey
            | DropReason::Plaintext => Self::unauthorized(),
        }
    }
}

impl From<V2ErrorCode> for ApiError {
    fn from(code: V2ErrorCode) -> Self {
        match code {
            V2ErrorCode::RateLimited => DropReason::RateLimited.into(),
            V2ErrorCode::TooLarge => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "this message is too long to send",
            ),
            V2ErrorCode::Invalid => DropReason::Malformed.into(),
            V2ErrorCode::NoRoom => DropReason::UnknownToken.into(),
            V2ErrorCode::NotHost => Self::new(
                StatusCode::FORBIDDEN,
                "not_host",
                "only the host can kick, ban or hand over the room",
            ),
            V2ErrorCode::NoSuchMember => Self::new(
                StatusCode::NOT_FOUND,
                "no_such_member",
                "there is no other member of that name in this room",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// The body of a request, or the error that says why it could not be read.
pub(super) fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
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

pub(super) fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))
}
