//! `POST /v1/publish`: a publisher sends one notification to users, or to
//! a topic.

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Publisher,
    domain::{IdempotencyKey, NewNotification, NotificationLimits, StoredNotification, TopicName, UserId},
    engine::{Engine, PublishOutcome},
    error::ApiError,
    routes::AppState,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    to: Recipients,
    notification: NewNotification,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipients {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    topic: Option<String>,
}

#[derive(Debug, Serialize)]
struct PublishResponse {
    results: Vec<Delivery>,
}

/// A topic publish's result: the entry id in the topic's history.
#[derive(Debug, Serialize)]
struct TopicResponse {
    topic: String,
    id: String,
}

/// One user's result. `id` is null and `dropped` says why when the user's
/// preferences turned this category off in-app.
#[derive(Debug, Serialize)]
struct Delivery {
    user: String,
    id: Option<String>,
    online: bool,
    /// `queued`, `skipped` (why in `push_skipped`) or `none` (push is off).
    push: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    push_skipped: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<&'static str>,
}

impl Delivery {
    fn new(user: &UserId, outcome: PublishOutcome) -> Self {
        let metrics = crate::metrics::get();
        match outcome {
            PublishOutcome::Stored(p) if p.duplicate => metrics.publishes_duplicate.increment(1),
            PublishOutcome::Stored(_) => metrics.publishes_stored.increment(1),
            PublishOutcome::Dropped => metrics.publishes_dropped.increment(1),
        }
        match outcome {
            PublishOutcome::Stored(p) => Self {
                user: user.to_string(),
                id: Some(p.id.to_string()),
                online: p.online,
                push: p.push.as_str(),
                push_skipped: p.push.skip_reason(),
                dropped: None,
            },
            PublishOutcome::Dropped => Self {
                user: user.to_string(),
                id: None,
                online: false,
                push: "none",
                push_skipped: None,
                dropped: Some("preferences"),
            },
        }
    }
}

/// Who a checked publish goes to.
#[derive(Debug)]
pub enum Audience {
    /// One or more users, each once, in the order given.
    Users(Vec<UserId>),
    Topic(TopicName),
}

/// A publish request with every rule checked that needs no state: what the
/// route stores once the rate limit allows it. The fuzzer
/// (`fuzz/src/checks.rs`) runs this same step on raw bodies.
#[derive(Debug)]
pub struct CheckedPublish {
    pub audience: Audience,
    pub stored: StoredNotification,
    pub key: Option<IdempotencyKey>,
}

impl PublishRequest {
    /// Checks the recipients, then the idempotency key, then the
    /// notification (the first broken rule is the `422` or `413`).
    pub fn check(self, limits: &NotificationLimits, max_recipients: usize) -> Result<CheckedPublish, ApiError> {
        let audience = match &self.to.topic {
            Some(topic) => {
                if !self.to.users.is_empty() {
                    return Err(ApiError::unprocessable("to: give either users or topic, not both"));
                }
                Audience::Topic(TopicName::parse(topic).map_err(|e| ApiError::unprocessable(format!("to.topic: {e}")))?)
            }
            None => {
                if self.to.users.is_empty() || self.to.users.len() > max_recipients {
                    return Err(ApiError::unprocessable(format!("to.users: must list 1 to {max_recipients} users")));
                }
                let mut seen = HashSet::new();
                let users = self
                    .to
                    .users
                    .iter()
                    .filter(|u| seen.insert(u.as_str()))
                    .map(|u| UserId::parse(u).map_err(|e| ApiError::unprocessable(format!("to.users: `{u}`: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                Audience::Users(users)
            }
        };
        let key =
            self.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose().map_err(ApiError::unprocessable)?;
        let stored = self.notification.validate(limits)?;
        Ok(CheckedPublish { audience, stored, key })
    }
}

#[tracing::instrument(name = "publish", skip_all, fields(publisher = %publisher.0.user, recipients))]
pub async fn publish(
    publisher: Publisher,
    state: web::Data<AppState>,
    request: web::Json<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    let CheckedPublish { audience, stored, key } =
        request.into_inner().check(&state.limits, state.settings.limits.max_recipients)?;
    let users = match audience {
        Audience::Topic(topic) => return publish_topic(&publisher, &state, &topic, &stored, key.as_ref()).await,
        Audience::Users(users) => users,
    };
    if let Err(wait) = state.publish_limiter.check(&publisher.0.user, users.len()) {
        return Err(ApiError::too_many(
            format!("publish rate over limits.publish_per_second for `{}`", publisher.0.user),
            wait.as_secs_f64().ceil().max(1.0) as u32,
        ));
    }
    tracing::Span::current().record("recipients", users.len());

    // Concurrent calls pipeline on this worker's command connection. Each user's
    // publish is atomic on its own; a retry with the same idempotency_key
    // completes a partly failed call without storing anything twice.
    let published = try_join_all(users.iter().map(|user| state.engine.publish(user, &stored, key.as_ref()))).await?;
    let results: Vec<Delivery> =
        users.iter().zip(published).map(|(user, outcome)| Delivery::new(user, outcome)).collect();
    Ok(HttpResponse::Accepted().json(PublishResponse { results }))
}

/// One notification to a topic: stored once in the topic's history and
/// fanned out to its followers on every node. It counts as one recipient
/// against `limits.publish_per_second`.
async fn publish_topic(
    publisher: &Publisher,
    state: &AppState,
    topic: &TopicName,
    stored: &StoredNotification,
    key: Option<&IdempotencyKey>,
) -> Result<HttpResponse, ApiError> {
    if let Err(wait) = state.publish_limiter.check(&publisher.0.user, 1) {
        return Err(ApiError::too_many(
            format!("publish rate over limits.publish_per_second for `{}`", publisher.0.user),
            wait.as_secs_f64().ceil().max(1.0) as u32,
        ));
    }
    tracing::Span::current().record("recipients", 1);
    let published = state.engine.publish_topic(topic, stored, key).await?;
    let metrics = crate::metrics::get();
    if published.duplicate {
        metrics.publishes_duplicate.increment(1)
    } else {
        metrics.publishes_stored.increment(1)
    }
    Ok(HttpResponse::Accepted().json(TopicResponse { topic: topic.to_string(), id: published.id.to_string() }))
}
