//! Bad input gets a clear error and changes nothing.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{self, Engine, Node, TestApp, notification, publisher_token, unique_user, user_token};

fn claims(sub: &str, exp_offset: i64) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    json!({"sub": sub, "exp": now + exp_offset})
}

fn b64(bytes: &[u8]) -> String {
    use std::fmt::Write;
    // base64url without padding, enough for a hand-built `alg: none` token.
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = write!(out, "{}", T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn expect_401(app: &TestApp, token: Option<&str>, why: &str) {
    let mut request = reqwest::Client::new().get(app.url("/v1/events"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 401, "{why}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{why}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_with_a_json_error() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    expect_401(&app, None, "missing").await;
    expect_401(&app, Some("garbage"), "garbage").await;
    let none =
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims(&alice, 3600).to_string().as_bytes()));
    expect_401(&app, Some(&none), "alg none").await;
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &claims(&alice, 3600),
        &EncodingKey::from_secret(b"another-secret-entirely-0123456789"),
    )
    .unwrap();
    expect_401(&app, Some(&wrong_key), "wrong key").await;
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &claims(&alice, -120),
        &EncodingKey::from_secret(helpers::SECRET.as_bytes()),
    )
    .unwrap();
    expect_401(&app, Some(&expired), "expired").await;
    // HS512 is a fine algorithm, but not one this node allows.
    let other_alg = encode(
        &Header::new(Algorithm::HS512),
        &claims(&alice, 3600),
        &EncodingKey::from_secret(helpers::SECRET.as_bytes()),
    )
    .unwrap();
    expect_401(&app, Some(&other_alg), "algorithm not allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_may_come_as_header_query_or_cookie() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    let token = user_token(&alice);
    let http = reqwest::Client::new();
    let by_query = http.get(app.url("/v1/events")).query(&[("access_token", &token)]).send().await.unwrap();
    assert_eq!(by_query.status(), 200);
    let by_cookie =
        http.get(app.url("/v1/events")).header("Cookie", format!("herald_token={token}")).send().await.unwrap();
    assert_eq!(by_cookie.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_needs_a_publisher_token() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let response = reqwest::Client::new()
        .post(app.url("/v1/publish"))
        .bearer_auth(user_token("alice"))
        .json(&json!({"to": {"users": ["alice"]}, "notification": notification("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}

/// A publisher token names a backend, not a user: with it, a leaked
/// backend credential would also read and change that `sub`'s inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_token_is_not_a_user_token() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let http = reqwest::Client::new();
    let requests = [
        http.get(app.url("/v1/events")).header("Accept", "text/event-stream"),
        http.get(app.url("/v1/notifications")),
        http.get(app.url("/v1/notifications/unread_count")),
        http.post(app.url("/v1/notifications/read")).json(&json!({"all": true})),
        http.put(app.url("/v1/preferences")).json(&json!({"sound": false})),
    ];
    for request in requests {
        let response = request.bearer_auth(publisher_token()).send().await.unwrap();
        let what = format!("{} {}", response.status(), response.url().path());
        assert_eq!(response.status(), 403, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{what}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("a publisher token cannot be used as a user token"), "{what}: {message}");
    }
    // Nothing was changed for the publisher's `sub` either.
    let (_, prefs) = crate::helpers::UserApi::new(&app, "test-backend").get("/v1/preferences").await;
    assert_ne!(prefs["sound"], false, "{prefs}");
}

crate::on_both_engines!(
    bad_publish_bodies_are_refused_and_store_nothing,
    pretty_printed_data_keeps_each_event_on_one_data_line
);

async fn bad_publish_bodies_are_refused_and_store_nothing(engine: Engine) {
    let app =
        TestApp::spawn_with(&engine, &[("server.max_body_bytes", "4096"), ("limits.max_payload_bytes", "1024")]).await;
    let alice = unique_user("alice");
    let http = reqwest::Client::new();
    let post = |body: String, content_type: &'static str| {
        http.post(app.url("/v1/publish"))
            .bearer_auth(publisher_token())
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let valid = |n: Value| json!({"to": {"users": [alice]}, "notification": n}).to_string();
    let cases: Vec<(String, &str, u16)> = vec![
        ("{not json".into(), "application/json", 400),
        (json!({"to": {"users": [alice]}}).to_string(), "application/json", 400),
        (valid(json!({"type": "a", "title": "t", "extra": 1})), "application/json", 400),
        (valid(json!({"type": "a", "title": "t", "priority": "urgent"})), "application/json", 400),
        (valid(json!({"type": "Not A Type", "title": "t"})), "application/json", 422),
        (valid(json!({"type": "a", "title": ""})), "application/json", 422),
        // Over the body limit, then over the notification payload limit.
        (valid(json!({"type": "a", "title": "t", "data": "x".repeat(10_000)})), "application/json", 413),
        (valid(json!({"type": "a", "title": "t", "data": "x".repeat(2_000)})), "application/json", 413),
        (valid(notification("t")), "text/plain", 415),
        (json!({"to": {"users": []}, "notification": notification("t")}).to_string(), "application/json", 422),
        (
            json!({"to": {"users": ["bad user"]}, "notification": notification("t")}).to_string(),
            "application/json",
            422,
        ),
    ];
    for (body, content_type, status) in cases {
        let response = post(body.clone(), content_type).await.unwrap();
        assert_eq!(response.status(), status, "{}", &body[..body.len().min(120)]);
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    // Nothing was stored: the first entry in history is the good one below.
    let good = app.publish(&[&alice], notification("good")).await;
    let mut stream = app.stream(&alice, Some("0-0")).await;
    let first = stream.next_of("notification", Duration::from_secs(5)).await;
    assert_eq!(first.json()["title"], "good");
    assert_eq!(first.id.as_deref(), good[0]["id"].as_str());
}

/// Tokens never reach the logs, even at debug level with access logs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_logged() {
    let mut node = crate::helpers::HeraldProcess::start(&Engine::Memory).await;
    let alice = unique_user("alice");
    let token = user_token(&alice);
    let http = reqwest::Client::new();
    let stream = http.get(node.url("/v1/events")).query(&[("access_token", &token)]).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    let bad = http.get(node.url("/v1/events")).bearer_auth(format!("{token}x")).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let publisher = publisher_token();
    node.publish(&[&alice], notification("hi")).await;
    // Both streams' lines and the publish's: a leak in any must be seen.
    crate::helpers::wait_for("the access log lines", Duration::from_secs(5), async || {
        let logs = node.logs.lock().unwrap();
        let streams = logs.iter().filter(|l| l.contains("/v1/events")).count();
        (streams >= 2 && logs.iter().any(|l| l.contains("/v1/publish"))).then_some(())
    })
    .await;
    node.kill();
    let logs = node.logs.lock().unwrap().join("\n");
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    for secret in [signature(&token), signature(&publisher)] {
        assert!(!logs.contains(&secret), "a token leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_actix_answers_itself_have_the_json_body_too() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let http = reqwest::Client::new();
    let big = format!(r#"{{"sound": true, "pad": "{}"}}"#, "x".repeat(70_000));
    let r = http
        .put(app.url("/v1/preferences"))
        .bearer_auth(user_token("alice"))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let r = http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");
}

async fn pretty_printed_data_keeps_each_event_on_one_data_line(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let mut stream = app.stream(&alice, None).await;
    let body = format!(
        "{{\"to\": {{\"users\": [\"{alice}\"]}},\n \"notification\": {{\"type\": \"a\", \"title\": \"t\",\n  \"data\": {{\n    \"k\": \"line\\nbreak\"\r\n  }}}}}}"
    );
    let r = reqwest::Client::new()
        .post(app.url("/v1/publish"))
        .bearer_auth(publisher_token())
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let event = stream.next_of("notification", Duration::from_secs(5)).await;
    // The parser joins several `data:` lines with a newline: one line, none.
    assert!(!event.data.contains('\n'), "the event spans several data lines: {:?}", event.data);
    assert_eq!(event.json()["data"], json!({"k": "line\nbreak"}));
}
