//! What a resumed stream sends at the seam between replay and live frames,
//! read from the real response body over each engine.

use std::{future::poll_fn, pin::Pin, time::Duration};

use actix_web::body::MessageBody;
use bytes::Bytes;
use herald::{
    domain::EntryId,
    engine::{Engine, ReadTarget, StreamStart},
    sse::{Opening, SseBody},
    wire::{Frame, KeepAlive},
};

use crate::{
    conformance::{backend, next_frame, user},
    helpers::{self, Parser, SseEvent},
};

const WAIT: Duration = Duration::from_secs(5);

crate::on_both_engines!(the_last_unread_after_a_resume_is_the_true_count);

/// Every event `body` sends up to (not including) the comment `marker`,
/// which the caller queued after the frames it wants drained. The body
/// never ends by itself, so the marker is what says it is drained.
async fn events_until(body: &mut SseBody, marker: &[u8]) -> Vec<SseEvent> {
    let (mut parser, mut events, mut text) = (Parser::default(), Vec::new(), Vec::new());
    loop {
        let chunk = tokio::time::timeout(WAIT, poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)))
            .await
            .unwrap_or_else(|_| {
                panic!("the body stalled before the marker; so far:\n{}", String::from_utf8_lossy(&text))
            })
            .expect("the body ended before the marker")
            .unwrap();
        text.extend_from_slice(&chunk);
        if chunk[..] == *marker {
            return events;
        }
        parser.feed(&chunk, &mut events);
    }
}

/// A `read` queued before the replay carries an older count than the
/// replay's closing `unread`; a notification queued after it is dropped as
/// already replayed, but its count is the newest and must still be sent.
async fn the_last_unread_after_a_resume_is_the_true_count(engine: helpers::Engine) {
    // Arrange: Y is unread; a tab registers (its subscription confirmed),
    // then Y is read and X published while the tab has not replayed yet.
    let b = backend(&engine, &[]).await;
    let alice = user("alice");
    let y = b.publish(&alice, "y").await;
    let tab = b.listen(&alice).await;
    // A second tab of the same user: the hub queues each live frame for
    // every tab at once, so once this one has X's frame, so has `tab`.
    let probe = b.listen(&alice).await;
    b.engine.mark_read(&alice, &ReadTarget::Ids(vec![y])).await.unwrap();
    let x = b.publish(&alice, "x").await;
    let mut live = Vec::new();
    while live.last().is_none_or(|f: &Frame| f.id != Some(x)) {
        live.push(next_frame(&probe, WAIT).await.expect("the read frame, then X's"));
    }
    drop(probe);
    let marker = Bytes::from_static(b": drained\n\n");
    assert!(tab.queue().push(Frame::plain(None, marker.clone()), 0, 64));

    // Act: the tab resumes from before Y.
    let opening = Opening {
        topics: None,
        cursor: Some(EntryId::ZERO),
        start: StreamStart { last_id: x, unread: 1 },
        retry: Duration::from_secs(1),
        keep_alive: KeepAlive::Comment,
        page_size: 100,
    };
    let mut body = SseBody::new(tab, b.engine.clone(), opening);
    let events = events_until(&mut body, &marker).await;

    // Assert: each entry once, and the last count is the true one.
    let ids: Vec<_> = events.iter().filter(|e| e.event == "notification").filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, [y.to_string(), x.to_string()], "{events:#?}");
    assert!(events.iter().any(|e| e.event == "read"), "the queued read is sent: {events:#?}");
    let last_unread = events.iter().rev().find(|e| e.event == "unread").expect("an unread event").json();
    let truth = b.engine.stream_start(&alice).await.unwrap().unread;
    assert_eq!(truth, 1, "X is unread, Y read");
    assert_eq!(last_unread["count"], truth, "the last unread must be the true count: {events:#?}");
}
