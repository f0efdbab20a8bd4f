//! The unread count is exact under concurrency: many tasks publish, read,
//! read-all, click and delete at once, with trimming set small, then the
//! final state is checked against what the operations allow.
//!
//! Concurrent operations have no single expected outcome, so the model is
//! built from each operation's interval (start, end) and result:
//! an operation that ended before another began is ordered before it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Engine, Node, TestApp, UserApi, fcall_publish, notification, publish_to, unique_user, user_token, wait_for,
};

const TASKS: usize = 6;
const OPS_PER_TASK: usize = 150;
const MAX_LEN: usize = 15;

#[derive(Debug, Clone)]
enum Op {
    Publish { id: String },
    Read { ids: Vec<String> },
    ReadAll,
    Click { id: String },
    Delete { id: String },
}

#[derive(Debug, Clone)]
struct Done {
    op: Op,
    start: Instant,
    end: Instant,
    ok: bool,
}

crate::on_both_engines!(unread_count_and_item_state_match_the_model_under_concurrency);

async fn unread_count_and_item_state_match_the_model_under_concurrency(engine: Engine) {
    // Six tasks of one user fire 900 requests as fast as they can: past the
    // per-user rate limit by design, which is not what this test checks.
    let app =
        TestApp::spawn_with(&engine, &[("history.max_len", "15"), ("limits.user_requests_per_second", "0")]).await;
    let alice = unique_user("alice");
    let mut tab = app.stream(&alice, None).await;
    let known: Arc<Mutex<Vec<String>>> = Arc::default();
    let log: Arc<Mutex<Vec<Done>>> = Arc::default();
    let seed: u64 = rand::random();
    println!("seed {seed}");

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (base, alice, known, log) = (app.url(""), alice.clone(), known.clone(), log.clone());
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed + t as u64);
                let http = reqwest::Client::new();
                let user = user_token(&alice);
                // A backend's own connection, for the FCALL publishes.
                let mut backend = match &engine {
                    Engine::Redis(url) => Some(
                        ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap(),
                    ),
                    Engine::Memory => None,
                };
                for i in 0..OPS_PER_TASK {
                    let pick = |rng: &mut StdRng| {
                        // Mostly recent ids, which trimming has not removed yet.
                        let known = known.lock().unwrap();
                        let from = known.len().saturating_sub(MAX_LEN + 5);
                        (!known.is_empty()).then(|| known[rng.random_range(from..known.len())].clone())
                    };
                    let roll = rng.random_range(0..100);
                    let start = Instant::now();
                    let (op, ok) = if roll < 45 || known.lock().unwrap().is_empty() {
                        let title = format!("t{t} op{i}");
                        let id = match backend.as_mut() {
                            // With Redis, half the publishes are a backend's FCALL.
                            Some(conn) if rng.random_bool(0.5) => {
                                fcall_publish(conn, &alice, &notification(&title).to_string())
                                    .await
                                    .unwrap()
                                    .expect("no preferences drop it")
                            }
                            _ => publish_to(&http, &base, &alice, notification(&title)).await,
                        };
                        known.lock().unwrap().push(id.clone());
                        (Op::Publish { id }, true)
                    } else if roll < 65 {
                        let ids: Vec<String> = (0..rng.random_range(1..4)).filter_map(|_| pick(&mut rng)).collect();
                        let s = post(&http, &format!("{base}/v1/notifications/read"), &user, json!({"ids": ids})).await;
                        (Op::Read { ids }, s == StatusCode::OK)
                    } else if roll < 68 {
                        let s =
                            post(&http, &format!("{base}/v1/notifications/read"), &user, json!({"all": true})).await;
                        (Op::ReadAll, s == StatusCode::OK)
                    } else if roll < 86 {
                        let id = pick(&mut rng).unwrap();
                        let s = post(&http, &format!("{base}/v1/notifications/{id}/clicked"), &user, json!({})).await;
                        (Op::Click { id }, s == StatusCode::OK)
                    } else {
                        let id = pick(&mut rng).unwrap();
                        let s = http
                            .delete(format!("{base}/v1/notifications/{id}"))
                            .bearer_auth(&user)
                            .send()
                            .await
                            .unwrap()
                            .status();
                        assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND, "delete: {s}");
                        (Op::Delete { id }, s == StatusCode::OK)
                    };
                    log.lock().unwrap().push(Done { op, start, end: Instant::now(), ok });
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // The final state, as the API reports it.
    let api = UserApi::new(&app, &alice);
    let (status, page) = api.get("/v1/notifications?limit=100").await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    let (_, count) = api.get("/v1/notifications/unread_count").await;
    let unread_items = items.iter().filter(|i| i["read"] == false).count() as u64;
    assert_eq!(page["unread_count"].as_u64(), Some(unread_items), "the list's count is its unread items (seed {seed})");
    assert_eq!(count["count"].as_u64(), Some(unread_items), "the count endpoint agrees (seed {seed})");

    check_against_model(&log.lock().unwrap(), items, seed);

    // The open tab converges on the same count.
    let mut last_unread = None;
    wait_for("the stream's last unread event to match", Duration::from_secs(10), async || {
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(100), tab.next(Duration::from_secs(3600))).await
        {
            if e.event == "unread" {
                last_unread = e.json()["count"].as_u64();
            }
        }
        (last_unread == Some(unread_items)).then_some(())
    })
    .await;
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> StatusCode {
    let status = http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status();
    assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{url}: {status}");
    status
}

fn check_against_model(log: &[Done], items: &[Value], seed: u64) {
    let id_of = |s: &str| s.parse::<herald::domain::EntryId>().unwrap();
    let published: HashMap<String, &Done> = log
        .iter()
        .filter_map(|d| match &d.op {
            Op::Publish { id } => Some((id.clone(), d)),
            _ => None,
        })
        .collect();
    let deleted: HashSet<&str> = log
        .iter()
        .filter_map(|d| match &d.op {
            Op::Delete { id } if d.ok => Some(id.as_str()),
            _ => None,
        })
        .collect();

    // What is kept: newest first, published, not deleted, at most MAX_LEN,
    // and trimming only ever removes the oldest (no holes).
    let listed: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(listed.len() <= MAX_LEN, "history over max_len (seed {seed})");
    assert!(listed.windows(2).all(|w| id_of(w[0]) > id_of(w[1])), "newest first (seed {seed})");
    if let Some(oldest) = listed.last() {
        let mut expected: Vec<&str> = published
            .keys()
            .map(String::as_str)
            .filter(|id| !deleted.contains(id) && id_of(id) >= id_of(oldest))
            .collect();
        expected.sort_by_key(|id| std::cmp::Reverse(id_of(id)));
        assert_eq!(listed, expected, "kept items are the newest undeleted ones (seed {seed})");
    }

    for item in items {
        let id = item["id"].as_str().unwrap();
        let (read, clicked) = (item["read"].as_bool().unwrap(), item["clicked"].as_bool().unwrap());
        let publish = published[id];
        let targets = |d: &Done| match &d.op {
            Op::Read { ids } => ids.iter().any(|i| i == id),
            Op::Click { id: c } => c == id,
            _ => false,
        };
        let clicks_ok = log.iter().any(|d| matches!(&d.op, Op::Click { id: c } if c == id) && d.ok);
        let clicks_tried = log.iter().any(|d| matches!(&d.op, Op::Click { id: c } if c == id));
        let read_ok = log.iter().any(|d| targets(d) && d.ok);
        let read_tried = log.iter().any(targets);
        // A read-all that began after the publish ended covers it; one that
        // ended before the publish began cannot.
        let all_after = log.iter().any(|d| matches!(d.op, Op::ReadAll) && d.start >= publish.end);
        let all_overlapping = log.iter().any(|d| matches!(d.op, Op::ReadAll) && d.end > publish.start);

        assert!(!clicked || clicks_tried, "{id}: clicked but never clicked (seed {seed})");
        if clicks_ok {
            assert!(clicked && read, "{id}: a successful click marks clicked and read (seed {seed})");
        }
        if read_ok || all_after {
            assert!(read, "{id}: must be read (seed {seed})");
        }
        if read {
            assert!(read_tried || all_overlapping, "{id}: read with no operation that could read it (seed {seed})");
        }
    }
}
