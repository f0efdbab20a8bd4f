use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::{
    engine::{Engine, PushQueue},
    error::ApiError,
    hub::{Hub, TICK_STALLED},
    routes::AppState,
};

/// Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::metrics::handle().render())
}

/// The process is up and its node-wide tick runs: the liveness probe.
/// (Redis being down does not fail it: restarting would not help.)
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    tick_running(&state.hub)?;
    Ok(HttpResponse::Ok().json(json!({"status": "ok"})))
}

/// A node whose tick stopped keeps its open streams past their tokens'
/// expiry and sends them no keep-alives, and nothing else would notice.
fn tick_running(hub: &Hub) -> Result<(), ApiError> {
    let late = hub.since_last_tick();
    if late <= TICK_STALLED {
        return Ok(());
    }
    let message = format!(
        "the node's tick has not run for {} ms: keep-alives and token expiry have stopped; restart this node",
        late.as_millis()
    );
    tracing::error!("{message}");
    Err(ApiError::unavailable(message, 1))
}

/// The node can serve: engine reachable, functions loaded, pub/sub alive.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.hub.is_shutting_down() {
        return Err(ApiError::unavailable("this node is shutting down", 1));
    }
    tick_running(&state.hub)?;
    state.engine.check_ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::unavailable(format!("not ready: {e}"), 1)
    })?;
    let mut body = json!({
        "status": "ready",
        "engine": state.engine.kind(),
        "node": &*state.node_id,
        "streams": state.hub.stream_count(),
    });
    if state.vapid_public_key.is_some() {
        // Pushes waiting, delayed or in flight, deployment-wide: a backlog
        // an operator (and the tests) can read without scraping metrics.
        let depth = state.engine.push_depth().await.map_err(|e| ApiError::unavailable(format!("not ready: {e}"), 1))?;
        body["push_queue"] = depth.into();
    }
    Ok(HttpResponse::Ok().json(body))
}
