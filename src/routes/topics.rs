//! `GET /v1/topics/{name}/notifications`: a topic's history, for a user
//! allowed to follow it.

use actix_web::{HttpResponse, web};

use crate::{
    auth::User,
    domain::TopicName,
    engine::Engine,
    error::ApiError,
    routes::{
        AppState,
        notifications::{DEFAULT_LIMIT, ListParams, MAX_LIMIT, parse_id},
    },
    wire::notification::render_topic_notification,
};

/// Newest first: `{"items": [...], "next": "<id>" or null}`. A topic has no
/// per-user read state, so there is no unread count and no `unread=true`.
pub async fn list(
    user: User,
    state: web::Data<AppState>,
    name: web::Path<String>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let topic = TopicName::parse(&name).map_err(|e| ApiError::bad_request("bad_topic", e))?;
    state.allow_topic(&user.0, &topic)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("bad_query", format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    if params.unread.is_some() {
        return Err(ApiError::bad_request("bad_query", "unread: a topic has no read state"));
    }
    let before = params.before.as_deref().map(|b| parse_id(b, "before")).transpose()?;
    let page = state.engine.list_topic(&topic, before, limit).await?;
    let mut body = Vec::with_capacity(64 + page.items.iter().map(|e| e.body.len() + 80).sum::<usize>());
    body.extend_from_slice(b"{\"items\":[");
    for (i, entry) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        render_topic_notification(&mut body, entry.id, entry.body.as_bytes());
    }
    body.extend_from_slice(b"],\"next\":");
    match page.next {
        Some(next) => {
            body.push(b'"');
            next.write_to(&mut body);
            body.push(b'"');
        }
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
