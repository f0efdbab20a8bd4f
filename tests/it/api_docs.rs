//! Executes every example in docs/API.md, in order, against a real gateway,
//! so the API reference cannot drift from the server.
//!
//! The document is the test script (see `doc.rs` for what is executed and
//! `pattern.rs` for how responses are compared). Placeholders in requests:
//! `{{alice_token}}` is a user token for `alice` (any name works),
//! `{{carol_token_expiring_in_3s}}` one that expires that soon,
//! `{{publisher_token}}` a token with the `publish` scope; any other
//! `{{name}}` is a value captured from an earlier response.
//!
//! Each `<!-- test: server -->` gets a fresh gateway with fresh storage (a
//! new `redis-server` on the Redis engine), so both engines see the same
//! history and the document reads the same on both.

mod doc;
mod pattern;

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use tokio::{sync::mpsc, task::JoinHandle};

use self::{
    doc::{After, Located, Request, Response, Step},
    pattern::{Vars, is_comment_only, match_body, match_message, match_str},
};
use crate::helpers::{Engine, RedisServer, SECRET, TestApp, publisher_token, user_token};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
/// Longest wait for one documented SSE message (token expiry takes ~3 s).
const WAIT: Duration = Duration::from_secs(5);
/// How long a stream must stay silent when the docs say nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

crate::on_both_engines!(every_example_in_api_md_holds);

async fn every_example_in_api_md_holds(engine: Engine) {
    let markdown = std::fs::read_to_string(DOC).expect("docs/API.md is readable");
    let steps = doc::parse(&markdown);
    // A parser that silently finds nothing would pass vacuously.
    let exchanges = steps.iter().filter(|s| matches!(s.step, Step::Exchange { .. })).count();
    assert!(exchanges >= 40, "only {exchanges} request/response examples found in docs/API.md");

    let mut runner = Runner::start(engine).await;
    for Located { line, step } in steps {
        if let Err(why) = runner.run(step).await {
            panic!("docs/API.md:{line}: this example does not hold:\n  {why}");
        }
    }
    if let Err(why) = runner.all_streams_quiet().await {
        panic!("docs/API.md, at the end: {why}");
    }
    runner.finish().await;
}

/// An open event stream, read by a background task into whole messages (the
/// text between blank lines). Comments are kept: the docs show keep-alives.
struct EventStream {
    messages: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl EventStream {
    fn new(response: reqwest::Response) -> Self {
        let (tx, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let message: Vec<u8> = buf.drain(..end + 2).collect();
                    if tx.send(String::from_utf8_lossy(&message).trim_end().to_owned()).is_err() {
                        return;
                    }
                }
            }
            // Dropping `tx` tells the reader the stream ended.
        });
        Self { messages, task }
    }

    /// The next message other than a keep-alive comment (which arrive on a
    /// timer, so the docs cannot place them), unless `comments` are wanted.
    /// `None` when the stream ended.
    async fn next(&mut self, comments: bool, wait: Duration) -> Result<Option<String>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Err(_) => return Err(format!("nothing arrived within {wait:?}")),
                Ok(Some(m)) if !comments && is_comment_only(&m) => continue,
                Ok(m) => return Ok(m),
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Runner {
    engine: Engine,
    app: TestApp,
    /// Redis servers started for `<!-- test: server -->` (each gateway gets
    /// fresh storage on both engines).
    redis: Vec<RedisServer>,
    http: reqwest::Client,
    vars: Vars,
    streams: HashMap<String, EventStream>,
    shutdown: Option<JoinHandle<()>>,
}

impl Runner {
    async fn start(engine: Engine) -> Self {
        let app = TestApp::spawn(&engine).await;
        let http = reqwest::Client::new();
        Self { engine, app, redis: Vec::new(), http, vars: Vars::new(), streams: HashMap::new(), shutdown: None }
    }

    async fn run(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Exchange { request, response } => self.exchange(request, response).await,
            Step::Events { stream, messages, after } => self.events(&stream, &messages, after).await,
            Step::Server { settings } => {
                // Whatever the old gateway's streams still had to say must
                // have been documented before moving on.
                self.all_streams_quiet().await?;
                self.streams.clear();
                let engine = match &self.engine {
                    Engine::Memory => Engine::Memory,
                    Engine::Redis(_) => {
                        let server = RedisServer::start();
                        let url = server.url();
                        self.redis.push(server);
                        Engine::Redis(url)
                    }
                };
                let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.app = TestApp::spawn_with(&engine, &settings).await;
                Ok(())
            }
            Step::Shutdown => {
                let handle = self.app.handle.clone();
                self.shutdown = Some(tokio::spawn(async move { handle.shutdown().await }));
                Ok(())
            }
        }
    }

    /// `{{name}}` in a request: a minted token or a captured value.
    fn expand(&mut self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let len = rest[open..].find("}}").ok_or_else(|| format!("unclosed {{{{ in `{text}`"))?;
            let name = rest[open + 2..open + len].trim();
            out.push_str(&rest[..open]);
            out.push_str(&self.value(name).ok_or_else(|| format!("`{{{{{name}}}}}` is not known at this point"))?);
            rest = &rest[open + len + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn value(&mut self, name: &str) -> Option<String> {
        if let Some(v) = self.vars.get(name) {
            return Some(v.clone());
        }
        let token = if name == "publisher_token" {
            publisher_token()
        } else if let Some((user, ttl)) = name.split_once("_token_expiring_in_") {
            let seconds = ttl.strip_suffix('s')?.parse().ok()?;
            herald::auth::mint_token(SECRET, user, Duration::from_secs(seconds), false).ok()?
        } else {
            user_token(name.strip_suffix("_token")?)
        };
        self.vars.insert(name.to_owned(), token.clone());
        Some(token)
    }

    async fn exchange(&mut self, request: Request, expected: Response) -> Result<(), String> {
        let method = Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
        let target = self.expand(&request.target)?;
        let url = self.app.url(&target);
        let mut builder = self.http.request(method, url);
        for (name, value) in &request.headers {
            builder = builder.header(name, self.expand(value)?);
        }
        if !request.body.is_empty() {
            builder = builder.body(self.expand(&request.body)?);
        }
        let response = builder.send().await.map_err(|e| format!("request failed: {e}"))?;

        let status = response.status();
        let documented = StatusCode::from_u16(expected.status).map_err(|e| e.to_string())?;
        if status != documented {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("expected status {documented}, got {status}: {body}"));
        }
        // The reason phrase is prose, but it should still be the right one.
        if Some(expected.reason.as_str()) != status.canonical_reason() {
            return Err(format!("`{}` is not the reason phrase of {}", expected.reason, status.as_u16()));
        }
        for (name, pattern) in &expected.headers {
            let actual = response.headers().get(name).map(|v| v.to_str().unwrap_or("<not text>").to_owned());
            let actual = actual.ok_or_else(|| format!("header `{name}` is missing"))?;
            match_str(pattern, &actual, &mut self.vars).map_err(|e| format!("header `{name}`: {e}"))?;
        }

        let is_stream = response.headers().get("content-type").is_some_and(|v| v == "text/event-stream");
        if !is_stream {
            let body = response.text().await.map_err(|e| e.to_string())?;
            return match_body(&expected.body, &body, &mut self.vars);
        }
        let name = expected.stream.ok_or("an event stream response names its stream: ```http <name>")?;
        self.streams.insert(name.clone(), EventStream::new(response));
        let messages: Vec<&str> = expected.body.lines().collect();
        self.events(&name, &doc::messages(&messages), expected.after).await
    }

    async fn events(&mut self, name: &str, messages: &[String], after: After) -> Result<(), String> {
        let stream = self.streams.get_mut(name).ok_or_else(|| format!("no open stream `{name}`"))?;
        for (i, expected) in messages.iter().enumerate() {
            let what = format!("stream `{name}`, message {} of this block", i + 1);
            match stream.next(is_comment_only(expected), WAIT).await {
                Ok(Some(actual)) => match_message(expected, &actual, &mut self.vars),
                Ok(None) => Err("the stream ended".into()),
                Err(e) => Err(e),
            }
            .map_err(|e| format!("{what}: {e}"))?;
        }
        match after {
            After::StaysOpen => {}
            After::Ends => match stream.next(false, WAIT).await {
                Ok(None) => {
                    self.streams.remove(name);
                }
                Ok(Some(m)) => return Err(format!("stream `{name}` should end, but sent:\n{m}")),
                Err(e) => return Err(format!("stream `{name}` should end: {e}")),
            },
            After::Closed => {
                self.streams.remove(name);
            }
        }
        Ok(())
    }

    /// Every open stream has nothing undocumented waiting: a message the
    /// server sent that the docs do not show fails the test.
    async fn all_streams_quiet(&mut self) -> Result<(), String> {
        tokio::time::sleep(QUIET).await;
        for (name, stream) in &mut self.streams {
            match stream.next(false, Duration::from_millis(1)).await {
                Ok(Some(m)) => return Err(format!("stream `{name}` got a message the docs do not show:\n{m}")),
                Ok(None) => return Err(format!("stream `{name}` ended, but the docs do not say so")),
                Err(_) => {} // silent, as documented
            }
        }
        Ok(())
    }

    async fn finish(mut self) {
        self.streams.clear();
        if let Some(shutdown) = self.shutdown.take() {
            tokio::time::timeout(WAIT, shutdown).await.expect("the documented shutdown completes").unwrap();
        }
    }
}
