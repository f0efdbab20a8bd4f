//! A client that stops reading is ended without holding anyone else up, and
//! resumes from history without loss.
//!
//! Its queue overflows and it is marked `slow_consumer`; as it takes nothing
//! more, even its `bye` cannot reach it, and the kernel aborts the
//! connection after `server.write_timeout` (TCP_USER_TIMEOUT). What it did
//! receive is an in-order prefix; the rest comes on resume.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Engine, Node, TestApp, read_raw_events, unique_user, user_token};

crate::on_both_engines!(a_slow_consumer_is_ended_and_resumes_without_loss);

async fn a_slow_consumer_is_ended_and_resumes_without_loss(engine: Engine) {
    // How many publishes it takes to end the slow tab depends on how much the
    // kernel buffers for it (thousands in an optimised build): history must
    // hold all of them, so that the resume below gets every one.
    let settings = [("stream.queue_capacity", "8"), ("server.write_timeout", "1s"), ("history.max_len", "10000")];
    let app = TestApp::spawn_with(&engine, &settings).await;
    let alice = unique_user("alice");
    let mut fast = app.stream(&alice, None).await;

    // The slow tab: a tiny receive buffer, and it stops reading after the
    // first bytes of the stream.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
        app.addr,
        user_token(&alice)
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&raw).contains("event: unread") {
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "slow stream closed early");
        raw.extend_from_slice(&chunk[..n]);
    }
    crate::helpers::wait_for("both streams", Duration::from_secs(5), async || {
        (app.streams_open().await == Some(2)).then_some(())
    })
    .await;

    // Publish large notifications until the server gives up on the slow tab.
    let big = "x".repeat(3000);
    let mut published = Vec::new();
    let mut fast_received = Vec::new();
    let mut ended = false;
    for i in 0..5000 {
        let r = app.publish(&[&alice], json!({"type": "test.big", "title": format!("n{i}"), "data": big})).await;
        published.push(r[0]["id"].as_str().unwrap().to_owned());
        // The fast tab keeps up all along.
        fast_received.push(fast.next_of("notification", Duration::from_secs(5)).await.id.unwrap());
        if i % 25 == 24 && app.streams_open().await == Some(1) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the slow consumer was never ended");
    assert_eq!(fast_received, published, "the fast tab got everything, in order, while the slow one stalled");

    // The slow tab now reads what reached it, until the connection ends.
    let _ =
        tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut raw)).await.expect("the connection ends");
    let events = read_raw_events(&raw);
    if let Some(bye) = events.iter().find(|e| e.event == "bye") {
        assert_eq!(bye.json(), json!({"reason": "slow_consumer"}));
    }
    let got: Vec<String> = events.iter().filter(|e| e.event == "notification").filter_map(|e| e.id.clone()).collect();
    assert!(got.len() < published.len());
    assert_eq!(got, published[..got.len()], "what the slow tab got is an in-order prefix");

    // It resumes from its last id and gets the rest, exactly.
    let cursor = got.last().cloned().unwrap_or_else(|| "0-0".into());
    let mut resumed = app.stream(&alice, Some(&cursor)).await;
    let rest: Vec<String> = resumed
        .notifications(published.len() - got.len(), Duration::from_secs(5))
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(rest, published[got.len()..]);
}
