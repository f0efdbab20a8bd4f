use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::{app::AppState, engine::Engine, error::ApiError};

/// Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::metrics::handle().render())
}

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The node can serve: engine reachable, functions loaded, pub/sub alive.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.hub.is_shutting_down() {
        return Err(ApiError::unavailable("this node is shutting down", 1));
    }
    state.engine.check_ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::unavailable(format!("not ready: {e}"), 1)
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "engine": state.engine.kind(),
        "node": &*state.node_id,
        "streams": state.hub.stream_count(),
    })))
}
