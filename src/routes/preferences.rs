//! `GET` / `PUT /v1/preferences`: the user's preferences document.

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use crate::{auth::User, domain::Preferences, engine::Engine, error::ApiError, routes::AppState};

pub async fn get(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.engine.preferences(&user.0.user).await?))
}

/// Replaces the whole document. A bad one is refused with `422` naming the
/// field, and nothing is stored.
pub async fn put(
    req: HttpRequest,
    user: User,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type("expected Content-Type: application/json"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ApiError::bad_request("bad_json", format!("malformed JSON: {e}")));
    }
    let prefs = Preferences::parse(&body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    state.engine.set_preferences(&user.0.user, &prefs).await?;
    Ok(HttpResponse::Ok().json(prefs))
}
