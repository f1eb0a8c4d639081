//! The mock OpenID Connect provider.
//!
//! Discovery, JWKS, an authorization endpoint with a login form and a
//! single-sign-on cookie, a token endpoint (authorization code + PKCE S256,
//! client_secret_basic or client_secret_post), and userinfo. ID tokens are
//! signed ES256 (a key drawn from the run's seed) or RS256 (a fixture key).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use url::Url;

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

/// The provider's state.
pub struct Idp {
    config: IdpConfig,
    clock: SharedClock,
    rng: SeededRng,
    recorder: Recorder,
    key: SigningKey,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<String, AuthRequest>,
    codes: BTreeMap<String, CodeGrant>,
    sso: BTreeMap<String, SsoSession>,
    access_tokens: BTreeMap<String, (String, UnixMillis)>,
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
    /// A provider for `config`; its ES256 key is drawn from `rng`.
    pub fn new(config: IdpConfig, clock: SharedClock, rng: SeededRng, recorder: Recorder) -> Result<Self, KeyError> {
        let key = match config.signing_alg {
            SigningAlg::ES256 => SigningKey::es256(&rng.child("signing-key"))?,
            SigningAlg::RS256 => SigningKey::rs256_from_pem(IDP_RSA_PEM)?,
        };
        Ok(Idp { config, clock, rng, recorder, key, inner: Mutex::new(Inner::default()) })
    }

    /// Serves the provider on `addr` until the host stops.
    pub async fn run(self: Arc<Self>, net: Net, addr: SocketAddr) -> io::Result<()> {
        let listener = net.bind(addr).await?;
        crate::http::serve(listener, self.router()).await
    }

    /// The provider's routes (mounted under the issuer's path).
    pub fn router(self: Arc<Self>) -> Router {
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

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": idp.config.issuer,
        "authorization_endpoint": idp.url("/authorize"),
        "token_endpoint": idp.url("/token"),
        "userinfo_endpoint": idp.url("/userinfo"),
        "jwks_uri": idp.url("/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [format!("{:?}", idp.key.alg())],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "name", "groups", "amr"],
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(jwk_set(&[&idp.key]))
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
    let claims = IdTokenClaims {
        iss: idp.config.issuer.clone(),
        sub: user.username.clone(),
        aud: client.client_id.clone(),
        exp: now.plus(idp.config.id_token_ttl).as_secs(),
        iat: now.as_secs(),
        auth_time: grant.auth_time.as_secs(),
        nonce: grant.request.nonce.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        groups: user.groups.clone(),
        amr: user.amr.clone(),
    };
    let id_token = match idp.key.sign(&claims) {
        Ok(t) => t,
        Err(e) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    };
    let access_token = idp.rng.token(32);
    {
        let mut inner = idp.inner();
        // Expired access tokens are refused anyway; drop them (see SSO sessions).
        inner.access_tokens.retain(|_, (_, expires)| *expires > now);
        inner.access_tokens.insert(access_token.clone(), (user.username.clone(), now.plus(idp.config.id_token_ttl)));
    }
    idp.recorder.record(EventBody::IdpTokenIssued {
        sub: user.username.clone(),
        client_id: client.client_id.clone(),
        alg: format!("{:?}", idp.key.alg()),
        kid: idp.key.kid().to_string(),
        amr: user.amr.clone(),
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": idp.config.id_token_ttl.as_secs(),
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
