//! What every handler shares.

use std::sync::Arc;

use crate::{
    auth::Identity,
    config::Settings,
    domain::{NotificationLimits, TopicGrant, TopicName, topic_allowed},
    engine::AnyEngine,
    error::ApiError,
    hub::Hub,
    rate_limit::PublishRateLimiter,
};

/// One per HTTP worker: the hub, the limiter and the settings are the
/// node's (shared), the engine's command connection is the worker's own
/// (see [`AnyEngine::on_this_runtime`]).
#[derive(Clone)]
pub struct AppState {
    pub engine: AnyEngine,
    pub publish_limiter: Arc<PublishRateLimiter>,
    pub hub: Arc<Hub>,
    pub settings: Arc<Settings>,
    pub limits: NotificationLimits,
    pub node_id: Arc<str>,
    /// `topics.public`: topics every user may follow.
    pub public_topics: Arc<[TopicGrant]>,
    /// The VAPID public key (base64url) when Web Push is on.
    pub vapid_public_key: Option<Arc<str>>,
}

impl AppState {
    /// The state of the first worker; each worker then takes its own engine
    /// connection ([`AppState::on_this_runtime`]).
    pub fn new(settings: Arc<Settings>, hub: Arc<Hub>, engine: AnyEngine) -> Self {
        Self {
            engine,
            publish_limiter: Arc::new(PublishRateLimiter::new(settings.limits.publish_per_second)),
            hub,
            limits: settings.limits.notification(),
            node_id: settings.node_id().as_str().into(),
            public_topics: settings.topics.public_grants().into(),
            // Validated at start: a key that cannot be read stops the node.
            vapid_public_key: settings.push.vapid_key().ok().flatten().map(|k| k.public_base64url().into()),
            settings,
        }
    }

    /// The same state with an engine connection driven by the runtime this
    /// is awaited on.
    pub async fn on_this_runtime(&self) -> anyhow::Result<Self> {
        Ok(Self { engine: self.engine.on_this_runtime().await?, ..self.clone() })
    }

    /// Refuses (`403`, naming it) a topic this user may not follow: one
    /// neither their token's `topics` claim nor `topics.public` allows.
    pub fn allow_topic(&self, identity: &Identity, topic: &TopicName) -> Result<(), ApiError> {
        if topic_allowed(&identity.topics, topic) || topic_allowed(&self.public_topics, topic) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "topic `{topic}` is not allowed: neither the token's `topics` claim nor topics.public lists it"
        )))
    }
}
