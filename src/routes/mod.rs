//! HTTP routes. Handlers parse and authorize, call the engine or hub, and map
//! errors through `ApiError`; they hold no logic of their own.

mod events;
mod health;
mod publish;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/events", web::get().to(events::events))
        .route("/v1/publish", web::post().to(publish::publish))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}
