//! CORS: which other origins' pages may call Herald from a browser
//! (`server.cors.allowed_origins`).
//!
//! A listed origin's page may send the API's headers (`Authorization`,
//! `Content-Type`, `Last-Event-ID`) and read the answers; its preflight is
//! answered for the API's methods. Credentials are never allowed: the cookie
//! is for pages on Herald's own site, and without `Allow-Credentials` a
//! browser neither sends it on a preflighted request nor lets another origin
//! read what it returns, so the cookie rule of `auth.rs` (a change needs
//! `X-Herald-Request`) keeps holding for every other site.
//!
//! An origin not listed is not refused outright on simple requests (a
//! same-origin `POST` carries an `Origin` too): its answer just lacks the
//! `Access-Control-Allow-Origin` the browser needs to hand it to the page,
//! and its preflights are refused.

use std::time::Duration;

use actix_cors::Cors;
use actix_web::{
    http::{Method, header},
    middleware::Condition,
};

use crate::config::CorsSettings;

/// The middleware for `settings`, built once per worker (it is not `Clone`);
/// switched off when no origin is listed, so a node without cross-origin
/// callers pays nothing per request.
pub fn middleware(settings: &CorsSettings) -> Condition<Cors> {
    let cors = settings
        .allowed_origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        // What a page needs to back off: a 429's or 503's wait.
        .expose_headers([header::RETRY_AFTER])
        .max_age(max_age_secs(settings.max_age))
        .block_on_origin_mismatch(false);
    Condition::new(!settings.allowed_origins.is_empty(), cors)
}

fn max_age_secs(max_age: Duration) -> usize {
    usize::try_from(max_age.as_secs()).unwrap_or(usize::MAX)
}
