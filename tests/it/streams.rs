//! The SSE stream end to end over HTTP: fan-out, resume, the replay/live
//! seam, reset, token expiry, shutdown. Each test runs on both engines.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{self, Engine, Node, SseStream, TestApp, notification, unique_user, user_token};

const WAIT: Duration = Duration::from_secs(5);

crate::on_both_engines!(
    every_tab_of_the_user_gets_it_and_nobody_else,
    a_stream_opens_with_retry_and_the_unread_count,
    resume_delivers_exactly_what_was_missed_in_order,
    a_stream_that_got_nothing_yet_still_resumes_without_loss,
    the_seam_between_replay_and_live_has_no_gap_and_no_duplicate,
    a_cursor_older_than_history_gets_reset_then_what_is_kept,
    a_malformed_cursor_is_refused,
    a_stream_ends_when_its_token_expires,
    shutdown_says_bye_with_a_retry,
);

async fn every_tab_of_the_user_gets_it_and_nobody_else(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let mut tab1 = app.stream(&alice, None).await;
    let mut tab2 = app.stream(&alice, None).await;
    let mut bobs = app.stream(&bob, None).await;

    let results = app.publish(&[&alice], notification("hello")).await;
    assert_eq!(results[0]["online"], true);
    let id = results[0]["id"].as_str().unwrap().to_owned();
    for tab in [&mut tab1, &mut tab2] {
        let n = tab.next_of("notification", WAIT).await;
        assert_eq!(n.id.as_deref(), Some(id.as_str()));
        let data = n.json();
        assert_eq!((data["id"].as_str(), data["title"].as_str()), (Some(id.as_str()), Some("hello")));
        assert_eq!(data["read"], false);
        assert_eq!(tab.next_of("unread", WAIT).await.json(), json!({"count": 1}));
    }
    bobs.assert_no_notification(Duration::from_millis(300)).await;
}

async fn a_stream_opens_with_retry_and_the_unread_count(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    app.publish(&[&alice], notification("one")).await;
    app.publish(&[&alice], notification("two")).await;

    let response = reqwest::Client::new()
        .get(app.url("/v1/events"))
        .query(&[("access_token", user_token(&alice))])
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let mut stream = SseStream::open(reqwest::Client::new().get(app.url("/v1/events")).bearer_auth(user_token(&alice)))
        .await
        .unwrap();
    let first = stream.next(WAIT).await.unwrap();
    // stream.retry (3 s), jittered by up to half either way.
    assert!(first.retry.is_some_and(|ms| (1500..=4500).contains(&ms)), "{first:?}");
    let unread = stream.next_of("unread", WAIT).await;
    assert_eq!(unread.json(), json!({"count": 2}));
    // Without a cursor, history is not replayed.
    stream.assert_no_notification(Duration::from_millis(300)).await;
}

async fn resume_delivers_exactly_what_was_missed_in_order(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let mut stream = app.stream(&alice, None).await;
    let first = app.publish(&[&alice], notification("before")).await;
    let cursor = stream.next_of("notification", WAIT).await.id.unwrap();
    assert_eq!(first[0]["id"].as_str(), Some(cursor.as_str()));
    stream.close();

    let mut missed = Vec::new();
    for i in 0..100 {
        let r = app.publish(&[&alice], notification(&format!("missed {i}"))).await;
        missed.push(r[0]["id"].as_str().unwrap().to_owned());
    }

    let mut resumed = app.stream(&alice, Some(&cursor)).await;
    let got: Vec<String> = resumed.notifications(100, WAIT).await.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(got, missed);
    resumed.assert_no_notification(Duration::from_millis(300)).await;
}

/// A tab that received no notification before it was cut off still has a
/// cursor (the opening `unread` carries one), so what was published while it
/// was away is not lost. (Found by herald-load's reconnect storm.)
async fn a_stream_that_got_nothing_yet_still_resumes_without_loss(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    app.publish(&[&alice], notification("before the tab opened")).await;
    let mut stream = app.stream(&alice, None).await;
    let opening = stream.next_of("unread", WAIT).await;
    let cursor = opening.id.expect("the opening unread event carries the stream's cursor");
    stream.close();

    let missed = app.publish(&[&alice], notification("while away")).await;
    let mut resumed = app.stream(&alice, Some(&cursor)).await;
    let got = resumed.next_of("notification", WAIT).await;
    assert_eq!(got.id.as_deref(), missed[0]["id"].as_str(), "exactly the one published while away");
    resumed.assert_no_notification(Duration::from_millis(300)).await;
}

/// Publishes continuously while clients reconnect with their cursor, round
/// after round; every entry must arrive exactly once, in order.
async fn the_seam_between_replay_and_live_has_no_gap_and_no_duplicate(engine: Engine) {
    // The reader reconnects as fast as it can, up to 200 times: far past any
    // real client, and past the per-user rate limit, which is not under test.
    let app =
        TestApp::spawn_with(&engine, &[("stream.replay_page", "7"), ("limits.user_requests_per_second", "0")]).await;
    let alice = unique_user("alice");
    // Four concurrent publishers keep entries arriving during every replay.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let alice = alice.clone();
            let base = app.url("");
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut ids = Vec::new();
                for i in 0..250 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ids.push(helpers::publish_to(&http, &base, &alice, notification(&format!("p{p} n{i}"))).await);
                }
                ids
            })
        })
        .collect();

    let mut received: Vec<String> = Vec::new();
    let mut cursor = "0-0".to_owned();
    let mut rounds = 0;
    while !publishers.iter().all(|p| p.is_finished()) && rounds < 200 {
        rounds += 1;
        let mut stream = app.stream(&alice, Some(&cursor)).await;
        // Take a few events, then drop the connection mid-flow.
        for _ in 0..(3 + rounds % 5) {
            match tokio::time::timeout(Duration::from_millis(500), stream.next_of("notification", WAIT)).await {
                Ok(n) => {
                    let id = n.id.unwrap();
                    received.push(id.clone());
                    cursor = id;
                }
                Err(_) => break,
            }
        }
        stream.close();
    }
    // History order is id order.
    let mut published: Vec<String> = Vec::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    published.sort_by_key(|id| id.parse::<herald::domain::EntryId>().unwrap());
    // Drain the rest.
    let mut stream = app.stream(&alice, Some(&cursor)).await;
    while received.len() < published.len() {
        received.push(stream.next_of("notification", WAIT).await.id.unwrap());
    }
    assert!(rounds >= 20, "the publisher finished too fast to test the seam ({rounds} rounds)");
    assert_eq!(received, published, "every entry exactly once, in order, over {rounds} reconnects");
}

async fn a_cursor_older_than_history_gets_reset_then_what_is_kept(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &[("history.max_len", "5")]).await;
    let alice = unique_user("alice");
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(app.publish(&[&alice], notification(&format!("n{i}"))).await[0]["id"].as_str().unwrap().to_owned());
    }
    let mut stream = app.stream(&alice, Some(&ids[0])).await;
    let reset = stream.next_of("reset", WAIT).await;
    assert_eq!(reset.json(), json!({"reason": "history_trimmed", "scope": "inbox"}));
    let kept: Vec<String> = stream.notifications(5, WAIT).await.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(kept, ids[3..]);

    // A cursor at a kept entry resumes without reset.
    let mut stream = app.stream(&alice, Some(&ids[4])).await;
    let first = stream.next(WAIT).await.unwrap(); // retry
    assert!(first.retry.is_some_and(|ms| (1500..=4500).contains(&ms)), "{first:?}");
    assert_eq!(stream.next(WAIT).await.unwrap().event, "unread");
    let next = stream.next(WAIT).await.unwrap();
    assert_eq!((next.event.as_str(), next.id.as_deref()), ("notification", Some(ids[5].as_str())));
}

async fn a_malformed_cursor_is_refused(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    for bad in ["abc", "1-2-3", "-5", "1-"] {
        let response = reqwest::Client::new()
            .get(app.url("/v1/events"))
            .bearer_auth(user_token(&alice))
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "cursor {bad:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_cursor");
    }
    let response = reqwest::Client::new()
        .get(app.url("/v1/events?last_event_id=nope"))
        .bearer_auth(user_token(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

async fn a_stream_ends_when_its_token_expires(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let token = herald::auth::mint_token(helpers::SECRET, &alice, Duration::from_secs(2), false).unwrap();
    let mut stream =
        SseStream::open(reqwest::Client::new().get(app.url("/v1/events")).bearer_auth(token)).await.unwrap();
    let expiring = stream.next_of("token_expiring", WAIT).await;
    assert!(expiring.json()["expires_at"].as_str().unwrap().ends_with('Z'));
    let bye = stream.next_of("bye", WAIT).await;
    assert_eq!(bye.json(), json!({"reason": "token_expired"}));
    assert!(stream.next(WAIT).await.is_none(), "the stream must end after bye");
}

async fn shutdown_says_bye_with_a_retry(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    let mut stream = app.stream(&alice, None).await;
    stream.next_of("unread", WAIT).await;
    let handle = app.handle.clone();
    let stopping = tokio::spawn(async move { handle.shutdown().await });
    let bye = stream.next_of("bye", WAIT).await;
    assert_eq!(bye.json(), json!({"reason": "shutdown"}));
    assert!(bye.retry.is_some(), "shutdown bye carries a jittered retry");
    assert!(stream.next(WAIT).await.is_none());
    tokio::time::timeout(WAIT, stopping).await.expect("shutdown completes").unwrap();
}
