//! Topics: publishing to one (HTTP and `FCALL herald_publish_topic`),
//! following it on the stream as the token or `topics.public` allows, one
//! composite cursor that resumes the inbox and every topic exactly, and a
//! `reset` that names the part whose history was trimmed.

use std::time::Duration;

use herald::auth::{Claims, mint_claims};
use serde_json::{Value, json};

use crate::helpers::{
    Engine, HeraldProcess, Node, RedisServer, SECRET, SseEvent, SseStream, TestApp, UserApi, notification,
    publisher_token, unique_user,
};

const WAIT: Duration = Duration::from_secs(10);

crate::on_both_engines!(
    followers_get_topic_notifications_and_nobody_else,
    a_topic_the_user_may_not_follow_is_refused_and_opens_nothing,
    one_cursor_resumes_the_inbox_and_every_topic_exactly,
    cut_or_changed_cursors_are_refused_and_inbox_cursors_still_resume,
    a_trimmed_topic_resets_only_its_own_part,
    a_topic_lists_its_history_for_its_followers,
    bad_topic_publishes_are_refused_and_store_nothing,
    reconnecting_while_all_parts_publish_loses_and_repeats_nothing
);

/// A token for `user` whose `topics` claim is `topics`.
pub(crate) fn token_with_topics(user: &str, topics: &[&str]) -> String {
    let mut claims = Claims::new(user, herald::clock::now_unix() + 3600, false);
    claims.topics = Some(topics.iter().map(|t| t.to_string()).collect());
    mint_claims(SECRET, &claims).unwrap()
}

async fn open(app: &impl Node, token: &str, topics: &str, cursor: Option<&str>) -> Result<SseStream, String> {
    let mut request = reqwest::Client::new().get(app.url("/v1/events")).bearer_auth(token);
    if !topics.is_empty() {
        request = request.query(&[("topics", topics)]);
    }
    if let Some(cursor) = cursor {
        request = request.header("Last-Event-ID", cursor);
    }
    SseStream::open(request).await
}

/// Publishes to a topic over HTTP; returns the entry id.
async fn publish_topic(app: &impl Node, topic: &str, title: &str) -> String {
    let response = reqwest::Client::new()
        .post(app.url("/v1/publish"))
        .bearer_auth(publisher_token())
        .json(&json!({"to": {"topic": topic}, "notification": notification(title)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["topic"], topic, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn app_settings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut settings = vec![("topics.public", "announcements,status")];
    settings.extend_from_slice(extra);
    settings
}

/// The titles of `events`' notifications, in order.
fn titles(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.json()["title"].as_str().unwrap().to_owned()).collect()
}

async fn followers_get_topic_notifications_and_nobody_else(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let (alice, bob, carol) = (unique_user("alice"), unique_user("bob"), unique_user("carol"));
    let mut alice_stream = open(&app, &token_with_topics(&alice, &[]), "announcements", None).await.unwrap();
    let mut bob_stream =
        open(&app, &token_with_topics(&bob, &["team:*"]), "team:42,announcements", None).await.unwrap();
    let mut carol_stream = app.stream(&carol, None).await;

    let id = publish_topic(&app, "announcements", "maintenance at 22:00").await;
    for stream in [&mut alice_stream, &mut bob_stream] {
        let event = stream.next_of("notification", WAIT).await;
        let n = event.json();
        assert_eq!(n["topic"], "announcements", "{n}");
        assert_eq!(n["id"], id.as_str());
        assert_eq!(n["title"], "maintenance at 22:00");
        assert!(n.get("read").is_none() && n.get("clicked").is_none(), "a topic has no read state: {n}");
        assert_ne!(event.id.as_deref(), Some(id.as_str()), "the event id is the stream's composite cursor");
    }
    publish_topic(&app, "team:42", "deploy finished").await;
    assert_eq!(bob_stream.next_of("notification", WAIT).await.json()["title"], "deploy finished");
    alice_stream.assert_no_notification(Duration::from_millis(300)).await;
    carol_stream.assert_no_notification(Duration::from_millis(300)).await;
    // The badge counts the inbox: a topic notification changes no count.
    let (_, count) = UserApi::new(&app, &bob).get("/v1/notifications/unread_count").await;
    assert_eq!(count["count"], 0, "{count}");
}

async fn a_topic_the_user_may_not_follow_is_refused_and_opens_nothing(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[("topics.max_per_stream", "2")])).await;
    let dave = unique_user("dave");
    let token = token_with_topics(&dave, &["team:*", "product:991"]);
    let cases: [(&str, u16, &str); 5] = [
        ("team:1,secret", 403, "`secret`"),
        ("product:992", 403, "`product:992`"),
        ("team:1,team:2,team:3", 400, "at most 2"),
        ("team:1,bad topic", 400, "bad topic"),
        ("team:1,a*", 400, "a*"),
    ];
    for (topics, status, named) in cases {
        let error = open(&app, &token, topics, None).await.err().expect("refused");
        assert!(error.starts_with(&status.to_string()), "{topics}: {error}");
        assert!(error.contains(named), "{topics}: the error names it: {error}");
    }
    assert_eq!(app.streams_open().await, Some(0), "nothing was opened");
    // Allowed by the claim (exact and prefix) and by topics.public.
    let stream = open(&app, &token, "team:7,product:991", None).await.unwrap();
    drop(stream);
    open(&app, &token_with_topics(&dave, &[]), "status", None).await.unwrap();
}

async fn one_cursor_resumes_the_inbox_and_every_topic_exactly(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let erin = unique_user("erin");
    let token = token_with_topics(&erin, &["team:*"]);
    let mut stream = open(&app, &token, "team:1,announcements", None).await.unwrap();
    app.publish(&[&erin], notification("inbox 1")).await;
    publish_topic(&app, "team:1", "team 1").await;
    publish_topic(&app, "announcements", "announcement 1").await;
    let seen = stream.notifications(3, WAIT).await;
    assert_eq!(titles(&seen), ["inbox 1", "team 1", "announcement 1"]);
    let cursor = seen.last().unwrap().id.clone().unwrap();
    assert!(cursor.len() < 200, "compact: {cursor}");
    stream.close();

    // Missed while away: interleaved across the three parts.
    let mut missed = Vec::new();
    for i in 0..5 {
        app.publish(&[&erin], notification(&format!("inbox m{i}"))).await;
        missed.push(format!("inbox m{i}"));
        publish_topic(&app, "announcements", &format!("announcement m{i}")).await;
        missed.push(format!("announcement m{i}"));
        publish_topic(&app, "team:1", &format!("team m{i}")).await;
        missed.push(format!("team m{i}"));
    }
    publish_topic(&app, "team:2", "not followed").await;
    let mut resumed = open(&app, &token, "team:1,announcements", Some(&cursor)).await.unwrap();
    let replayed = resumed.notifications(15, WAIT).await;
    // Merged by id: ids of different parts are ordered by their
    // millisecond only, so within one millisecond parts may come in
    // either order; each part's own order is exact.
    let got = titles(&replayed);
    for part in ["inbox", "announcement", "team"] {
        let of = |list: &[String]| list.iter().filter(|t| t.starts_with(part)).cloned().collect::<Vec<_>>();
        assert_eq!(of(&got), of(&missed), "{part}: each missed one once, in order");
    }
    assert_eq!(got.len(), missed.len(), "{got:?}");
    let ms: Vec<u64> =
        replayed.iter().map(|e| e.json()["id"].as_str().unwrap().split('-').next().unwrap().parse().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "merged in time order: {ms:?}");
    resumed.assert_no_notification(Duration::from_millis(300)).await;

    // Live again, on the same cursor scheme: the newest id resumes nothing twice.
    publish_topic(&app, "team:1", "live").await;
    let live = resumed.next_of("notification", WAIT).await;
    assert_eq!(live.json()["title"], "live");
    let last = live.id.unwrap();
    resumed.close();
    let mut again = open(&app, &token, "team:1,announcements", Some(&last)).await.unwrap();
    again.assert_no_notification(Duration::from_millis(300)).await;

    // Following one topic more later: it starts now; the others resume.
    publish_topic(&app, "status", "before following").await;
    publish_topic(&app, "team:1", "team after").await;
    again.close();
    let mut wider = open(&app, &token, "team:1,announcements,status", Some(&last)).await.unwrap();
    assert_eq!(titles(&wider.notifications(1, WAIT).await), ["team after"]);
    wider.assert_no_notification(Duration::from_millis(300)).await;
}

async fn cut_or_changed_cursors_are_refused_and_inbox_cursors_still_resume(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let finn = unique_user("finn");
    let token = token_with_topics(&finn, &[]);
    let mut stream = open(&app, &token, "announcements", None).await.unwrap();
    let first = app.publish(&[&finn], notification("one")).await[0]["id"].as_str().unwrap().to_owned();
    publish_topic(&app, "announcements", "two").await;
    let cursor = stream.notifications(2, WAIT).await[1].id.clone().unwrap();
    stream.close();
    let mut changed = cursor.clone().into_bytes();
    let at = changed.len() / 2;
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    let long = format!("c{}", "A".repeat(2000));
    for bad in [&cursor[..cursor.len() - 2], changed.as_str(), long.as_str(), "c", "1-2-3"] {
        let error = open(&app, &token, "announcements", Some(bad)).await.err().expect("refused");
        assert!(error.starts_with("400") && error.contains("bad_cursor"), "{bad:?}: {error}");
    }
    assert_eq!(app.streams_open().await, Some(0));

    // Today's clients send an inbox id: the inbox resumes from it, and the
    // topic starts now.
    app.publish(&[&finn], notification("three")).await;
    let mut resumed = open(&app, &token, "announcements", Some(&first)).await.unwrap();
    assert_eq!(titles(&resumed.notifications(1, WAIT).await), ["three"]);
    resumed.assert_no_notification(Duration::from_millis(300)).await;
}

async fn a_trimmed_topic_resets_only_its_own_part(engine: Engine) {
    // Below 100 entries a topic is trimmed exactly (no slack).
    let app = TestApp::spawn_with(&engine, &app_settings(&[("topics.max_len", "3")])).await;
    let gail = unique_user("gail");
    let token = token_with_topics(&gail, &["team:*"]);
    let mut stream = open(&app, &token, "team:busy,team:quiet", None).await.unwrap();
    publish_topic(&app, "team:busy", "busy 0").await;
    let cursor = stream.notifications(1, WAIT).await[0].id.clone().unwrap();
    stream.close();
    for i in 1..=6 {
        publish_topic(&app, "team:busy", &format!("busy {i}")).await;
    }
    publish_topic(&app, "team:quiet", "quiet 1").await;
    app.publish(&[&gail], notification("inbox 1")).await;

    let mut resumed = open(&app, &token, "team:busy,team:quiet", Some(&cursor)).await.unwrap();
    let mut events = Vec::new();
    while events.iter().filter(|e: &&SseEvent| e.event == "notification").count() < 5 {
        events.push(resumed.next(WAIT).await.expect("an event"));
    }
    let resets: Vec<Value> = events.iter().filter(|e| e.event == "reset").map(SseEvent::json).collect();
    assert_eq!(resets, [json!({"reason": "history_trimmed", "scope": "topic:team:busy"})]);
    let notifications: Vec<SseEvent> = events.into_iter().filter(|e| e.event == "notification").collect();
    let mut got = titles(&notifications);
    got.sort();
    assert_eq!(got, ["busy 4", "busy 5", "busy 6", "inbox 1", "quiet 1"], "what is kept of busy, all of the rest");
    resumed.assert_no_notification(Duration::from_millis(300)).await;
}

async fn a_topic_lists_its_history_for_its_followers(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let hal = unique_user("hal");
    for i in 0..3 {
        publish_topic(&app, "team:list", &format!("t{i}")).await;
    }
    let get = |token: String, query: &'static str| {
        let url = app.url(&format!("/v1/topics/team:list/notifications{query}"));
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, page) = get(token_with_topics(&hal, &["team:*"]), "?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["title"].as_str().unwrap()).collect::<Vec<_>>(), ["t2", "t1"]);
    assert_eq!(items[0]["topic"], "team:list");
    let next = page["next"].as_str().unwrap().to_owned();
    assert_eq!(next, items[1]["id"].as_str().unwrap());
    let url = app.url(&format!("/v1/topics/team:list/notifications?before={next}"));
    let rest: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(token_with_topics(&hal, &["team:list"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next"].is_null(), "{rest}");
    let (status, error) = get(token_with_topics(&hal, &[]), "").await;
    assert_eq!(status, 403, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("team:list"), "{error}");
}

async fn bad_topic_publishes_are_refused_and_store_nothing(engine: Engine) {
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let http = reqwest::Client::new();
    let ivy = unique_user("ivy");
    let cases = [
        (json!({"to": {"topic": "bad topic"}, "notification": notification("x")}), 422, "to.topic"),
        (json!({"to": {"topic": "x".repeat(65)}, "notification": notification("x")}), 422, "to.topic"),
        (json!({"to": {"topic": "ok", "users": [ivy]}, "notification": notification("x")}), 422, "either"),
        (json!({"to": {"topic": "ok"}, "notification": {"type": "Bad Type", "title": "x"}}), 422, "type"),
    ];
    for (body, status, named) in cases {
        let r = http.post(app.url("/v1/publish")).bearer_auth(publisher_token()).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let error: Value = r.json().await.unwrap();
        assert!(error["error"]["message"].as_str().unwrap().contains(named), "{body}: {error}");
    }
    let r = http
        .get(app.url("/v1/topics/ok/notifications"))
        .bearer_auth(token_with_topics(&ivy, &["ok"]))
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "nothing was stored: {page}");
    // The same key twice stores once.
    let keyed = json!({"to": {"topic": "ok"}, "notification": notification("once"), "idempotency_key": "k-1"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = http.post(app.url("/v1/publish")).bearer_auth(publisher_token()).json(&keyed).send().await.unwrap();
        ids.push(r.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    let page: Value = http
        .get(app.url("/v1/topics/ok/notifications"))
        .bearer_auth(token_with_topics(&ivy, &["ok"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}

/// Backends publish to a topic straight into Redis, and followers on two
/// nodes each get it once; the function refuses what the HTTP path does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcall_reaches_followers_on_every_node_once() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let (a, b) = (
        TestApp::spawn_with(&engine, &app_settings(&[])).await,
        TestApp::spawn_with(&engine, &app_settings(&[])).await,
    );
    let (jo, kim) = (unique_user("jo"), unique_user("kim"));
    let mut on_a = open(&a, &token_with_topics(&jo, &[]), "announcements", None).await.unwrap();
    let mut on_b = open(&b, &token_with_topics(&kim, &[]), "announcements", None).await.unwrap();
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let fcall = |key: &str, json: &str| {
        let mut cmd = ::redis::cmd("FCALL");
        cmd.arg("herald_publish_topic").arg(1).arg(key).arg(json);
        cmd
    };
    let id: String = fcall("herald:{t:announcements}", r#"{"type":"ops.maintenance","title":"from a backend"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    for stream in [&mut on_a, &mut on_b] {
        let n = stream.next_of("notification", WAIT).await.json();
        assert_eq!(
            (n["id"].as_str(), n["topic"].as_str(), n["priority"].as_str()),
            (Some(id.as_str()), Some("announcements"), Some("normal"))
        );
        stream.assert_no_notification(Duration::from_millis(300)).await;
    }
    for (key, json, says) in [
        ("herald:{t:bad topic}", r#"{"type":"a","title":"t"}"#, "herald:{t:<topic>}"),
        ("herald:{u:jo}", r#"{"type":"a","title":"t"}"#, "herald:{t:<topic>}"),
        ("herald:{t:announcements}", r#"{"type":"a"}"#, "notification.title"),
        ("herald:{t:announcements}", "not json", "JSON"),
    ] {
        let error = fcall(key, json).query_async::<String>(&mut conn).await.unwrap_err();
        assert!(error.to_string().contains(says), "{key} {json}: {error}");
    }
    on_a.assert_no_notification(Duration::from_millis(300)).await;
}

/// The seam, many times over: the inbox and two topics receive steadily
/// while a client keeps reconnecting with its cursor after a few events.
/// Every notification arrives exactly once, and each part in order.
async fn reconnecting_while_all_parts_publish_loses_and_repeats_nothing(engine: Engine) {
    const TOTAL: usize = 120;
    let app = TestApp::spawn_with(&engine, &app_settings(&[])).await;
    let lea = unique_user("lea");
    let token = token_with_topics(&lea, &["seam:*"]);
    let topics = "seam:a,seam:b";
    let mut stream = open(&app, &token, topics, None).await.unwrap();
    let publisher = {
        let (url, user) = (app.url("/v1/publish"), lea.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..TOTAL {
                let (to, part) = match i % 3 {
                    0 => (json!({"users": [user]}), "inbox"),
                    1 => (json!({"topic": "seam:a"}), "a"),
                    _ => (json!({"topic": "seam:b"}), "b"),
                };
                let body = json!({"to": to, "notification": notification(&format!("{part} {i:03}"))});
                let r = http.post(&url).bearer_auth(publisher_token()).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202);
                // A steady pace, so reconnects fall between publishes.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let mut received: Vec<String> = Vec::new();
    let mut rounds = 0;
    while received.len() < TOTAL {
        let take = (TOTAL - received.len()).min(1 + rounds % 7);
        let got = stream.notifications(take, WAIT).await;
        received.extend(titles(&got));
        let cursor = got.last().unwrap().id.clone().unwrap();
        stream.close();
        stream = open(&app, &token, topics, Some(&cursor)).await.unwrap();
        rounds += 1;
    }
    publisher.await.unwrap();
    stream.assert_no_notification(Duration::from_millis(300)).await;
    let unique: std::collections::HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), TOTAL, "nothing twice ({rounds} reconnects)");
    for part in ["inbox", "a", "b"] {
        let seen: Vec<&String> = received.iter().filter(|t| t.starts_with(&format!("{part} "))).collect();
        assert_eq!(seen.len(), TOTAL / 3, "{part}: nothing lost");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{part} in order: {seen:?}");
    }
}

/// A stream of the inbox and two topics on a node that is `SIGKILL`ed
/// resumes on another node with its cursor: what each part missed meanwhile
/// arrives once, each part in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_three_parts_resumes_on_another_node_after_a_sigkill() {
    let redis = RedisServer::start();
    let engine = Engine::Redis(redis.url());
    let env = [("HERALD__TOPICS__PUBLIC", "news,status")];
    let mut a = HeraldProcess::start_with(&engine, &[], &env).await;
    let b = HeraldProcess::start_with(&engine, &[], &env).await;
    let mo = unique_user("mo");
    let token = token_with_topics(&mo, &[]);
    let mut stream = open(&a, &token, "news,status", None).await.unwrap();
    b.publish(&[&mo], notification("inbox 0")).await;
    publish_topic(&b, "news", "news 0").await;
    publish_topic(&b, "status", "status 0").await;
    let seen = stream.notifications(3, WAIT).await;
    let cursor = seen.last().unwrap().id.clone().unwrap();
    a.kill();
    let mut missed = Vec::new();
    for i in 1..=4 {
        b.publish(&[&mo], notification(&format!("inbox {i}"))).await;
        publish_topic(&b, "news", &format!("news {i}")).await;
        publish_topic(&b, "status", &format!("status {i}")).await;
        missed.extend([format!("inbox {i}"), format!("news {i}"), format!("status {i}")]);
    }
    let mut resumed = open(&b, &token, "news,status", Some(&cursor)).await.unwrap();
    let got = titles(&resumed.notifications(missed.len(), WAIT).await);
    for part in ["inbox", "news", "status"] {
        let of = |list: &[String]| list.iter().filter(|t| t.starts_with(part)).cloned().collect::<Vec<_>>();
        assert_eq!(of(&got), of(&missed), "{part}: once each, in order");
    }
    resumed.assert_no_notification(Duration::from_millis(300)).await;
}
