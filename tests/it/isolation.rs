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

crate::on_both_engines!(another_users_ids_reach_nothing_of_theirs);

/// Bob's ids, used by alice in every endpoint that takes ids: none of them
/// touches bob's notifications, and alice learns nothing of them. (An id is
/// a place in one user's own history: bob's id names nothing of alice's
/// unless her history happens to hold the same one, which this test rules
/// out by publishing to her first.)
async fn another_users_ids_reach_nothing_of_theirs(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let mine = publish_to(&app.http, &app.url(""), &alice, notification("alice's")).await;
    // A later millisecond: bob's ids are not alice's.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut theirs = Vec::new();
    for i in 0..3 {
        theirs.push(publish_to(&app.http, &app.url(""), &bob, notification(&format!("bob's {i}"))).await);
    }
    assert!(!theirs.contains(&mine), "bob's ids must name nothing in alice's history");
    let as_alice = UserApi::new(&app, &alice);
    let as_bob = UserApi::new(&app, &bob);
    let bobs_before = as_bob.list_all("", 10).await;

    // Mark read by ids: none of them is in alice's history.
    let (status, body) = as_alice.post("/v1/notifications/read", json!({"ids": theirs})).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{body}");
    let (_, count) = as_alice.get("/v1/notifications/unread_count").await;
    assert_eq!(count["count"], 1, "alice's own notification stays unread: {count}");
    // Clicked and deleted, one id at a time: not found in alice's history.
    for id in &theirs {
        let (status, body) = as_alice.post(&format!("/v1/notifications/{id}/clicked"), json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = as_alice.delete(&format!("/v1/notifications/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    // Paging before bob's newest id lists alice's own, never bob's.
    let (status, page) = as_alice.get(&format!("/v1/notifications?before={}", theirs[2])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [mine.as_str()], "{page}");
    // A stream resumed from bob's oldest id replays nothing of bob's.
    let mut stream = crate::helpers::Node::stream(&app, &alice, Some(&theirs[0])).await;
    let marker = publish_to(&app.http, &app.url(""), &alice, notification("marker")).await;
    let mut seen = Vec::new();
    loop {
        let event = stream.next(std::time::Duration::from_secs(5)).await.expect("the stream stays open");
        if event.event == "notification" {
            let id = event.json()["id"].as_str().unwrap().to_owned();
            let done = id == marker;
            seen.push(id);
            if done {
                break;
            }
        }
    }
    assert!(seen.iter().all(|id| !theirs.contains(id)), "bob's ids on alice's stream: {seen:?}");

    // Bob's notifications are as they were: unread, unclicked, all there.
    assert_eq!(as_bob.list_all("", 10).await, bobs_before);
    let (_, count) = as_bob.get("/v1/notifications/unread_count").await;
    assert_eq!(count["count"], 3, "{count}");
}
