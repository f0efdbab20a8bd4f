//! The `herald` command line: `serve`, `token`, `vapid`, `push
//! dead-letters` and `check-config`.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    app::Application,
    auth::{Claims, mint_claims, mint_token},
    clock::now_unix,
    config::{EngineKind, Secret, Settings},
    domain::VapidKey,
    telemetry,
};

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Real-time notification gateway (SSE over Redis pub/sub and Streams)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// A config file layered over the built-in defaults (also HERALD_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Demo mode: serves the demo notification center at /demo (and
        /// POST /demo/session, which hands out tokens: never in production,
        /// and only on a loopback address unless demo.allow_public),
        /// generates a secret if none is set, and prints ready-to-paste
        /// commands to try a stream and a publish.
        #[arg(long)]
        demo: bool,
    },
    /// Load and validate the configuration, print the result (secrets
    /// redacted), and exit: 0 if valid, 1 naming the bad setting.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Mint an HS256 token with the configured secret, for trying things out.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Add `scope: publish`, for POST /v1/publish.
        #[arg(long)]
        publisher: bool,
        /// Topics the user may follow, comma-separated: names, or prefixes
        /// ending in `*` (the `topics` claim), e.g. `team:42,product:*`.
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Generate a VAPID key pair (P-256) for Web Push and print both halves
    /// as base64url: the private key as the raw 32-byte scalar (set it as
    /// push.vapid_private_key), the public key as the 65-byte uncompressed
    /// point (what browsers subscribe with).
    Vapid {
        /// Print {"public_key": ..., "private_key": ...} instead.
        #[arg(long)]
        json: bool,
    },
    /// Web Push operations.
    Push {
        #[command(subcommand)]
        command: PushCommand,
    },
    /// Publish one notification through the configured Redis engine,
    /// without HTTP: checked as `POST /v1/publish` checks it, stored and
    /// delivered as that stores and delivers it. Prints the result as JSON.
    Publish {
        /// Recipients, comma-separated (or the flag repeated).
        #[arg(long = "user", value_delimiter = ',', required_unless_present = "topic", conflicts_with = "topic")]
        users: Vec<String>,
        /// A topic instead of users.
        #[arg(long)]
        topic: Option<String>,
        #[arg(long = "type", default_value = "herald.cli")]
        kind: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: Option<String>,
        #[arg(long)]
        url: Option<String>,
        /// low, normal or high.
        #[arg(long)]
        priority: Option<String>,
        /// Any JSON, passed through as `data`.
        #[arg(long)]
        data: Option<String>,
        /// A retry with the same key stores nothing twice.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// List the newest pushes given up on (after push.max_attempts, or a
    /// push service's refusal), newest first, one JSON object per line.
    DeadLetters {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, demo } => serve(config, demo).await,
        Command::CheckConfig { config } => {
            let settings = Settings::load(config.as_deref())?;
            println!("{settings:#?}\nconfiguration is valid");
            Ok(())
        }
        Command::Token { sub, ttl, publisher, topics, config } => {
            let settings = Settings::load(config.as_deref())?;
            let secret = settings
                .auth
                .secret
                .ok_or_else(|| anyhow::anyhow!("auth.secret: not set (HERALD__AUTH__SECRET or a config file)"))?;
            let mut claims = Claims::new(&sub, now_unix() + ttl.as_secs(), publisher);
            claims.topics = (!topics.is_empty()).then_some(topics);
            println!("{}", mint_claims(secret.expose(), &claims)?);
            Ok(())
        }
        Command::Vapid { json } => {
            let key = VapidKey::generate();
            if json {
                let pair =
                    serde_json::json!({"public_key": key.public_base64url(), "private_key": key.private_base64url()});
                println!("{pair}");
            } else {
                println!(
                    "Public Key:\n{}\n\nPrivate Key:\n{}\n\nSet the private key as push.vapid_private_key \
                     (HERALD__PUSH__VAPID_PRIVATE_KEY), with push.subject.",
                    key.public_base64url(),
                    key.private_base64url()
                );
            }
            Ok(())
        }
        Command::Push { command: PushCommand::DeadLetters { limit, config } } => dead_letters(config, limit).await,
        Command::Publish { users, topic, kind, title, body, url, priority, data, idempotency_key, config } => {
            let data = data
                .map(|raw| serde_json::from_str::<serde_json::Value>(&raw))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--data is not JSON: {e}"))?;
            let mut notification = serde_json::json!({"type": kind, "title": title});
            for (field, value) in [("body", body), ("url", url), ("priority", priority)] {
                if let Some(value) = value {
                    notification[field] = value.into();
                }
            }
            if let Some(data) = data {
                notification["data"] = data;
            }
            let to = match topic {
                Some(topic) => serde_json::json!({"topic": topic}),
                None => serde_json::json!({"users": users}),
            };
            let mut request = serde_json::json!({"to": to, "notification": notification});
            if let Some(key) = idempotency_key {
                request["idempotency_key"] = key.into();
            }
            publish(config, request).await
        }
    }
}

/// `herald publish`: the request a backend would POST, checked by the
/// publish route's own rules and stored by the engine the nodes share.
async fn publish(config: Option<PathBuf>, request: serde_json::Value) -> anyhow::Result<()> {
    use crate::{
        engine::Engine,
        routes::{Audience, CheckedPublish, PublishRequest},
    };
    let settings = Settings::load(config.as_deref())?;
    if settings.engine.kind != EngineKind::Redis {
        anyhow::bail!(
            "the memory engine lives inside one running node; publish to it over HTTP \
             (POST /v1/publish), or set engine.kind = \"redis\""
        );
    }
    let request: PublishRequest =
        serde_json::from_value(request).map_err(|e| anyhow::anyhow!("invalid request: {e}"))?;
    let CheckedPublish { audience, stored, key } = request
        .check(&settings.limits.notification(), settings.limits.max_recipients)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = crate::node::Node::build(&settings).await?;
    let answer = match audience {
        Audience::Topic(topic) => {
            let published = node.engine.publish_topic(&topic, &stored, key.as_ref()).await?;
            serde_json::json!({"topic": topic.to_string(), "id": published.id.to_string(), "duplicate": published.duplicate})
        }
        Audience::Users(users) => {
            let mut results = Vec::new();
            for user in &users {
                let result = match node.engine.publish(user, &stored, key.as_ref()).await?.stored() {
                    Some(p) => {
                        serde_json::json!({"user": user.as_str(), "id": p.id.to_string(), "online": p.online, "duplicate": p.duplicate})
                    }
                    None => serde_json::json!({"user": user.as_str(), "id": null, "dropped": "preferences"}),
                };
                results.push(result);
            }
            serde_json::json!({"results": results})
        }
    };
    println!("{answer}");
    Ok(())
}

/// Reads the dead letters straight from Redis: the command runs beside the
/// nodes, not in one.
async fn dead_letters(config: Option<PathBuf>, limit: usize) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    if settings.engine.kind != EngineKind::Redis {
        anyhow::bail!(
            "the memory engine keeps its dead letters inside the running node; \
             `herald push dead-letters` reads them from Redis (engine.kind = \"redis\")"
        );
    }
    let client = redis::Client::open(settings.engine.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for letter in crate::engine::redis::read_dead_letters(&mut conn, limit).await? {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(letter.at_ms) * 1_000_000)
            .map(crate::clock::rfc3339)
            .unwrap_or_default();
        let line = serde_json::json!({
            "at": at, "user": letter.user.as_str(), "id": letter.id.to_string(),
            "endpoint": letter.endpoint, "attempts": letter.attempts, "reason": letter.reason,
        });
        println!("{line}");
    }
    Ok(())
}

async fn serve(config: Option<PathBuf>, demo: bool) -> anyhow::Result<()> {
    let mut settings = Settings::load(config.as_deref())?;
    telemetry::init(&settings.log);
    settings.demo.enabled |= demo;
    settings.validate()?;
    if settings.demo.enabled && settings.auth.secret.is_none() {
        tracing::warn!("demo mode: no auth.secret configured, generated a random one for this run");
        settings.auth.secret = Some(random_secret());
    }
    if settings.demo.enabled && !settings.push.enabled() {
        // The demo page offers push opt-in; it needs a key to subscribe with.
        let key = VapidKey::generate();
        tracing::info!(public_key = %key.public_base64url(), "demo mode: no VAPID key configured, generated one for this run");
        settings.push.vapid_private_key = Some(Secret::new(key.private_base64url()));
        if settings.push.subject.is_empty() {
            settings.push.subject = "mailto:herald-demo@localhost".to_owned();
        }
    }
    if settings.demo.enabled && settings.topics.public.is_empty() {
        // The demo page shows topics next to the inbox; with none configured
        // it would have nothing to follow.
        tracing::info!(
            topic = DEMO_TOPIC,
            "demo mode: no topics.public configured, made one topic public for this run"
        );
        settings.topics.public = vec![DEMO_TOPIC.to_owned()];
    }
    let app = Application::build(settings.clone()).await?;
    if settings.demo.enabled {
        print_demo_commands(&settings, app.local_addr())?;
    }
    app.run_until_stopped().await
}

/// The topic demo mode makes public when the config names none.
const DEMO_TOPIC: &str = "announcements";

/// 32 random bytes as 64 hex digits: a full-strength HS256 key that still
/// pastes as plain text, and passes `auth.secret`'s length check.
fn random_secret() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn print_demo_commands(settings: &Settings, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let secret = settings.auth.secret.as_ref().expect("demo mode always has a secret").expose();
    let day = Duration::from_secs(86_400);
    let user = mint_token(secret, "demo", day, false)?;
    let publisher = mint_token(secret, "backend", day, true)?;
    // A public topic needs no claim; a prefix grant (`team:*`) is no name to
    // print.
    let topic = settings.topics.public.iter().find(|name| !name.ends_with('*'));
    let topic_steps = match topic {
        Some(topic) => format!(
            r#"
3. Follow the public topic "{topic}" on the same stream (inbox and topic,
   one cursor), and broadcast to everyone who follows it:

   curl -N -H 'Accept: text/event-stream' 'http://{addr}/v1/events?topics={topic}&access_token={user}'

   curl -sS -X POST http://{addr}/v1/publish \
     -H 'Authorization: Bearer {publisher}' -H 'Content-Type: application/json' \
     -d '{{"to":{{"topic":"{topic}"}},"notification":{{"type":"news.maintenance","title":"Maintenance at 22:00"}}}}'
"#
        ),
        None => String::new(),
    };
    println!(
        r#"
Herald demo is running on http://{addr}

Open the demo notification center in a browser (two tabs show the sync):

   http://{addr}/demo

Or from a terminal:

1. In one terminal, open the stream of user "demo":

   curl -N -H 'Accept: text/event-stream' 'http://{addr}/v1/events?access_token={user}'

2. In another, publish a notification to "demo":

   curl -sS -X POST http://{addr}/v1/publish \
     -H 'Authorization: Bearer {publisher}' -H 'Content-Type: application/json' \
     -d '{{"to":{{"users":["demo"]}},"notification":{{"type":"comment.mention","title":"Mina mentioned you","body":"in Q4 plan"}}}}'
{topic_steps}
The tokens above are valid for 24 hours and signed with this run's secret.
"#
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_demo_secret_passes_validation() {
        let mut settings = Settings::with_overrides(&[("demo.enabled", "true")]).unwrap();
        settings.auth.secret = Some(random_secret());
        assert!(settings.auth.secret.as_ref().unwrap().expose().len() >= crate::config::MIN_SECRET_BYTES);
        settings.validate().unwrap();
    }
}
