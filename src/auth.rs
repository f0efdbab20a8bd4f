//! JWT verification and the `User` / `Publisher` extractors.
//!
//! The algorithm is never taken from the token alone: the header's `alg` must
//! be one that `auth.algorithms` allows, and it selects the key family (HMAC
//! secret or public key), so `alg: none` and HS/RS confusion cannot pass.
//! Tokens are never logged; errors say what was wrong, not the token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};

use crate::{
    clock::now_unix,
    config::{AuthSettings, Secret, is_hmac},
    domain::{TopicGrant, UserId},
    error::ApiError,
    rate_limit::UserRateLimiter,
};

/// The claims Herald reads. Others are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience or several (RFC 7519 §4.1.3 allows both). jsonwebtoken
    /// checks it against `auth.audience` itself; it is here so that a token
    /// with an array still deserializes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Space-separated scopes (OAuth style); a publisher holds `publish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Topics this user may follow: names, or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
}

/// The `aud` claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    /// Unix seconds; a stream never outlives it.
    pub expires_at: u64,
    pub can_publish: bool,
    /// The `topics` claim's grants; an entry that is neither a topic name
    /// nor a prefix allows nothing.
    pub topics: Vec<TopicGrant>,
}

pub struct Authenticator {
    hmac_key: Option<DecodingKey>,
    public_key: Option<DecodingKey>,
    /// One validation per allowed algorithm, built once (every stream and
    /// publish verifies a token).
    validations: Vec<(Algorithm, Validation)>,
    cookie_name: String,
    /// Publisher tokens already verified, by their full text. A backend
    /// sends the same token with every publish; verifying it each time cost
    /// a few percent of an HS256 publish, and an RS256 or ES256 signature
    /// check costs more than the rest of the request. Stream tokens are not
    /// kept: each is used once per connection, and every idle stream would
    /// pay for the entry.
    publishers: Mutex<HashMap<String, Identity>>,
}

/// Most publisher tokens kept; when full, the cache starts over.
const PUBLISHER_CACHE: usize = 1024;

/// The checks for tokens signed with `alg`: signature, `exp`, `nbf`, the
/// configured `iss` / `aud`, with leeway.
fn validation_for(alg: Algorithm, settings: &AuthSettings) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = settings.leeway.as_secs();
    validation.validate_nbf = true;
    // A configured issuer or audience is required, not merely checked when
    // present: a token that omits `iss` must not pass an `iss` check.
    let mut required = vec!["exp", "sub"];
    match &settings.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &settings.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl Authenticator {
    pub fn from_settings(settings: &AuthSettings, secret: Option<&Secret>) -> anyhow::Result<Self> {
        let public_key = match &settings.public_key_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("auth.public_key_file: cannot read {}", path.display()))?;
                Some(public_key_from_pem(&pem, &settings.algorithms).with_context(|| {
                    format!(
                        "auth.public_key_file: {} is not a PEM public key for {:?}",
                        path.display(),
                        settings.algorithms
                    )
                })?)
            }
        };
        let hmac_key = secret.map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        if settings.algorithms.iter().any(|a| is_hmac(*a)) && hmac_key.is_none() && public_key.is_none() {
            anyhow::bail!("auth.secret: no secret configured (set HERALD__AUTH__SECRET, or run with --demo)");
        }
        Ok(Self {
            hmac_key,
            public_key,
            validations: settings.algorithms.iter().map(|alg| (*alg, validation_for(*alg, settings))).collect(),
            cookie_name: settings.cookie_name.clone(),
            publishers: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies a token that must carry the `publish` scope, remembering it
    /// until it expires (`now` in unix seconds).
    pub fn verify_publisher(&self, token: &str, now: u64) -> Result<Identity, ApiError> {
        let cache = || self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        // A cached token is used only strictly before its `exp`; at or after
        // it, the full check (with its leeway) decides again.
        if let Some(identity) = cache().get(token).filter(|i| now < i.expires_at) {
            return Ok(identity.clone());
        }
        let identity = self.verify(token)?;
        if !identity.can_publish {
            return Err(ApiError::forbidden("this token may not publish (its scope lacks `publish`)"));
        }
        let mut cache = cache();
        if cache.len() >= PUBLISHER_CACHE {
            cache.clear();
        }
        cache.insert(token.to_owned(), identity.clone());
        Ok(identity)
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let header = decode_header(token).map_err(|_| ApiError::unauthorized("malformed token"))?;
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(ApiError::unauthorized(format!("token algorithm {:?} is not accepted", header.alg)));
        };
        let key = if is_hmac(header.alg) { self.hmac_key.as_ref() } else { self.public_key.as_ref() }
            .ok_or_else(|| ApiError::unauthorized(format!("no key configured for {:?}", header.alg)))?;
        let data = decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            ApiError::unauthorized(match e.kind() {
                K::ExpiredSignature => "token expired",
                K::ImmatureSignature => "token not valid yet (nbf)",
                K::InvalidSignature => "invalid token signature",
                K::InvalidIssuer => "token issuer not accepted",
                K::InvalidAudience => "token audience not accepted",
                K::MissingRequiredClaim(_) => "token lacks a required claim (sub, exp, and iss / aud when configured)",
                _ => "invalid token",
            })
        })?;
        let claims = data.claims;
        let user = UserId::parse(&claims.sub).map_err(|e| ApiError::unauthorized(format!("token sub: {e}")))?;
        let can_publish = claims.scope.as_deref().is_some_and(|s| s.split_whitespace().any(|s| s == "publish"));
        let topics = claims.topics.iter().flatten().filter_map(|g| TopicGrant::parse(g).ok()).collect();
        Ok(Identity { user, expires_at: claims.exp, can_publish, topics })
    }

    /// Finds the token: `Authorization: Bearer`, then `?access_token=`
    /// (EventSource cannot set headers), then the configured cookie.
    fn token_from(&self, req: &HttpRequest) -> Option<(String, TokenSource)> {
        // Another scheme (Basic, from a proxy) is not ours: look further.
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if let Some(token) = bearer {
            return Some((token.trim().to_owned(), TokenSource::Header));
        }
        if let Some(token) = query_param(req.query_string(), "access_token") {
            return Some((token, TokenSource::Query));
        }
        req.cookie(&self.cookie_name).map(|c| (c.value().to_owned(), TokenSource::Cookie))
    }

    fn required_token(&self, req: &HttpRequest) -> Result<(String, TokenSource), ApiError> {
        self.token_from(req).ok_or_else(|| {
            ApiError::unauthorized("missing token: send Authorization: Bearer, ?access_token= or the auth cookie")
        })
    }
}

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Query,
    /// The browser attaches the cookie to requests any page makes, so a
    /// cookie alone does not show that this origin's page sent the request.
    Cookie,
}

/// The header a same-origin page adds to a change made with the cookie.
const REQUEST_HEADER: &str = "x-herald-request";

/// Refuses a cookie-authenticated change (any method but GET, HEAD, OPTIONS)
/// that does not show it came from a page allowed to make it. A body-less
/// POST such as `/clicked` is a CORS "simple" request: any site can send it
/// with the user's cookie, and the browser only hides the answer. A custom
/// header turns it into a preflighted request, which Herald never grants
/// (it sends no CORS headers), so a page that could set `X-Herald-Request`
/// is one the browser let through; `Sec-Fetch-Site: same-origin` is the
/// browser saying so directly. Header and query tokens need neither: no
/// browser adds them to a request by itself.
fn require_origin_proof(req: &HttpRequest, source: TokenSource) -> Result<(), ApiError> {
    use actix_web::http::Method;
    if source != TokenSource::Cookie || matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = req.headers();
    let marked = headers.get(REQUEST_HEADER).is_some_and(|v| !v.is_empty());
    let same_origin = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"same-origin");
    if marked || same_origin {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "a change authenticated by the cookie must send the X-Herald-Request header (any value) \
         or come from this origin (Sec-Fetch-Site: same-origin); or send the token as Authorization: Bearer",
    ))
}

/// One query parameter, percent-decoded. A stream open looks up three
/// (`access_token`, `last_event_id`, `topics`): each scan borrows the pairs
/// it passes (unless they hold escapes) and allocates only the value it
/// returns, not every pair into owned strings.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn public_key_from_pem(pem: &[u8], algorithms: &[Algorithm]) -> anyhow::Result<DecodingKey> {
    let family = algorithms.iter().find(|a| !is_hmac(**a)).copied().unwrap_or(Algorithm::RS256);
    Ok(match family {
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem)?,
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem)?,
        _ => DecodingKey::from_rsa_pem(pem)?,
    })
}

/// Mints an HS256 token (the `herald token` command, the demo, tests and the
/// load tool).
pub fn mint_token(secret: &str, user: &str, ttl: Duration, publisher: bool) -> anyhow::Result<String> {
    mint_token_expiring_at(secret, user, now_unix() + ttl.as_secs(), publisher)
}

/// [`mint_token`] with its `exp` (unix seconds) given, for a caller that
/// also tells the client when the token expires (`POST /demo/session`).
pub fn mint_token_expiring_at(secret: &str, user: &str, exp: u64, publisher: bool) -> anyhow::Result<String> {
    mint_claims(secret, &Claims::new(user, exp, publisher))
}

/// Mints an HS256 token with these claims (`herald token --topics`).
pub fn mint_claims(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

impl Claims {
    /// A user's (or, with `publisher`, a backend's) claims: `sub` and `exp`.
    pub fn new(user: &str, exp: u64, publisher: bool) -> Self {
        Claims {
            sub: user.to_owned(),
            exp,
            nbf: None,
            iss: None,
            aud: None,
            scope: publisher.then(|| "publish".to_owned()),
            topics: None,
        }
    }
}

/// An authenticated user (a valid token without the `publish` scope).
pub struct User(pub Identity);

/// An authenticated publisher (a token whose `scope` holds `publish`).
pub struct Publisher(pub Identity);

fn authenticator(req: &HttpRequest) -> Arc<Authenticator> {
    req.app_data::<web::Data<Authenticator>>().expect("Authenticator is registered as app data").clone().into_inner()
}

fn user_limiter(req: &HttpRequest) -> &UserRateLimiter {
    req.app_data::<web::Data<UserRateLimiter>>().expect("UserRateLimiter is registered as app data")
}

impl FromRequest for User {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(user_from(req))
    }
}

/// Every check a user request passes, in one place, so no route can skip one.
fn user_from(req: &HttpRequest) -> Result<User, ApiError> {
    let auth = authenticator(req);
    let (token, source) = auth.required_token(req)?;
    let identity = auth.verify(&token)?;
    // A publisher token names a backend, and is handed to more places than
    // one user's browser: were it also a user token, whoever holds it could
    // read and change the inbox of the user its `sub` happens to name.
    if identity.can_publish {
        return Err(ApiError::forbidden(
            "a publisher token cannot be used as a user token (its scope holds `publish`): \
             send a token of the user, without that scope",
        ));
    }
    require_origin_proof(req, source)?;
    // Last, so a request refused above does not spend the user's budget.
    if let Err(wait) = user_limiter(req).check(&identity.user) {
        crate::metrics::get().user_rate_limited.increment(1);
        return Err(ApiError::too_many(
            format!("too many requests for `{}`: over limits.user_requests_per_second on this node", identity.user),
            wait.as_secs_f64().ceil().max(1.0) as u32,
        ));
    }
    Ok(User(identity))
}

impl FromRequest for Publisher {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(publisher_from(req))
    }
}

fn publisher_from(req: &HttpRequest) -> Result<Publisher, ApiError> {
    let auth = authenticator(req);
    let (token, source) = auth.required_token(req)?;
    let identity = auth.verify_publisher(&token, now_unix())?;
    // A publish needs a JSON body, which already forces a preflight; checked
    // anyway, so the rule holds for every change without exceptions to recall.
    require_origin_proof(req, source)?;
    Ok(Publisher(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes";

    fn hs256() -> Authenticator {
        let settings = crate::config::Settings::with_overrides(&[]).unwrap();
        Authenticator::from_settings(&settings.auth, Some(&Secret::new(SECRET.into()))).unwrap()
    }

    fn cached(auth: &Authenticator) -> usize {
        auth.publishers.lock().unwrap().len()
    }

    #[test]
    fn a_publisher_token_is_verified_once_and_kept_only_before_its_exp() {
        let auth = hs256();
        let token = mint_token(SECRET, "backend", Duration::from_secs(60), true).unwrap();
        let exp = auth.verify(&token).unwrap().expires_at;
        assert_eq!(auth.verify_publisher(&token, exp - 60).unwrap().user.as_str(), "backend");
        assert_eq!(cached(&auth), 1);

        // What the cache answers for, it answers without checking again: an
        // entry planted under a token that would not verify proves it...
        let planted = "not.a.token";
        let identity = Identity {
            user: UserId::parse("planted").unwrap(),
            expires_at: exp,
            can_publish: true,
            topics: Vec::new(),
        };
        auth.publishers.lock().unwrap().insert(planted.to_owned(), identity);
        assert_eq!(auth.verify_publisher(planted, exp - 1).unwrap().user.as_str(), "planted");
        // ...and from its `exp` on, the full check decides again.
        assert!(auth.verify_publisher(planted, exp).is_err());
    }

    #[test]
    fn forged_and_reader_tokens_are_refused_and_never_kept() {
        let auth = hs256();
        let token = mint_token(SECRET, "backend", Duration::from_secs(60), true).unwrap();
        let now = auth.verify(&token).unwrap().expires_at - 60;
        let forged =
            mint_token("another-secret-of-at-least-32-bytes", "backend", Duration::from_secs(60), true).unwrap();
        assert!(auth.verify_publisher(&forged, now).is_err());
        let reader = mint_token(SECRET, "reader", Duration::from_secs(60), false).unwrap();
        assert_eq!(
            actix_web::ResponseError::status_code(&auth.verify_publisher(&reader, now).unwrap_err()).as_u16(),
            403
        );
        assert_eq!(cached(&auth), 0);
    }

    #[test]
    fn aud_is_read_as_a_string_or_an_array() {
        let claims = |aud: &str| serde_json::from_str::<Claims>(&format!(r#"{{"sub":"a","exp":1,"aud":{aud}}}"#));
        assert_eq!(claims(r#""herald""#).unwrap().aud, Some(Audience::One("herald".into())));
        assert_eq!(
            claims(r#"["herald","api"]"#).unwrap().aud,
            Some(Audience::Many(vec!["herald".into(), "api".into()]))
        );
        assert!(claims("42").is_err());
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(query_param("a=1&access_token=x.y.z", "access_token").as_deref(), Some("x.y.z"));
        assert_eq!(query_param("last_event_id=1-0%2B", "last_event_id").as_deref(), Some("1-0+"));
        assert_eq!(query_param("a=1", "access_token"), None);
    }
}
