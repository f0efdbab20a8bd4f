//! Web Push subscriptions over HTTP, on both engines: the public key, and a
//! user's devices (validated with `422` naming the field, idempotent by
//! endpoint, capped per user, listed and removed); and what a publish says
//! about push, on both publish paths.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use herald::domain::VapidKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Engine, Node, RedisServer, TestApp, UserApi, fcall_publish, unique_user};

/// Settings that turn push on, with a fresh key; and that key.
pub fn push_on(extra: &[(&str, &str)]) -> (Vec<(String, String)>, VapidKey) {
    let key = VapidKey::generate();
    let mut settings = vec![
        ("push.vapid_private_key".to_owned(), key.private_base64url()),
        ("push.subject".to_owned(), "mailto:ops@example.com".to_owned()),
        ("push.allowed_insecure_hosts".to_owned(), "127.0.0.1".to_owned()),
        ("push.endpoint_hosts".to_owned(), "push.example.com".to_owned()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (settings, key)
}

pub async fn spawn_with_push(engine: &Engine, extra: &[(&str, &str)]) -> (TestApp, VapidKey) {
    let (settings, key) = push_on(extra);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (TestApp::spawn_with(engine, &pairs).await, key)
}

/// A subscription as a browser makes one (keys generated here; the
/// endpoint is never called by these tests).
fn browser_subscription(endpoint: &str) -> Value {
    let secret = web_push_native::p256::SecretKey::random(&mut web_push_native::p256::elliptic_curve::rand_core::OsRng);
    let point =
        web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())},
    })
}

fn endpoints(list: &Value) -> Vec<String> {
    list["subscriptions"].as_array().unwrap().iter().map(|s| s["endpoint"].as_str().unwrap().to_owned()).collect()
}

crate::on_both_engines!(
    the_public_key_is_served_in_the_form_browsers_take,
    bad_subscriptions_are_refused_naming_the_field_and_store_nothing,
    subscriptions_are_idempotent_capped_listed_and_removed,
    with_push_off_every_push_endpoint_says_so,
    a_publish_says_whether_it_queued_a_push_and_why_not,
);

async fn the_public_key_is_served_in_the_form_browsers_take(engine: Engine) {
    let (app, key) = spawn_with_push(&engine, &[]).await;
    let response: Value = reqwest::get(app.url("/v1/push/vapid_public_key")).await.unwrap().json().await.unwrap();
    let public = response["public_key"].as_str().unwrap();
    assert_eq!(public, key.public_base64url());
    let point = URL_SAFE_NO_PAD.decode(public).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4), "a 65-byte uncompressed point");
}

async fn bad_subscriptions_are_refused_naming_the_field_and_store_nothing(engine: Engine) {
    let (app, _) = spawn_with_push(&engine, &[]).await;
    let api = UserApi::new(&app, &unique_user("alice"));
    let good = browser_subscription("https://push.example.com/send/abc");
    let with = |path: &[&str], value: Value| {
        let mut doc = good.clone();
        let mut at = &mut doc;
        for part in &path[..path.len() - 1] {
            at = &mut at[*part];
        }
        at[path[path.len() - 1]] = value;
        doc
    };
    let cases = [
        (with(&["endpoint"], json!("http://push.example.com/x")), "endpoint"),
        (with(&["endpoint"], json!("https://push.example.com/a b")), "endpoint"),
        // Not a push service on push.endpoint_hosts: the node would call it.
        (with(&["endpoint"], json!("https://169.254.169.254/latest/meta-data")), "endpoint"),
        (with(&["endpoint"], json!("https://push.example.com.attacker.example/x")), "endpoint"),
        (with(&["endpoint"], json!(42)), "subscription"),
        (json!({"keys": good["keys"]}), "endpoint"),
        (json!({"endpoint": good["endpoint"]}), "keys"),
        (with(&["keys", "p256dh"], json!(URL_SAFE_NO_PAD.encode([4u8; 65]))), "keys.p256dh"),
        (with(&["keys", "p256dh"], json!("not*base64")), "keys.p256dh"),
        (with(&["keys", "p256dh"], good["keys"]["auth"].clone()), "keys.p256dh"),
        (with(&["keys", "auth"], json!(URL_SAFE_NO_PAD.encode([1u8; 15]))), "keys.auth"),
        (with(&["keys", "auth"], Value::Null), "keys.auth"),
        (with(&["expirationTime"], json!(-5)), "expirationTime"),
    ];
    for (doc, field) in cases {
        let (status, body) = api.post("/v1/push/subscriptions", doc.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{doc} → {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}:")), "{doc}: the message names `{field}`: {message}");
    }
    let (status, list) = api.get("/v1/push/subscriptions").await;
    assert_eq!((status, endpoints(&list)), (StatusCode::OK, Vec::<String>::new()), "nothing was stored");
    // Not JSON at all: 400, and not a subscription of anyone's.
    let response = reqwest::Client::new()
        .post(app.url("/v1/push/subscriptions"))
        .bearer_auth(crate::helpers::user_token("mallory"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // And no token: 401.
    let response = reqwest::Client::new().post(app.url("/v1/push/subscriptions")).json(&good).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

async fn subscriptions_are_idempotent_capped_listed_and_removed(engine: Engine) {
    let (app, _) = spawn_with_push(&engine, &[("push.max_subscriptions_per_user", "3")]).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&app, &alice);
    let devices: Vec<String> = (0..4).map(|i| format!("https://push.example.com/send/{i}")).collect();
    for (i, endpoint) in devices.iter().take(3).enumerate() {
        let (status, body) = api.post("/v1/push/subscriptions", browser_subscription(endpoint)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["devices"], i + 1);
    }
    // The same endpoint again (new keys, as after a browser re-subscribes):
    // still three devices, and device 0 is now the newest.
    let (status, body) = api.post("/v1/push/subscriptions", browser_subscription(&devices[0])).await;
    assert_eq!((status, body["devices"].as_u64()), (StatusCode::CREATED, Some(3)), "{body}");
    let (_, list) = api.get("/v1/push/subscriptions").await;
    assert_eq!(endpoints(&list), [&*devices[1], &*devices[2], &*devices[0]], "oldest first, re-subscribed last");
    assert!(list["subscriptions"][0].get("keys").is_none(), "keys stay on the server: {list}");
    // A fourth device drops the oldest (device 1).
    api.post("/v1/push/subscriptions", browser_subscription(&devices[3])).await;
    let (_, list) = api.get("/v1/push/subscriptions").await;
    assert_eq!(endpoints(&list), [&*devices[2], &*devices[0], &*devices[3]]);
    // Another user sees none of them and cannot remove them.
    let bob = UserApi::new(&app, &unique_user("bob"));
    let (_, theirs) = bob.get("/v1/push/subscriptions").await;
    assert!(endpoints(&theirs).is_empty());
    let (status, body) = bob.delete_json("/v1/push/subscriptions", json!({"endpoint": devices[2]})).await;
    assert_eq!((status, body["removed"].as_bool()), (StatusCode::OK, Some(false)));
    // Removal by endpoint; twice is harmless.
    let (_, body) = api.delete_json("/v1/push/subscriptions", json!({"endpoint": devices[2]})).await;
    assert_eq!(body["removed"], true);
    let (_, body) = api.delete_json("/v1/push/subscriptions", json!({"endpoint": devices[2]})).await;
    assert_eq!(body["removed"], false);
    let (status, _) = api.delete_json("/v1/push/subscriptions", json!({"url": devices[0]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = api.get("/v1/push/subscriptions").await;
    assert_eq!(endpoints(&list), [&*devices[0], &*devices[3]]);
}

async fn with_push_off_every_push_endpoint_says_so(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let api = UserApi::new(&app, &unique_user("alice"));
    let key = reqwest::get(app.url("/v1/push/vapid_public_key")).await.unwrap();
    assert_eq!(key.status(), 404);
    let body: Value = key.json().await.unwrap();
    assert_eq!(body["error"]["code"], "push_off");
    let (status, body) = api.post("/v1/push/subscriptions", browser_subscription("https://push.example.com/x")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("push_off")));
    let results = app.publish(&[&unique_user("bob")], json!({"type": "a.b", "title": "t"})).await;
    assert_eq!(results[0]["push"], "none");
    assert!(results[0].get("push_skipped").is_none(), "{}", results[0]);
}

async fn a_publish_says_whether_it_queued_a_push_and_why_not(engine: Engine) {
    let (app, _) = spawn_with_push(&engine, &[]).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let api = UserApi::new(&app, &alice);
    let push = |r: &Value| (r["push"].as_str().unwrap().to_owned(), r["push_skipped"].as_str().map(str::to_owned));
    let note = json!({"type": "comment.mention", "title": "t"});

    let r = app.publish(&[&bob], note.clone()).await;
    assert_eq!(push(&r[0]), ("skipped".into(), Some("no_subscriptions".into())));

    api.post("/v1/push/subscriptions", browser_subscription("https://push.example.com/a")).await;
    let r = app.publish(&[&alice], note.clone()).await;
    assert_eq!(push(&r[0]), ("queued".into(), None));

    let stream = app.stream(&alice, None).await;
    let r = app.publish(&[&alice], note.clone()).await;
    assert_eq!(push(&r[0]), ("skipped".into(), Some("online".into())));
    drop(stream);
    crate::helpers::wait_for("the stream to close", std::time::Duration::from_secs(5), async || {
        (app.streams_open().await == Some(0)).then_some(())
    })
    .await;

    let prefs = json!({"categories": {"marketing": {"in_app": true, "push": false}}});
    assert_eq!(api.put("/v1/preferences", prefs).await.0, StatusCode::OK);
    let r = app.publish(&[&alice], json!({"type": "marketing.sale", "title": "t"})).await;
    assert_eq!(push(&r[0]), ("skipped".into(), Some("preferences".into())));
    let r = app.publish(&[&alice], note.clone()).await;
    assert_eq!(push(&r[0]), ("queued".into(), None), "only that category");

    // Quiet all day long (00:00 to 23:59 in UTC) except the last minute.
    let quiet = json!({"quiet_hours": {"start": "00:00", "end": "23:59", "timezone": "UTC"}});
    assert_eq!(api.put("/v1/preferences", quiet).await.0, StatusCode::OK);
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    if (now.hour(), now.minute()) != (23, 59) {
        let r = app.publish(&[&alice], note.clone()).await;
        assert_eq!(push(&r[0]), ("skipped".into(), Some("quiet_hours".into())));
        let r = app.publish(&[&alice], json!({"type": "comment.mention", "title": "t", "priority": "high"})).await;
        assert_eq!(push(&r[0]), ("queued".into(), None), "high passes quiet hours");
    }
}

/// The same decision on the backends' path: `FCALL herald_publish` queues a
/// push in the same step (the queue's length grows by one), and skips one
/// for a user who is looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcall_publish_queues_a_push_by_the_same_rules() {
    let server = RedisServer::start();
    let engine = Engine::Redis(server.url());
    let (app, _) = spawn_with_push(&engine, &[]).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&app, &alice);
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    // Queued or, once the worker has tried the (unreachable) endpoint,
    // waiting for its retry.
    let queued = async |conn: &mut ::redis::aio::MultiplexedConnection| -> u64 {
        let (now, later): (u64, u64) =
            ::redis::pipe().xlen("herald:{push}:queue").zcard("herald:{push}:delayed").query_async(conn).await.unwrap();
        now + later
    };
    let before = queued(&mut conn).await;
    fcall_publish(&mut conn, &alice, r#"{"type":"a.b","title":"no device yet"}"#).await.unwrap();
    assert_eq!(queued(&mut conn).await, before, "no device: nothing queued");
    api.post("/v1/push/subscriptions", browser_subscription("https://push.example.com/a")).await;
    fcall_publish(&mut conn, &alice, r#"{"type":"a.b","title":"offline"}"#).await.unwrap();
    assert_eq!(queued(&mut conn).await, before + 1, "offline with a device: queued in the same call");
    let _stream = app.stream(&alice, None).await;
    fcall_publish(&mut conn, &alice, r#"{"type":"a.b","title":"online"}"#).await.unwrap();
    assert_eq!(queued(&mut conn).await, before + 1, "online: not queued");
}
