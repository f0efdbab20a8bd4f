//! HTTP routes. Handlers parse and authorize, call the engine or hub, and map
//! errors through `ApiError`; they hold no logic of their own.

mod assets;
pub mod body;
mod cors;
pub mod demo;
mod events;
mod health;
mod notifications;
mod preferences;
mod publish;
mod push;
mod state;
mod topics;

use actix_web::web;

pub use self::{
    cors::middleware as cors,
    publish::{Audience, CheckedPublish, PublishRequest},
    state::AppState,
};

/// Every route; the demo's only when `demo_mode` (otherwise `/demo` is an
/// unknown path like any other).
pub fn configure(cfg: &mut web::ServiceConfig, demo_mode: bool) {
    cfg.route("/v1/events", web::get().to(events::events))
        .route("/v1/publish", web::post().to(publish::publish))
        .route("/v1/notifications", web::get().to(notifications::list))
        .route("/v1/notifications/unread_count", web::get().to(notifications::unread_count))
        .route("/v1/notifications/read", web::post().to(notifications::mark_read))
        .route("/v1/notifications/{id}/clicked", web::post().to(notifications::mark_clicked))
        .route("/v1/notifications/{id}", web::delete().to(notifications::delete))
        .route("/v1/preferences", web::get().to(preferences::get))
        .route("/v1/preferences", web::put().to(preferences::put))
        .route("/v1/topics/{name}/notifications", web::get().to(topics::list))
        .route("/v1/push/vapid_public_key", web::get().to(push::vapid_public_key))
        .route("/v1/push/subscriptions", web::get().to(push::list))
        .route("/v1/push/subscriptions", web::post().to(push::subscribe))
        .route("/v1/push/subscriptions", web::delete().to(push::unsubscribe))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/client/herald.js", web::get().to(assets::client_library))
        .route("/client/herald.d.ts", web::get().to(assets::client_types));
    if demo_mode {
        cfg.route("/demo", web::get().to(demo::page))
            .route("/demo/demo.js", web::get().to(demo::script))
            .route("/demo/demo.css", web::get().to(demo::style))
            .route("/demo/sw.js", web::get().to(demo::service_worker))
            .route("/demo/session", web::post().to(demo::session));
    }
}
