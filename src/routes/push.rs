//! Web Push for a user's browsers: the key to subscribe with, and the
//! user's push subscriptions (one per browser or device).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::{
    auth::User,
    domain::PushSubscription,
    engine::PushQueue,
    error::ApiError,
    routes::{AppState, body::json_body},
};

#[derive(Serialize)]
struct PublicKey<'a> {
    /// The 65-byte uncompressed P-256 point, base64url: decoded to bytes,
    /// it is `PushManager.subscribe`'s `applicationServerKey`.
    public_key: &'a str,
}

/// The VAPID public key, or `404 push_off` when push is off: every push
/// endpoint answers so without a key.
fn push_on(state: &AppState) -> Result<&str, ApiError> {
    state.vapid_public_key.as_deref().ok_or_else(ApiError::push_off)
}

/// `GET /v1/push/vapid_public_key`. Needs no token: the key is public, and
/// a page asks for it before it subscribes.
pub async fn vapid_public_key(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(PublicKey { public_key: push_on(&state)? }))
}

#[derive(Serialize)]
struct Subscribed<'a> {
    endpoint: &'a str,
    /// How many devices the user has now (at most
    /// `push.max_subscriptions_per_user`: the oldest is dropped past it).
    devices: usize,
}

/// `POST /v1/push/subscriptions` with `PushSubscription.toJSON()`. The same
/// endpoint again replaces the stored keys (idempotent). A bad one is
/// refused with `422` naming the field, and nothing is stored.
pub async fn subscribe(
    req: HttpRequest,
    user: User,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    push_on(&state)?;
    let push = &state.settings.push;
    let subscription = PushSubscription::parse(json_body(&req, &body)?, &push.endpoint_rules())
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let devices = state.engine.push_subscribe(&user.0.user, &subscription, push.max_subscriptions_per_user).await?;
    Ok(HttpResponse::Created().json(Subscribed { endpoint: &subscription.endpoint, devices }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    endpoint: String,
}

#[derive(Serialize)]
struct Unsubscribed {
    removed: bool,
}

/// `DELETE /v1/push/subscriptions` with `{"endpoint": "..."}`.
pub async fn unsubscribe(
    req: HttpRequest,
    user: User,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    push_on(&state)?;
    let request: Unsubscribe = serde_json::from_slice(json_body(&req, &body)?)
        .map_err(|e| ApiError::unprocessable(format!("expected {{\"endpoint\": \"...\"}}: {e}")))?;
    let removed = state.engine.push_unsubscribe(&user.0.user, &request.endpoint).await?;
    Ok(HttpResponse::Ok().json(Unsubscribed { removed }))
}

#[derive(Serialize)]
struct Device {
    endpoint: String,
}

#[derive(Serialize)]
struct Devices {
    subscriptions: Vec<Device>,
}

/// `GET /v1/push/subscriptions`: the user's own devices, endpoints only
/// (the keys stay on the server), oldest first.
pub async fn list(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    push_on(&state)?;
    let subscriptions = state.engine.push_subscriptions(&user.0.user).await?;
    Ok(HttpResponse::Ok()
        .json(Devices { subscriptions: subscriptions.into_iter().map(|s| Device { endpoint: s.endpoint }).collect() }))
}
