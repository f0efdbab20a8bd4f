//! Files compiled into the binary and served as they are: the browser client
//! library (always), and the demo page's files (demo mode only; routes in
//! `routes::configure`).
//!
//! They change only with the binary, so each answer is the same bytes for a
//! node's whole life; `no-cache` makes a browser revalidate rather than keep
//! a previous release's script beside a new release's page.

use actix_web::{
    HttpResponse,
    http::header::{CacheControl, CacheDirective},
};

/// One embedded file.
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The browser client library (`clients/js/`), an ES module: `GET /client/herald.js`.
pub const CLIENT_LIBRARY: Asset = Asset { body: include_str!("../../clients/js/herald.js"), content_type: JAVASCRIPT };

/// Its TypeScript declarations: `GET /client/herald.d.ts`.
pub const CLIENT_TYPES: Asset =
    Asset { body: include_str!("../../clients/js/herald.d.ts"), content_type: "text/plain; charset=utf-8" };

/// The demo notification center: `GET /demo`.
pub const DEMO_PAGE: Asset = Asset { body: include_str!("demo/index.html"), content_type: "text/html; charset=utf-8" };

/// Its script: `GET /demo/demo.js`.
pub const DEMO_SCRIPT: Asset = Asset { body: include_str!("demo/demo.js"), content_type: JAVASCRIPT };

/// Its style sheet: `GET /demo/demo.css`.
pub const DEMO_STYLE: Asset = Asset { body: include_str!("demo/demo.css"), content_type: "text/css; charset=utf-8" };

/// The service worker that shows a Web Push and handles its click: `GET /demo/sw.js`.
pub const SERVICE_WORKER: Asset = Asset { body: include_str!("demo/sw.js"), content_type: JAVASCRIPT };

impl Asset {
    /// `200` with the file and `headers`, revalidated on every use, never
    /// sniffed as another type.
    pub fn respond(&self, headers: &[(&'static str, &str)]) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        response
            .content_type(self.content_type)
            .insert_header(CacheControl(vec![CacheDirective::NoCache]))
            .insert_header(("X-Content-Type-Options", "nosniff"));
        for &(name, value) in headers {
            response.insert_header((name, value));
        }
        response.body(self.body)
    }
}

/// Any origin may load the client library: an app on another origin imports
/// it as a module, which the browser fetches in CORS mode. It is public code,
/// and its answer carries no credentials.
const ANY_ORIGIN: (&str, &str) = ("Access-Control-Allow-Origin", "*");

/// `GET /client/herald.js`.
pub async fn client_library() -> HttpResponse {
    CLIENT_LIBRARY.respond(&[ANY_ORIGIN])
}

/// `GET /client/herald.d.ts`.
pub async fn client_types() -> HttpResponse {
    CLIENT_TYPES.respond(&[ANY_ORIGIN])
}
