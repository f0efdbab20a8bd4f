//! `GET` / `PUT /v1/preferences`: the user's preferences document.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::{
    auth::User,
    domain::Preferences,
    engine::Engine,
    error::ApiError,
    routes::{AppState, body::json_body},
};

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
    let prefs = Preferences::parse(json_body(&req, &body)?).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    state.engine.set_preferences(&user.0.user, &prefs).await?;
    Ok(HttpResponse::Ok().json(prefs))
}
