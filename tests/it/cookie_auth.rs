//! A token in the auth cookie rides along on requests any page can make
//! (a form post, `fetch` with `mode: "no-cors"`), so a change made with it
//! must prove it came from a page allowed to make it: the `X-Herald-Request`
//! header (which a cross-site page cannot send without a preflight Herald
//! never grants) or `Sec-Fetch-Site: same-origin`.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Engine, TestApp, UserApi, notification, publish_to, unique_user, user_token};

/// A cookie-authenticated request, as a browser would send it.
fn with_cookie(app: &TestApp, method: Method, path: &str, user: &str) -> RequestBuilder {
    reqwest::Client::new().request(method, app.url(path)).header("Cookie", format!("herald_token={}", user_token(user)))
}

async fn answer(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_forbidden((status, body): &(StatusCode, Value), why: &str) {
    assert_eq!(*status, 403, "{why}: {body}");
    assert_eq!(body["error"]["code"], "forbidden", "{why}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("X-Herald-Request") && message.contains("Sec-Fetch-Site"), "{why}: {message}");
}

/// (read, clicked) of the one notification `id`, as the list shows it.
async fn state_of(app: &TestApp, user: &str, id: &str) -> Option<(bool, bool)> {
    let (_, list) = answer(with_cookie(app, Method::GET, "/v1/notifications", user)).await;
    list["items"].as_array()?.iter().find(|i| i["id"] == id).map(|i| (i["read"] == true, i["clicked"] == true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_change_without_proof_of_origin_is_refused_and_changes_nothing() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    let id = publish_to(&app.http, &app.url(""), &alice, notification("one")).await;
    let clicked = format!("/v1/notifications/{id}/clicked");

    let refused = [
        ("no header", with_cookie(&app, Method::POST, &clicked, &alice)),
        ("cross-site", with_cookie(&app, Method::POST, &clicked, &alice).header("Sec-Fetch-Site", "cross-site")),
        ("same-site", with_cookie(&app, Method::POST, &clicked, &alice).header("Sec-Fetch-Site", "same-site")),
        ("empty header", with_cookie(&app, Method::POST, &clicked, &alice).header("X-Herald-Request", "")),
    ];
    for (why, request) in refused {
        assert_forbidden(&answer(request).await, why);
    }
    assert_eq!(state_of(&app, &alice, &id).await, Some((false, false)), "nothing was clicked or read");

    let (status, body) =
        answer(with_cookie(&app, Method::POST, &clicked, &alice).header("X-Herald-Request", "1")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"unread_count": 0})));
    assert_eq!(state_of(&app, &alice, &id).await, Some((true, true)));

    let second = publish_to(&app.http, &app.url(""), &alice, notification("two")).await;
    let request = with_cookie(&app, Method::POST, &format!("/v1/notifications/{second}/clicked"), &alice)
        .header("Sec-Fetch-Site", "same-origin");
    assert_eq!(answer(request).await.0, 200, "a same-origin page needs no header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_made_with_the_cookie_needs_the_header() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    let id = publish_to(&app.http, &app.url(""), &alice, notification("one")).await;
    let prefs = json!({"categories": {"marketing": {"in_app": false}}});
    let changes = || {
        [
            (Method::POST, "/v1/notifications/read".to_owned(), Some(json!({"all": true}))),
            (Method::PUT, "/v1/preferences".to_owned(), Some(prefs.clone())),
            (Method::DELETE, format!("/v1/notifications/{id}"), None),
        ]
    };
    for (method, path, body) in changes() {
        let mut request = with_cookie(&app, method.clone(), &path, &alice);
        if let Some(body) = &body {
            request = request.json(body);
        }
        assert_forbidden(&answer(request).await, &format!("{method} {path}"));
    }
    // Nothing changed: still unread, still there, preferences untouched.
    assert_eq!(state_of(&app, &alice, &id).await, Some((false, false)));
    let (_, stored) = answer(with_cookie(&app, Method::GET, "/v1/preferences", &alice)).await;
    assert_ne!(stored["categories"]["marketing"]["in_app"], false, "{stored}");

    for (method, path, body) in changes() {
        let mut request = with_cookie(&app, method.clone(), &path, &alice).header("X-Herald-Request", "1");
        if let Some(body) = &body {
            request = request.json(body);
        }
        assert_eq!(answer(request).await.0, 200, "{method} {path} with the header");
    }
    assert_eq!(state_of(&app, &alice, &id).await, None, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_the_cookie_and_changes_with_a_bearer_token_need_no_header() {
    let app = TestApp::spawn(&Engine::Memory).await;
    let alice = unique_user("alice");
    let id = publish_to(&app.http, &app.url(""), &alice, notification("one")).await;

    let (status, count) = answer(with_cookie(&app, Method::GET, "/v1/notifications/unread_count", &alice)).await;
    assert_eq!((status, count), (StatusCode::OK, json!({"count": 1})));
    let stream = with_cookie(&app, Method::GET, "/v1/events", &alice).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);

    // A bearer token is not sent by the browser on its own: no header needed,
    // even with a stray cookie beside it.
    let api = UserApi::new(&app, &alice);
    assert_eq!(api.post(&format!("/v1/notifications/{id}/clicked"), json!({})).await.0, 200);
    let by_query = reqwest::Client::new()
        .post(app.url("/v1/notifications/read"))
        .query(&[("access_token", user_token(&alice))])
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let (status, _) = answer(
        reqwest::Client::new()
            .delete(app.url(&format!("/v1/notifications/{id}")))
            .bearer_auth(user_token(&alice))
            .header("Cookie", format!("herald_token={}", user_token(&alice))),
    )
    .await;
    assert_eq!(status, 200);
}
