//! `GET /v1/events`: the SSE stream of a user's inbox and the topics it
//! follows (`?topics=a,b`).

use std::{collections::HashSet, sync::Arc};

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, CacheControl, CacheDirective, ContentEncoding},
    web,
};
use futures_util::future::{join_all, try_join_all};

use crate::{
    auth::{Identity, User, query_param},
    domain::{Cursor, TopicName, TopicTag},
    engine::Engine,
    error::ApiError,
    hub::{RegisterError, StreamQueue},
    routes::AppState,
    sse::{Opening, SseBody, Topics},
    wire::KeepAlive,
};

/// The resume cursor: `Last-Event-ID` (sent by EventSource on reconnect),
/// else `?last_event_id=` (a fresh page load). Exclusive.
fn cursor(req: &HttpRequest) -> Result<Option<Cursor>, ApiError> {
    let raw = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value.to_str().map_err(|_| ApiError::bad_request("bad_cursor", "Last-Event-ID is not text"))?.to_owned(),
        ),
        None => query_param(req.query_string(), "last_event_id"),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => Cursor::parse(raw).map(Some).map_err(|e| ApiError::bad_request("bad_cursor", e.to_string())),
    }
}

/// The topics the stream asks for, in the order asked, each allowed to
/// this user: by the token's `topics` claim or by `topics.public`.
fn requested_topics(req: &HttpRequest, identity: &Identity, state: &AppState) -> Result<Vec<TopicName>, ApiError> {
    let Some(raw) = query_param(req.query_string(), "topics") else { return Ok(Vec::new()) };
    let mut topics: Vec<TopicName> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let topic = TopicName::parse(name).map_err(|e| ApiError::bad_request("bad_topic", format!("topics: {e}")))?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    let max = state.settings.topics.max_per_stream;
    if topics.len() > max {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!("topics: {} asked, at most {max} per stream (topics.max_per_stream)", topics.len()),
        ));
    }
    for topic in &topics {
        state.allow_topic(identity, topic)?;
    }
    // The cursor tells topics apart by a 4-byte tag of their names: two
    // topics with one tag (about one pair in 10^8) cannot share a stream.
    let mut tags = HashSet::new();
    if let Some(clash) = topics.iter().find(|t| !tags.insert(TopicTag::of(t))) {
        return Err(ApiError::bad_request(
            "bad_topic",
            format!(
                "topics: `{clash}` cannot be followed on the same stream as another of these topics; open two streams"
            ),
        ));
    }
    Ok(topics)
}

#[tracing::instrument(name = "stream", skip_all, fields(user = %user.0.user))]
pub async fn events(req: HttpRequest, user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let identity = user.0;
    if let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !(accept.contains("text/event-stream") || accept.contains("*/*"))
    {
        return Err(ApiError::not_acceptable("this endpoint serves text/event-stream"));
    }
    let topics = requested_topics(&req, &identity, &state)?;
    let cursor = cursor(&req)?;
    let settings = &state.settings.stream;

    // Register (and so subscribe) before reading anything: from here on every
    // live entry of this user and of each topic is queued for this stream.
    let queue = Arc::new(StreamQueue::new(identity.user.clone(), identity.expires_at));
    let (registration, subscribed) = state.hub.register(queue).map_err(|e| match e {
        RegisterError::UserFull => ApiError::too_many(e.to_string(), 5),
        RegisterError::NodeFull | RegisterError::ShuttingDown => ApiError::unavailable(e.to_string(), 2),
    })?;
    let mut flags = vec![subscribed];
    let following = (!topics.is_empty()).then(|| {
        let (following, topic_flags) = state.hub.follow(registration.queue(), &topics);
        flags.extend(topic_flags);
        following
    });
    let all_confirmed = join_all(flags.iter().map(|flag| flag.wait()));
    if tokio::time::timeout(state.settings.engine.subscribe_timeout, all_confirmed).await.is_err() {
        return Err(ApiError::unavailable("live subscription not confirmed in time; retry", 1));
    }
    let start = state.engine.stream_start(&identity.user).await?;
    let topics = match following {
        None => None,
        Some(following) => {
            let start = try_join_all(topics.iter().map(|t| state.engine.topic_start(t))).await?;
            // A topic the cursor has no place for starts now.
            let resume = topics.iter().map(|t| cursor.as_ref().and_then(|c| c.topic(TopicTag::of(t)))).collect();
            Some(Topics { following, resume, start })
        }
    };

    // Without a cursor the stream is live from the newest entry; entries up
    // to it are history, fetched from the list API.
    tracing::debug!(cursor = ?cursor, newest = %start.last_id, "stream opened");
    let opening = Opening {
        cursor: cursor.map(|c| c.inbox),
        start,
        topics,
        retry: crate::sse::jittered_retry(settings.retry),
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
