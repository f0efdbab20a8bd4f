//! Every error a client can see, and its HTTP mapping, in one place.
//!
//! The body is always `{"error": {"code": "...", "message": "..."}}`. The
//! message is written for the client; internal causes are logged, never sent.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde::Serialize;

use crate::{domain::ValidationError, engine::EngineError};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (503, 429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message)
    }
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    /// A Web Push endpoint on a node with no VAPID key.
    pub fn push_off() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "push_off",
            "Web Push is off on this server: no VAPID key is configured (push.vapid_private_key)",
        )
    }
    pub fn too_many(message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many", message) }
    }
    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message) }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}
#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Body { error: Inner { code: self.code, message: &self.message } })
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::TooLarge { .. } => ApiError::payload_too_large(e.to_string()),
            ValidationError::Invalid { .. } => ApiError::unprocessable(e.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(message) => ApiError::unprocessable(message),
            EngineError::TooLarge(message) => ApiError::payload_too_large(message),
            EngineError::NotFound(id) => ApiError::not_found(format!("no notification `{id}`")),
            EngineError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "engine unavailable");
                ApiError::unavailable("the storage engine is unavailable, retry shortly", 1)
            }
        }
    }
}

/// Maps actix's JSON extractor failures to our error body: 413 for an
/// oversized body, 415 for a wrong content type, 400 for malformed JSON.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => {
            ApiError::payload_too_large(format!("request body is over the limit of {limit} bytes"))
        }
        E::ContentType => ApiError::unsupported_media_type("expected Content-Type: application/json"),
        E::Deserialize(e) if e.is_data() => ApiError::bad_request("bad_request", format!("invalid request: {e}")),
        E::Deserialize(e) => ApiError::bad_request("bad_json", format!("malformed JSON: {}", json_fault(e))),
        other => ApiError::bad_request("bad_request", other.to_string()),
    };
    api.into()
}

/// serde_json's words for a syntax error, except the two faults the `FCALL`
/// path also refuses (functions.lua's NOT_UTF8 and RAW_CONTROL): those get
/// the same words on both paths, so a backend that switches paths reads the
/// same cause.
fn json_fault(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!("(line {}, column {})", e.line(), e.column());
    if text.starts_with("invalid unicode code point") {
        format!("invalid UTF-8 {at}")
    } else if text.starts_with("control character") {
        format!("a raw control character (write it as \\u00XX in a string) {at}")
    } else {
        text
    }
}

/// Unknown paths and methods get the JSON error body too.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint (see docs/API.md)"))
}

/// Errors actix answers by itself (an oversized raw body, say) come as plain
/// text; this gives them our JSON body, keeping their status.
pub fn json_body_for_plain_errors<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::{http::header::CONTENT_TYPE, middleware::ErrorHandlerResponse};
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    // A refused CORS preflight (routes/cors.rs) says which part was refused.
    let cors = res.response().error().and_then(|e| e.as_error::<actix_cors::CorsError>());
    let api = match (cors, status) {
        (Some(refused), _) => ApiError::new(status, "cors_refused", refused.to_string()),
        (None, StatusCode::PAYLOAD_TOO_LARGE) => ApiError::payload_too_large("request body is over the size limit"),
        (None, _) => ApiError::new(status, "error", status.canonical_reason().unwrap_or("error").to_lowercase()),
    };
    let (req, _) = res.into_parts();
    let response = api.error_response().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(actix_web::dev::ServiceResponse::new(req, response)))
}

/// Maps query-string failures to our error body.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("bad_query", err.to_string()).into()
}
