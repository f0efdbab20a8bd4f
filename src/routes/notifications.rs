//! The notification center: the list, the unread count, read / clicked /
//! delete. Every change reaches the user's other streams as `read` or
//! `deleted` plus `unread`, through the engine's pub/sub channel.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::User,
    domain::EntryId,
    engine::{Engine, ListQuery, ReadTarget},
    error::ApiError,
    routes::AppState,
    wire::notification::render_notification,
};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// Most ids in one `POST /v1/notifications/read`.
pub const MAX_READ_IDS: usize = 1000;

/// Unknown parameters are ignored: `access_token` shares the query string,
/// and clients add cache busters.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub limit: Option<usize>,
    pub before: Option<String>,
    pub unread: Option<bool>,
}

pub fn parse_id(raw: &str, what: &str) -> Result<EntryId, ApiError> {
    raw.parse().map_err(|e: crate::domain::BadEntryIdError| ApiError::bad_request("bad_id", format!("{what}: {e}")))
}

/// `GET /v1/notifications?limit=&before=&unread=true`, newest first.
pub async fn list(
    user: User,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("bad_query", format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    let before = params.before.as_deref().map(|b| parse_id(b, "before")).transpose()?;
    let query = ListQuery { before, limit, unread_only: params.unread.unwrap_or(false) };
    let page = state.engine.list(&user.0.user, query).await?;

    // The items are spliced from stored JSON, as on the stream: no re-encoding.
    let mut body = Vec::with_capacity(64 + page.items.iter().map(|e| e.body.len() + 120).sum::<usize>());
    body.extend_from_slice(b"{\"items\":[");
    for (i, entry) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        render_notification(&mut body, entry.id, entry.body.as_bytes(), entry.read, entry.clicked);
    }
    body.extend_from_slice(b"],\"unread_count\":");
    body.extend_from_slice(itoa::Buffer::new().format(page.unread).as_bytes());
    body.extend_from_slice(b",\"next\":");
    match page.next {
        Some(next) => body.extend_from_slice(format!("\"{next}\"").as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// `GET /v1/notifications/unread_count`.
pub async fn unread_count(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let start = state.engine.stream_start(&user.0.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "count": start.unread })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: Option<bool>,
}

/// `POST /v1/notifications/read` with `{"ids": [...]}` or `{"all": true}`.
pub async fn mark_read(
    user: User,
    state: web::Data<AppState>,
    request: web::Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    let target = match (&request.ids, request.all) {
        (Some(ids), None | Some(false)) if !ids.is_empty() && ids.len() <= MAX_READ_IDS => {
            ReadTarget::Ids(ids.iter().map(|id| parse_id(id, "ids")).collect::<Result<_, _>>()?)
        }
        (None, Some(true)) => ReadTarget::All,
        _ => {
            return Err(ApiError::unprocessable(format!(
                "send either {{\"ids\": [1 to {MAX_READ_IDS} ids]}} or {{\"all\": true}}"
            )));
        }
    };
    let unread = state.engine.mark_read(&user.0.user, &target).await?;
    Ok(HttpResponse::Ok().json(json!({ "unread_count": unread })))
}

/// `POST /v1/notifications/{id}/clicked`: clicked implies read.
pub async fn mark_clicked(
    user: User,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let unread = state.engine.mark_clicked(&user.0.user, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "unread_count": unread })))
}

/// `DELETE /v1/notifications/{id}`.
pub async fn delete(user: User, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let unread = state.engine.delete(&user.0.user, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "unread_count": unread })))
}
