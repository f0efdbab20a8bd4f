//! Demo mode (`demo.enabled`, `herald serve --demo`): the demo notification
//! center at `GET /demo` (with its script, style sheet and service worker),
//! and `POST /demo/session`, which hands the page its tokens.
//!
//! All are registered only in demo mode. `/demo/session` mints a token for
//! any user id anyone asks for: a node that serves it must never be reachable
//! by anyone who should not read every user's notifications.
//!
//! The page has no build step and loads nothing from another origin; its
//! files are compiled into the binary (`routes/assets.rs`).

use actix_web::{
    HttpResponse,
    http::header::{CacheControl, CacheDirective},
    web,
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::mint_token_expiring_at,
    clock::now_unix,
    domain::UserId,
    error::ApiError,
    routes::{
        AppState,
        assets::{DEMO_PAGE, DEMO_SCRIPT, DEMO_STYLE, SERVICE_WORKER},
    },
};

/// The `sub` of the publisher tokens the page's send form uses.
pub const PUBLISHER: &str = "demo-page";

/// The page may run scripts and styles from this origin only (none inline,
/// so markup injected through a notification could not run a script even if
/// the page forgot to escape it), talk to this origin only, register its
/// service worker, show images from this origin or any `https:` one (a
/// notification's `icon`), and not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: https:; worker-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /demo`.
pub async fn page() -> HttpResponse {
    DEMO_PAGE.respond(&[("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("Referrer-Policy", "no-referrer")])
}

/// `GET /demo/demo.js`.
pub async fn script() -> HttpResponse {
    DEMO_SCRIPT.respond(&[])
}

/// `GET /demo/demo.css`.
pub async fn style() -> HttpResponse {
    DEMO_STYLE.respond(&[])
}

/// `GET /demo/sw.js`. A worker's scope defaults to its own directory
/// (`/demo/`); the header lets the page register it for `/demo` itself, the
/// page's own URL.
pub async fn service_worker() -> HttpResponse {
    SERVICE_WORKER.respond(&[("Service-Worker-Allowed", "/demo")])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    user: String,
}

#[derive(Debug, Serialize)]
struct Session {
    user: String,
    /// A user token for `user`: the stream and the user API.
    token: String,
    /// A token with the `publish` scope, for the page's send form.
    publisher_token: String,
    /// The public topics (`topics.public`, names only: not `prefix:*`
    /// grants), which the page offers to follow.
    topics: Vec<String>,
    /// When both expire (RFC 3339); the stream says `token_expiring` a little
    /// before, and the page asks for a new session.
    expires_at: String,
}

/// `POST /demo/session` with `{"user": "<id>"}`: tokens for that user, valid
/// for `demo.session_ttl`.
pub async fn session(state: web::Data<AppState>, request: web::Json<SessionRequest>) -> Result<HttpResponse, ApiError> {
    let user = UserId::parse(&request.user).map_err(|why| ApiError::bad_request("bad_user", format!("user: {why}")))?;
    // Demo mode requires HS256, so a node without a secret does not start;
    // should one ever run, it answers 503 rather than panicking.
    let secret = state.settings.auth.secret.as_ref().ok_or_else(|| no_session("auth.secret is not set"))?.expose();
    let expires_at = now_unix() + state.settings.demo.session_ttl.as_secs();
    let mint = |sub: &str, publisher| {
        mint_token_expiring_at(secret, sub, expires_at, publisher).map_err(|e| no_session(&e.to_string()))
    };
    let session = Session {
        token: mint(user.as_str(), false)?,
        publisher_token: mint(PUBLISHER, true)?,
        user: user.to_string(),
        topics: state.settings.topics.public.iter().filter(|name| !name.ends_with('*')).cloned().collect(),
        expires_at: rfc3339(expires_at),
    };
    Ok(HttpResponse::Ok().insert_header(CacheControl(vec![CacheDirective::NoStore])).json(session))
}

fn no_session(why: &str) -> ApiError {
    tracing::error!(why, "cannot mint a demo session");
    ApiError::unavailable("this node cannot mint demo sessions", 1)
}

fn rfc3339(unix_seconds: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds as i64).map(crate::clock::rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn the_page_runs_no_inline_code_and_loads_nothing_from_elsewhere() {
        let page = DEMO_PAGE.body;
        // The policy allows no inline script or style: one would not run.
        assert!(!page.contains("<script>") && !page.contains("<style"), "inline blocks are blocked by the policy");
        assert!(!page.contains(" style=\"") && !page.contains(" onclick="), "inline attributes are blocked");
        for file in [DEMO_PAGE.body, DEMO_SCRIPT.body, DEMO_STYLE.body] {
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(!file.contains(external), "a demo file mentions `{external}`");
            }
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "{CONTENT_SECURITY_POLICY}");
    }

    #[test]
    fn demo_settings_that_could_not_work_are_refused_naming_the_key() {
        let demo = |extra: &[(&str, &str)]| {
            let mut overrides = vec![("demo.enabled", "true"), ("auth.secret", "a-demo-secret-of-at-least-32-bytes")];
            overrides.extend_from_slice(extra);
            Settings::with_overrides(&overrides)
        };
        assert!(demo(&[]).is_ok());
        let err = demo(&[("demo.session_ttl", "60s")]).unwrap_err();
        assert!(err.to_string().contains("`demo.session_ttl`"), "{err}");
        let err = demo(&[("auth.algorithms", "HS512")]).unwrap_err();
        assert!(err.to_string().contains("`auth.algorithms`"), "{err}");
        // Out of demo mode, the same settings are fine.
        assert!(Settings::with_overrides(&[("demo.session_ttl", "60s"), ("auth.algorithms", "HS512")]).is_ok());
    }

    #[test]
    fn expiry_is_rfc3339() {
        assert_eq!(rfc3339(1_795_552_804), "2026-11-24T20:40:04Z");
    }
}
