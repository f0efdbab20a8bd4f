//! The browser client library is served by every node, demo mode or not, to
//! any origin. (The library itself runs in a real browser:
//! tests/browser/client.test.mjs.)

use crate::helpers::{Engine, TestApp};

const OTHER_ORIGIN: &str = "http://127.0.0.1:6666";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_and_its_types_are_served_to_any_origin() {
    let app = TestApp::spawn(&Engine::Memory).await;

    for (path, content_type, source) in [
        ("/client/herald.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/herald.js")),
        ("/client/herald.d.ts", "text/plain; charset=utf-8", include_str!("../../clients/js/herald.d.ts")),
    ] {
        let response = app.http.get(app.url(path)).header("Origin", OTHER_ORIGIN).send().await.unwrap();

        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*", "{path}: a module import is a CORS fetch");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{path}");
        assert_eq!(response.text().await.unwrap(), source, "{path}: the file in clients/js, as it is");
    }
}
