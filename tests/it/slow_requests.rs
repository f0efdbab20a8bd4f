//! Slowloris: clients that send a request's head or body a byte at a time.
//! Each gets `408` within its timeout and its connection closed, nothing
//! they meant to change changes, and the node keeps serving everyone else
//! meanwhile.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Engine, Node, TestApp, UserApi, notification, publisher_token, unique_user, user_token};

const TIMEOUTS: [(&str, &str); 2] = [("server.request_head_timeout", "1s"), ("server.body_read_timeout", "1s")];

/// Sends `start` at once, then `rest` one byte every 300 ms, until the
/// node answers or closes; what the node sent back.
async fn trickle(node: std::net::SocketAddr, start: String, rest: String) -> String {
    let mut socket = TcpStream::connect(node).await.unwrap();
    socket.write_all(start.as_bytes()).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let sender = tokio::spawn(async move {
        for byte in rest.bytes() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    // Bounded: the node must answer and close well within this.
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    sender.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_bodies_get_408_and_change_nothing() {
    let app = TestApp::spawn_with(&Engine::Memory, &TIMEOUTS).await;
    let victim = unique_user("victim");
    let addr = app.addr();

    // 100 heads sent a byte at a time, and 100 publish bodies likewise
    // (each a valid publish to `victim` if it ever completed), plus
    // preferences bodies (read by hand, not by the JSON extractor).
    let head = |i: usize| {
        let start = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n");
        (start, format!("X-Slow-{i}: {}\r\n\r\n", "a".repeat(40)))
    };
    let publish_body =
        json!({"to": {"users": [victim]}, "notification": notification("should never be stored")}).to_string();
    let body = |path: &str, method: &str, token: &str, body: &str| {
        let start = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..5]
        );
        (start, body[5..].to_owned())
    };
    let prefs = json!({"categories": {"test": {"in_app": false}}}).to_string();
    let mut attacks = Vec::new();
    for i in 0..100 {
        let (start, rest) = head(i);
        attacks.push(tokio::spawn(trickle(addr, start, rest)));
        let (start, rest) = body("/v1/publish", "POST", &publisher_token(), &publish_body);
        attacks.push(tokio::spawn(trickle(addr, start, rest)));
    }
    for _ in 0..10 {
        let (start, rest) = body("/v1/preferences", "PUT", &user_token(&victim), &prefs);
        attacks.push(tokio::spawn(trickle(addr, start, rest)));
    }

    // Meanwhile, another user's publish and list are served at once.
    let started = Instant::now();
    let alice = unique_user("alice");
    app.publish(&[&alice], notification("hello")).await;
    let listed = UserApi::new(&app, &alice).list_all("", 10).await;
    assert_eq!(listed.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1), "others wait {:?}", started.elapsed());

    let answers = futures_util::future::join_all(attacks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "attack {i} got: {answer:?}");
        if i % 2 == 1 || i >= 200 {
            assert!(answer.contains(r#""code":"request_timeout""#), "attack {i} got: {answer:?}");
        }
    }
    // Nothing any of them meant to change changed.
    let api = UserApi::new(&app, &victim);
    assert_eq!(api.list_all("", 10).await.len(), 0, "a trickled publish was stored");
    let (status, prefs) = api.get("/v1/preferences").await;
    assert_eq!(status, 200);
    assert!(prefs["categories"].get("test").is_none(), "trickled preferences were saved: {prefs}");
}
