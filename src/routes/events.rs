//! `GET /v1/events`: the SSE stream.

use std::sync::Arc;

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, CacheControl, CacheDirective, ContentEncoding},
    web,
};

use crate::{
    auth::{User, query_param},
    domain::EntryId,
    engine::Engine,
    error::ApiError,
    hub::{RegisterError, StreamQueue},
    routes::AppState,
    sse::{Opening, SseBody},
    wire::KeepAlive,
};

/// The resume cursor: `Last-Event-ID` (sent by EventSource on reconnect),
/// else `?last_event_id=` (a fresh page load). Exclusive.
fn cursor(req: &HttpRequest) -> Result<Option<EntryId>, ApiError> {
    let raw = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value.to_str().map_err(|_| ApiError::bad_request("bad_cursor", "Last-Event-ID is not text"))?.to_owned(),
        ),
        None => query_param(req.query_string(), "last_event_id"),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|e: crate::domain::BadEntryIdError| ApiError::bad_request("bad_cursor", e.to_string())),
    }
}

#[tracing::instrument(name = "stream", skip_all, fields(user = %user.0.user))]
pub async fn events(req: HttpRequest, user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let identity = user.0;
    if let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !(accept.contains("text/event-stream") || accept.contains("*/*"))
    {
        return Err(ApiError::not_acceptable("this endpoint serves text/event-stream"));
    }
    if query_param(req.query_string(), "topics").is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "unsupported",
            "topics are not available yet; the stream carries the user's inbox",
        ));
    }
    let cursor = cursor(&req)?;
    let settings = &state.settings.stream;

    // Register (and so subscribe) before reading anything: from here on every
    // live entry of this user is queued for this stream.
    let queue = Arc::new(StreamQueue::new(identity.user.clone(), identity.expires_at));
    let (registration, subscribed) = state.hub.register(queue).map_err(|e| match e {
        RegisterError::UserFull => ApiError::too_many(e.to_string(), 5),
        RegisterError::NodeFull | RegisterError::ShuttingDown => ApiError::unavailable(e.to_string(), 2),
    })?;
    if tokio::time::timeout(state.settings.engine.subscribe_timeout, subscribed.wait()).await.is_err() {
        return Err(ApiError::unavailable("live subscription not confirmed in time; retry", 1));
    }
    let start = state.engine.stream_start(&identity.user).await?;

    // Without a cursor the stream is live from the newest entry; entries up
    // to it are history, fetched from the list API.
    tracing::debug!(cursor = ?cursor, newest = %start.last_id, "stream opened");
    let opening = Opening {
        cursor,
        start,
        retry: settings.retry,
        keep_alive: KeepAlive::from_heartbeat_events(settings.heartbeat_events),
        page_size: settings.replay_page,
    };
    let body = SseBody::new(registration, state.engine.clone(), opening);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(ContentEncoding::Identity)
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body))
}
