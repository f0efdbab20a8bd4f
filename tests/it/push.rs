//! Web Push delivery end to end: real nodes (three on one Redis, or the
//! memory engine) send to a fake push service on loopback that verifies
//! every VAPID signature and decrypts every payload with the device's own
//! keys, as a browser's push service and browser would.
//!
//! "Nothing left to send" is observed, not waited out: the queue (stream
//! plus delayed set) is empty and the workers have counted every outcome.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{
        Engine, HeraldProcess, Node, PushService, RedisServer, Reply, TestApp, UserApi, fcall_publish, unique_user,
        wait_for,
    },
    push_subscriptions::push_on,
};

const WAIT: Duration = Duration::from_secs(10);

/// Fast retries and takeovers, so the tests run in seconds.
const QUICK: &[(&str, &str)] = &[
    ("push.retry_backoff", "100ms"),
    ("push.retry_max_backoff", "400ms"),
    ("push.send_timeout", "1s"),
    ("push.visibility_timeout", "2s"),
];

/// Nodes sharing one engine and one VAPID key, each running a push worker.
struct Cluster {
    nodes: Vec<TestApp>,
    service: PushService,
    /// Keeps the Redis server of the Redis variant alive.
    _redis: Option<RedisServer>,
}

impl Cluster {
    async fn start(engine: Engine, redis: Option<RedisServer>, nodes: usize, extra: &[(&str, &str)]) -> Self {
        let mut settings: Vec<(&str, &str)> = QUICK.to_vec();
        settings.extend_from_slice(extra);
        let (pairs, key) = push_on(&settings);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = PushService::start(&key.public_base64url()).await;
        let mut apps = Vec::new();
        // The memory engine lives in one process: one node.
        let count = if matches!(engine, Engine::Memory) { 1 } else { nodes };
        for _ in 0..count {
            apps.push(TestApp::spawn_with(&engine, &pairs).await);
        }
        Self { nodes: apps, service, _redis: redis }
    }

    /// One node on the memory engine, three on Redis (whose server the
    /// test macro keeps running).
    async fn on(engine: Engine, extra: &[(&str, &str)]) -> Self {
        Self::start(engine, None, 3, extra).await
    }

    fn node(&self, i: usize) -> &TestApp {
        &self.nodes[i % self.nodes.len()]
    }

    /// Subscribes a new device of `user` (through node `i`); its name.
    async fn device(&self, user: &str, name: &str) -> String {
        let api = UserApi::new(self.node(0), user);
        let (status, body) = api.post("/v1/push/subscriptions", self.service.device(name)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        name.to_owned()
    }

    /// Waits until nothing is queued, delayed or in flight anywhere (the
    /// queue's depth in `/readyz`, which counts pushes being sent).
    async fn settled(&self) {
        let url = self.node(0).url("/readyz");
        wait_for("the push queue to be empty", WAIT, async || {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            (body["push_queue"].as_u64()? == 0).then_some(())
        })
        .await;
    }
}

fn titles(received: &[crate::helpers::Received]) -> Vec<String> {
    received.iter().map(|r| r.payload.as_ref().unwrap()["title"].as_str().unwrap().to_owned()).collect()
}

crate::on_both_engines!(
    an_offline_user_is_pushed_once_per_device_and_an_online_one_not,
    unread_after_pushes_only_what_is_still_unread,
    preferences_and_quiet_hours_hold_pushes_back_and_high_passes,
    a_gone_device_is_forgotten_and_failures_are_retried,
    an_oversized_notification_is_trimmed_and_still_decrypts,
);

async fn an_offline_user_is_pushed_once_per_device_and_an_online_one_not(engine: Engine) {
    let cluster = Cluster::on(engine, &[]).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let laptop = cluster.device(&alice, "alice-laptop").await;
    let phone = cluster.device(&alice, "alice-phone").await;
    let bobs = cluster.device(&bob, "bob-phone").await;

    // Bob is looking; Alice is not.
    let _tab = cluster.node(1).stream(&bob, None).await;
    let results = cluster
        .node(2)
        .publish(
            &[&alice, &bob],
            json!({"type": "comment.mention", "title": "Mina mentioned you", "body": "in Q4", "priority": "high",
                   "collapse_key": "doc-42", "ttl": 600, "data": {"doc": 42}}),
        )
        .await;
    assert_eq!((results[0]["push"].as_str(), results[1]["push_skipped"].as_str()), (Some("queued"), Some("online")));
    let id = results[0]["id"].as_str().unwrap();

    cluster
        .service
        .wait_until("both of alice's devices", WAIT, |r| r.iter().filter(|r| r.status == 201).count() >= 2)
        .await;
    cluster.settled().await;
    for device in [&laptop, &phone] {
        let got = cluster.service.delivered(device);
        assert_eq!(got.len(), 1, "{device}: exactly one push");
        let push = &got[0];
        let payload = push.payload.as_ref().unwrap();
        assert_eq!(payload["id"], id);
        assert_eq!(payload["title"], "Mina mentioned you");
        assert_eq!(payload["data"], json!({"doc": 42}));
        assert_eq!(payload["read"], false);
        assert_eq!(
            (push.ttl, push.urgency.as_deref(), push.topic.as_deref()),
            (Some(600), Some("high"), Some("doc-42"))
        );
    }
    assert!(cluster.service.delivered(&bobs).is_empty(), "bob was online");
    assert!(cluster.service.received().iter().all(|r| r.refused.is_none()), "no request was refused");
}

async fn unread_after_pushes_only_what_is_still_unread(engine: Engine) {
    let cluster = Cluster::on(engine, &[("push.when", "unread_after"), ("push.delay", "2s")]).await;
    let alice = unique_user("alice");
    let device = cluster.device(&alice, "alice-laptop").await;
    // Looking at the page, even: unread_after pushes anyway.
    let _tab = cluster.node(0).stream(&alice, None).await;
    let api = UserApi::new(cluster.node(1), &alice);

    let note = |title: &str| json!({"type": "task.assigned", "title": title});
    // Before the first publish: every push is due at least the delay after.
    let started = Instant::now();
    let read = cluster.node(2).publish(&[&alice], note("read in time")).await;
    let deleted = cluster.node(2).publish(&[&alice], note("deleted in time")).await;
    let unread = cluster.node(2).publish(&[&alice], note("left unread")).await;
    for r in [&read, &deleted, &unread] {
        assert_eq!(r[0]["push"], "queued", "{r:?}");
    }
    let (status, _) = api.post("/v1/notifications/read", json!({"ids": [read[0]["id"]]})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.delete(&format!("/v1/notifications/{}", deleted[0]["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    // The precondition, with room to spare on a loaded machine.
    assert!(started.elapsed() < Duration::from_millis(1500), "marked within the delay");

    let got = cluster.service.wait_until("the unread one", WAIT, |r| !r.is_empty()).await;
    // Redis's clock decides when it is due; allow it a few ms against ours.
    assert!(got[0].at.duration_since(started) >= Duration::from_millis(1990), "not before the delay");
    cluster.settled().await;
    assert_eq!(titles(&cluster.service.delivered(&device)), ["left unread"]);
}

async fn preferences_and_quiet_hours_hold_pushes_back_and_high_passes(engine: Engine) {
    let cluster = Cluster::on(engine.clone(), &[]).await;
    let alice = unique_user("alice");
    let device = cluster.device(&alice, "alice-phone").await;
    let api = UserApi::new(cluster.node(0), &alice);
    let prefs = json!({"categories": {"marketing": {"in_app": true, "push": false}}});
    assert_eq!(api.put("/v1/preferences", prefs).await.0, StatusCode::OK);

    let r = cluster.node(1).publish(&[&alice], json!({"type": "marketing.sale", "title": "sale"})).await;
    assert_eq!(r[0]["push_skipped"], "preferences");
    let r = cluster.node(1).publish(&[&alice], json!({"type": "billing.due", "title": "pushed"})).await;
    assert_eq!(r[0]["push"], "queued");

    // Quiet around the clock, but for the minute before midnight UTC.
    let quiet = json!({"quiet_hours": {"start": "00:00", "end": "23:59", "timezone": "UTC"}});
    assert_eq!(api.put("/v1/preferences", quiet).await.0, StatusCode::OK);
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let mut expected = vec!["pushed"];
    if (now.hour(), now.minute()) < (23, 58) {
        let r = cluster.node(2).publish(&[&alice], json!({"type": "billing.due", "title": "quiet"})).await;
        assert_eq!(r[0]["push_skipped"], "quiet_hours");
        let high = json!({"type": "billing.due", "title": "urgent", "priority": "high"});
        let r = cluster.node(2).publish(&[&alice], high).await;
        assert_eq!(r[0]["push"], "queued");
        expected.push("urgent");
        if let Engine::Redis(url) = &engine {
            // The backends' path, by the same rules.
            let mut conn =
                ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
            fcall_publish(&mut conn, &alice, r#"{"type":"billing.due","title":"quiet via fcall"}"#).await.unwrap();
            let high = r#"{"type":"billing.due","title":"urgent via fcall","priority":"high"}"#;
            fcall_publish(&mut conn, &alice, high).await.unwrap();
            expected.push("urgent via fcall");
        }
    }
    cluster.service.wait_until("the pushes allowed", WAIT, |r| r.len() >= expected.len()).await;
    cluster.settled().await;
    let mut got = titles(&cluster.service.delivered(&device));
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

async fn a_gone_device_is_forgotten_and_failures_are_retried(engine: Engine) {
    let cluster = Cluster::on(engine, &[]).await;
    let alice = unique_user("alice");
    let gone = cluster.device(&alice, "alice-old").await;
    let flaky = cluster.device(&alice, "alice-flaky").await;
    let busy = cluster.device(&alice, "alice-busy").await;
    cluster.service.script(&gone, vec![Reply::Status(410)]);
    cluster.service.script(&flaky, vec![Reply::Status(503)]);
    cluster.service.script(&busy, vec![Reply::RetryAfter { status: 429, seconds: 2 }]);

    let r = cluster.node(0).publish(&[&alice], json!({"type": "a.b", "title": "hello"})).await;
    assert_eq!(r[0]["push"], "queued");
    cluster.service.wait_until("the retries", WAIT, |r| r.iter().filter(|r| r.status == 201).count() >= 2).await;
    cluster.settled().await;

    let all = cluster.service.received();
    let to = |device: &str| all.iter().filter(|r| r.device == device).collect::<Vec<_>>();
    assert_eq!(to(&gone).iter().map(|r| r.status).collect::<Vec<_>>(), [410], "never tried again");
    assert_eq!(to(&flaky).iter().map(|r| r.status).collect::<Vec<_>>(), [503, 201], "retried once");
    let busy_tries = to(&busy);
    assert_eq!(busy_tries.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 201]);
    let waited = busy_tries[1].at.duration_since(busy_tries[0].at);
    assert!(waited >= Duration::from_millis(1900), "Retry-After: 2 honoured (waited {waited:?})");
    // Every attempt carried the same notification and Topic.
    assert!(all.iter().all(|r| r.topic == all[0].topic && r.payload == all[0].payload));

    let (_, list) = UserApi::new(cluster.node(1), &alice).get("/v1/push/subscriptions").await;
    let left: Vec<&str> =
        list["subscriptions"].as_array().unwrap().iter().map(|s| s["endpoint"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 2, "the gone device was removed: {list}");
    assert!(left.iter().all(|e| !e.ends_with("/alice-old")), "{list}");
}

async fn an_oversized_notification_is_trimmed_and_still_decrypts(engine: Engine) {
    let cluster = Cluster::on(engine, &[]).await;
    let alice = unique_user("alice");
    let device = cluster.device(&alice, "alice-laptop").await;
    // 4,000 bytes of body alone: over what a push holds even without data.
    let body = "ü".repeat(2000);
    let note = json!({"type": "a.b", "title": "big", "body": body, "data": {"blob": "x".repeat(3000)}});
    cluster.node(0).publish(&[&alice], note).await;
    let got = cluster.service.wait_until("the big one", WAIT, |r| !r.is_empty()).await;
    let push = &got[0];
    assert_eq!(push.status, 201, "refused: {:?}", push.refused);
    assert!(push.body_len <= 4096, "{}", push.body_len);
    let payload = push.payload.as_ref().expect("decrypts");
    assert!(payload.get("data").is_none(), "data dropped first");
    let kept = payload["body"].as_str().unwrap();
    assert!(
        kept.ends_with('…') && kept.chars().count() > 1000,
        "body cut, not dropped: {} chars",
        kept.chars().count()
    );
    cluster.settled().await;
    assert_eq!(cluster.service.delivered(&device).len(), 1);
}

/// A node killed while its push is in flight: the push stays pending under
/// its name, another node takes it over after the visibility timeout and
/// sends it, with the same notification and Topic, so the device shows it
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_flight_on_a_killed_node_is_sent_by_another() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let (settings, key) = push_on(QUICK);
    let service = PushService::start(&key.public_base64url()).await;
    let mut doomed = HeraldProcess::start_with_settings(&engine, &settings).await;

    let alice = unique_user("alice");
    let api = UserApi::new(&doomed, &alice);
    let (status, _) = api.post("/v1/push/subscriptions", service.device("alice-phone")).await;
    assert_eq!(status, StatusCode::CREATED);
    // The service takes the first request and answers only much later.
    service.script("alice-phone", vec![Reply::Hold(Duration::from_secs(60))]);
    let r = doomed.publish(&[&alice], json!({"type": "a.b", "title": "in flight"})).await;
    assert_eq!(r[0]["push"], "queued");
    service.wait_until("the request in flight", WAIT, |r| !r.is_empty()).await;
    doomed.kill();

    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let survivor = TestApp::spawn_with(&engine, &pairs).await;
    let all = service.wait_until("the takeover", WAIT, |r| r.iter().any(|r| r.status == 201)).await;
    let sent: Vec<&Value> = all.iter().filter_map(|r| r.payload.as_ref()).collect();
    assert_eq!(sent.len(), 2, "sent once by each node");
    assert_eq!(sent[0], sent[1], "the same notification");
    assert_eq!(all[0].topic, all[1].topic, "and the same Topic: shown once");
    assert_eq!(all[0].status, 0, "the first was never answered: its node died");
    assert_eq!(service.delivered("alice-phone").len(), 1, "accepted once");
    drop(survivor);
}

/// A node stopped with SIGTERM drains its worker: the push in flight is
/// finished there and sent once, and the push it had claimed but not started
/// is handed back, so another node sends it at once, long before the
/// visibility timeout would have let it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_finishes_its_push_in_flight_and_hands_back_the_rest() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    // One send at a time, and a visibility timeout far past the test's waits.
    let (settings, key) =
        push_on(&[("push.concurrency", "1"), ("push.send_timeout", "5s"), ("push.visibility_timeout", "120s")]);
    let service = PushService::start(&key.public_base64url()).await;
    let mut stopping = HeraldProcess::start_with_settings(&engine, &settings).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&stopping, &alice);
    let (status, _) = api.post("/v1/push/subscriptions", service.device("alice-phone")).await;
    assert_eq!(status, StatusCode::CREATED);
    // The first push is answered only after 2 s: it is in flight at SIGTERM,
    // and the second waits, claimed, behind it.
    service.script("alice-phone", vec![Reply::Hold(Duration::from_secs(2))]);
    stopping.publish(&[&alice], json!({"type": "a.b", "title": "in flight"})).await;
    service.wait_until("the request in flight", WAIT, |r| !r.is_empty()).await;
    stopping.publish(&[&alice], json!({"type": "a.b", "title": "waiting"})).await;
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let survivor = TestApp::spawn_with(&engine, &pairs).await;

    stopping.terminate();

    let exit = stopping.wait_exit(WAIT).await;
    assert!(exit.success(), "{exit:?}");
    let all = service.wait_until("both pushes", WAIT, |r| r.iter().filter(|r| r.status == 201).count() == 2).await;
    let titles: Vec<&str> = all.iter().filter_map(|r| r.payload.as_ref()?["title"].as_str()).collect();
    assert_eq!(titles, ["in flight", "waiting"], "each sent once: the one in flight finished, not sent again");
    assert_eq!(service.delivered("alice-phone").len(), 2);
    drop(survivor);
}
