//! User ids that try to leave their own keys: refused, or kept inside their
//! own `{u:<id>}` keys. Checked against the real keys Redis holds.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Engine, RedisServer, TestApp, UserApi, notification, publish_to, unique_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_cannot_reach_another_users_keys() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(redis.url())).await;
    let alice = unique_user("alice");
    // Ids that would break out of the hash tag `{u:<id>}`, or end a line.
    for escape in [
        format!("{alice}}}:inbox"),
        format!("{{u:{alice}"),
        format!("{alice}\u{0}"),
        format!("{alice} x"),
        "x".repeat(129),
    ] {
        let (status, body) = UserApi::new(&app, &escape).get("/v1/notifications").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{escape:?}: {body}");
        let publish = app
            .http
            .post(app.url("/v1/publish"))
            .bearer_auth(crate::helpers::publisher_token())
            .json(&json!({"to": {"users": [escape]}, "notification": notification("escape")}))
            .send()
            .await
            .unwrap();
        assert!(publish.status().is_client_error(), "{escape:?}: {}", publish.status());
    }
    // Ids that are allowed however they look: each stays in its own keys.
    let lookalikes = [
        format!("{alice}:inbox"),
        format!("u:{alice}"),
        format!("{alice}*"),
        "*".to_owned(),
        format!("{}\u{0430}", &alice[..alice.len() - 1]), // a Cyrillic "а" for the last character
        format!("{alice}\u{200b}"),                       // a zero-width space after the name
    ];
    for user in &lookalikes {
        publish_to(&app.http, &app.url(""), user, notification(&format!("for {user}"))).await;
    }

    // alice saw none of it.
    let (status, list) = UserApi::new(&app, &alice).get("/v1/notifications").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([]), "{list}");
    for user in &lookalikes {
        let (_, list) = UserApi::new(&app, user).get("/v1/notifications").await;
        let titles: Vec<&str> =
            list["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap()).collect();
        assert_eq!(titles, [format!("for {user}")], "{user:?}");
    }
    // And every key Redis holds for them is inside its own hash tag.
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("herald:{u:*").query_async(&mut conn).await.unwrap();
    for key in &keys {
        let tag = key.strip_prefix("herald:{u:").and_then(|rest| rest.split_once('}')).map(|(user, _)| user);
        let user = tag.unwrap_or_else(|| panic!("a user key outside the layout: {key}"));
        assert!(lookalikes.iter().any(|l| l == user), "a key for an unexpected user {user:?}: {key}");
    }
    assert!(keys.iter().all(|key| !key.contains(&format!("{{u:{alice}}}"))), "nothing was written for alice");
}
