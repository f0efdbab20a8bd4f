//! Hostile publishers: what both publish paths refuse, with the same words,
//! and what a node does with stored bytes that no publish path writes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Engine, Node, RedisServer, TestApp, UserApi, fcall_publish, fcall_publish_to_key, notification, publisher_token,
    unique_user,
};

/// What functions.lua says for the two faults the HTTP path's JSON parser
/// also refuses (error.rs words them alike).
const NOT_UTF8: &str = "invalid UTF-8";
const RAW_CONTROL: &str = r"a raw control character (write it as \u00XX in a string)";

/// `FCALL herald_publish` for `user` with the notification as raw bytes.
async fn fcall_bytes(
    conn: &mut ::redis::aio::MultiplexedConnection,
    user: &str,
    notification: &[u8],
) -> ::redis::RedisResult<Option<String>> {
    fcall_publish_to_key(conn, &format!("herald:{{u:{user}}}"), notification).await
}

/// `{"type":"a","title":"<title>"}` around raw title bytes.
fn with_title(title: &[u8]) -> Vec<u8> {
    [br#"{"type":"a","title":""#.as_slice(), title, br#""}"#].concat()
}

async fn dbsize(conn: &mut ::redis::aio::MultiplexedConnection) -> u64 {
    ::redis::cmd("DBSIZE").query_async(conn).await.unwrap()
}

/// A POST /v1/publish whose body is given as bytes.
async fn publish_bytes(app: &TestApp, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/publish"))
        .bearer_auth(publisher_token())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Cut multi-byte characters, lone bytes, NULs and raw tabs in strings were
/// accepted by cjson and made every later read of the user's history fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcall_refuses_text_a_browser_could_not_read_back() {
    let server = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(server.url())).await;
    let alice = unique_user("alice");
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let keys_before = dbsize(&mut conn).await;

    let cut = &"가".as_bytes()[..2];
    let refused: [(&str, Vec<u8>, &str); 7] = [
        ("a cut multi-byte character", with_title(cut), NOT_UTF8),
        ("a lone 0xff", with_title(b"a\xffb"), NOT_UTF8),
        ("an overlong slash", with_title(b"\xc0\xaf"), NOT_UTF8),
        ("a surrogate", with_title(b"\xed\xa0\x80"), NOT_UTF8),
        ("a raw NUL", with_title(b"a\0b"), RAW_CONTROL),
        ("a raw tab in a string", with_title(b"a\tb"), RAW_CONTROL),
        ("a raw line feed in a string", with_title(b"a\nb"), RAW_CONTROL),
    ];
    for (what, bad, words) in &refused {
        let err = fcall_bytes(&mut conn, &alice, bad).await.unwrap_err();
        assert!(err.to_string().contains(words), "{what}: {err}");
        assert!(err.to_string().contains("HERALD_INVALID"), "{what}: {err}");
        // The HTTP path refuses the same bytes with the same words.
        let body = [br#"{"to":{"users":["x"]},"notification":"#.as_slice(), bad, b"}"].concat();
        let (status, answer) = publish_bytes(&app, body).await;
        assert_eq!(status, 400, "{what} over HTTP: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{what} over HTTP: {message}");
    }
    assert_eq!(dbsize(&mut conn).await, keys_before, "a refused publish writes no key");

    // What the rules allow still passes: other scripts, escapes, and raw
    // whitespace between tokens.
    for ok in [
        with_title("가나다 — ü 😀".as_bytes()),
        with_title(br"a\u0000b\tc"),
        b"{\"type\":\"a\",\t\"title\":\"t\"\r\n}".to_vec(),
    ] {
        assert!(fcall_bytes(&mut conn, &alice, &ok).await.unwrap().is_some(), "{}", String::from_utf8_lossy(&ok));
    }
    let (status, page) = UserApi::new(&app, &alice).get("/v1/notifications").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
}

/// An entry written by another Redis client (or an older library) with
/// bytes no path writes must not fail the page, the count or a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_entry_no_path_writes_never_fails_a_page_or_a_resume() {
    let server = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(server.url())).await;
    let alice = unique_user("alice");
    let api = UserApi::new(&app, &alice);
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();

    let first = app.publish(&[alice.as_str()], notification("before")).await[0]["id"].as_str().unwrap().to_owned();
    let inbox = format!("herald:{{u:{alice}}}:inbox");
    let raw: [&[u8]; 3] = [&with_title(&"가".as_bytes()[..2]), &with_title(b"a\xffb"), &with_title(b"a\0b")];
    for bad in raw {
        let _: String =
            ::redis::cmd("XADD").arg(&inbox).arg("*").arg("n").arg(bad).query_async(&mut conn).await.unwrap();
    }
    app.publish(&[alice.as_str()], notification("after")).await;

    let (status, page) = api.get("/v1/notifications").await;
    assert_eq!(status, 200, "{page}");
    let titles: Vec<&str> = page["items"].as_array().unwrap().iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert_eq!(titles.len(), 5, "{page}");
    assert_eq!((titles[0], titles[4]), ("after", "before"));
    assert!(titles[3].contains('\u{fffd}') && titles[2].contains('\u{fffd}'), "{titles:?}");
    assert_eq!(titles[1], "a\0b", "a raw NUL is escaped, so the page is JSON");
    let (_, count) = api.get("/v1/notifications/unread_count").await;
    assert_eq!(count["count"], 5);

    // A resume replays all of them and then goes live.
    let mut stream = app.stream(&alice, Some(&first)).await;
    let replayed = stream.notifications(4, Duration::from_secs(5)).await;
    assert_eq!(replayed.last().unwrap().json()["title"], "after");
    let id = app.publish(&[alice.as_str()], notification("live")).await[0]["id"].as_str().unwrap().to_owned();
    let live = stream.notifications(1, Duration::from_secs(5)).await;
    assert_eq!(live[0].id.as_deref(), Some(id.as_str()));

    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let repaired: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_repaired_entries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(repaired >= 2.0, "repairs are counted: {repaired}");
}

const BAD_LINKS: [&str; 7] = [
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "https://x.test/a b",
];
const GOOD_LINKS: [&str; 5] = ["https://x.test/a?b#c", "http://x.test", "/docs/42#c7", "?tab=2", "docs/42"];

crate::on_both_engines!(links_are_http_https_or_relative_on_the_http_path);

async fn links_are_http_https_or_relative_on_the_http_path(engine: Engine) {
    let app = TestApp::spawn(&engine).await;
    let alice = unique_user("alice");
    for field in ["url", "icon"] {
        for bad in BAD_LINKS {
            let body = json!({"to": {"users": [alice]}, "notification": {"type": "a", "title": "t", field: bad}});
            let (status, answer) = publish_bytes(&app, body.to_string().into_bytes()).await;
            assert_eq!(status, 422, "{field} {bad:?}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().starts_with(&format!("notification.{field}:")));
        }
        for good in GOOD_LINKS {
            app.publish(&[alice.as_str()], json!({"type": "a", "title": "t", field: good})).await;
        }
    }
    let (_, page) = UserApi::new(&app, &alice).get("/v1/notifications?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2 * GOOD_LINKS.len(), "nothing refused was stored");
}

/// The `FCALL` path refuses the same links with the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_refused_alike_on_the_fcall_path() {
    let server = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(server.url())).await;
    let alice = unique_user("alice");
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    for field in ["url", "icon"] {
        for bad in BAD_LINKS {
            let n = json!({"type": "a", "title": "t", field: bad});
            let body = json!({"to": {"users": [alice]}, "notification": n});
            let (_, answer) = publish_bytes(&app, body.to_string().into_bytes()).await;
            let err = fcall_publish(&mut conn, &alice, &n.to_string()).await.unwrap_err();
            assert_eq!(err.detail(), answer["error"]["message"].as_str(), "{field} {bad:?}");
        }
        for good in GOOD_LINKS {
            let n = json!({"type": "a", "title": "t", field: good});
            assert!(fcall_publish(&mut conn, &alice, &n.to_string()).await.unwrap().is_some(), "{field} {good}");
        }
    }
    let (_, page) = UserApi::new(&app, &alice).get("/v1/notifications?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2 * GOOD_LINKS.len(), "nothing refused was stored");
}

/// A `data` number no double holds is refused on both paths with the same
/// message, and so are NaN and Infinity, which cjson would take on the
/// `FCALL` path (found by the publish fuzz target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_numbers_beyond_a_double_are_refused_alike_on_both_paths() {
    let server = RedisServer::start();
    let app = TestApp::spawn(&Engine::Redis(server.url())).await;
    let alice = unique_user("alice");
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let with_data = |data: &str| format!(r#"{{"type":"a","title":"t","data":{{"k":[1,{data}]}}}}"#);

    for bad in ["1e400", "-1e400"] {
        let n = with_data(bad);
        let body = format!(r#"{{"to":{{"users":["{alice}"]}},"notification":{n}}}"#);
        let (status, answer) = publish_bytes(&app, body.into_bytes()).await;
        assert_eq!(status, 422, "{bad}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("notification.data:"), "{bad}: {message}");
        let err = fcall_publish(&mut conn, &alice, &n).await.unwrap_err();
        assert_eq!(err.detail(), Some(message), "{bad}");
    }
    for not_json in ["NaN", "Infinity"] {
        let err = fcall_publish(&mut conn, &alice, &with_data(not_json)).await.unwrap_err();
        assert!(err.detail().unwrap().starts_with("notification.data:"), "{not_json}: {err}");
    }

    let n = with_data("1e308");
    assert!(fcall_publish(&mut conn, &alice, &n).await.unwrap().is_some());
    app.publish(&[alice.as_str()], serde_json::from_str(&n).unwrap()).await;
    let (_, page) = UserApi::new(&app, &alice).get("/v1/notifications").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "only the finite ones were stored: {page}");
}
