//! The API's one error shape: an HTTP status and a JSON body `{"code": "...", "message": "..."}`.
//!
//! `code` is stable (scripts match on it; docs/HTTP.md lists them), `message` is for people.
//! Engine errors map by kind in one table ([`From<EngineError>`]); a request the client got
//! wrong is always a 4xx. 5xx means the broker cannot serve anyone right now (engine stopped,
//! log read-only) — never a reaction to bad input.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weir_engine::{EngineError, EngineStopped, ErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A value the broker does not accept (a queue argument, a message property).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "log in with HTTP basic authentication as a Weir user")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_refused", message)
    }

    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the broker is stopping")
    }

    pub fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let (status, code) = match error.kind {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::AccessRefused => (StatusCode::FORBIDDEN, "access_refused"),
            ErrorKind::ResourceLocked => (StatusCode::CONFLICT, "resource_locked"),
            // The request conflicts with the current state: an inequivalent re-declare,
            // if-empty or if-unused not met. (Invalid values are found before the engine is
            // asked, and are 400 `invalid_argument`.)
            ErrorKind::PreconditionFailed => (StatusCode::CONFLICT, "precondition_failed"),
            ErrorKind::NotAllowed => (StatusCode::BAD_REQUEST, "not_allowed"),
            ErrorKind::CommandInvalid => (StatusCode::BAD_REQUEST, "command_invalid"),
            ErrorKind::ResourceError => (StatusCode::CONFLICT, "resource_limit"),
            ErrorKind::InternalError => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::ConnectionForced => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        Self::new(status, code, error.text)
    }
}

impl From<EngineStopped> for ApiError {
    fn from(_: EngineStopped) -> Self {
        Self::unavailable()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body { code: self.code, message: &self.message }).unwrap_or_default();
        (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
