//! What reaches Redis without Herald's validation (another client's XADD or
//! PUBLISH) can never break the SSE wire format.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Engine, Node, RedisServer, SseEvent, TestApp, UserApi, notification, unique_user};

const WAIT: Duration = Duration::from_secs(10);

/// Raw line breaks that would end the `data:` line and add fields.
const INJECTED: &str = "\n\nevent: bye\ndata: x\n\nid: 9-9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_and_published_line_breaks_cannot_inject_events() {
    // Arrange: a real entry for a cursor, then one written straight into the
    // inbox with raw line breaks inside a string.
    let redis = RedisServer::start();
    let node = TestApp::spawn(&Engine::Redis(redis.url())).await;
    let alice = unique_user("alice");
    let cursor = node.publish(&[&alice], notification("before")).await[0]["id"].as_str().unwrap().to_owned();
    let base = format!("herald:{{u:{alice}}}");
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let stored = format!(r#"{{"type":"test.event","title":"stored{INJECTED}","priority":"normal"}}"#);
    let entry: String = ::redis::cmd("XADD")
        .arg(format!("{base}:inbox"))
        .arg("*")
        .arg("n")
        .arg(&stored)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Act: resume from the cursor (the entry is replayed), then publish raw
    // live messages in the channel's format, then a real `read` as the end.
    let mut stream = node.stream(&alice, Some(&cursor)).await;
    let live_id = format!("{}-0", entry.split('-').next().unwrap().parse::<u64>().unwrap() + 1);
    let live = format!(r#"{{"type":"test.event","title":"live{INJECTED}"}}"#);
    let read = format!(r#"{{"ids":["{live_id}{INJECTED}"]}}"#);
    for message in [format!("n {live_id} 2 {live}"), format!("r - 1 {read}")] {
        let _: u64 = ::redis::cmd("PUBLISH").arg(&base).arg(message).query_async(&mut conn).await.unwrap();
    }
    let (status, _) = UserApi::new(&node, &alice).post("/v1/notifications/read", json!({"all": true})).await;
    assert_eq!(status, 200);
    let mut events: Vec<SseEvent> = Vec::new();
    while !events.last().is_some_and(|e| e.event == "read" && e.data.contains("\"all\":true")) {
        events.push(stream.next(WAIT).await.expect("the stream stays open"));
    }

    // Assert: only the events the server meant, each one whole JSON.
    // The opening `retry:` is a message of its own, with no event name.
    let unnamed = |e: &SseEvent| e.event == "message" && e.retry.is_none();
    assert!(events.iter().all(|e| e.event != "bye" && !unnamed(e)), "{events:#?}");
    assert!(events.iter().all(|e| e.id.as_deref() != Some("9-9")), "{events:#?}");
    let notifications: Vec<&SseEvent> = events.iter().filter(|e| e.event == "notification").collect();
    let ids: Vec<_> = notifications.iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(ids, [entry.as_str(), live_id.as_str()], "{events:#?}");
    let titles: Vec<_> = notifications.iter().map(|e| e.json()["title"].as_str().unwrap().to_owned()).collect();
    assert_eq!(titles, ["stored  event: bye data: x  id: 9-9", "live  event: bye data: x  id: 9-9"]);
    let reads: Vec<_> = events.iter().filter(|e| e.event == "read").map(SseEvent::json).collect();
    assert_eq!(reads[0]["ids"][0], format!("{live_id}  event: bye data: x  id: 9-9"));
    let named = events.iter().filter(|e| e.retry.is_none());
    assert!(named.clone().all(|e| serde_json::from_str::<serde_json::Value>(&e.data).is_ok()), "{events:#?}");
}
