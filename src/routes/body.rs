//! Request bodies read by hand, for handlers that parse a document
//! themselves (to name the bad field in a `422`) rather than through
//! `web::Json`.

use actix_web::{HttpRequest, http::header};

use crate::error::ApiError;

/// The body, once it is known to be JSON: `415` without
/// `Content-Type: application/json`, `400 bad_json` when it does not parse,
/// as for every other JSON body.
pub fn json_body<'a>(req: &HttpRequest, body: &'a [u8]) -> Result<&'a [u8], ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type("expected Content-Type: application/json"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(ApiError::bad_request("bad_json", format!("malformed JSON: {e}")));
    }
    Ok(body)
}
