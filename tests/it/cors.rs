//! `server.cors.allowed_origins` lets pages on other origins call the API,
//! and no other origin.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Engine, TestApp, unique_user, user_token};

const APP_ORIGIN: &str = "http://127.0.0.1:5173";
const OTHER_ORIGIN: &str = "http://127.0.0.1:6666";

/// A preflight like the one a browser sends before a call with a token header.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url("/v1/notifications"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_may_call_the_api_and_others_may_not() {
    let app = TestApp::spawn_with(&Engine::Memory, &[("server.cors.allowed_origins", APP_ORIGIN)]).await;
    let token = user_token(&unique_user("alice"));

    let allowed = preflight(&app, APP_ORIGIN).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], APP_ORIGIN);
    let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    assert!(allowed.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert!(allowed.headers().get("access-control-allow-credentials").is_none(), "no cookies cross-origin");

    let refused = preflight(&app, OTHER_ORIGIN).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cors_refused", "{body}");

    // The call itself: the listed origin may read the answer; another
    // origin's answer lacks the header, so its browser withholds it.
    let call = |origin: &'static str| {
        app.http.get(app.url("/v1/notifications/unread_count")).bearer_auth(&token).header("Origin", origin).send()
    };
    let answer = call(APP_ORIGIN).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], APP_ORIGIN);
    let unlisted = call(OTHER_ORIGIN).await.unwrap();
    assert!(unlisted.headers().get("access-control-allow-origin").is_none());
    // The stream too (EventSource sends Origin cross-origin).
    let stream = app
        .http
        .get(app.url(&format!("/v1/events?access_token={token}")))
        .header("Origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["access-control-allow-origin"], APP_ORIGIN);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_listed_origins_no_cross_origin_call_is_granted() {
    let app = TestApp::spawn(&Engine::Memory).await;

    let refused = preflight(&app, APP_ORIGIN).await;

    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    assert_ne!(body["error"]["code"], Value::Null, "an unknown OPTIONS gets Herald's JSON error: {body}");
}
