//! The notification center over HTTP: the list, read / clicked / delete,
//! sync across tabs and nodes, preferences. On both engines.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Engine, Node, RedisServer, TestApp, UserApi, fcall_publish, notification, unique_user};

const WAIT: Duration = Duration::from_secs(5);

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

async fn publish_n(app: &TestApp, user: &str, n: usize, kind: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = app.publish(&[user], json!({"type": kind, "title": format!("n{i}")})).await;
        ids.push(r[0]["id"].as_str().unwrap().to_owned());
    }
    ids
}

crate::on_both_engines!(
    pagination_returns_every_item_once_newest_first,
    read_clicked_and_delete_change_state_and_the_count,
    unknown_and_foreign_ids_are_not_found_and_change_nothing,
    changes_reach_the_users_other_tabs,
    preferences_are_validated_and_stored_whole,
    in_app_off_drops_the_category_for_that_user,
);

async fn pagination_returns_every_item_once_newest_first(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let published = publish_n(&app, &alice, 47, "test.page").await;
    let alice_api = UserApi::new(&app, &alice);

    let listed = alice_api.list_all("", 10).await;
    let mut newest_first = published.clone();
    newest_first.reverse();
    assert_eq!(ids(&listed), newest_first, "every item once, newest first");
    assert!(listed.iter().all(|i| i["read"] == false && i["clicked"] == false && i["created_at"].is_string()));
    let (_, first_page) = alice_api.get("/v1/notifications?limit=5").await;
    assert_eq!(first_page["unread_count"], 47);
    assert_eq!(first_page["items"].as_array().unwrap().len(), 5);
    let (status, bad) = alice_api.get("/v1/notifications?limit=0").await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = alice_api.get("/v1/notifications?before=nope").await;
    assert_eq!(status, 400);
}

async fn read_clicked_and_delete_change_state_and_the_count(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let ids_ = publish_n(&app, &alice, 6, "test.state").await;
    let api = UserApi::new(&app, &alice);

    assert_eq!(
        api.post("/v1/notifications/read", json!({"ids": [ids_[0], ids_[1]]})).await,
        (StatusCode::OK, json!({"unread_count": 4}))
    );
    // Reading again changes nothing.
    assert_eq!(api.post("/v1/notifications/read", json!({"ids": [ids_[0]]})).await.1, json!({"unread_count": 4}));
    assert_eq!(
        api.post(&format!("/v1/notifications/{}/clicked", ids_[2]), json!({})).await.1,
        json!({"unread_count": 3})
    );
    assert_eq!(api.delete(&format!("/v1/notifications/{}", ids_[3])).await.1, json!({"unread_count": 2}));
    assert_eq!(api.delete(&format!("/v1/notifications/{}", ids_[0])).await.1, json!({"unread_count": 2}), "a read one");
    assert_eq!(api.get("/v1/notifications/unread_count").await.1, json!({"count": 2}));

    let items = api.list_all("", 100).await;
    let state: Vec<(String, bool, bool)> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["read"].as_bool().unwrap(), i["clicked"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        state,
        vec![
            (ids_[5].clone(), false, false),
            (ids_[4].clone(), false, false),
            (ids_[2].clone(), true, true),
            (ids_[1].clone(), true, false),
        ]
    );
    let unread_only = api.list_all("&unread=true", 1).await;
    assert_eq!(ids(&unread_only), vec![ids_[5].clone(), ids_[4].clone()]);

    assert_eq!(api.post("/v1/notifications/read", json!({"all": true})).await.1, json!({"unread_count": 0}));
    assert!(api.list_all("", 100).await.iter().all(|i| i["read"] == true));
    for bad in [json!({}), json!({"ids": []}), json!({"ids": ["1-0"], "all": true}), json!({"all": false})] {
        assert_eq!(api.post("/v1/notifications/read", bad.clone()).await.0, 422, "{bad}");
    }
}

async fn unknown_and_foreign_ids_are_not_found_and_change_nothing(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let alices = publish_n(&app, &alice, 2, "test.private").await;
    publish_n(&app, &bob, 1, "test.private").await;
    let (alice_api, bob_api) = (UserApi::new(&app, &alice), UserApi::new(&app, &bob));

    // Bob cannot see, read, click or delete Alice's notifications.
    let (status, body) = bob_api.post("/v1/notifications/read", json!({"ids": [alices[0]]})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(bob_api.post(&format!("/v1/notifications/{}/clicked", alices[0]), json!({})).await.0, 404);
    assert_eq!(bob_api.delete(&format!("/v1/notifications/{}", alices[0])).await.0, 404);
    assert!(!ids(&bob_api.list_all("", 100).await).contains(&alices[0]));

    // One unknown id among known ones: nothing is marked.
    let (status, _) = alice_api.post("/v1/notifications/read", json!({"ids": [alices[0], "1-1"]})).await;
    assert_eq!(status, 404);
    assert_eq!(alice_api.get("/v1/notifications/unread_count").await.1, json!({"count": 2}));
    assert_eq!(alice_api.delete("/v1/notifications/1-1").await.0, 404);
    assert_eq!(alice_api.delete("/v1/notifications/garbage").await.0, 400);
    assert_eq!(alice_api.list_all("", 100).await.len(), 2);
}

async fn changes_reach_the_users_other_tabs(engine: Engine) {
    // Two nodes when there is Redis; the memory engine is one node.
    let a = TestApp::spawn(&engine).await;
    let b = match &engine {
        Engine::Redis(_) => Some(TestApp::spawn(&engine).await),
        Engine::Memory => None,
    };
    let node_b: &TestApp = b.as_ref().unwrap_or(&a);
    let alice = unique_user("alice");
    let ids_ = publish_n(&a, &alice, 3, "test.sync").await;
    let mut tab_a = a.stream(&alice, None).await;
    let mut tab_b = node_b.stream(&alice, None).await;
    let api = UserApi::new(&a, &alice);

    api.post("/v1/notifications/read", json!({"ids": [ids_[0]]})).await;
    for tab in [&mut tab_a, &mut tab_b] {
        assert_eq!(tab.next_of("read", WAIT).await.json(), json!({"ids": [ids_[0]]}));
        assert_eq!(tab.next_of("unread", WAIT).await.json(), json!({"count": 2}));
    }
    api.post(&format!("/v1/notifications/{}/clicked", ids_[1]), json!({})).await;
    assert_eq!(tab_b.next_of("read", WAIT).await.json(), json!({"ids": [ids_[1]]}));
    api.delete(&format!("/v1/notifications/{}", ids_[1])).await;
    assert_eq!(tab_b.next_of("deleted", WAIT).await.json(), json!({"ids": [ids_[1]]}));
    assert_eq!(tab_b.next_of("unread", WAIT).await.json(), json!({"count": 1}));
    api.post("/v1/notifications/read", json!({"all": true})).await;
    assert_eq!(tab_b.next_of("read", WAIT).await.json(), json!({"all": true, "up_to": ids_[2]}));
    assert_eq!(tab_b.next_of("unread", WAIT).await.json(), json!({"count": 0}));
}

async fn preferences_are_validated_and_stored_whole(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let api = UserApi::new(&app, &unique_user("alice"));
    let (status, defaults) = api.get("/v1/preferences").await;
    assert_eq!(status, 200);
    assert_eq!(
        defaults,
        json!({"default": {"in_app": true, "push": true}, "categories": {}, "quiet_hours": null, "sound": true})
    );
    let mine = json!({
        "default": {"in_app": true, "push": true},
        "categories": {"marketing": {"in_app": true, "push": false}},
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Seoul"},
        "sound": false
    });
    assert_eq!(api.put("/v1/preferences", mine.clone()).await, (StatusCode::OK, mine.clone()));
    assert_eq!(api.get("/v1/preferences").await.1, mine);

    for (bad, field) in [
        (json!({"sound": "loud"}), "sound"),
        (json!({"extra": true}), "extra"),
        (json!({"default": {"in_app": "yes"}}), "default.in_app"),
        (json!({"categories": {"marketing": {"email": true}}}), "categories.marketing.email"),
        (json!({"quiet_hours": {"start": "24:10", "end": "07:00", "timezone": "UTC"}}), "quiet_hours.start"),
        (json!({"quiet_hours": {"start": "22:00", "end": "0700", "timezone": "UTC"}}), "quiet_hours.end"),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Atlantis"}}),
            "quiet_hours.timezone",
        ),
    ] {
        let (status, body) = api.put("/v1/preferences", bad.clone()).await;
        assert_eq!(status, 422, "{bad}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{bad}: `{message}` should name `{field}`");
        assert_eq!(api.get("/v1/preferences").await.1, mine, "a refused document stores nothing");
    }
}

async fn in_app_off_drops_the_category_for_that_user(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let api = UserApi::new(&app, &alice);
    api.put("/v1/preferences", json!({"categories": {"marketing": {"in_app": false}}})).await;
    let mut stream = app.stream(&alice, None).await;

    let results = app.publish(&[&alice, &bob], json!({"type": "marketing.sale", "title": "50% off"})).await;
    assert_eq!(
        results[0],
        json!({"user": alice, "id": null, "online": false, "push": "none", "dropped": "preferences"})
    );
    assert!(results[1]["id"].is_string(), "bob keeps his marketing");
    stream.assert_no_notification(Duration::from_millis(300)).await;
    let kept = app.publish(&[&alice], notification("other category")).await;
    assert_eq!(stream.next_of("notification", WAIT).await.id.as_deref(), kept[0]["id"].as_str());
    assert_eq!(ids(&api.list_all("", 100).await), vec![kept[0]["id"].as_str().unwrap().to_owned()]);
}

/// The `FCALL` path obeys the same preferences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_off_drops_on_the_fcall_path_too() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(redis.url())).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&app, &alice);
    api.put("/v1/preferences", json!({"default": {"in_app": false}, "categories": {"billing": {"in_app": true}}}))
        .await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let of_kind = |kind: &str| json!({"type": kind, "title": "t"}).to_string();
    let dropped = fcall_publish(&mut conn, &alice, &of_kind("social.like")).await.unwrap();
    assert_eq!(dropped, None, "the default turns social off");
    let kept = fcall_publish(&mut conn, &alice, &of_kind("billing.invoice")).await.unwrap();
    assert_eq!(ids(&api.list_all("", 100).await), vec![kept.unwrap()]);
}
