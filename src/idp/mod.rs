//! The mock OpenID Connect provider.
//!
//! Discovery, JWKS, an authorization endpoint with a login form and a
//! single-sign-on cookie, a token endpoint (authorization code + PKCE S256,
//! client_secret_basic or client_secret_post), and userinfo. ID tokens are
//! signed ES256 (a key drawn from the run's seed) or RS256 (a fixture key).
//!
//! A vendor profile ([`profile`]) shapes the tokens (`amr` dialect, claim
//! names, lifetime) and the key rotation cadence. Misbehaviour knobs, from
//! the lab (standing) or a scenario ([`IdpCommand`], events in time): key
//! rotation, emergency key removal, forged tokens ([`forge`]), slow
//! responses and outages.

pub mod forge;
pub mod profile;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use url::Url;

use self::forge::{ForgerKeys, Forgery};
use self::profile::{Extra, GroupsClaim, ProfileTable};
use crate::config::{IdpConfig, IdpUser, SigningAlg};
use crate::http::bearer_token;
use crate::http::cookies::cookie_value;
use crate::http::form::escape;
use crate::jose::{IDP_RSA_PEM, KeyError, SigningKey, jwk_set};
use crate::net::{Net, SharedClock, UnixMillis};
use crate::oauth::pkce_challenge;
use crate::rng::SeededRng;
use crate::trace::{EventBody, Recorder};

/// Name of the identity provider's single-sign-on cookie.
pub const SSO_COOKIE: &str = "idp_session";

/// How long a login form stays usable.
const LOGIN_REQUEST_TTL: Duration = Duration::from_secs(600);

/// What a scenario (or an administrator) does to the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdpCommand {
    /// Rotate: the next key (published ahead, or new) signs from now on;
    /// the old one stays published for the profile's overlap.
    RotateKeys,
    /// Emergency removal: the signing key is withdrawn from the JWKS at
    /// once (no overlap) and a new key signs.
    RemoveKey,
    /// Answer every request with 503 for this long.
    Outage(Duration),
    /// Delay every response by this much (zero: no delay).
    Delay(Duration),
    /// Issue forged ID tokens of this kind (`None`: genuine ones again).
    Forge(Option<Forgery>),
}

/// One key of the provider's ring.
#[derive(Clone, Debug)]
struct RingKey {
    key: SigningKey,
    /// Published in the JWKS until then (`None`: for as long as it is
    /// current or next).
    retire_at: Option<UnixMillis>,
}

/// The provider's keys: the one that signs, the one published ahead (if
/// the profile does that) and the retired ones still in their overlap.
#[derive(Debug)]
struct KeyRing {
    current: RingKey,
    next: Option<RingKey>,
    retired: Vec<RingKey>,
    /// The key most recently removed in an emergency (for forgeries).
    removed: Option<SigningKey>,
    /// How many keys were made (the derivation label of the next one).
    made: u64,
}

/// The provider's state.
pub struct Idp {
    config: IdpConfig,
    profile: &'static ProfileTable,
    clock: SharedClock,
    rng: SeededRng,
    recorder: Recorder,
    inner: Mutex<Inner>,
}

struct Inner {
    pending: BTreeMap<String, AuthRequest>,
    codes: BTreeMap<String, CodeGrant>,
    sso: BTreeMap<String, SsoSession>,
    access_tokens: BTreeMap<String, (String, UnixMillis)>,
    ring: KeyRing,
    down_until: Option<UnixMillis>,
    delay: Duration,
    forge: Option<Forgery>,
}

#[derive(Clone, Debug, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
}

#[derive(Clone, Debug)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    created: UnixMillis,
}

#[derive(Clone, Debug)]
struct CodeGrant {
    request: AuthRequest,
    user: String,
    auth_time: UnixMillis,
    expires: UnixMillis,
    used: bool,
}

#[derive(Clone, Debug)]
struct SsoSession {
    user: String,
    auth_time: UnixMillis,
    expires: UnixMillis,
}

/// Claims of the ID tokens this provider issues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject (the user name).
    pub sub: String,
    /// Audience (the client id).
    pub aud: String,
    /// Expiry, seconds.
    pub exp: u64,
    /// Issued at, seconds.
    pub iat: u64,
    /// When the user authenticated, seconds.
    pub auth_time: u64,
    /// The nonce the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Authentication methods (RFC 8176).
    pub amr: Vec<String>,
}

impl Idp {
    /// A provider for `config`; its ES256 keys are drawn from `rng`.
    pub fn new(config: IdpConfig, clock: SharedClock, rng: SeededRng, recorder: Recorder) -> Result<Self, KeyError> {
        let key = match config.signing_alg {
            SigningAlg::ES256 => SigningKey::es256(&rng.child("signing-key"))?,
            SigningAlg::RS256 => SigningKey::rs256_from_pem(IDP_RSA_PEM)?,
        };
        let profile = config.profile.table();
        let mut ring = KeyRing {
            current: RingKey { key, retire_at: None },
            next: None,
            retired: Vec::new(),
            removed: None,
            made: 1,
        };
        if profile.publish_ahead {
            ring.next = Some(RingKey { key: next_key(&rng, &mut ring.made)?, retire_at: None });
        }
        let inner = Inner {
            pending: BTreeMap::new(),
            codes: BTreeMap::new(),
            sso: BTreeMap::new(),
            access_tokens: BTreeMap::new(),
            ring,
            down_until: None,
            delay: config.response_delay,
            forge: config.danger_forge,
        };
        let idp = Idp { config, profile, clock, rng, recorder, inner: Mutex::new(inner) };
        idp.record_keys("start");
        Ok(idp)
    }

    /// Applies a scenario's command; says what it did.
    pub fn command(&self, command: IdpCommand) -> Result<String, String> {
        let now = self.clock.now();
        let done = match command.clone() {
            IdpCommand::RotateKeys => {
                let mut inner = self.inner();
                let ring = &mut inner.ring;
                let new = match ring.next.take() {
                    Some(k) => k,
                    None => RingKey {
                        key: next_key(&self.rng, &mut ring.made).map_err(|e| e.to_string())?,
                        retire_at: None,
                    },
                };
                let mut old = std::mem::replace(&mut ring.current, new);
                old.retire_at = Some(now.plus(self.profile.overlap));
                ring.retired.push(old);
                if self.profile.publish_ahead {
                    ring.next = Some(RingKey {
                        key: next_key(&self.rng, &mut ring.made).map_err(|e| e.to_string())?,
                        retire_at: None,
                    });
                }
                let kid = ring.current.key.kid().to_string();
                drop(inner);
                self.record_keys("rotate");
                format!("rotated: {kid} signs")
            }
            IdpCommand::RemoveKey => {
                let mut inner = self.inner();
                let ring = &mut inner.ring;
                let new = match ring.next.take() {
                    Some(k) => k,
                    None => RingKey {
                        key: next_key(&self.rng, &mut ring.made).map_err(|e| e.to_string())?,
                        retire_at: None,
                    },
                };
                let old = std::mem::replace(&mut ring.current, new);
                if self.profile.publish_ahead {
                    ring.next = Some(RingKey {
                        key: next_key(&self.rng, &mut ring.made).map_err(|e| e.to_string())?,
                        retire_at: None,
                    });
                }
                let kid = old.key.kid().to_string();
                ring.removed = Some(old.key);
                drop(inner);
                self.record_keys(&format!("remove {kid}"));
                format!("removed {kid}")
            }
            IdpCommand::Outage(d) => {
                self.inner().down_until = Some(now.plus(d));
                format!("unavailable for {}", humantime::format_duration(d))
            }
            IdpCommand::Delay(d) => {
                self.inner().delay = d;
                format!("responses delayed by {}", humantime::format_duration(d))
            }
            IdpCommand::Forge(f) => {
                self.inner().forge = f;
                match f {
                    Some(f) => format!("token endpoint forges ID tokens: {}", f.as_str()),
                    None => "token endpoint issues genuine ID tokens".into(),
                }
            }
        };
        // Key changes are recorded as `idp_keys_published`; the rest here.
        if !matches!(command, IdpCommand::RotateKeys | IdpCommand::RemoveKey) {
            self.recorder.record(EventBody::IdpMisbehaviour { what: done.clone() });
        }
        Ok(done)
    }

    /// Drops retired keys past their overlap (recording each), then
    /// returns the published keys: current, next, retired.
    fn published(&self) -> Vec<SigningKey> {
        let now = self.clock.now();
        let mut inner = self.inner();
        let expired: Vec<String> = inner
            .ring
            .retired
            .iter()
            .filter(|k| k.retire_at.is_some_and(|t| t <= now))
            .map(|k| k.key.kid().to_string())
            .collect();
        inner.ring.retired.retain(|k| k.retire_at.is_none_or(|t| t > now));
        let ring = &inner.ring;
        let keys: Vec<SigningKey> = std::iter::once(&ring.current)
            .chain(ring.next.iter())
            .chain(ring.retired.iter())
            .map(|k| k.key.clone())
            .collect();
        drop(inner);
        for kid in expired {
            self.record_keys(&format!("retire {kid}"));
        }
        keys
    }

    fn record_keys(&self, why: &str) {
        let inner = self.inner();
        let ring = &inner.ring;
        let kids = std::iter::once(&ring.current)
            .chain(ring.next.iter())
            .chain(ring.retired.iter())
            .map(|k| k.key.kid().to_string())
            .collect();
        let signing = ring.current.key.kid().to_string();
        drop(inner);
        self.recorder.record(EventBody::IdpKeysPublished { kids, signing, why: why.to_string() });
    }

    /// The ID token for `claims`: genuine, or forged if the knob says so.
    fn id_token(&self, claims: &serde_json::Value) -> Result<(String, String, String, Option<Forgery>), KeyError> {
        let (key, removed, forge) = {
            let inner = self.inner();
            (inner.ring.current.key.clone(), inner.ring.removed.clone(), inner.forge)
        };
        match forge {
            None => Ok((key.sign(claims)?, format!("{:?}", key.alg()), key.kid().to_string(), None)),
            Some(f) => {
                let rng = self.rng.child("forger");
                let token =
                    forge::forge(f, claims, &ForgerKeys { published: &key, removed: removed.as_ref(), rng: &rng })?;
                let header = crate::jose::decode_header(&token);
                let (alg, kid) = match header {
                    Ok(h) => (format!("{:?}", h.alg), h.kid.unwrap_or_default()),
                    Err(_) => ("none".to_string(), key.kid().to_string()),
                };
                Ok((token, alg, kid, Some(f)))
            }
        }
    }

    /// The claims of an ID token for `user`, shaped by the profile.
    fn claims(
        &self,
        user: &IdpUser,
        client_id: &str,
        now: UnixMillis,
        auth_time: UnixMillis,
        nonce: Option<String>,
    ) -> serde_json::Value {
        let p = self.profile;
        let ttl = p.token_ttl.unwrap_or(self.config.id_token_ttl);
        let amr = p.amr(&user.amr);
        if self.config.profile == crate::config::IdpProfile::Standard {
            // Exactly the token the provider always issued.
            let claims = IdTokenClaims {
                iss: self.config.issuer.clone(),
                sub: user.username.clone(),
                aud: client_id.to_string(),
                exp: now.plus(ttl).as_secs(),
                iat: now.as_secs(),
                auth_time: auth_time.as_secs(),
                nonce,
                email: user.email.clone(),
                name: user.name.clone(),
                groups: user.groups.clone(),
                amr: amr.unwrap_or_default(),
            };
            return serde_json::to_value(claims).unwrap_or_default();
        }
        let mut c = serde_json::Map::new();
        c.insert("iss".into(), self.config.issuer.clone().into());
        c.insert("sub".into(), user.username.clone().into());
        c.insert("aud".into(), client_id.into());
        c.insert("exp".into(), now.plus(ttl).as_secs().into());
        c.insert("iat".into(), now.as_secs().into());
        c.insert("auth_time".into(), auth_time.as_secs().into());
        if let Some(n) = nonce {
            c.insert("nonce".into(), n.into());
        }
        c.insert("email".into(), user.email.clone().into());
        c.insert("name".into(), user.name.clone().into());
        match p.groups {
            GroupsClaim::Groups => {
                c.insert("groups".into(), user.groups.clone().into());
            }
            GroupsClaim::Roles => {
                c.insert("roles".into(), user.groups.clone().into());
            }
            GroupsClaim::Omitted => {}
        }
        if let Some(amr) = amr {
            c.insert("amr".into(), amr.into());
        }
        for extra in p.extras {
            match extra {
                Extra::PreferredUsername => {
                    c.insert("preferred_username".into(), user.email.clone().into());
                }
                Extra::ObjectId => {
                    c.insert("oid".into(), object_id(&user.username).into());
                }
                Extra::TenantId => {
                    c.insert("tid".into(), profile::ENTRA_TENANT_ID.into());
                }
                Extra::EmailVerified => {
                    c.insert("email_verified".into(), true.into());
                }
                Extra::HostedDomain => {
                    let domain = user.email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                    c.insert("hd".into(), domain.into());
                }
            }
        }
        serde_json::Value::Object(c)
    }

    /// Serves the provider on `addr` until the host stops.
    pub async fn run(self: Arc<Self>, net: Net, addr: SocketAddr) -> io::Result<()> {
        let listener = net.bind(addr).await?;
        crate::http::serve(listener, self.router()).await
    }

    /// The provider's routes (mounted under the issuer's path), behind the
    /// outage and delay knobs.
    pub fn router(self: Arc<Self>) -> Router {
        let knobs = axum::middleware::from_fn_with_state(self.clone(), misbehave);
        self.routes().layer(knobs)
    }

    fn routes(self: Arc<Self>) -> Router {
        let routes = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/login", post(login))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(self.clone());
        match self.issuer_path() {
            Some(prefix) => Router::new().nest(&prefix, routes),
            None => routes,
        }
    }

    fn issuer_path(&self) -> Option<String> {
        let path = Url::parse(&self.config.issuer).ok()?.path().trim_end_matches('/').to_string();
        (!path.is_empty()).then_some(path)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.issuer.trim_end_matches('/'), path)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reject(&self, endpoint: &str, reason: impl Into<String>) {
        self.recorder.record(EventBody::IdpRejected { endpoint: endpoint.to_string(), reason: reason.into() });
    }

    fn user(&self, name: &str) -> Option<&IdpUser> {
        self.config.users.iter().find(|u| u.username == name)
    }

    fn issue_code(&self, request: AuthRequest, user: &str, auth_time: UnixMillis) -> Response {
        let code = self.rng.token(32);
        let now = self.clock.now();
        let mut redirect = match Url::parse(&request.redirect_uri) {
            Ok(u) => u,
            Err(_) => return (StatusCode::BAD_REQUEST, "invalid redirect_uri").into_response(),
        };
        {
            let mut q = redirect.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(state) = &request.state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.config.issuer);
        }
        self.inner().codes.insert(
            code,
            CodeGrant {
                request,
                user: user.to_string(),
                auth_time,
                expires: now.plus(self.config.code_ttl),
                used: false,
            },
        );
        Redirect::to(redirect.as_str()).into_response()
    }

    fn login_page(&self, req: &str, error: Option<&str>) -> Response {
        let error = error.map(|e| format!("<p class=\"error\">{}</p>", escape(e))).unwrap_or_default();
        let action = format!("{}/login", self.issuer_path().unwrap_or_default());
        Html(format!(
            "<!doctype html><html><head><title>Sign in</title></head><body><h1>Sign in</h1>{error}\
             <form id=\"login\" method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"req\" value=\"{}\">\
             <label>User name <input name=\"username\" autocomplete=\"username\"></label>\
             <label>Password <input type=\"password\" name=\"password\"></label>\
             <input type=\"submit\" value=\"Sign in\"></form></body></html>",
            escape(&action),
            escape(req)
        ))
        .into_response()
    }
}

/// The outage and delay knobs, in front of every endpoint.
async fn misbehave(State(idp): State<Arc<Idp>>, request: Request, next: Next) -> Response {
    let now = idp.clock.now();
    let (down, delay) = {
        let inner = idp.inner();
        (inner.down_until.is_some_and(|t| now < t), inner.delay)
    };
    if down {
        idp.reject(request.uri().path(), "unavailable (outage)");
        return (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable").into_response();
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

/// A stable object id for a user (an Entra-like `oid`): a UUID-shaped
/// digest of the name.
fn object_id(username: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(username.as_bytes());
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn next_key(rng: &SeededRng, made: &mut u64) -> Result<SigningKey, KeyError> {
    let key = SigningKey::es256(&rng.child(&format!("signing-key-{made}")))?;
    *made += 1;
    Ok(key)
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": idp.config.issuer,
        "authorization_endpoint": idp.url("/authorize"),
        "token_endpoint": idp.url("/token"),
        "userinfo_endpoint": idp.url("/userinfo"),
        "jwks_uri": idp.url("/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": idp.published().iter().map(|k| format!("{:?}", k.alg())).collect::<std::collections::BTreeSet<_>>(),
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "name", "groups", "amr"],
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    let keys = idp.published();
    let set = Json(jwk_set(&keys.iter().collect::<Vec<_>>()));
    match idp.config.jwks_max_age.or(idp.profile.jwks_max_age) {
        Some(age) => ([(header::CACHE_CONTROL, format!("public, max-age={}", age.as_secs()))], set).into_response(),
        None => set.into_response(),
    }
}

fn error_redirect(redirect_uri: &str, error: &str, state: Option<&str>) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

async fn authorize(State(idp): State<Arc<Idp>>, headers: HeaderMap, Query(p): Query<AuthorizeParams>) -> Response {
    let Some(client) = p.client_id.as_deref().and_then(|id| idp.config.clients.iter().find(|c| c.client_id == id))
    else {
        idp.reject("authorize", "unknown client_id");
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    };
    let Some(redirect_uri) = p.redirect_uri.clone().filter(|r| client.redirect_uris.iter().any(|u| u == r)) else {
        // Never redirect to an unregistered URI.
        idp.reject("authorize", "redirect_uri not registered");
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered for this client").into_response();
    };
    let state = p.state.as_deref();
    if p.response_type.as_deref() != Some("code") {
        idp.reject("authorize", "unsupported response_type");
        return error_redirect(&redirect_uri, "unsupported_response_type", state);
    }
    if !p.scope.as_deref().unwrap_or("").split(' ').any(|s| s == "openid") {
        idp.reject("authorize", "scope lacks openid");
        return error_redirect(&redirect_uri, "invalid_scope", state);
    }
    let (Some(challenge), Some("S256")) = (p.code_challenge.clone(), p.code_challenge_method.as_deref()) else {
        idp.reject("authorize", "PKCE S256 required");
        return error_redirect(&redirect_uri, "invalid_request", state);
    };
    let now = idp.clock.now();
    let request = AuthRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        state: p.state.clone(),
        nonce: p.nonce.clone(),
        code_challenge: challenge,
        created: now,
    };
    let sso = cookie_value(&headers, SSO_COOKIE).and_then(|c| idp.inner().sso.get(&c).cloned());
    match sso {
        Some(s) if s.expires > now && p.prompt.as_deref() != Some("login") => {
            idp.issue_code(request, &s.user, s.auth_time)
        }
        _ => {
            let req = idp.rng.token(16);
            let mut inner = idp.inner();
            inner.pending.retain(|_, r| now.since(r.created) < LOGIN_REQUEST_TTL);
            inner.pending.insert(req.clone(), request);
            drop(inner);
            idp.login_page(&req, None)
        }
    }
}

#[derive(Deserialize)]
struct LoginForm {
    req: String,
    username: String,
    password: String,
}

async fn login(State(idp): State<Arc<Idp>>, Form(f): Form<LoginForm>) -> Response {
    let now = idp.clock.now();
    let request = idp.inner().pending.get(&f.req).cloned();
    let Some(request) = request.filter(|r| now.since(r.created) < LOGIN_REQUEST_TTL) else {
        idp.reject("login", "unknown or expired login request");
        return (StatusCode::BAD_REQUEST, "this sign-in request has expired; start again").into_response();
    };
    // A compromised IdP vouches for anyone it is told to.
    let ok = idp.user(&f.username).is_some_and(|u| idp.config.danger_compromised || u.password == f.password);
    idp.recorder.record(EventBody::IdpLogin {
        user: f.username.clone(),
        result: if ok { "ok".into() } else { "bad credentials".into() },
    });
    if !ok {
        return idp.login_page(&f.req, Some("Wrong user name or password."));
    }
    let sso_id = idp.rng.token(24);
    {
        let mut inner = idp.inner();
        inner.pending.remove(&f.req);
        // Expired SSO sessions are never honoured; drop them so that a
        // long-running provider does not grow without bound.
        inner.sso.retain(|_, s| s.expires > now);
        inner.sso.insert(
            sso_id.clone(),
            SsoSession { user: f.username.clone(), auth_time: now, expires: now.plus(idp.config.session_ttl) },
        );
    }
    let mut response = idp.issue_code(request, &f.username, now);
    let secure = if idp.config.issuer.starts_with("https:") { "; Secure" } else { "" };
    let cookie = format!(
        "{SSO_COOKIE}={sso_id}; Path=/; Max-Age={}{secure}; HttpOnly; SameSite=Lax",
        idp.config.session_ttl.as_secs()
    );
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(serde_json::json!({"error": error, "error_description": description}))).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

async fn token(State(idp): State<Arc<Idp>>, headers: HeaderMap, Form(f): Form<TokenForm>) -> Response {
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(c) => c,
        None => (f.client_id.clone().unwrap_or_default(), f.client_secret.clone().unwrap_or_default()),
    };
    let Some(client) = idp.config.clients.iter().find(|c| c.client_id == client_id && c.client_secret == secret) else {
        idp.reject("token", "client authentication failed");
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    };
    if f.grant_type.as_deref() != Some("authorization_code") {
        idp.reject("token", "unsupported grant_type");
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only authorization_code");
    }
    let now = idp.clock.now();
    let code = f.code.unwrap_or_default();
    let grant = {
        let mut inner = idp.inner();
        match inner.codes.get_mut(&code) {
            Some(g) if g.used => {
                g.used = true;
                None
            }
            Some(g) => {
                g.used = true;
                Some(g.clone())
            }
            None => None,
        }
    };
    let Some(grant) = grant else {
        idp.reject("token", "unknown or reused code");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or already used code");
    };
    let failure = if grant.expires <= now {
        Some("code expired")
    } else if grant.request.client_id != client.client_id {
        Some("code issued to another client")
    } else if f.redirect_uri.as_deref() != Some(grant.request.redirect_uri.as_str()) {
        Some("redirect_uri differs from the authorization request")
    } else if f.code_verifier.as_deref().map(pkce_challenge).as_deref() != Some(grant.request.code_challenge.as_str()) {
        Some("PKCE verifier does not match the challenge")
    } else {
        None
    };
    if let Some(reason) = failure {
        idp.reject("token", reason);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", reason);
    }
    let Some(user) = idp.user(&grant.user) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "user no longer exists");
    };
    let claims = idp.claims(user, &client.client_id, now, grant.auth_time, grant.request.nonce.clone());
    let ttl = idp.profile.token_ttl.unwrap_or(idp.config.id_token_ttl);
    let (id_token, alg, kid, forged) = match idp.id_token(&claims) {
        Ok(t) => t,
        Err(e) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    };
    let access_token = idp.rng.token(32);
    {
        let mut inner = idp.inner();
        // Expired access tokens are refused anyway; drop them (see SSO sessions).
        inner.access_tokens.retain(|_, (_, expires)| *expires > now);
        inner.access_tokens.insert(access_token.clone(), (user.username.clone(), now.plus(ttl)));
    }
    idp.recorder.record(EventBody::IdpTokenIssued {
        sub: user.username.clone(),
        client_id: client.client_id.clone(),
        alg,
        kid,
        amr: idp.profile.amr(&user.amr).unwrap_or_default(),
        forged: forged.map(|f| f.as_str().to_string()),
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "id_token": id_token,
            "scope": "openid email profile",
        })),
    )
        .into_response()
}

async fn userinfo(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    let now = idp.clock.now();
    let user = bearer_token(&headers).and_then(|t| idp.inner().access_tokens.get(t).cloned());
    match user {
        Some((name, expires)) if expires > now => match idp.user(&name) {
            Some(u) => Json(serde_json::json!({
                "sub": u.username, "email": u.email, "name": u.name, "groups": u.groups,
            }))
            .into_response(),
            None => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "unknown user"),
        },
        _ => {
            idp.reject("userinfo", "invalid or expired access token");
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "invalid or expired access token")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = base64::engine::general_purpose::STANDARD.encode("my%20client:s%3Acret");
        h.insert(header::AUTHORIZATION, format!("Basic {raw}").parse().unwrap());
        assert_eq!(basic_credentials(&h), Some(("my client".into(), "s:cret".into())));
    }

    #[test]
    fn cookie_values_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; idp_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, SSO_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;
    use crate::config::{IdpProfile, LabConfig};
    use crate::net::Clock;

    struct Fixed(UnixMillis);
    impl Clock for Fixed {
        fn now(&self) -> UnixMillis {
            self.0
        }
    }

    const NOW: UnixMillis = UnixMillis(1_772_614_800_000);

    fn idp(profile: IdpProfile, at: UnixMillis) -> (Idp, Recorder) {
        let (lab, _) = LabConfig::parse(&LabConfig::default_source()).expect("default lab");
        let mut config = lab.idp.clone();
        config.profile = profile;
        let clock: SharedClock = Arc::new(Fixed(at));
        let recorder = Recorder::new(NOW, clock.clone());
        (Idp::new(config, clock, SeededRng::from_seed(1).child("idp"), recorder.clone()).unwrap(), recorder)
    }

    fn kids(idp: &Idp) -> Vec<String> {
        idp.published().iter().map(|k| k.kid().to_string()).collect()
    }

    #[test]
    fn standard_publishes_one_key_and_rotates_with_an_overlap() {
        let (idp, rec) = idp(IdpProfile::Standard, NOW);
        let first = kids(&idp);
        assert_eq!(first.len(), 1, "today's provider: one key");
        idp.command(IdpCommand::RotateKeys).unwrap();
        let after = kids(&idp);
        assert_eq!(after.len(), 2);
        assert_eq!(after[1], first[0], "the old key stays for the overlap");
        assert_ne!(after[0], first[0], "a new key signs");
        idp.command(IdpCommand::RemoveKey).unwrap();
        let removed = kids(&idp);
        assert!(!removed.contains(&after[0]), "an emergency removal leaves no overlap");
        let why: Vec<String> = rec
            .snapshot()
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::IdpKeysPublished { why, .. } => Some(why.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(why, ["start".to_string(), "rotate".into(), format!("remove {}", after[0])]);
    }

    #[test]
    fn the_first_key_is_the_one_the_provider_always_had() {
        let (idp, _) = idp(IdpProfile::Standard, NOW);
        let legacy = SigningKey::es256(&SeededRng::from_seed(1).child("idp").child("signing-key")).unwrap();
        assert_eq!(kids(&idp), [legacy.kid().to_string()]);
    }

    #[test]
    fn vendors_publish_the_next_key_ahead_of_use() {
        let (idp, _) = idp(IdpProfile::Entra, NOW);
        let before = kids(&idp);
        assert_eq!(before.len(), 2, "current and next");
        idp.command(IdpCommand::RotateKeys).unwrap();
        let after = kids(&idp);
        assert_eq!(after[0], before[1], "the key published ahead now signs");
        assert!(after.contains(&before[0]), "the old one is kept for the overlap");
        assert_eq!(after.len(), 3);
    }

    #[test]
    fn entra_claims_carry_roles_oid_tid_and_its_amr_dialect() {
        let (idp, _) = idp(IdpProfile::Entra, NOW);
        let mut user = idp.config.users[0].clone();
        user.amr = vec!["pwd".into(), "hwk".into()];
        let c = idp.claims(&user, "gw", NOW, NOW, Some("n".into()));
        assert_eq!(c["roles"], serde_json::json!(user.groups));
        assert!(c.get("groups").is_none());
        assert_eq!(c["tid"], profile::ENTRA_TENANT_ID);
        assert_eq!(c["oid"].as_str().map(str::len), Some(36));
        assert_eq!(c["preferred_username"], serde_json::json!(user.email));
        assert_eq!(c["amr"], serde_json::json!(["pwd", "ngcmfa", "mfa"]));
        assert_eq!(c["exp"].as_u64(), Some(NOW.as_secs() + 3600), "an hour, whatever id_token_ttl says");
    }

    #[test]
    fn google_claims_omit_amr_and_groups() {
        let (idp, _) = idp(IdpProfile::Google, NOW);
        let user = idp.config.users[0].clone();
        let c = idp.claims(&user, "gw", NOW, NOW, None);
        assert!(c.get("amr").is_none() && c.get("groups").is_none() && c.get("nonce").is_none());
        assert_eq!(c["hd"], "lab.test");
    }

    #[test]
    fn standard_claims_are_the_legacy_struct() {
        let (idp, _) = idp(IdpProfile::Standard, NOW);
        let user = idp.config.users[0].clone();
        let c = idp.claims(&user, "gw", NOW, NOW, Some("n".into()));
        let legacy: IdTokenClaims = serde_json::from_value(c.clone()).unwrap();
        assert_eq!(serde_json::to_value(&legacy).unwrap(), c);
        assert_eq!(legacy.amr, user.amr);
        assert_eq!(legacy.exp, NOW.plus(idp.config.id_token_ttl).as_secs());
    }

    #[test]
    fn retired_keys_leave_after_their_overlap() {
        let (idp, _) = idp(IdpProfile::Standard, NOW);
        idp.command(IdpCommand::RotateKeys).unwrap();
        assert_eq!(kids(&idp).len(), 2);
        // The same provider an hour later (the overlap of `standard`).
        let later: SharedClock = Arc::new(Fixed(NOW.plus(Duration::from_secs(3600))));
        let idp = Idp { clock: later, ..idp };
        assert_eq!(kids(&idp).len(), 1);
    }
}
