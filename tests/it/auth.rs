//! Tokens: which are refused (with a JSON `401`/`403`), where a token may
//! come from, what a publisher token may do, and that none reaches the logs.
//! Public-key tokens are in `jwt_keys.rs`.

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

/// A notification's text never reaches the logs either, even at debug level:
/// not on publish, not on the stream, not when it is refused as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_text_is_never_logged() {
    let mut node = crate::helpers::HeraldProcess::start(&Engine::Memory).await;
    let alice = unique_user("alice");
    let token = user_token(&alice);
    let http = reqwest::Client::new();
    let stream = http.get(node.url("/v1/events")).query(&[("access_token", &token)]).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    node.publish(&[&alice], json!({"type": "a.b", "title": "title-canary-4821", "body": "body-canary-4821"})).await;
    // Refused: the error names the field, not its value.
    let refused = http
        .post(node.url("/v1/publish"))
        .bearer_auth(publisher_token())
        .json(&json!({"to": {"users": [alice]}, "notification": {"type": "Bad Type", "title": "refused-canary-4821"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let list = http.get(node.url("/v1/notifications")).bearer_auth(&token).send().await.unwrap();
    assert!(list.text().await.unwrap().contains("body-canary-4821"), "the notification was stored and listed");
    drop(stream);
    crate::helpers::wait_for("the access log lines", Duration::from_secs(5), async || {
        let logs = node.logs.lock().unwrap();
        (logs.iter().filter(|l| l.contains("/v1/publish")).count() >= 2
            && logs.iter().any(|l| l.contains("/v1/notifications")))
        .then_some(())
    })
    .await;
    node.kill();
    let logs = node.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("canary-4821"), "notification text leaked into the logs");
}

/// Claims of the wrong type, a token not valid yet, and tokens of several
/// megabytes are refused; the node keeps serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_claims_and_huge_tokens_are_refused() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    let sign = |claims: Value| {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(helpers::SECRET.as_bytes())).unwrap()
    };
    let exp = claims(&alice, 3600)["exp"].clone();
    for (why, bad) in [
        ("sub a number", json!({"sub": 42, "exp": exp})),
        ("sub an object", json!({"sub": {"id": alice}, "exp": exp})),
        ("sub empty", json!({"sub": "", "exp": exp})),
        ("exp a string", json!({"sub": alice, "exp": "tomorrow"})),
        ("no exp", json!({"sub": alice})),
        ("not valid yet", json!({"sub": alice, "exp": exp, "nbf": exp})),
    ] {
        expect_401(&app, Some(&sign(bad)), why).await;
    }

    // Several megabytes in the header, a URL-length one in the query:
    // refused by status, not by a dropped connection.
    let huge = format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), "A".repeat(3 << 20));
    let header = app.http.get(app.url("/v1/notifications")).bearer_auth(&huge).send().await.unwrap();
    assert!(header.status().is_client_error(), "header: {}", header.status());
    // (A URL cannot carry megabytes; this one is as long as a URL gets.)
    let long = format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), "A".repeat(60_000));
    let query = app.http.get(app.url("/v1/notifications")).query(&[("access_token", &long)]).send().await.unwrap();
    assert!(query.status().is_client_error(), "query: {}", query.status());

    // Everyone else is still served.
    let (status, _) = crate::helpers::UserApi::new(&app, &alice).get("/v1/notifications").await;
    assert_eq!(status, 200);
}
