//! The Redis engine: history in Redis Streams, fan-out over pub/sub.
//!
//! * Commands go over one multiplexed `ConnectionManager` per HTTP worker
//!   ([`RedisEngine::on_this_runtime`]), plus the start-up one that loads the
//!   function library: every call here is a short `FCALL`, so pipelining them
//!   on one socket beats a pool (no checkout, no idle sockets), and the
//!   manager reconnects by itself ([`commands`] replaces one that stops
//!   answering without dropping). A pool
//!   earns its place only for blocking commands (push workers' `XREADGROUP
//!   BLOCK`), which the gateway does not issue.
//! * Live traffic comes over one dedicated pub/sub connection per node
//!   ([`pubsub`]), subscribed only to the users this node holds streams of.
//! * All writes go through the function library in `functions.lua`; which
//!   library may replace which is [`library`]'s rule.

mod commands;
mod keys;
mod library;
mod pubsub;
mod push;

use std::{sync::Arc, time::Duration};

use redis::{Client, aio::ConnectionManagerConfig};
use tokio::sync::mpsc;

use self::{
    commands::Commands,
    library::{Occasion, Verdict},
    pubsub::PubSubHealth,
};
pub use self::{
    keys::{topic_base, user_base},
    push::read_dead_letters,
};
use super::{
    Engine, EngineError, HistoryPage, ListPage, ListQuery, PublishOutcome, Published, PushDecision, PushPolicy,
    ReadTarget, Reset, Retention, SkipReason, StoredEntry, StreamStart, TopicPublished,
};
use crate::{
    config::Settings,
    domain::{EntryId, IdempotencyKey, Preferences, StoredNotification, TopicName, UserId},
    hub::{Hub, NodeTask, SubscriptionCommand},
};

const LIBRARY_TEMPLATE: &str = include_str!("functions.lua");
/// The function library's revision, first in its version: raise it by one
/// with every change to `functions.lua`. A node never replaces a library of
/// a higher revision with its own (see [`library`]), so a node left on old
/// code cannot put that code back under newer nodes.
pub const LIBRARY_REVISION: u32 = 8;
/// The first 8 hex digits of `functions.lua`'s SHA-1 at [`LIBRARY_REVISION`]:
/// a test fails when the file changes and the revision does not.
#[cfg(test)]
const LIBRARY_HASH_AT_REVISION: &str = "24c29ffd";

#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Driven by the runtime it was opened on: see [`RedisEngine::on_this_runtime`].
    commands: Arc<Commands>,
    node: Arc<NodeShared>,
}

/// What every connection of the node shares.
struct NodeShared {
    client: Client,
    config: ConnectionManagerConfig,
    /// The library source with this node's limits filled in.
    library: String,
    version: String,
    /// The config keys of the settings the version lists, in its order, to
    /// name the ones that differ when another node's library is loaded.
    setting_keys: Vec<&'static str>,
    pubsub: Arc<PubSubHealth>,
    /// Connections for the push worker's blocking reads ([`push`]).
    blocking: deadpool_redis::Pool,
}

/// Fills the function library's placeholders from config: the source and
/// its version.
pub fn library_source(settings: &Settings) -> (String, String) {
    let (source, version, _) = filled_library(settings);
    (source, version)
}

/// The source, its version, and the config keys of the settings the version
/// lists.
fn filled_library(settings: &Settings) -> (String, String, Vec<&'static str>) {
    let retention = Retention::from_settings(settings);
    let topics = Retention::for_topics(settings);
    let (push_mode, push_delay_ms) = match PushPolicy::from_settings(settings) {
        PushPolicy::Off => ("off", 0),
        PushPolicy::Offline => ("offline", 0),
        PushPolicy::UnreadAfter { delay_ms } => ("unread_after", delay_ms),
    };
    // (placeholder, config key, value)
    let numbers = [
        ("MAX_LEN", "history.max_len", retention.max_len.to_string()),
        ("MAX_AGE_MS", "history.max_age (ms)", retention.max_age_ms.to_string()),
        ("MAX_PAYLOAD", "limits.max_payload_bytes", settings.limits.max_payload_bytes.to_string()),
        ("MAX_TITLE", "limits.max_title_chars", settings.limits.max_title_chars.to_string()),
        ("MAX_BODY", "limits.max_body_chars", settings.limits.max_body_chars.to_string()),
        ("IDEM_TTL_MS", "publish.idempotency_window (ms)", retention.idempotency_window_ms.to_string()),
        ("TOPIC_MAX_LEN", "topics.max_len", topics.max_len.to_string()),
        ("TOPIC_MAX_AGE_MS", "topics.max_age (ms)", topics.max_age_ms.to_string()),
        ("PUSH_MODE", "push.when (off without a VAPID key)", push_mode.to_owned()),
        ("PUSH_DELAY_MS", "push.delay (ms)", push_delay_ms.to_string()),
    ];
    // Follow from the settings above, so the version leaves them out.
    let derived = [
        ("LEN_SLACK", retention.len_slack().to_string()),
        ("AGE_SLACK_MS", retention.age_slack_ms().to_string()),
        ("TOPIC_LEN_SLACK", topics.len_slack().to_string()),
        ("TOPIC_AGE_SLACK_MS", topics.age_slack_ms().to_string()),
    ];
    // The revision first, so any node can tell older from newer. The
    // library's own hash too: nodes of one crate version built from
    // different library code (say, during a rolling upgrade between commits)
    // must not look alike.
    let version = format!(
        "r{LIBRARY_REVISION}:{}+{}:{}",
        env!("CARGO_PKG_VERSION"),
        &redis::Script::new(LIBRARY_TEMPLATE).get_hash()[..8],
        numbers.iter().map(|(_, _, v)| v.as_str()).collect::<Vec<_>>().join(",")
    );
    let mut source = LIBRARY_TEMPLATE.replace("{{VERSION}}", &version);
    let placeholders = numbers.iter().map(|(name, _, value)| (name, value)).chain(derived.iter().map(|(n, v)| (n, v)));
    for (name, value) in placeholders {
        source = source.replace(&format!("{{{{{name}}}}}"), value);
    }
    (source, version, numbers.iter().map(|(_, key, _)| *key).collect())
}

fn unavailable(e: redis::RedisError) -> EngineError {
    crate::metrics::get().engine_errors.increment(1);
    EngineError::Unavailable(e.to_string())
}

/// Maps a function's error reply to the engine's errors.
fn from_redis(e: redis::RedisError) -> EngineError {
    match e.code() {
        Some("HERALD_INVALID") => EngineError::Rejected(e.detail().unwrap_or("invalid notification").to_owned()),
        Some("HERALD_TOO_LARGE") => EngineError::TooLarge(e.detail().unwrap_or("notification too large").to_owned()),
        Some("HERALD_NOT_FOUND") => EngineError::NotFound(e.detail().unwrap_or("").to_owned()),
        _ => unavailable(e),
    }
}

fn is_missing_function(e: &redis::RedisError) -> bool {
    e.detail().is_some_and(|d| d.contains("Function not found"))
}

impl RedisEngine {
    /// Connects and loads the function library. Returns the engine and the
    /// pub/sub task that feeds `hub` with the channels it asks for through
    /// `subscriptions`; nothing is delivered live until that task is spawned.
    pub async fn connect(
        settings: &Settings,
        hub: Arc<Hub>,
        subscriptions: mpsc::UnboundedReceiver<SubscriptionCommand>,
    ) -> anyhow::Result<(Self, NodeTask)> {
        use anyhow::Context;
        let url = &settings.engine.redis_url;
        let client = Client::open(url.as_str()).with_context(|| format!("engine.redis_url: cannot parse `{url}`"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(settings.engine.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let commands = Commands::connect(client.clone(), config.clone())
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let (library, version, setting_keys) = filled_library(settings);
        let pubsub = Arc::new(PubSubHealth::new(settings.engine.pubsub_ping_interval));
        let node = Arc::new(NodeShared {
            client: client.clone(),
            config,
            library,
            version,
            setting_keys,
            pubsub: pubsub.clone(),
            blocking: push::blocking_pool(url, crate::engine::push::CLAIM_WAIT)?,
        });
        let engine = Self { inner: Arc::new(Inner { commands, node }) };
        // Another node's library is no reason not to start: this node serves
        // what it can on it, and /readyz says why it is not ready.
        if let Loaded::Foreign(why) = engine
            .ensure_library(Occasion::Start)
            .await
            .context("cannot load the Redis function library `herald` (Redis >= 7 is required)")?
        {
            tracing::warn!(%why, "kept the function library another node loaded");
        }
        let reloader = engine.clone();
        let on_reconnect: pubsub::OnReconnect = Box::new(move || {
            let engine = reloader.clone();
            Box::pin(async move {
                match engine.ensure_library(Occasion::Repair).await {
                    Ok(Loaded::Ours) => {}
                    Ok(Loaded::Foreign(why)) => tracing::warn!(%why, "kept the function library another node loaded"),
                    Err(e) => tracing::warn!(error = %e, "could not check the function library after a reconnect"),
                }
            })
        });
        let task = Box::pin(pubsub::task(client, hub, subscriptions, pubsub, on_reconnect));
        Ok((engine, task))
    }

    /// The same engine with its own command connection, driven by the
    /// runtime this is awaited on. Each HTTP worker opens one: a request's
    /// `FCALL` then goes out and comes back on the worker's own thread,
    /// instead of waking another thread twice per call.
    pub async fn on_this_runtime(&self) -> Result<Self, EngineError> {
        let node = self.inner.node.clone();
        let commands = Commands::connect(node.client.clone(), node.config.clone()).await.map_err(unavailable)?;
        Ok(Self { inner: Arc::new(Inner { commands, node }) })
    }

    /// Loads this node's library unless the one loaded may not be replaced
    /// ([`library`] has the rule); says whether ours is loaded after.
    async fn ensure_library(&self, occasion: Occasion) -> redis::RedisResult<Loaded> {
        let mut conn = self.inner.commands.get();
        let node = &self.inner.node;
        // A second round judges a library that another node loaded between
        // this one's read and its load.
        for _ in 0..2 {
            let loaded =
                match redis::cmd("FCALL_RO").arg("herald_version").arg(0).query_async::<String>(&mut conn).await {
                    Ok(version) => Some(version),
                    Err(e) if is_missing_function(&e) => None,
                    Err(e) => return Err(e),
                };
            match library::judge(loaded.as_deref(), &node.version, &node.setting_keys, occasion) {
                Verdict::Ours => return Ok(Loaded::Ours),
                Verdict::Foreign(why) => return Ok(Loaded::Foreign(why)),
                Verdict::Replace => {
                    tracing::info!(loaded = loaded.as_deref(), ours = %node.version, "replacing the function library");
                    self.load_library(true).await?;
                    return Ok(Loaded::Ours);
                }
                Verdict::Load => match self.load_library(false).await {
                    Err(e) if e.detail().is_some_and(|d| d.contains("already exists")) => continue,
                    other => return other.map(|()| Loaded::Ours),
                },
            }
        }
        // Still no herald_version, yet a library `herald` is there: one from
        // before herald_version existed, older than any revision.
        self.load_library(true).await?;
        Ok(Loaded::Ours)
    }

    async fn load_library(&self, replace: bool) -> redis::RedisResult<()> {
        let mut conn = self.inner.commands.get();
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD");
        if replace {
            cmd.arg("REPLACE");
        }
        cmd.arg(&self.inner.node.library).query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Runs a function call; if Redis lost the library (a restart without
    /// persistence, a FLUSHALL) or holds an older one without the function,
    /// loads ours and retries once.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, EngineError> {
        let mut conn = self.inner.commands.get();
        let result = cmd.query_async::<T>(&mut conn).await;
        if let Err(e) = &result {
            self.inner.commands.failed(e);
        }
        match result {
            Err(e) if is_missing_function(&e) => {
                tracing::warn!("a herald function is missing in Redis; checking the function library");
                if let Loaded::Foreign(why) = self.ensure_library(Occasion::Repair).await.map_err(unavailable)? {
                    // The retry runs on that library: it may have the function.
                    tracing::warn!(%why, "kept the function library another node loaded");
                }
                cmd.query_async::<T>(&mut conn).await.map_err(from_redis)
            }
            other => other.map_err(from_redis),
        }
    }
}

/// Whether the library this node needs is loaded.
enum Loaded {
    Ours,
    /// Another node's, kept: why this node is not ready.
    Foreign(String),
}

fn parse_id(raw: &str) -> Result<EntryId, EngineError> {
    raw.parse().map_err(|_| EngineError::Unavailable(format!("Redis returned a malformed id `{raw}`")))
}

impl Engine for RedisEngine {
    async fn publish(
        &self,
        user: &UserId,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<PublishOutcome, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        // Validated already (NewNotification::validate): the function trusts
        // it, and needs its type for the user's in_app preference.
        cmd.arg("herald_publish_detail")
            .arg(1)
            .arg(user_base(user))
            .arg(&notification.json)
            .arg(key.map(IdempotencyKey::as_str).unwrap_or(""))
            .arg(&notification.kind)
            .arg(notification.priority.as_str());
        let (id, subscribers, duplicate, dropped, push, why): (String, i64, i64, i64, String, String) =
            self.call(&cmd).await?;
        if dropped == 1 {
            return Ok(PublishOutcome::Dropped);
        }
        let push = match push.as_str() {
            "queued" => PushDecision::Queued,
            "skipped" => PushDecision::Skipped(SkipReason::parse(&why).ok_or_else(|| {
                EngineError::Unavailable(format!("Redis returned an unknown push skip reason `{why}`"))
            })?),
            _ => PushDecision::None,
        };
        Ok(PublishOutcome::Stored(Published {
            id: parse_id(&id)?,
            online: subscribers > 0,
            duplicate: duplicate == 1,
            push,
        }))
    }

    async fn read_after(&self, user: &UserId, after: EntryId, limit: usize) -> Result<HistoryPage, EngineError> {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("herald_read_page").arg(1).arg(user_base(user)).arg(after.to_string()).arg(limit);
        let (reset, rows, unread, newest): (i64, Vec<EntryRow>, i64, String) = self.call(&cmd).await?;
        let reset = match reset {
            0 => None,
            1 => Some(Reset::HistoryTrimmed),
            _ => Some(Reset::CursorAhead { newest: parse_id(&newest)? }),
        };
        Ok(HistoryPage { reset, entries: entries(rows)?, unread: unread.max(0) as u64 })
    }

    async fn stream_start(&self, user: &UserId) -> Result<StreamStart, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_stream_start").arg(1).arg(user_base(user));
        let (last_id, unread): (String, i64) = self.call(&cmd).await?;
        Ok(StreamStart { last_id: parse_id(&last_id)?, unread: unread.max(0) as u64 })
    }

    /// Also replaces an older library found loaded: that closes the race in
    /// which an older node checked, a newer one loaded, then the older one
    /// loaded.
    async fn check_ready(&self) -> Result<(), EngineError> {
        if let Loaded::Foreign(why) = self.ensure_library(Occasion::Repair).await.map_err(unavailable)? {
            return Err(EngineError::Unavailable(why));
        }
        self.inner.node.pubsub.check()
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<ListPage, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_list").arg(1).arg(user_base(user));
        match query.before {
            Some(before) => cmd.arg(before.to_string()),
            None => cmd.arg("+"),
        };
        cmd.arg(query.limit).arg(if query.unread_only { "1" } else { "0" });
        let (unread, next, rows): (i64, String, Vec<EntryRow>) = self.call(&cmd).await?;
        let next = if next.is_empty() { None } else { Some(parse_id(&next)?) };
        Ok(ListPage { items: entries(rows)?, unread: unread.max(0) as u64, next })
    }

    async fn mark_read(&self, user: &UserId, target: &ReadTarget) -> Result<u64, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        match target {
            ReadTarget::All => cmd.arg("herald_mark_all_read").arg(1).arg(user_base(user)),
            ReadTarget::Ids(ids) => {
                cmd.arg("herald_mark_read").arg(1).arg(user_base(user));
                ids.iter().fold(&mut cmd, |cmd, id| cmd.arg(id.to_string()))
            }
        };
        let reply: Vec<redis::Value> = self.call(&cmd).await?;
        unread_of(&reply)
    }

    async fn mark_clicked(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let reply: Vec<redis::Value> = self
            .call(redis::cmd("FCALL").arg("herald_mark_clicked").arg(1).arg(user_base(user)).arg(id.to_string()))
            .await?;
        unread_of(&reply)
    }

    async fn delete(&self, user: &UserId, id: EntryId) -> Result<u64, EngineError> {
        let reply: Vec<redis::Value> =
            self.call(redis::cmd("FCALL").arg("herald_delete").arg(1).arg(user_base(user)).arg(id.to_string())).await?;
        unread_of(&reply)
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, EngineError> {
        let mut conn = self.inner.commands.get();
        let raw: Option<String> =
            redis::cmd("GET").arg(keys::preferences(user)).query_async(&mut conn).await.map_err(unavailable)?;
        match raw {
            None => Ok(Preferences::default()),
            Some(raw) => Preferences::parse(raw.as_bytes())
                .map_err(|e| EngineError::Unavailable(format!("stored preferences are invalid: {e}"))),
        }
    }

    async fn set_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), EngineError> {
        let json = serde_json::to_string(prefs).expect("preferences serialize");
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_set_preferences").arg(1).arg(user_base(user)).arg(json);
        for (category, in_app) in prefs.in_app_flags() {
            cmd.arg(category).arg(if in_app { "1" } else { "0" });
        }
        // The push flags and the quiet-hours rule the publish path reads
        // (functions.lua's push_decision).
        for (category, push) in prefs.push_flags() {
            cmd.arg(format!("^{category}")).arg(if push { "1" } else { "0" });
        }
        if let Some(rule) = prefs.quiet_rule(jiff::Timestamp::now()) {
            cmd.arg("~quiet").arg(rule);
        }
        let _: String = self.call(&cmd).await?;
        Ok(())
    }

    async fn publish_topic(
        &self,
        topic: &TopicName,
        notification: &StoredNotification,
        key: Option<&IdempotencyKey>,
    ) -> Result<TopicPublished, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_publish_topic_detail")
            .arg(1)
            .arg(topic_base(topic))
            .arg(&notification.json)
            .arg(key.map(IdempotencyKey::as_str).unwrap_or(""));
        let (id, duplicate): (String, i64) = self.call(&cmd).await?;
        Ok(TopicPublished { id: parse_id(&id)?, duplicate: duplicate == 1 })
    }

    async fn read_topic_after(
        &self,
        topic: &TopicName,
        after: EntryId,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("herald_read_topic_page").arg(1).arg(topic_base(topic)).arg(after.to_string()).arg(limit);
        let (reset, rows, newest): (i64, Vec<TopicRow>, String) = self.call(&cmd).await?;
        let reset = match reset {
            0 => None,
            1 => Some(Reset::HistoryTrimmed),
            _ => Some(Reset::CursorAhead { newest: parse_id(&newest)? }),
        };
        Ok(HistoryPage { reset, entries: topic_entries(rows)?, unread: 0 })
    }

    async fn topic_start(&self, topic: &TopicName) -> Result<EntryId, EngineError> {
        let last: String =
            self.call(redis::cmd("FCALL").arg("herald_topic_start").arg(1).arg(topic_base(topic))).await?;
        parse_id(&last)
    }

    async fn list_topic(
        &self,
        topic: &TopicName,
        before: Option<EntryId>,
        limit: usize,
    ) -> Result<ListPage, EngineError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("herald_list_topic").arg(1).arg(topic_base(topic));
        match before {
            Some(before) => cmd.arg(before.to_string()),
            None => cmd.arg("+"),
        };
        cmd.arg(limit);
        let (next, rows): (String, Vec<TopicRow>) = self.call(&cmd).await?;
        let next = if next.is_empty() { None } else { Some(parse_id(&next)?) };
        Ok(ListPage { items: topic_entries(rows)?, unread: 0, next })
    }
}

/// A topic's entry as its functions return it: id and JSON (bytes, as for
/// [`EntryRow`]).
type TopicRow = (String, Vec<u8>);

fn topic_entries(rows: Vec<TopicRow>) -> Result<Vec<StoredEntry>, EngineError> {
    rows.into_iter()
        .map(|(id, body)| Ok(StoredEntry { id: parse_id(&id)?, body: lenient_utf8(body), read: false, clicked: false }))
        .collect()
}

/// A history entry as the functions return it: id, JSON, read, clicked.
/// The JSON comes as bytes: the functions refuse what is not UTF-8, but an
/// entry written by another client or an older library may not be, and
/// decoding it as a `String` would fail the whole page (and so every read
/// and resume of the user) for one entry.
type EntryRow = (String, Vec<u8>, i64, i64);

fn entries(rows: Vec<EntryRow>) -> Result<Vec<StoredEntry>, EngineError> {
    rows.into_iter()
        .map(|(id, body, read, clicked)| {
            Ok(StoredEntry { id: parse_id(&id)?, body: lenient_utf8(body), read: read == 1, clicked: clicked == 1 })
        })
        .collect()
}

/// The stored JSON as text, invalid bytes replaced by U+FFFD (counted in
/// `herald_repaired_entries_total`). A replacement character never ends a
/// JSON string, so valid JSON stays valid.
fn lenient_utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| {
        crate::metrics::get().repaired_entries.increment(1);
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })
}

/// The unread count, first in every state-changing function's reply.
fn unread_of(reply: &[redis::Value]) -> Result<u64, EngineError> {
    match reply.first() {
        Some(redis::Value::Int(n)) => Ok((*n).max(0) as u64),
        other => Err(EngineError::Unavailable(format!("unexpected reply from Redis: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_library_code_and_its_settings() {
        let settings = Settings::with_overrides(&[("history.max_len", "200")]).unwrap();
        let (source, version) = library_source(&settings);
        let script = redis::Script::new(LIBRARY_TEMPLATE);
        let hash = &script.get_hash()[..8];
        assert_eq!(
            version,
            format!(
                "r{LIBRARY_REVISION}:{}+{hash}:200,2592000000,8192,200,2000,86400000,1000,604800000,off,0",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(source.contains(&format!("local VERSION = '{version}'")));
        assert!(source.contains("local LEN_SLACK = 2\n"), "the slack follows max_len");
        assert!(!source.contains("= {{") && !source.contains("'{{"), "every placeholder is filled");
        let (_, _, keys) = filled_library(&settings);
        assert_eq!(keys.len(), version.rsplit(':').next().unwrap().split(',').count(), "a key names each setting");
    }

    /// A node judges libraries by revision alone, so code changed under one
    /// revision would let old and new code replace each other.
    #[test]
    fn functions_lua_changes_only_with_a_new_revision() {
        let script = redis::Script::new(LIBRARY_TEMPLATE);
        let hash = &script.get_hash()[..8];
        assert_eq!(
            hash, LIBRARY_HASH_AT_REVISION,
            "functions.lua changed: in src/engine/redis/mod.rs raise LIBRARY_REVISION (now {LIBRARY_REVISION}) \
             by one and set LIBRARY_HASH_AT_REVISION to \"{hash}\""
        );
    }
}
