//! `POST /webhooks/{source}`: checks the request's shape, reads the body under its size limit, and hands it
//! to [`Intake`]. Size (413) and content type (415) are checked before anything is parsed, and the body is read
//! chunk by chunk so an oversize one is refused without being held in memory.

use std::time::Duration;

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;
use tracing::field;

use super::error::ApiError;
use crate::intake::{Accepted, Intake, IntakeError};

/// What the webhook route needs, shared by every HTTP worker.
pub struct WebhookState {
    pub intake: std::sync::Arc<Intake>,
    /// What each source was answered, for the status page's sender view.
    pub answers: std::sync::Arc<super::answers::Answers>,
    pub max_body_bytes: usize,
    pub retry_after: Duration,
}

/// Lets the verifiers read actix's headers without knowing about HTTP.
struct RequestHeaders<'a>(&'a HeaderMap);

impl crate::verify::Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|value| value.as_bytes())
    }
}

#[tracing::instrument(name = "webhook", skip_all, fields(source = %path.as_str(), event_ids = field::Empty))]
pub async fn receive(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, ApiError> {
    let result = receive_in(&request, &path, payload, &state).await;
    let outcome = match &result {
        Ok(response) => response.status().as_str().to_owned(),
        Err(e) => e.code().to_owned(),
    };
    if state.intake.source(&path).is_some() {
        let success = result.as_ref().is_ok_and(|response| response.status().is_success());
        state.answers.record(&path, success, crate::domain::clock::now_ms());
    }
    metrics::counter!("followd_webhooks_received_total", "source" => metric_source(&state, &path), "result" => outcome)
        .increment(1);
    result
}

/// The source label: only configured names, so a scanner probing random paths cannot grow the label set.
fn metric_source(state: &WebhookState, name: &str) -> String {
    if state.intake.source(name).is_some() { name.to_owned() } else { "unknown".to_owned() }
}

async fn receive_in(
    request: &HttpRequest,
    name: &str,
    mut payload: web::Payload,
    state: &WebhookState,
) -> Result<HttpResponse, ApiError> {
    let source = state.intake.source(name).ok_or_else(|| ApiError::UnknownSource(name.to_owned()))?;
    check_content_type(request.headers())?;
    let limit = state.max_body_bytes;
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.map_or(8 * 1024, |l| l as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let peer = request.peer_addr().map(|addr| addr.ip());
    let accepted = state.intake.accept(source, &RequestHeaders(request.headers()), &body, peer).await;
    match accepted {
        Ok(Accepted::Queued { event_ids, operations }) => {
            let ids: Vec<&str> = event_ids.iter().map(|id| id.as_str()).collect();
            tracing::Span::current().record("event_ids", field::debug(&ids));
            tracing::info!(operations, "accepted");
            Ok(HttpResponse::Accepted().json(json!({ "event_ids": ids, "operations": operations })))
        }
        Ok(Accepted::Spooled { event_ids }) => {
            let ids: Vec<&str> = event_ids.iter().map(|id| id.as_str()).collect();
            tracing::Span::current().record("event_ids", field::debug(&ids));
            tracing::info!("accepted into the spool; forwarded to the queue once it answers");
            Ok(HttpResponse::Accepted().json(json!({ "event_ids": ids, "spooled": true })))
        }
        Ok(Accepted::Ignored { kind }) => Ok(HttpResponse::Ok().json(json!({ "ignored": true, "type": kind }))),
        Ok(Accepted::User { user, status, changed }) => Ok(HttpResponse::Ok().json(json!({
            "user": user,
            "deleted": status == crate::event::UserStatus::Deleted,
            "changed": changed,
        }))),
        Ok(Accepted::Duplicate) => {
            tracing::info!("duplicate delivery acknowledged");
            Ok(HttpResponse::Ok().json(json!({ "duplicate": true })))
        }
        Ok(Accepted::Stale) => Ok(HttpResponse::Ok().json(json!({ "stale": true }))),
        Err(IntakeError::UnknownSource(name)) => Err(ApiError::UnknownSource(name)),
        Err(IntakeError::Verify(e)) => {
            // The reason is for the operator's log only: telling it to the sender would help a forger.
            tracing::warn!(reason = %e, "rejected: signature check failed");
            Err(ApiError::BadSignature)
        }
        Err(IntakeError::Payload(e)) => {
            tracing::info!(reason = %e, "rejected: invalid payload");
            Err(ApiError::Payload(e))
        }
        Err(e @ (IntakeError::Queue(_) | IntakeError::QueueTimeout(_) | IntakeError::Spool(_))) => {
            tracing::error!(error = %e, "cannot queue the webhook; the sender is told to retry");
            Err(ApiError::Unavailable { retry_after: state.retry_after, throttle: source.format.retries_only_on_429() })
        }
    }
}

/// Accepts `application/json`, any `+json` type, and a missing type (some senders omit it); refuses the rest.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else { return Ok(()) };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(String::from_utf8_lossy(value.as_bytes()).chars().take(100).collect()))
    }
}
