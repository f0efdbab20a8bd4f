//! The per-user request rate (`limits.user_requests_per_second`, burst
//! `limits.user_burst`): one user's requests and stream opens must not stall
//! the engine every user shares. Per node, keyed by the token's `sub`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Engine, Node, TestApp, UserApi, notification, unique_user, user_token, wait_for};

/// One token a second, two at once: a slow test machine cannot earn a third
/// back between three requests sent one after another (that takes a second).
const SMALL: &[(&str, &str)] = &[("limits.user_requests_per_second", "1"), ("limits.user_burst", "2")];

async fn send(app: &TestApp, method: Method, path: &str, user: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method.clone(), app.url(path)).bearer_auth(user_token(user));
    if method == Method::POST {
        request = request.json(&json!({"all": true}));
    }
    request.send().await.unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_rate_gets_429_and_others_do_not() {
    let app = TestApp::spawn_with(&Engine::Memory, SMALL).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));

    assert_eq!(send(&app, Method::GET, "/v1/notifications", &alice).await.status(), 200);
    let stream = send(&app, Method::GET, "/v1/events", &alice).await;
    assert_eq!(stream.status(), 200, "a stream open takes from the same budget");
    let refused = send(&app, Method::GET, "/v1/events", &alice).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("limits.user_requests_per_second")), "{body}");
    drop(stream);

    assert_eq!(send(&app, Method::GET, "/v1/notifications/unread_count", &bob).await.status(), 200, "per user");
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric(&text, "herald_user_rate_limited_total") >= 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_changes_nothing() {
    let app = TestApp::spawn_with(&Engine::Memory, SMALL).await;
    let carol = unique_user("carol");
    app.publish(&[&carol], notification("unread")).await;
    for _ in 0..2 {
        assert_eq!(send(&app, Method::GET, "/v1/notifications/unread_count", &carol).await.status(), 200);
    }
    assert_eq!(send(&app, Method::POST, "/v1/notifications/read", &carol).await.status(), 429);

    // A refused request takes nothing from the budget, so asking again
    // until the budget refills is bounded by its refill (one second).
    let count = wait_for("carol's budget to refill", Duration::from_secs(5), async || {
        let response = send(&app, Method::GET, "/v1/notifications/unread_count", &carol).await;
        (response.status() == StatusCode::OK).then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(count, json!({"count": 1}), "the refused read-all read nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_limit_off() {
    let app =
        TestApp::spawn_with(&Engine::Memory, &[("limits.user_requests_per_second", "0"), ("limits.user_burst", "1")])
            .await;
    let dave = UserApi::new(&app, &unique_user("dave"));
    for i in 0..10 {
        assert_eq!(dave.get("/v1/notifications/unread_count").await.0, 200, "request {i}");
    }
}
