//! Demo mode: `/demo` and `/demo/session` exist only when it is on, the page
//! is served as a strict, self-contained document, and a session's tokens
//! open the stream and publish. (The page itself is tested in a real browser:
//! tests/browser/.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{Engine, SseStream, TestApp, unique_user};

const WAIT: Duration = Duration::from_secs(5);
const DEMO: &[(&str, &str)] = &[("demo.enabled", "true"), ("demo.session_ttl", "10m")];

crate::on_both_engines!(a_session_opens_the_stream_and_publishes);

async fn new_session(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let response = app.http.post(app.url("/demo/session")).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_demo_mode_there_is_no_demo() {
    let app = TestApp::spawn(&Engine::Memory).await;

    let page = app.http.get(app.url("/demo")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "the JSON 404 of any unknown path");
    let (status, body) = new_session(&app, json!({"user": "alice"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.get("token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_the_page_under_a_strict_policy_and_uncached() {
    let app = TestApp::spawn_with(&Engine::Memory, DEMO).await;

    let page = app.http.get(app.url("/demo")).send().await.unwrap();

    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-cache");
    let policy = header("content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
        assert!(policy.contains(directive), "CSP lacks `{directive}`: {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/demo/demo.js") && html.contains("/demo/demo.css"), "{html}");
    // Only the page's own session endpoint exists, and only for POST.
    assert_eq!(app.http.get(app.url("/demo/session")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_the_pages_script_style_and_service_worker() {
    let app = TestApp::spawn_with(&Engine::Memory, DEMO).await;
    let plain = TestApp::spawn(&Engine::Memory).await;

    for (path, content_type) in [
        ("/demo/demo.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "text/css; charset=utf-8"),
        ("/demo/sw.js", "text/javascript; charset=utf-8"),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{path}");
        assert!(!response.text().await.unwrap().is_empty(), "{path}");
        assert_eq!(plain.http.get(plain.url(path)).send().await.unwrap().status(), 404, "{path} outside demo mode");
    }
    // The worker may control `/demo` itself, above its own directory.
    let worker = app.http.get(app.url("/demo/sw.js")).send().await.unwrap();
    assert_eq!(worker.headers()["service-worker-allowed"], "/demo");
    assert!(worker.text().await.unwrap().contains("addEventListener('push'"));
}

async fn a_session_opens_the_stream_and_publishes(engine: Engine) {
    let app = TestApp::spawn_with(&engine, DEMO).await;
    let alice = unique_user("alice");

    let before = OffsetDateTime::now_utc();
    let (status, session) = new_session(&app, json!({"user": alice})).await;

    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"], alice.as_str());
    let expires_at = OffsetDateTime::parse(session["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let ttl = expires_at - before;
    assert!(ttl > time::Duration::minutes(9) && ttl <= time::Duration::minutes(10) + time::Duration::SECOND, "{ttl}");
    let token = session["token"].as_str().unwrap();
    let publisher_token = session["publisher_token"].as_str().unwrap();

    // The user token opens the user's stream the way the page does.
    let mut stream = SseStream::open(app.http.get(app.url(&format!("/v1/events?access_token={token}"))))
        .await
        .expect("the session's token opens the stream");
    assert_eq!(stream.next_of("unread", WAIT).await.json(), json!({"count": 0}));
    // The publisher token publishes; the user token may not.
    let publish = |token: &str| {
        app.http.post(app.url("/v1/publish")).bearer_auth(token).json(&json!({
            "to": {"users": [alice]},
            "notification": {"type": "demo.test", "title": "From the demo"}
        }))
    };
    assert_eq!(publish(token).send().await.unwrap().status(), 403);
    let response = publish(publisher_token).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let results: Value = response.json().await.unwrap();
    let id = results["results"][0]["id"].as_str().unwrap().to_owned();
    let notification = stream.next_of("notification", WAIT).await;
    assert_eq!(notification.id.as_deref(), Some(id.as_str()));
    assert_eq!(notification.json()["title"], "From the demo");
    // And it reaches the user API too.
    let list: Value =
        app.http.get(app.url("/v1/notifications")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_user_id_gets_400_and_no_token() {
    let app = TestApp::spawn_with(&Engine::Memory, DEMO).await;

    for (user, why) in [
        ("", "user: user id is empty"),
        ("two words", "user: user id must not contain whitespace, control characters or braces"),
        ("a}b", "user: user id must not contain whitespace, control characters or braces"),
        (&"x".repeat(129), "user: user id is longer than 128 bytes"),
    ] {
        let (status, body) = new_session(&app, json!({"user": user})).await;
        assert_eq!(status, 400, "{user:?}: {body}");
        assert_eq!(body, json!({"error": {"code": "bad_user", "message": why}}), "{user:?}");
    }
    // A wrong shape is refused like any other body.
    let (status, body) = new_session(&app, json!({"usr": "alice"})).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body.get("token").is_none());
    let response = app.http.post(app.url("/demo/session")).body(r#"{"user":"alice"}"#).send().await.unwrap();
    assert_eq!(response.status(), 415);
}

/// A demo node must be able to sign its sessions: building one without a
/// secret fails, naming it (`serve --demo` generates one first, and
/// `Settings::validate` makes demo mode allow HS256, so the authenticator
/// requires the secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_node_without_a_secret_does_not_start() {
    let settings = herald::config::Settings::with_overrides(&[("demo.enabled", "true")]).unwrap();
    let err = herald::app::Application::build(settings).await.err().expect("the build must fail");
    assert!(err.to_string().starts_with("auth.secret:"), "{err}");
}

/// `serve --demo` offers the page a topic to follow: the configured public
/// names (not prefix grants), or `announcements` when the config names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_session_names_the_public_topics() {
    use crate::helpers::{HeraldProcess, Node as _};

    let cases: [(&[(&str, &str)], Value); 2] =
        [(&[], json!(["announcements"])), (&[("HERALD__TOPICS__PUBLIC", "status,team:*")], json!(["status"]))];
    for (env, expected) in cases {
        let node = HeraldProcess::start_with(&Engine::Memory, &["--demo"], env).await;
        let http = reqwest::Client::new();
        let response = http.post(node.url("/demo/session")).json(&json!({"user": "demo"})).send().await.unwrap();
        let session: Value = response.json().await.unwrap();
        assert_eq!(session["topics"], expected, "{env:?}");
        // Each is open to the session's user on the stream.
        let topic = expected[0].as_str().unwrap();
        let token = session["token"].as_str().unwrap();
        let mut stream =
            SseStream::open(http.get(node.url(&format!("/v1/events?topics={topic}&access_token={token}"))))
                .await
                .expect("a public topic opens for any user");
        assert_eq!(stream.next_of("unread", WAIT).await.json(), json!({"count": 0}));
    }
}
