//! Layered settings: the embedded `config/default.toml`, then an optional file,
//! then `HERALD__SECTION__KEY` environment variables. Every value is checked
//! here, once, and an invalid one stops start-up with a message naming its key.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};

use crate::domain::{EndpointRules, MAX_CURSOR_TOPICS, NotificationLimits, TopicGrant, VapidKey};

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub engine: EngineSettings,
    pub auth: AuthSettings,
    pub stream: StreamSettings,
    pub history: HistorySettings,
    pub topics: TopicSettings,
    pub limits: LimitSettings,
    pub publish: PublishSettings,
    pub push: PushSettings,
    pub log: LogSettings,
    pub demo: DemoSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_streams: usize,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A request whose head (request line and headers) has not fully
    /// arrived this long after the connection opened gets `408`.
    #[serde(with = "humantime_serde")]
    pub request_head_timeout: Duration,
    /// A request body not fully received this long after its handler
    /// started reading it gets `408` (see `routes::body::read_deadline`).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    pub node_id: String,
    pub cors: CorsSettings,
}

/// Which other origins' pages may call Herald from a browser (CORS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example.com`), never a wildcard: tokens
    /// travel as headers, and a wildcard would let any site's script try a
    /// stolen one from a victim's browser. Empty: same origin only.
    #[serde(deserialize_with = "strings_from_list_or_csv")]
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub kind: EngineKind,
    pub redis_url: String,
    #[serde(with = "humantime_serde")]
    pub pubsub_ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub subscribe_timeout: Duration,
    /// A command Redis has not answered in this long fails, and its
    /// connection is replaced (see `engine::redis::commands`).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub secret: Option<Secret>,
    #[serde(deserialize_with = "algorithms_from_list_or_csv")]
    pub algorithms: Vec<Algorithm>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub cookie_name: String,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("algorithms", &self.algorithms)
            .field("public_key_file", &self.public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    pub queue_capacity: usize,
    pub replay_page: usize,
    #[serde(with = "humantime_serde")]
    pub token_expiring_before: Duration,
    pub max_per_user: usize,
    pub heartbeat_events: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    pub max_len: u64,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Topics (or `prefix*` grants) every user may follow, whatever their
    /// token's `topics` claim says.
    #[serde(deserialize_with = "strings_from_list_or_csv")]
    pub public: Vec<String>,
    /// Most topics one stream may follow.
    pub max_per_stream: usize,
    /// A topic's history: the newest `max_len`, none older than `max_age`.
    pub max_len: u64,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl TopicSettings {
    /// `public` as grants; [`Settings::validate`] has checked every entry.
    pub fn public_grants(&self) -> Vec<TopicGrant> {
        self.public.iter().filter_map(|g| TopicGrant::parse(g).ok()).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_payload_bytes: usize,
    pub max_title_chars: usize,
    pub max_body_chars: usize,
    pub max_recipients: usize,
    pub publish_per_second: u32,
    /// Requests and stream opens per second each user may make on this
    /// node; 0 means no limit.
    pub user_requests_per_second: u32,
    /// How many of those may come at once.
    pub user_burst: u32,
}

impl LimitSettings {
    /// The limits a notification is validated against, on every publish
    /// path (the HTTP route, `herald publish`).
    pub fn notification(&self) -> NotificationLimits {
        NotificationLimits {
            max_payload_bytes: self.max_payload_bytes,
            max_title_chars: self.max_title_chars,
            max_body_chars: self.max_body_chars,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

/// When a notification is pushed to a user's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushWhen {
    /// When no node holds a stream of the user at publish time.
    Offline,
    /// `push.delay` after publish, if the notification is still unread.
    UnreadAfter,
}

impl PushWhen {
    /// As written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            PushWhen::Offline => "offline",
            PushWhen::UnreadAfter => "unread_after",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// The VAPID private key: the raw 32-byte P-256 scalar, base64url.
    pub vapid_private_key: Option<Secret>,
    /// Or a PEM file holding it.
    pub vapid_private_key_file: Option<PathBuf>,
    /// Who push services contact about this sender: `mailto:` or `https:`.
    pub subject: String,
    /// Hosts whose push endpoints may be plain `http` (tests only).
    #[serde(deserialize_with = "strings_from_list_or_csv")]
    pub allowed_insecure_hosts: Vec<String>,
    /// Push services subscriptions may point to: host names, `*.suffix`, or
    /// `*` for any (see `EndpointRules`).
    #[serde(deserialize_with = "strings_from_list_or_csv")]
    pub endpoint_hosts: Vec<String>,
    pub when: PushWhen,
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// How long a push service keeps a push for an unreachable device, when
    /// the notification names no `ttl`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Devices kept per user; a new one past it drops the oldest.
    pub max_subscriptions_per_user: usize,
    /// Pushes one node sends at once.
    pub concurrency: usize,
    /// Longest wait for a push service's answer; then the send is retried.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// A push claimed by a worker that has not settled it this long (its
    /// node died mid-send) is handed to another. Above `send_timeout`.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Sends tried per device before the push goes to the dead letters.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles it (with jitter), up
    /// to `retry_max_backoff`. A `Retry-After` from the service wins.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl PushSettings {
    /// Where subscriptions may point.
    pub fn endpoint_rules(&self) -> EndpointRules {
        EndpointRules { hosts: self.endpoint_hosts.clone(), insecure_hosts: self.allowed_insecure_hosts.clone() }
    }

    /// Whether a VAPID key is configured: without one, push is off.
    pub fn enabled(&self) -> bool {
        self.vapid_private_key.is_some() || self.vapid_private_key_file.is_some()
    }

    /// The configured key, if any; [`Settings::validate`] has checked it, so
    /// an error here names the setting for a file that changed since.
    pub fn vapid_key(&self) -> anyhow::Result<Option<VapidKey>> {
        if let Some(raw) = &self.vapid_private_key {
            return VapidKey::from_base64url(raw.expose())
                .map(Some)
                .map_err(|why| anyhow::anyhow!("invalid configuration: `push.vapid_private_key` {why}"));
        }
        let Some(path) = &self.vapid_private_key_file else { return Ok(None) };
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!("invalid configuration: `push.vapid_private_key_file`: cannot read {}", path.display())
        })?;
        VapidKey::from_pem(&pem).map(Some).map_err(|why| {
            anyhow::anyhow!("invalid configuration: `push.vapid_private_key_file` ({}) {why}", path.display())
        })
    }
}

impl fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSettings")
            .field("vapid_private_key", &self.vapid_private_key.as_ref().map(|_| "[redacted]"))
            .field("vapid_private_key_file", &self.vapid_private_key_file)
            .field("subject", &self.subject)
            .field("when", &self.when)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    pub enabled: bool,
    /// Lifetime of the tokens `POST /demo/session` hands out; the page
    /// renews them when its stream says `token_expiring`.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Lets demo mode listen on an address other than loopback. Off, a demo
    /// node is reachable only from its own machine: `/demo/session` gives
    /// anyone who reaches it a token for any user.
    pub allow_public: bool,
}

impl Settings {
    /// Loads the layers in order and validates the result.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let file = file.map(PathBuf::from).or_else(|| std::env::var_os("HERALD_CONFIG").map(PathBuf::from));
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        if let Some(path) = &file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            builder = builder.add_source(config::File::from(path.clone()));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HERALD").prefix_separator("__").separator("__").try_parsing(true),
        );
        Self::from_config(builder.build().context("invalid configuration")?)
    }

    /// Builds settings from the defaults plus `overrides` (`("stream.retry", "1s")`):
    /// for tests and tools that configure a gateway in code.
    pub fn with_overrides(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        for (key, value) in overrides {
            builder = builder.set_override(*key, *value)?;
        }
        Self::from_config(builder.build().context("invalid configuration")?)
    }

    fn from_config(raw: config::Config) -> anyhow::Result<Self> {
        let settings: Settings = raw.try_deserialize().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every setting, naming the first bad one. `load` calls it; call
    /// it again after changing settings (as `serve --demo` does).
    pub fn validate(&self) -> anyhow::Result<()> {
        fn require(ok: bool, key: &str, why: &str) -> anyhow::Result<()> {
            if ok { Ok(()) } else { bail!("invalid configuration: `{key}` {why}") }
        }
        require(self.server.max_streams > 0, "server.max_streams", "must be at least 1")?;
        require(self.server.max_body_bytes >= 1024, "server.max_body_bytes", "must be at least 1024")?;
        require(
            self.server.write_timeout >= Duration::from_millis(500),
            "server.write_timeout",
            "must be at least 500ms",
        )?;
        require(
            self.server.request_head_timeout >= Duration::from_millis(100),
            "server.request_head_timeout",
            "must be at least 100ms",
        )?;
        require(
            self.server.body_read_timeout >= Duration::from_millis(100),
            "server.body_read_timeout",
            "must be at least 100ms",
        )?;
        for origin in &self.server.cors.allowed_origins {
            check_origin(origin)?;
        }
        require(
            self.engine.command_timeout >= Duration::from_millis(100),
            "engine.command_timeout",
            "must be at least 100ms",
        )?;
        require(self.history.max_len > 0, "history.max_len", "must be at least 1")?;
        require(self.history.max_age >= Duration::from_secs(1), "history.max_age", "must be at least 1s")?;
        require(self.topics.max_len > 0, "topics.max_len", "must be at least 1")?;
        require(self.topics.max_age >= Duration::from_secs(1), "topics.max_age", "must be at least 1s")?;
        require(
            (1..=MAX_CURSOR_TOPICS).contains(&self.topics.max_per_stream),
            "topics.max_per_stream",
            "must be between 1 and 64",
        )?;
        for grant in &self.topics.public {
            if let Err(why) = TopicGrant::parse(grant) {
                bail!("invalid configuration: `topics.public`: {why}");
            }
        }
        require(self.stream.queue_capacity >= 8, "stream.queue_capacity", "must be at least 8")?;
        require((1..=10_000).contains(&self.stream.replay_page), "stream.replay_page", "must be between 1 and 10000")?;
        require(!self.stream.keep_alive.is_zero(), "stream.keep_alive", "must be above 0")?;
        require(self.stream.max_per_user > 0, "stream.max_per_user", "must be at least 1")?;
        require(self.limits.max_payload_bytes >= 256, "limits.max_payload_bytes", "must be at least 256")?;
        require(self.limits.max_title_chars > 0, "limits.max_title_chars", "must be at least 1")?;
        require(self.limits.max_recipients > 0, "limits.max_recipients", "must be at least 1")?;
        require(
            self.limits.user_requests_per_second == 0 || self.limits.user_burst > 0,
            "limits.user_burst",
            "must be at least 1 when limits.user_requests_per_second is set (0 turns the limit off)",
        )?;
        require(!self.auth.algorithms.is_empty(), "auth.algorithms", "must name at least one algorithm")?;
        require(!self.auth.cookie_name.is_empty(), "auth.cookie_name", "must not be empty")?;
        require(
            self.auth.jwks_url.is_none(),
            "auth.jwks_url",
            "is not supported yet (use auth.secret or auth.public_key_file)",
        )?;
        if self.demo.enabled {
            // Demo sessions are HS256 tokens, renewed when the stream says
            // `token_expiring`: one expiring as soon as minted would send
            // the page round a renewal loop.
            require(
                self.demo.session_ttl > self.stream.token_expiring_before,
                "demo.session_ttl",
                "must be longer than stream.token_expiring_before",
            )?;
            require(
                self.auth.algorithms.contains(&Algorithm::HS256),
                "auth.algorithms",
                "must list HS256 in demo mode (its sessions are HS256 tokens)",
            )?;
            require(
                self.server.listen.ip().is_loopback() || self.demo.allow_public,
                "server.listen",
                "is not a loopback address, and demo mode (POST /demo/session) hands a token for any user to \
                 anyone who can reach it: listen on 127.0.0.1 or [::1], or set `demo.allow_public = true` \
                 (HERALD__DEMO__ALLOW_PUBLIC=true) if every user's notifications may be public",
            )?;
        }
        if matches!(self.engine.kind, EngineKind::Redis) {
            // Refused here rather than failing at the first connect: this
            // build has no TLS client.
            require(
                !self.engine.redis_url.starts_with("rediss://"),
                "engine.redis_url",
                "is a rediss:// (TLS) URL, which this build does not support yet (use redis://, through a TLS tunnel such as stunnel if the link needs encryption)",
            )?;
            require(self.engine.redis_url.starts_with("redis://"), "engine.redis_url", "must be a redis:// URL")?;
        }
        self.validate_push()?;
        let wants_hmac = self.auth.algorithms.iter().any(|a| is_hmac(*a));
        let wants_public_key = self.auth.algorithms.iter().any(|a| !is_hmac(*a));
        if wants_public_key {
            require(
                self.auth.public_key_file.is_some(),
                "auth.public_key_file",
                "is required when auth.algorithms lists RS256, ES256 or EdDSA",
            )?;
        }
        if let Some(secret) = &self.auth.secret {
            require(wants_hmac, "auth.algorithms", "must list an HS algorithm when auth.secret is set")?;
            // RFC 7518 §3.2: an HMAC key at least as long as the hash; a
            // shorter one is open to offline guessing from any one token.
            require(
                secret.expose().len() >= MIN_SECRET_BYTES,
                "auth.secret",
                "must be at least 32 bytes long (e.g. `openssl rand -hex 32`)",
            )?;
        }
        Ok(())
    }

    fn validate_push(&self) -> anyhow::Result<()> {
        let push = &self.push;
        if push.vapid_private_key.is_some() && push.vapid_private_key_file.is_some() {
            bail!("invalid configuration: set `push.vapid_private_key` or `push.vapid_private_key_file`, not both");
        }
        require_setting(push.max_subscriptions_per_user > 0, "push.max_subscriptions_per_user", "must be at least 1")?;
        require_setting(push.concurrency > 0, "push.concurrency", "must be at least 1")?;
        require_setting(push.max_attempts > 0, "push.max_attempts", "must be at least 1")?;
        require_setting(!push.send_timeout.is_zero(), "push.send_timeout", "must be above 0")?;
        require_setting(!push.retry_backoff.is_zero(), "push.retry_backoff", "must be above 0")?;
        require_setting(
            push.retry_max_backoff >= push.retry_backoff,
            "push.retry_max_backoff",
            "must be at least push.retry_backoff",
        )?;
        // A worker still sending must not see its push handed to another.
        require_setting(
            push.visibility_timeout > push.send_timeout,
            "push.visibility_timeout",
            "must be longer than push.send_timeout (a push still being sent would be sent twice)",
        )?;
        require_setting(!push.delay.is_zero(), "push.delay", "must be above 0")?;
        // RFC 8030 §5.2: TTL is whole seconds; push services cap it at 4 weeks.
        require_setting(push.ttl <= Duration::from_secs(28 * 86_400), "push.ttl", "must be at most 28d")?;
        if push.vapid_key()?.is_some() {
            // RFC 8292 §2.1: push services use it to reach the sender.
            require_setting(
                push.subject.starts_with("mailto:") || push.subject.starts_with("https:"),
                "push.subject",
                "must be a mailto: or https: URI when a VAPID key is set (push services contact the sender there)",
            )?;
        }
        Ok(())
    }

    /// The node id from config, or a random one for this process.
    pub fn node_id(&self) -> String {
        if self.server.node_id.is_empty() {
            format!("node-{:08x}", rand::random::<u32>())
        } else {
            self.server.node_id.clone()
        }
    }
}

fn require_setting(ok: bool, key: &str, why: &str) -> anyhow::Result<()> {
    if ok { Ok(()) } else { bail!("invalid configuration: `{key}` {why}") }
}

/// Shortest `auth.secret` accepted: HS256's hash length.
pub const MIN_SECRET_BYTES: usize = 32;

pub fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

const SUPPORTED_ALGORITHMS: &[Algorithm] =
    &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A TOML list or, from the environment, a comma-separated string
/// (`HERALD__TOPICS__PUBLIC=announcements,status`).
fn strings_from_list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(list) => list,
        Raw::Csv(csv) => csv.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
    })
}

/// An entry of `server.cors.allowed_origins` must be an origin exactly as a
/// browser sends it in `Origin` (`https://app.example.com`, a port only when
/// not the scheme's default, no path or trailing slash), or it would never
/// match and the page's calls would fail with nothing in the log to say why.
fn check_origin(origin: &str) -> anyhow::Result<()> {
    let serialized = url::Url::parse(origin).ok().map(|url| url.origin().ascii_serialization());
    if serialized.as_deref() != Some(origin) || !(origin.starts_with("https://") || origin.starts_with("http://")) {
        let hint = serialized.filter(|s| s != "null").map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
        bail!(
            "invalid configuration: `server.cors.allowed_origins`: `{origin}` is not an origin such as \
             `https://app.example.com`{hint}"
        );
    }
    Ok(())
}

/// `auth.algorithms` comes as a TOML list or, from the environment, as "HS256,RS256".
fn algorithms_from_list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
    strings_from_list_or_csv(d)?
        .iter()
        .map(|name| {
            name.parse::<Algorithm>().ok().filter(|a| SUPPORTED_ALGORITHMS.contains(a)).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "auth.algorithms: `{name}` is not one of HS256, HS384, HS512, RS256, ES256, EdDSA"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load_and_match_the_spec() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.engine.kind, EngineKind::Memory);
        assert_eq!(s.engine.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.auth.algorithms, vec![Algorithm::HS256]);
        assert_eq!(s.history.max_len, 1000);
        assert_eq!(s.history.max_age, Duration::from_secs(30 * 86400));
        assert!(!s.demo.enabled);
    }

    #[test]
    fn a_bad_setting_names_its_key() {
        let err = Settings::with_overrides(&[("history.max_len", "0")]).unwrap_err();
        assert!(err.to_string().contains("history.max_len"), "{err}");
        let err = Settings::with_overrides(&[("auth.algorithms", "HS256,none")]).unwrap_err();
        assert!(format!("{err:#}").contains("auth.algorithms"), "{err:#}");
        let err = Settings::with_overrides(&[("auth.secret", "short")]).unwrap_err();
        assert!(err.to_string().contains("auth.secret"), "{err}");
        let err = Settings::with_overrides(&[("limits.user_burst", "0")]).unwrap_err();
        assert!(err.to_string().contains("`limits.user_burst`"), "{err}");
        assert!(
            Settings::with_overrides(&[("limits.user_burst", "0"), ("limits.user_requests_per_second", "0")]).is_ok()
        );
    }

    #[test]
    fn demo_mode_listens_on_loopback_unless_allowed_public() {
        let demo = |listen: &str, public: &str| {
            Settings::with_overrides(&[
                ("demo.enabled", "true"),
                ("server.listen", listen),
                ("demo.allow_public", public),
            ])
        };
        assert!(demo("127.0.0.1:8080", "false").is_ok());
        assert!(demo("[::1]:8080", "false").is_ok());
        for public in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080"] {
            let err = demo(public, "false").unwrap_err().to_string();
            assert!(err.contains("`server.listen`") && err.contains("demo.allow_public"), "{err}");
            assert!(demo(public, "true").is_ok(), "{public}");
        }
        // Out of demo mode, any address is fine.
        assert!(Settings::with_overrides(&[("server.listen", "0.0.0.0:8080")]).is_ok());
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        let with_origins = |origins: &str| Settings::with_overrides(&[("server.cors.allowed_origins", origins)]);
        let ok = with_origins("https://app.example.com, http://127.0.0.1:5173").unwrap();
        assert_eq!(ok.server.cors.allowed_origins, ["https://app.example.com", "http://127.0.0.1:5173"]);
        for (bad, hint) in [
            ("https://app.example.com/", Some("https://app.example.com")),
            ("https://app.example.com:443", Some("https://app.example.com")),
            ("https://App.example.com", Some("https://app.example.com")),
            ("*", None),
            ("app.example.com", None),
        ] {
            let err = with_origins(bad).unwrap_err().to_string();
            assert!(err.contains("`server.cors.allowed_origins`") && err.contains(bad), "{err}");
            if let Some(hint) = hint {
                assert!(err.contains(&format!("did you mean `{hint}`")), "{err}");
            }
        }
    }

    #[test]
    fn an_hmac_secret_has_at_least_32_bytes() {
        let with_secret = |secret: &str| Settings::with_overrides(&[("auth.secret", secret)]);
        let err = with_secret(&"s".repeat(31)).unwrap_err().to_string();
        assert!(err.contains("`auth.secret`") && err.contains("32 bytes"), "{err}");
        assert!(with_secret(&"s".repeat(32)).is_ok());
        // Bytes, not characters: 11 three-byte characters are 33 bytes.
        assert!(with_secret(&"秘".repeat(11)).is_ok());
    }

    #[test]
    fn algorithms_accept_a_comma_separated_string() {
        let s = Settings::with_overrides(&[("auth.algorithms", "HS256, HS512")]).unwrap();
        assert_eq!(s.auth.algorithms, vec![Algorithm::HS256, Algorithm::HS512]);
    }

    #[test]
    fn public_topics_come_as_a_list_or_comma_separated() {
        let s = Settings::with_overrides(&[("topics.public", "announcements, status,team:*")]).unwrap();
        assert_eq!(s.topics.public, ["announcements", "status", "team:*"]);
        assert_eq!(s.topics.public_grants().len(), 3);
        assert!(Settings::with_overrides(&[]).unwrap().topics.public.is_empty());
        let err = Settings::with_overrides(&[("topics.public", "ok,not ok")]).unwrap_err().to_string();
        assert!(err.contains("`topics.public`") && err.contains("not ok"), "{err}");
        let err = Settings::with_overrides(&[("topics.max_per_stream", "0")]).unwrap_err().to_string();
        assert!(err.contains("`topics.max_per_stream`"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::with_overrides(&[("auth.secret", "a-very-secret-value-0123456789abcdef")]).unwrap();
        assert!(!format!("{s:?}").contains("a-very-secret"));
    }
}
