//! Many nodes on one Redis: fan-out across nodes, a killed node, a
//! restarted Redis. Nothing accepted is lost, nothing arrives twice.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    Engine, Follower, HeraldProcess, Node, RedisServer, TestApp, fcall_publish, notification, publish_to,
    publisher_token, unique_user,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_on_one_node_gets_what_another_node_published() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let (a, b) = (TestApp::spawn(&engine).await, TestApp::spawn(&engine).await);
    let alice = unique_user("alice");
    let mut on_a = a.stream(&alice, None).await;
    let mut on_b = b.stream(&alice, None).await;

    let results = b.publish(&[&alice], notification("cross-node")).await;
    assert_eq!(results[0]["online"], true);
    let id = results[0]["id"].as_str().unwrap();
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(stream.next_of("notification", WAIT).await.id.as_deref(), Some(id));
    }
}

/// Publishes `count` notifications to `user` through `node`, one by one,
/// returning the ids in order.
async fn publish_many(base: String, user: String, count: usize, pause: Duration) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(publish_to(&http, &base, &user, notification(&format!("n{i}"))).await);
        tokio::time::sleep(pause).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_clients_resume_on_another() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let mut a = HeraldProcess::start(&engine).await;
    let b = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let follower = Follower::start(&alice, vec![a.url(""), b.url("")]);
    follower.wait_until_open(WAIT).await;
    assert_eq!(a.streams_open().await, Some(1), "the first URL is node A's");

    let publisher = tokio::spawn(publish_many(b.url(""), alice.clone(), 300, Duration::from_millis(3)));
    follower.wait_for_count(60, WAIT).await;
    a.kill(); // SIGKILL mid-stream
    let published = publisher.await.unwrap();
    let received = follower.wait_for_all(&published, WAIT).await;
    assert!(
        follower.reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the client must have moved to node B"
    );
    assert_eq!(received, published, "every notification exactly once, in order, across the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_recover_from_a_redis_restart_without_loss() {
    let mut redis = RedisServer::start_with_aof();
    let engine = Engine::Redis(redis.url());
    let node = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let follower = Follower::start(&alice, vec![node.url("")]);
    follower.wait_until_open(WAIT).await;

    let mut accepted = publish_many(node.url(""), alice.clone(), 20, Duration::ZERO).await;
    follower.wait_for_count(20, WAIT).await;

    redis.kill();
    // While Redis is down a publish is refused, never half-accepted.
    let refused = reqwest::Client::new()
        .post(node.url("/v1/publish"))
        .bearer_auth(publisher_token())
        .json(&json!({"to": {"users": [alice]}, "notification": notification("during outage")}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    redis.restart();

    // Straight away, a backend publishes with FCALL: the node's pub/sub
    // connection is not back yet, so only history can bring these to the
    // open stream (the node resyncs it after resubscribing).
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    for i in 0..5 {
        let id = fcall_publish(&mut conn, &alice, &notification(&format!("fcall {i}")).to_string()).await.unwrap();
        accepted.push(id.expect("no preferences drop it"));
    }

    // Then over HTTP, as soon as the node accepts again.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while accepted.len() < 40 {
        assert!(tokio::time::Instant::now() < deadline, "publishing did not recover after the Redis restart");
        let r = http
            .post(node.url("/v1/publish"))
            .bearer_auth(publisher_token())
            .json(&json!({"to": {"users": [alice]}, "notification": notification("after restart")}))
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            let body: serde_json::Value = r.json().await.unwrap();
            accepted.push(body["results"][0]["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(r.status(), 503);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let received = follower.wait_for_all(&accepted, Duration::from_secs(20)).await;
    assert_eq!(received, accepted, "everything accepted arrives once, in order");
    assert_eq!(
        follower.reconnects.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the stream itself survives a Redis restart"
    );
    node.wait_ready().await;

    // And Redis kept it all (AOF): a fresh stream replays all 40.
    let mut replay = node.stream(&alice, Some("0-0")).await;
    let replayed: Vec<String> = replay.notifications(40, WAIT).await.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(replayed, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_bye_to_every_stream_and_exits() {
    let mut node = HeraldProcess::start(&Engine::Memory).await;
    let alice = unique_user("alice");
    let mut stream = node.stream(&alice, None).await;
    stream.next_of("unread", WAIT).await;

    node.terminate();
    let bye = stream.next_of("bye", WAIT).await;
    assert_eq!(bye.json(), json!({"reason": "shutdown"}));
    assert!(bye.retry.is_some_and(|ms| ms > 0), "a jittered retry comes with it");
    let status = node.wait_exit(WAIT).await;
    assert!(status.success(), "exit status {status}");
}
