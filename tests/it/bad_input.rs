//! Bad input gets a clear error and changes nothing: publish bodies the
//! gateway refuses, errors actix-web answers before a handler runs, and a
//! pretty-printed body that must still reach a stream as one `data:` line.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Engine, Node, TestApp, notification, publisher_token, unique_user, user_token};

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
