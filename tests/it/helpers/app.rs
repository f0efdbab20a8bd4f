use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use herald::{
    app::{AppHandle, Application},
    auth::mint_token,
    config::Settings,
};
use serde_json::{Value, json};

use super::{SECRET, SseStream, wait_for};

/// The engine a test runs against.
#[derive(Clone, Debug)]
pub enum Engine {
    Memory,
    Redis(String),
}

/// A gateway running in this process on a free loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub handle: AppHandle,
    pub http: reqwest::Client,
}

pub fn base_overrides(engine: &Engine) -> Vec<(String, String)> {
    let mut o = vec![
        ("server.listen".into(), "127.0.0.1:0".into()),
        ("server.workers".into(), "2".into()),
        ("auth.secret".into(), SECRET.into()),
        ("log.level".into(), "warn".into()),
    ];
    match engine {
        Engine::Memory => o.push(("engine.kind".into(), "memory".into())),
        Engine::Redis(url) => {
            o.push(("engine.kind".into(), "redis".into()));
            o.push(("engine.redis_url".into(), url.clone()));
            o.push(("engine.pubsub_ping_interval".into(), "200ms".into()));
        }
    }
    o
}

pub fn settings(engine: &Engine, extra: &[(&str, &str)]) -> Settings {
    let mut overrides = base_overrides(engine);
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Settings::with_overrides(&pairs).expect("test settings are valid")
}

impl TestApp {
    pub async fn spawn(engine: &Engine) -> Self {
        Self::spawn_with(engine, &[]).await
    }

    pub async fn spawn_with(engine: &Engine, extra: &[(&str, &str)]) -> Self {
        let test_app = Self::start_with(engine, extra).await;
        test_app.wait_ready().await;
        test_app
    }

    /// Like [`TestApp::spawn_with`], without waiting for `/readyz`: for a
    /// node that is meant not to be ready. It answers HTTP on return (the
    /// listener is bound in `build`).
    pub async fn start_with(engine: &Engine, extra: &[(&str, &str)]) -> Self {
        if std::env::var_os("HERALD_TEST_LOG").is_some() {
            herald::telemetry::init(&settings(engine, extra).log);
        }
        let app = Application::build(settings(engine, extra)).await.expect("app builds");
        let addr = app.local_addr();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self { addr, handle, http: reqwest::Client::new() }
    }

    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        let http = self.http.clone();
        wait_for("the node to be ready", Duration::from_secs(10), async || {
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// What every node handle offers, in-process or child process.
pub trait Node {
    fn addr(&self) -> SocketAddr;

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// Publishes `notification` to `users` over HTTP; returns the results.
    fn publish(&self, users: &[&str], notification: Value) -> impl std::future::Future<Output = Vec<Value>> {
        let token = publisher_token();
        let url = self.url("/v1/publish");
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"to": {"users": users}, "notification": notification}))
                .send()
                .await
                .expect("publish request");
            assert_eq!(response.status(), 202, "publish failed: {}", response.text().await.unwrap_or_default());
            let body: Value = response.json().await.unwrap();
            body["results"].as_array().unwrap().clone()
        }
    }

    /// Opens a stream of `user`, resuming after `cursor` if given.
    fn stream(&self, user: &str, cursor: Option<&str>) -> impl std::future::Future<Output = SseStream> {
        let mut request = reqwest::Client::new().get(self.url("/v1/events")).bearer_auth(user_token(user));
        if let Some(cursor) = cursor {
            request = request.header("Last-Event-ID", cursor);
        }
        async move {
            match SseStream::open(request).await {
                Ok(stream) => stream,
                Err(why) => panic!("stream refused: {why}"),
            }
        }
    }

    /// Open streams on this node, from `/readyz`.
    fn streams_open(&self) -> impl std::future::Future<Output = Option<u64>> {
        let url = self.url("/readyz");
        async move {
            let body: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            body["streams"].as_u64()
        }
    }
}

impl Node for TestApp {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

pub fn user_token(user: &str) -> String {
    mint_token(SECRET, user, Duration::from_secs(3600), false).unwrap()
}

pub fn publisher_token() -> String {
    mint_token(SECRET, "test-backend", Duration::from_secs(3600), true).unwrap()
}

/// A gateway as a child process of the real `herald` binary (for SIGKILL).
pub struct HeraldProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Every line the process logged (JSON).
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HeraldProcess {
    pub async fn start(engine: &Engine) -> Self {
        Self::start_with(engine, &[], &[]).await
    }

    /// `herald serve` with `settings` (dotted keys, as for
    /// [`TestApp::spawn_with`]) over the test defaults.
    pub async fn start_with_settings(engine: &Engine, settings: &[(String, String)]) -> Self {
        let env: Vec<(String, String)> = settings.iter().map(|(key, value)| (env_var(key), value.clone())).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_with(engine, &[], &env).await
    }

    /// `herald serve <args>`, with `env` (`HERALD__…` variables) over the
    /// test defaults.
    pub async fn start_with(engine: &Engine, args: &[&str], env: &[(&str, &str)]) -> Self {
        // HERALD_BIN runs another build (the fault suite's figures are
        // measured on a release build: docs/RELIABILITY.md).
        let bin = std::env::var("HERALD_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_herald").to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("serve").args(args).stdout(Stdio::null()).stderr(Stdio::piped()).env("HERALD__LOG__FORMAT", "json");
        for (key, value) in base_overrides(engine) {
            cmd.env(env_var(&key), value);
        }
        // The start-up line is logged at info; debug shows what a verbose
        // operator would see (tests check that no token is in it). `env` may
        // set another level.
        cmd.env("HERALD__LOG__LEVEL", "debug,actix_server=warn,actix_http=warn,mio=warn");
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("herald binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        // Every line is kept; the start-up line names the bound address
        // (port 0 was asked for).
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "herald serving"
                    && let Some(tx) = addr_tx.take()
                {
                    let mut addr = v["listen"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    // Listening on every address (0.0.0.0): reach it on loopback.
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(20), addr_rx).await {
            Ok(Ok(addr)) => addr,
            failed => {
                // Not yet owned by a HeraldProcess, whose drop would kill it.
                let _ = child.kill();
                let _ = child.wait();
                panic!("herald did not log its listen address within 20 s ({failed:?}): {:?}", logs.lock().unwrap());
            }
        };
        let process = Self { addr, child, logs };
        let url = process.url("/readyz");
        wait_for("the child node to be ready", Duration::from_secs(10), async || {
            reqwest::get(&url).await.ok()?.status().is_success().then_some(())
        })
        .await;
        process
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        super::signal(self.child.id(), "TERM");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("the node to exit", timeout, async || child.try_wait().unwrap()).await
    }
}

impl Node for HeraldProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment variable that sets a dotted setting: `push.ttl` is
/// `HERALD__PUSH__TTL`.
fn env_var(key: &str) -> String {
    format!("HERALD__{}", key.replace('.', "__").to_uppercase())
}
