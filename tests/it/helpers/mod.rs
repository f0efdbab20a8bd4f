//! Test helpers: real processes on loopback, cleaned up on drop.

mod api;
mod app;
mod push_service;
mod redis_server;
mod sse;

use std::time::Duration;

pub use api::UserApi;
pub use app::{Engine, HeraldProcess, Node, TestApp, publisher_token, settings, user_token};

pub use push_service::{PushService, Received, Reply};
pub use redis_server::RedisServer;
pub use sse::{Parser, SseEvent, SseStream, read_raw_events};

/// A secret long enough for `auth.secret`'s validation.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_explained(timeout, async || check().await.ok_or_else(|| format!("waiting for {what}"))).await
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with what
/// its last `Err` said was still missing.
pub async fn wait_explained<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(missing) => assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} {missing}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a signal (`"TERM"`, `"STOP"`, `"CONT"`…) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A sample's value in a Prometheus text page: `name` is the metric's name
/// with its labels as written (`herald_stream_bye_total{reason="shutdown"}`).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric `{name}` in:\n{text}"))
}

/// A user name unique to this test run.
pub fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Publishes one notification to one user over HTTP; returns its id.
pub async fn publish_to(http: &reqwest::Client, base: &str, user: &str, notification: serde_json::Value) -> String {
    let body = serde_json::json!({"to": {"users": [user]}, "notification": notification});
    let response = post_publish(http, base, &body).await;
    response["results"][0]["id"].as_str().unwrap_or_else(|| panic!("publish failed: {response}")).to_owned()
}

/// `POST /v1/publish` with `body` as a backend sends it; the answer's JSON.
pub async fn post_publish(http: &reqwest::Client, base: &str, body: &serde_json::Value) -> serde_json::Value {
    http.post(format!("{base}/v1/publish"))
        .bearer_auth(publisher_token())
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A backend's publish: `FCALL herald_publish` for `user` with the
/// notification JSON as given (not checked here: the function checks it).
/// `None` when the user's preferences drop it.
pub async fn fcall_publish(
    conn: &mut ::redis::aio::MultiplexedConnection,
    user: &str,
    notification: &str,
) -> ::redis::RedisResult<Option<String>> {
    let key = herald::engine::redis::user_base(&herald::domain::UserId::parse(user).expect("a valid user id"));
    fcall_publish_to_key(conn, &key, notification).await
}

/// `FCALL herald_publish` with the key as given, valid or not, and the
/// notification as text or raw bytes.
pub async fn fcall_publish_to_key(
    conn: &mut ::redis::aio::MultiplexedConnection,
    key: &str,
    notification: impl ::redis::ToRedisArgs,
) -> ::redis::RedisResult<Option<String>> {
    ::redis::cmd("FCALL").arg("herald_publish").arg(1).arg(key).arg(notification).query_async(conn).await
}

pub fn notification(title: &str) -> serde_json::Value {
    serde_json::json!({"type": "test.event", "title": title})
}

/// A client that behaves like `EventSource`: it keeps a user's stream open,
/// and when the stream ends or the node dies, reconnects (to the next URL in
/// its list) with `Last-Event-ID`. It records every notification id it gets.
pub struct Follower {
    pub ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub reconnects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Streams opened: the response head arrived, so the stream's starting
    /// point is fixed and every later notification belongs to it.
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    pub fn start(user: &str, bases: Vec<String>) -> Self {
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let token = user_token(user);
        let (ids2, reconnects2, opened2) = (ids.clone(), reconnects.clone(), opened.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut cursor: Option<String> = None;
            let mut nodes = bases.iter().cycle();
            let mut base = nodes.next().expect("at least one node");
            // Bounded: a test never loops forever on a dead cluster.
            for attempt in 0..400 {
                if attempt > 0 {
                    reconnects2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let mut request = http.get(format!("{base}/v1/events")).bearer_auth(&token);
                if let Some(c) = &cursor {
                    request = request.header("Last-Event-ID", c);
                }
                let Ok(mut stream) = SseStream::open(request).await else {
                    base = nodes.next().expect("cycle");
                    continue;
                };
                opened2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), stream.next(Duration::from_secs(3600))).await {
                        Ok(Some(event)) if event.event == "notification" => {
                            let id = event.id.unwrap();
                            ids2.lock().unwrap().push(id.clone());
                            cursor = Some(id);
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
        });
        Self { ids, reconnects, opened, task }
    }

    /// Waits until the first stream is open. A node counts a stream as open
    /// (`herald_streams_open`) from the moment it registers it, before the
    /// stream's starting point is fixed: a notification published in between
    /// is history to that stream, not a live event. The client knows the
    /// stream is live once the response head arrives.
    pub async fn wait_until_open(&self, timeout: Duration) {
        wait_for("the follower's stream to open", timeout, async || {
            (self.opened.load(std::sync::atomic::Ordering::Relaxed) >= 1).then_some(())
        })
        .await
    }

    pub fn received(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Waits until `n` notifications have arrived; a timeout says how many
    /// did, and after how many reconnects.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_explained(timeout, async || {
            let ids = self.received();
            if ids.len() >= n {
                return Ok(ids);
            }
            Err(format!(
                "waiting for {n} notifications: {} arrived (last {:?}), {}",
                ids.len(),
                ids.last(),
                self.tries()
            ))
        })
        .await
    }

    /// Waits until every id of `expected` has arrived; a timeout lists the
    /// missing ones, with their places among the expected.
    pub async fn wait_for_all(&self, expected: &[String], timeout: Duration) -> Vec<String> {
        wait_explained(timeout, async || {
            let ids = self.received();
            let missing: Vec<(usize, &String)> =
                expected.iter().enumerate().filter(|(_, id)| !ids.contains(id)).collect();
            if missing.is_empty() {
                return Ok(ids);
            }
            let first = &missing[..missing.len().min(10)];
            Err(format!(
                "for {} ids: {} arrived, {}; missing (index, id): {first:?}",
                expected.len(),
                ids.len(),
                self.tries()
            ))
        })
        .await
    }

    fn tries(&self) -> String {
        let opened = self.opened.load(std::sync::atomic::Ordering::Relaxed);
        format!("{opened} streams opened, {} reconnects", self.reconnects.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}
