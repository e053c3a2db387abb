//! The HTTP mapping of every failure: status code, stable error code and message, in the body the contract
//! fixes: `{"error":"<code>","message":"<what is wrong>"}`.
//!
//! A 401 message stays generic (the reason is logged, not told to a possible attacker); a 400 says what is
//! wrong; a 5xx reveals nothing internal.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::event::PayloadError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no source named `{0}`")]
    UnknownSource(String),
    #[error("no route for this method and path")]
    NotFound,
    #[error("the body must be JSON (Content-Type: application/json), not `{0}`")]
    UnsupportedMediaType(String),
    #[error("the body is larger than the {0} bytes this server accepts")]
    PayloadTooLarge(usize),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("missing or invalid signature")]
    BadSignature,
    #[error("invalid payload: {0}")]
    Payload(#[from] PayloadError),
    /// The queue cannot take the work now; the sender should retry after `retry_after`. `throttle` answers 429
    /// instead of 503, for senders (GoHighLevel) that retry only on 429.
    #[error("the queue is unavailable; retry later")]
    Unavailable { retry_after: Duration, throttle: bool },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    /// The stable machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::NotFound => "not_found",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::BodyRead(_) => "body_unreadable",
            Self::BadSignature => "bad_signature",
            Self::Payload(_) => "payload_invalid",
            Self::Unavailable { .. } => "queue_unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownSource(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_) | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Unavailable { throttle: true, .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { throttle: false, .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Unavailable { retry_after, .. } = self {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1))));
        }
        response.json(ErrorBody { error: self.code(), message: self.to_string() })
    }
}

/// The JSON 404 for any route that does not exist, so every error has the same shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
