//! Demo mode (`demo.enabled`, `herald serve --demo`): the demo notification
//! center at `GET /demo`, and `POST /demo/session`, which hands the page its
//! tokens.
//!
//! Both are registered only in demo mode. `/demo/session` mints a token for
//! any user id anyone asks for: a node that serves it must never be reachable
//! by anyone who should not read every user's notifications.
//!
//! The page is one self-contained file (inline CSS and JS, no build step, no
//! external URL), compiled into the binary.

use std::sync::LazyLock;

use actix_web::{
    HttpResponse,
    http::header::{CacheControl, CacheDirective},
    web,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{auth::mint_token_expiring_at, clock::now_unix, domain::UserId, error::ApiError, routes::AppState};

/// The page. Its source is meant to be read: it is a worked example of an
/// `EventSource` client (cursor, reconnects, token refresh, cross-tab sync).
pub const PAGE: &str = include_str!("demo/index.html");

/// The `sub` of the publisher tokens the page's send form uses.
pub const PUBLISHER: &str = "demo-page";

/// The page may run its own inline script and style and nothing else, talk
/// to this origin only, and not be framed. The inline blocks are allowed by
/// their hashes (not `'unsafe-inline'`), so markup injected through a
/// notification could not run a script even if the page forgot to escape it.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash(PAGE, "script"),
        inline_hash(PAGE, "style"),
    )
});

/// The CSP source (`sha256-<base64>`) of the one inline `<tag>` block: the
/// hash covers its text exactly as written between the tags.
fn inline_hash(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = page.find(&open).map(|i| i + open.len());
    let end = page.find(&format!("</{tag}>"));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("the demo page has no plain <{tag}> block (a unit test checks this)");
    };
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// `GET /demo`.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY.as_str()))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(PAGE)
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
    fn the_policy_allows_exactly_the_pages_inline_blocks() {
        let policy = CONTENT_SECURITY_POLICY.as_str();
        assert!(policy.contains("script-src 'sha256-") && policy.contains("style-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        // One block of each, so the hashes cover all the page's code.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(!PAGE.contains(" style=\""), "inline style attributes are blocked by the policy");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(!PAGE.contains(external), "the demo page mentions `{external}`");
        }
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
