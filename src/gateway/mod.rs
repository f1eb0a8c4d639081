//! The access gateway: an OpenID Connect relying party in front of the
//! applications, holding the sessions that the device agent and browsers
//! present, and forwarding allowed requests to origins with a signed app token.
//!
//! Requests are dispatched on their `Host`: the gateway's own domain
//! (`auth_url`) serves the sign-in flow, the device API and the app-token
//! keys; an application's domain is proxied to its origin when the request
//! carries a live session that the app's policy allows. Without a session a
//! browser is redirected to sign in (302) and a script (`X-Requested-With:
//! XMLHttpRequest`) gets 401; a policy denial is 403.

pub mod oidc;
pub mod session;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use url::Url;

use self::oidc::{LoginError, PendingLogin, ProviderCache, RelyingParty, Target};
use self::session::{
    APP_COOKIE, Checks, DEVICE_AUDIENCE, GLOBAL_AUDIENCE, GLOBAL_COOKIE, MfaVerification, Registry, Session,
    SessionClaims,
};
use crate::config::{AppConfig, GatewayConfig, MfaConfig};
use crate::http::cookies::cookie_value;
use crate::http::keys::KeyCachePolicy;
use crate::http::{Fetch, HttpClient, PeerAddr, RemoteKeys, bearer_token, redirect, with_cookie};
use crate::jose::{Expect, KeyError, MacKey, SigningKey, TokenError, jwk_set};
use crate::net::{Net, SharedClock, UnixMillis};
use crate::policy::{AppAccess, Decision, FactorKind, MfaRequirement, OrgMfa, amr_satisfies};
use crate::protocol::{
    APP_TOKEN_HEADER, AppTokenClaims, AppTokenMfa, CERTS_PATH, DEVICE_HANDOFF_URL, DEVICE_SESSION_PATH,
    DeviceSessionInfo, LAUNCHER_ADD_FACTOR_PATH, LOGIN_PATH, MFA_AUDIENCE, MFA_CERTS_PATH, MFA_ENROLL_PATH,
    MFA_RETURN_PATH, MFA_VERIFY_PATH, MfaEvidenceClaims, MfaPurpose, MfaRequestClaims,
};
use crate::rng::SeededRng;
use crate::trace::{EventBody, GatewayVerdict, Recorder};

/// Path of the OIDC redirect URI.
pub const CALLBACK_PATH: &str = "/auth/callback";
/// Path on an app's domain that turns a hand-off into an app cookie.
pub const AUTHORIZED_PATH: &str = "/.lockstep/authorized";

/// How long a sign-in may take from start to callback.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Lifetime of the hand-off from the gateway's domain to an app domain.
const HANDOFF_TTL: Duration = Duration::from_secs(60);
/// A global session that ends sooner than this no longer skips the identity
/// provider: the app session derived from it would end before the browser
/// got back to the app, and the browser would loop through the gateway
/// (found by `lab explore`, seed 1649).
const MIN_GLOBAL_SESSION_LEFT: Duration = Duration::from_secs(10);
/// Largest request body forwarded to an origin.
const MAX_BODY: usize = 1 << 20;
/// How long the user has to complete an MFA request.
const MFA_REQUEST_TTL: Duration = Duration::from_secs(600);
/// Who verified a factor that the IdP's `amr` vouched for.
const BY_IDP_AMR: &str = "idp-amr";

/// An MFA request the gateway sent and awaits evidence for.
#[derive(Clone, Debug)]
struct PendingMfa {
    sid: String,
    app: String,
    url: Url,
    allowed: Vec<FactorKind>,
    max_age: Duration,
    device: Option<String>,
    created: UnixMillis,
}

/// The gateway.
pub struct Gateway {
    config: GatewayConfig,
    rp: RelyingParty,
    auth_url: Url,
    clock: SharedClock,
    rng: SeededRng,
    recorder: Recorder,
    /// Signs app tokens for origins (public key at `CERTS_PATH`).
    key: SigningKey,
    /// Signs the session tokens only the gateway itself verifies.
    session_key: MacKey,
    http: HttpClient,
    provider: tokio::sync::Mutex<ProviderCache>,
    pending: Mutex<BTreeMap<String, PendingLogin>>,
    registry: Mutex<Registry>,
    /// The MFA service's URL and the organization's MFA settings.
    mfa_url: String,
    org_mfa: OrgMfa,
    /// Each app's access rules, by name (resolved once from the config).
    access: BTreeMap<String, AppAccess>,
    /// Keys that sign the MFA service's evidence.
    mfa_keys: RemoteKeys,
    pending_mfa: Mutex<BTreeMap<String, PendingMfa>>,
    /// Which device each address belongs to, learned from the agents'
    /// authenticated device-session calls (the device's tunnel identity),
    /// with the device session that vouched for it.
    devices: Mutex<BTreeMap<IpAddr, String>>,
    /// The last app token signed per (session, app): claims are whole
    /// seconds and ES256 signatures here are deterministic (RFC 6979), so
    /// the same claims in the same second give the same token; it is
    /// reused instead of signed again. The comparison covers every claim,
    /// `exp` included, which is capped at the session's (and MFA
    /// session's) end before the lookup, so a reused token never outlives
    /// its session either.
    app_tokens: Mutex<BTreeMap<(String, String), (AppTokenClaims, String)>>,
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `auth_url` is not a URL.
    #[error("gateway.auth_url: {0}")]
    AuthUrl(String),
    /// Its signing key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Gateway {
    /// A gateway for `config`, talking to the world through `http`.
    pub fn new(
        config: GatewayConfig,
        mfa: &MfaConfig,
        clock: SharedClock,
        rng: SeededRng,
        recorder: Recorder,
        http: HttpClient,
    ) -> Result<Self, GatewayError> {
        let auth_url = Url::parse(&config.auth_url).map_err(|e| GatewayError::AuthUrl(e.to_string()))?;
        let key = SigningKey::es256(&rng.child("signing-key"))?;
        let session_key = MacKey::generate(&rng.child("session-key"));
        let access = config.apps.iter().map(|a| (a.name.clone(), a.access())).collect();
        let rp = RelyingParty {
            issuer: config.idp_issuer.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            redirect_uri: format!("{}{CALLBACK_PATH}", config.auth_url.trim_end_matches('/')),
            leeway_s: config.leeway.as_secs(),
        };
        let provider = ProviderCache::new(
            clock.clone(),
            KeyCachePolicy {
                max_ttl: config.jwks_max_ttl,
                min_refetch: config.jwks_min_refetch,
                danger_no_ttl: config.danger_jwks_no_ttl,
            },
            recorder.clone(),
        );
        let mfa_keys = RemoteKeys::new(format!("{}{MFA_CERTS_PATH}", mfa.url.trim_end_matches('/')), clock.clone());
        Ok(Gateway {
            config,
            rp,
            auth_url,
            clock,
            rng,
            recorder,
            key,
            session_key,
            http,
            provider: tokio::sync::Mutex::new(provider),
            pending: Mutex::new(BTreeMap::new()),
            registry: Mutex::new(Registry::default()),
            mfa_url: mfa.url.trim_end_matches('/').to_string(),
            org_mfa: mfa.organization.clone(),
            access,
            mfa_keys,
            pending_mfa: Mutex::new(BTreeMap::new()),
            devices: Mutex::new(BTreeMap::new()),
            app_tokens: Mutex::new(BTreeMap::new()),
        })
    }

    /// Serves the gateway on `addr` until the host stops.
    pub async fn run(self: Arc<Self>, net: Net, addr: SocketAddr) -> io::Result<()> {
        let listener = net.bind(addr).await?;
        crate::http::serve(listener, self.router()).await
    }

    /// The gateway's single entry point.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self)
    }

    /// Revokes every live session of `user` (an administrator's action).
    pub fn revoke_user(&self, user: &str) -> Vec<String> {
        let now = self.clock.now();
        let sids = self.registry().revoke_user(user, now);
        for sid in &sids {
            self.recorder
                .record(EventBody::SessionRevoked { sid: sid.clone(), reason: "revoked by an administrator".into() });
        }
        sids
    }

    /// Runs ID tokens handed to the gateway through its ID-token check (as
    /// if each came back from the token endpoint) and returns how many it
    /// accepted. Each verdict is traced by the key cache.
    pub async fn verify_id_tokens(&self, tokens: &[String]) -> usize {
        let mut accepted = 0;
        for token in tokens {
            match self.rp.validate(&self.http, &self.provider, token).await {
                Ok(_) => accepted += 1,
                Err(e) => self.recorder.record(EventBody::GatewayLoginRejected { reason: e.to_string() }),
            }
        }
        accepted
    }

    /// The app token for `claims`: the one signed last for this session and
    /// app when its claims are the same (same second), else a new one.
    fn app_token(&self, claims: AppTokenClaims) -> Result<String, crate::jose::KeyError> {
        let key = (claims.sid.clone(), claims.aud.clone());
        if let Some((last, token)) = self.app_tokens.lock().unwrap_or_else(PoisonError::into_inner).get(&key)
            && *last == claims
        {
            return Ok(token.clone());
        }
        let token = self.key.sign(&claims)?;
        let mut cache = self.app_tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= 4096 {
            // Entries of other seconds can never be reused.
            cache.retain(|_, (c, _)| c.iat == claims.iat);
        }
        cache.insert(key, (claims, token.clone()));
        Ok(token)
    }

    /// The public keys origins use to verify app tokens.
    pub fn app_token_keys(&self) -> JwkSet {
        jwk_set(&[&self.key])
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checks(&self) -> Checks {
        Checks { expiry: !self.config.danger_skip_expiry_check, revocation: !self.config.danger_skip_revocation_check }
    }

    fn issuer(&self) -> &str {
        &self.config.auth_url
    }

    fn app_named(&self, name: &str) -> Option<&AppConfig> {
        self.config.apps.iter().find(|a| a.name == name)
    }

    fn app_for_host(&self, host: &str) -> Option<&AppConfig> {
        self.config.apps.iter().find(|a| a.domain.eq_ignore_ascii_case(host))
    }

    /// Verifies one of our own session tokens (signature, issuer,
    /// `audience`, expiry unless `ignore_expiry`).
    fn verify_session_token(
        &self,
        token: &str,
        audience: &str,
        ignore_expiry: bool,
    ) -> Result<SessionClaims, TokenError> {
        let expect = Expect { issuer: self.issuer(), audience, leeway_s: 0, danger_ignore_expiry: ignore_expiry };
        self.session_key.verify(token, &expect, self.clock.now())
    }

    /// Verifies one of our own session tokens for `audience` and finds its
    /// live session.
    fn session_from_token(&self, token: &str, audience: &str) -> Result<Session, String> {
        self.session_and_claims(token, audience).map(|(s, _)| s)
    }

    fn session_and_claims(&self, token: &str, audience: &str) -> Result<(Session, SessionClaims), String> {
        let claims = self
            .verify_session_token(token, audience, self.config.danger_skip_expiry_check)
            .map_err(|e| e.to_string())?;
        let session = self
            .registry()
            .live(&claims.sid, self.clock.now(), self.checks())
            .cloned()
            .map_err(|p| p.as_str().to_string())?;
        Ok((session, claims))
    }

    /// The device a request comes from: the device whose agent holds a live
    /// device session and last called from this address.
    fn device_of(&self, peer: IpAddr) -> Option<String> {
        let sid = self.devices.lock().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned()?;
        self.registry().live(&sid, self.clock.now(), self.checks()).ok().and_then(|s| s.device.clone())
    }

    fn sign_session(
        &self,
        session: &Session,
        audience: &str,
        lifetime_end: UnixMillis,
        path: Option<String>,
        mfa: Option<String>,
    ) -> Result<String, KeyError> {
        let now = self.clock.now();
        self.session_key.sign(&SessionClaims {
            iss: self.issuer().to_string(),
            aud: audience.to_string(),
            sub: session.user.clone(),
            sid: session.sid.clone(),
            iat: now.as_secs(),
            exp: lifetime_end.as_secs(),
            path,
            device: session.device.clone(),
            mfa,
        })
    }

    fn decide(
        &self,
        ctx: &RequestCtx,
        app: Option<&str>,
        verdict: GatewayVerdict,
        status: Option<u16>,
        session: Option<&Session>,
        reason: &str,
    ) {
        self.decide_with(ctx, app, verdict, status, session, reason, None, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        ctx: &RequestCtx,
        app: Option<&str>,
        verdict: GatewayVerdict,
        status: Option<u16>,
        session: Option<&Session>,
        reason: &str,
        device: Option<String>,
        mfa: Option<String>,
    ) {
        self.recorder.record(EventBody::GatewayDecision {
            app: app.map(str::to_string),
            method: ctx.method.to_string(),
            path: ctx.path.clone(),
            peer: ctx.peer,
            verdict,
            status: status.unwrap_or(0),
            sid: session.map(|s| s.sid.clone()),
            user: session.map(|s| s.user.clone()),
            reason: reason.to_string(),
            device,
            mfa,
        });
    }

    fn app_url(&self, app: &AppConfig, path_and_query: &str) -> String {
        let port = self.auth_url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{}{port}{path_and_query}", self.auth_url.scheme(), app.domain)
    }

    fn login_redirect_url(&self, target: &str) -> String {
        let mut url = self.auth_url.clone();
        url.set_path(LOGIN_PATH);
        url.query_pairs_mut().append_pair("target", target);
        url.to_string()
    }
}

/// What the handlers need to know about a request.
struct RequestCtx {
    method: Method,
    host: String,
    path: String,
    path_and_query: String,
    query: BTreeMap<String, String>,
    peer: IpAddr,
    headers: HeaderMap,
}

async fn handle(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): ConnectInfo<PeerAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map(|(n, _)| n).unwrap_or(h).to_ascii_lowercase())
        .unwrap_or_default();
    let query: BTreeMap<String, String> =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let ctx = RequestCtx {
        method: parts.method.clone(),
        host,
        path: parts.uri.path().to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        query,
        peer: peer.0.ip(),
        headers: parts.headers,
    };
    let auth_host = gw.auth_url.host_str().unwrap_or("").to_ascii_lowercase();
    if ctx.host == auth_host {
        return match ctx.path.as_str() {
            LOGIN_PATH => login_start(&gw, &ctx).await,
            CALLBACK_PATH => callback(&gw, &ctx).await,
            DEVICE_SESSION_PATH => device_session(&gw, &ctx),
            MFA_RETURN_PATH => mfa_return(&gw, &ctx).await,
            LAUNCHER_ADD_FACTOR_PATH => launcher_add_factor(&gw, &ctx),
            CERTS_PATH => {
                gw.decide(&ctx, None, GatewayVerdict::Serve, Some(200), None, "app token keys");
                axum::Json(gw.app_token_keys()).into_response()
            }
            _ => reject(&gw, &ctx, None, StatusCode::NOT_FOUND, "no such endpoint"),
        };
    }
    let Some(app) = gw.app_for_host(&ctx.host).cloned() else {
        return reject(&gw, &ctx, None, StatusCode::NOT_FOUND, "unknown host");
    };
    if ctx.path == AUTHORIZED_PATH {
        return authorized(&gw, &ctx, &app);
    }
    app_request(&gw, ctx, &app, body).await
}

fn reject(gw: &Gateway, ctx: &RequestCtx, app: Option<&str>, status: StatusCode, reason: &str) -> Response {
    gw.decide(ctx, app, GatewayVerdict::Reject, Some(status.as_u16()), None, reason);
    (status, reason.to_string()).into_response()
}

async fn login_start(gw: &Gateway, ctx: &RequestCtx) -> Response {
    let target = if let Some(device) = ctx.query.get("device") {
        Target::Device { device: device.clone() }
    } else {
        let url = ctx.query.get("target").and_then(|t| Url::parse(t).ok());
        let app = url.as_ref().and_then(|u| u.host_str()).and_then(|h| gw.app_for_host(h)).map(|a| a.name.clone());
        let launcher = url.as_ref().is_some_and(|u| {
            u.host_str().is_some_and(|h| Some(h) == gw.auth_url.host_str()) && u.path() == LAUNCHER_ADD_FACTOR_PATH
        });
        match (url, app) {
            (Some(url), Some(app)) => Target::App { app, url },
            (Some(url), None) if launcher => Target::Launcher { url },
            // Never redirect to a domain that is not one of ours.
            _ => return reject(gw, ctx, None, StatusCode::BAD_REQUEST, "target is not a protected application"),
        }
    };

    // A live global session skips the identity provider, unless it is about to end.
    if let (Target::App { app, url }, Some(cookie)) = (&target, cookie_value(&ctx.headers, GLOBAL_COOKIE))
        && let Ok(session) = gw.session_from_token(&cookie, GLOBAL_AUDIENCE)
        && session.expires.since(gw.clock.now()) >= MIN_GLOBAL_SESSION_LEFT
    {
        gw.decide(ctx, Some(app), GatewayVerdict::Serve, Some(302), Some(&session), "global session");
        return app_login(gw, ctx, app, url, &session);
    }

    let metadata = match gw.rp.metadata(&gw.http, &gw.provider).await {
        Ok(m) => m,
        Err(e) => {
            gw.recorder.record(EventBody::GatewayLoginRejected { reason: e.to_string() });
            return reject(gw, ctx, None, StatusCode::BAD_GATEWAY, "identity provider unavailable");
        }
    };
    let now = gw.clock.now();
    let state = gw.rng.token(16);
    let pending = PendingLogin { nonce: gw.rng.token(16), verifier: gw.rng.token(32), target, created: now };
    let url = match gw.rp.authorization_url(&metadata, &state, &pending) {
        Ok(u) => u,
        Err(e) => return reject(gw, ctx, None, StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    {
        let mut pending_map = gw.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending_map.retain(|_, p| now.since(p.created) < PENDING_TTL);
        pending_map.insert(state, pending);
    }
    gw.decide(ctx, None, GatewayVerdict::Serve, Some(302), None, "sign-in started");
    redirect(url.as_str())
}

async fn callback(gw: &Gateway, ctx: &RequestCtx) -> Response {
    let now = gw.clock.now();
    let pending = ctx.query.get("state").and_then(|s| {
        gw.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(s)
            .filter(|p| now.since(p.created) < PENDING_TTL)
    });
    let result = match (pending, ctx.query.get("error"), ctx.query.get("code")) {
        (None, _, _) => Err(LoginError::UnknownState),
        (Some(_), Some(err), _) => Err(LoginError::Provider(err.clone())),
        (Some(_), None, None) => Err(LoginError::Provider("no code".into())),
        (Some(p), None, Some(code)) => gw.rp.complete(&gw.http, &gw.provider, code, &p).await.map(|claims| (p, claims)),
    };
    let (pending, claims) = match result {
        Ok(ok) => ok,
        Err(e) => {
            gw.recorder.record(EventBody::GatewayLoginRejected { reason: e.to_string() });
            gw.decide(ctx, None, GatewayVerdict::Reject, Some(401), None, "sign-in failed");
            return (StatusCode::UNAUTHORIZED, format!("sign-in failed: {e}")).into_response();
        }
    };
    let now = gw.clock.now();
    let device = match &pending.target {
        Target::Device { device } => Some(device.clone()),
        Target::App { .. } | Target::Launcher { .. } => None,
    };
    let session = Session {
        sid: gw.rng.hex_id(8),
        user: claims.sub.clone(),
        email: claims.email.clone().unwrap_or_default(),
        groups: claims.groups_from(&gw.config.groups_claim),
        device: device.clone(),
        issued: now,
        expires: now.plus(gw.config.session_duration),
        revoked: None,
        amr: claims.amr.clone(),
        auth_time: claims.auth_time.map(|s| UnixMillis(s.saturating_mul(1000))),
        mfa: Vec::new(),
    };
    gw.registry().insert(session.clone());
    gw.recorder.record(EventBody::SessionIssued {
        sid: session.sid.clone(),
        user: session.user.clone(),
        device: device.clone(),
        expires_t: gw.recorder.trace_time(session.expires),
        groups: session.groups.clone(),
    });
    gw.decide(ctx, None, GatewayVerdict::Serve, Some(302), Some(&session), "signed in");
    match pending.target {
        Target::Device { .. } => match gw.sign_session(&session, DEVICE_AUDIENCE, session.expires, None, None) {
            Ok(token) => {
                let mut url = format!("{DEVICE_HANDOFF_URL}?token=");
                url.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
                redirect(&url)
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Target::App { app, url } => {
            let response = app_login(gw, ctx, &app, &url, &session);
            gw.with_global_cookie(response, &session)
        }
        Target::Launcher { url } => gw.with_global_cookie(redirect(url.as_str()), &session),
    }
}

impl Gateway {
    fn with_global_cookie(&self, response: Response, session: &Session) -> Response {
        let now = self.clock.now();
        match self.sign_session(session, GLOBAL_AUDIENCE, session.expires, None, None) {
            Ok(token) => with_cookie(response, &self.cookie(GLOBAL_COOKIE, &token, session.expires.since(now))),
            Err(_) => response,
        }
    }

    /// The app's MFA requirement for a user in `groups`: `Err` when no
    /// policy admits them.
    fn mfa_requirement(&self, app: &AppConfig, groups: &[String]) -> Result<Option<MfaRequirement>, ()> {
        match self.access.get(&app.name).map(|a| a.decide(&self.org_mfa, groups)) {
            None | Some(Decision::Denied) => Err(()),
            Some(Decision::Admitted { mfa, .. }) => Ok(mfa),
        }
    }

    /// When the MFA verification `mfa` stops satisfying `app`: for an app whose
    /// policy requires MFA (not at every login), the verification's time plus the
    /// app's MFA session; `None` when no such limit applies.
    fn mfa_session_end(&self, app: &AppConfig, session: &Session, mfa: Option<&str>) -> Option<UnixMillis> {
        if self.config.danger_skip_mfa {
            return None;
        }
        let requirement = self.mfa_requirement(app, &session.groups).ok().flatten()?;
        let verification = session.mfa.iter().find(|v| Some(v.id.as_str()) == mfa)?;
        (!requirement.every_login()).then(|| verification.verified_at.plus(requirement.session_duration))
    }

    /// Signs a request to the MFA service and the URL that carries it.
    fn mfa_request_url(
        &self,
        path: &str,
        session: &Session,
        device: Option<String>,
        purpose: MfaPurpose,
        jti: &str,
    ) -> Result<String, KeyError> {
        let now = self.clock.now();
        let claims = MfaRequestClaims {
            iss: self.issuer().to_string(),
            aud: MFA_AUDIENCE.to_string(),
            sub: session.user.clone(),
            sid: session.sid.clone(),
            device,
            purpose,
            return_to: format!("{}{MFA_RETURN_PATH}", self.config.auth_url.trim_end_matches('/')),
            jti: jti.to_string(),
            iat: now.as_secs(),
            // Never beyond the session it is for.
            exp: now.plus(MFA_REQUEST_TTL).min(session.expires).as_secs(),
        };
        let token = self.key.sign(&claims)?;
        let mut url = format!("{}{path}?request=", self.mfa_url);
        url.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
        Ok(url)
    }

    /// A session cookie; `Secure` when the gateway is served over https
    /// (real mode on loopback is plain http).
    fn cookie(&self, name: &str, value: &str, max_age: Duration) -> String {
        let secure = if self.auth_url.scheme() == "https" { "; Secure" } else { "" };
        // Rounded up: a live session's cookie never gets `Max-Age=0` (which deletes it).
        let seconds = max_age.as_millis().div_ceil(1000);
        format!("{name}={value}; Path=/; Max-Age={seconds}{secure}; HttpOnly; SameSite=Lax")
    }
}

/// When an app token minted at `now` stops being valid: after `ttl`, but never
/// after the session's end nor, for an app that requires MFA, after the end
/// of the app's MFA session (`mfa_end`). Claims are whole seconds and an
/// origin accepts a token while `now < exp`, so `exp` is the end rounded
/// down: a token never outlives what it stands for, at the price of being
/// refused up to a second early.
fn app_token_end(now: UnixMillis, ttl: Duration, session_end: UnixMillis, mfa_end: Option<UnixMillis>) -> UnixMillis {
    let end = now.plus(ttl).min(session_end);
    let end = mfa_end.map_or(end, |m| end.min(m));
    UnixMillis::from_secs(end.as_secs())
}

/// Sends the browser to the app's domain with a short-lived hand-off token
/// that the gateway turns into the app's cookie there.
fn handoff(gw: &Gateway, app: &str, url: &Url, session: &Session, mfa: Option<String>) -> Response {
    let now = gw.clock.now();
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let Some(app_config) = gw.app_named(app) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unknown app").into_response();
    };
    let end = now.plus(HANDOFF_TTL).min(session.expires);
    let end = gw.mfa_session_end(app_config, session, mfa.as_deref()).map_or(end, |m| end.min(m));
    let Ok(token) = gw.sign_session(session, app, end, Some(path), mfa) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot sign").into_response();
    };
    let mut location = gw.app_url(app_config, AUTHORIZED_PATH);
    location.push_str("?token=");
    location.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    redirect(&location)
}

fn authorized(gw: &Gateway, ctx: &RequestCtx, app: &AppConfig) -> Response {
    let token = ctx.query.get("token").cloned().unwrap_or_default();
    let now = gw.clock.now();
    // A hand-off lives 60 s; its expiry is checked whatever the danger switches say.
    let claims = match gw.verify_session_token(&token, &app.name, false) {
        Ok(c) if c.path.is_some() => c,
        Ok(_) => return reject(gw, ctx, Some(&app.name), StatusCode::BAD_REQUEST, "not a hand-off token"),
        Err(e) => return reject(gw, ctx, Some(&app.name), StatusCode::BAD_REQUEST, &format!("hand-off: {e}")),
    };
    let session = match gw.registry().live(&claims.sid, now, gw.checks()).cloned() {
        Ok(s) => s,
        Err(p) => return reject(gw, ctx, Some(&app.name), StatusCode::UNAUTHORIZED, p.as_str()),
    };
    // The app cookie ends with the session and, for an app that requires MFA, with
    // the app's MFA session.
    let end = session.expires;
    let end = gw.mfa_session_end(app, &session, claims.mfa.as_deref()).map_or(end, |m| end.min(m));
    let Ok(app_token) = gw.sign_session(&session, &app.name, end, None, claims.mfa.clone()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot sign").into_response();
    };
    gw.decide(ctx, Some(&app.name), GatewayVerdict::Serve, Some(302), Some(&session), "app session set");
    let path = claims.path.unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') && !path.starts_with("//") { path } else { "/".into() };
    with_cookie(redirect(&path), &gw.cookie(APP_COOKIE, &app_token, end.since(now)))
}

/// Finishes a login to `app`: asks for the edge MFA first when the app's
/// policy requires it and nothing in the session satisfies it yet.
fn app_login(gw: &Gateway, ctx: &RequestCtx, app: &str, url: &Url, session: &Session) -> Response {
    let Some(app_config) = gw.app_named(app) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unknown app").into_response();
    };
    let requirement = match gw.mfa_requirement(app_config, &session.groups) {
        // The app request itself answers 403.
        Err(()) | Ok(None) => return handoff(gw, app, url, session, None),
        Ok(Some(_)) if gw.config.danger_skip_mfa => return handoff(gw, app, url, session, None),
        Ok(Some(r)) => r,
    };
    let now = gw.clock.now();
    let device = gw.device_of(ctx.peer);

    // The identity provider's own MFA, where the organization accepts it.
    if gw.org_mfa.amr_matching
        && let Some(factor) = amr_satisfies(&session.amr, &requirement)
        && let Some(auth_time) = session.auth_time
        && now.since(auth_time) <= gw.org_mfa.amr_session_duration
    {
        let verification = MfaVerification {
            id: format!("amr-{}", gw.rng.hex_id(6)),
            factor,
            verified_at: auth_time,
            device: device.clone(),
            by: BY_IDP_AMR.to_string(),
        };
        gw.registry().add_verification(&session.sid, verification.clone());
        gw.decide_with(
            ctx,
            Some(app),
            GatewayVerdict::Serve,
            Some(302),
            Some(session),
            &format!("mfa satisfied by the identity provider's amr ({factor})"),
            device,
            Some(verification.id.clone()),
        );
        return handoff(gw, app, url, session, Some(verification.id));
    }

    // An earlier verification in this session, on this device.
    if let Some(v) = session
        .mfa
        .iter()
        .rev()
        .find(|v| v.device == device && requirement.satisfied_by(v.factor, now.since(v.verified_at)))
    {
        return handoff(gw, app, url, session, Some(v.id.clone()));
    }

    let jti = gw.rng.token(16);
    let purpose = MfaPurpose::Verify {
        app: app.to_string(),
        allowed: requirement.allowed.iter().copied().collect(),
        max_age_s: requirement.session_duration.as_secs(),
    };
    let location = match gw.mfa_request_url(MFA_VERIFY_PATH, session, device.clone(), purpose, &jti) {
        Ok(l) => l,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    {
        let mut pending = gw.pending_mfa.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| now.since(p.created) < MFA_REQUEST_TTL);
        pending.insert(
            jti,
            PendingMfa {
                sid: session.sid.clone(),
                app: app.to_string(),
                url: url.clone(),
                allowed: requirement.allowed.iter().copied().collect(),
                max_age: requirement.session_duration,
                device: device.clone(),
                created: now,
            },
        );
    }
    gw.decide_with(ctx, Some(app), GatewayVerdict::Redirect, Some(302), Some(session), "mfa required", device, None);
    redirect(&location)
}

/// The MFA service sends the user back with evidence of a second factor.
async fn mfa_return(gw: &Gateway, ctx: &RequestCtx) -> Response {
    let evidence = ctx.query.get("evidence").cloned().unwrap_or_default();
    let expect = Expect { issuer: &gw.mfa_url, audience: gw.issuer(), leeway_s: 0, danger_ignore_expiry: false };
    let claims: MfaEvidenceClaims = match gw.mfa_keys.verify(&gw.http, &evidence, &expect).await {
        Ok(c) => c,
        Err(e) => return reject(gw, ctx, None, StatusCode::BAD_REQUEST, &format!("mfa evidence: {e}")),
    };
    // After the (possible) fetch of the MFA service's keys.
    let now = gw.clock.now();
    let pending = gw.pending_mfa.lock().unwrap_or_else(PoisonError::into_inner).get(&claims.request).cloned();
    let Some(pending) = pending.filter(|p| now.since(p.created) < MFA_REQUEST_TTL) else {
        return reject(gw, ctx, None, StatusCode::BAD_REQUEST, "mfa evidence answers no pending request");
    };
    let session = match gw.registry().live(&pending.sid, now, gw.checks()).cloned() {
        Ok(s) => s,
        Err(p) => return reject(gw, ctx, Some(&pending.app), StatusCode::UNAUTHORIZED, p.as_str()),
    };
    // The evidence must come back in the browser that was sent for it (the
    // one holding this session's global cookie), not in one that snatched
    // the redirect.
    let browser_sid =
        cookie_value(&ctx.headers, GLOBAL_COOKIE).and_then(|t| gw.session_from_token(&t, GLOBAL_AUDIENCE).ok());
    if browser_sid.map(|s| s.sid) != Some(pending.sid.clone()) {
        return reject(gw, ctx, Some(&pending.app), StatusCode::FORBIDDEN, "mfa evidence returned by another browser");
    }
    // Single use, from here on.
    gw.pending_mfa.lock().unwrap_or_else(PoisonError::into_inner).remove(&claims.request);
    let fresh_enough = if pending.max_age.is_zero() {
        claims.verified_at >= pending.created
    } else {
        now.since(claims.verified_at) <= pending.max_age
    };
    let problem = if claims.sid != session.sid || claims.sub != session.user {
        Some("mfa evidence is for another session")
    } else if claims.device != pending.device {
        Some("mfa evidence is bound to another device")
    } else if !pending.allowed.contains(&claims.factor) {
        Some("mfa evidence is for a factor type the app does not allow")
    } else if !fresh_enough {
        Some("mfa evidence is older than the app's MFA session")
    } else {
        None
    };
    if let Some(reason) = problem {
        return reject(gw, ctx, Some(&pending.app), StatusCode::FORBIDDEN, reason);
    }
    let verification = MfaVerification {
        id: claims.jti.clone(),
        factor: claims.factor,
        verified_at: claims.verified_at,
        device: claims.device.clone(),
        by: gw.mfa_url.clone(),
    };
    gw.registry().add_verification(&session.sid, verification);
    gw.decide_with(
        ctx,
        Some(&pending.app),
        GatewayVerdict::Serve,
        Some(302),
        Some(&session),
        &format!("mfa verified ({})", claims.factor),
        claims.device.clone(),
        Some(claims.jti.clone()),
    );
    handoff(gw, &pending.app, &pending.url, &session, Some(claims.jti))
}

/// The App Launcher's "add an MFA device": needs a session, not MFA.
fn launcher_add_factor(gw: &Gateway, ctx: &RequestCtx) -> Response {
    let kind = match ctx.query.get("kind").map(|k| serde_json::from_value::<FactorKind>(serde_json::json!(k))) {
        Some(Ok(k)) => k,
        _ => return reject(gw, ctx, None, StatusCode::BAD_REQUEST, "kind must be totp, security_key or biometrics"),
    };
    let session = match cookie_value(&ctx.headers, GLOBAL_COOKIE) {
        Some(token) => gw.session_from_token(&token, GLOBAL_AUDIENCE),
        None => Err("no session".to_string()),
    };
    let session = match session {
        Ok(s) => s,
        Err(reason) => {
            gw.decide(ctx, None, GatewayVerdict::Redirect, Some(302), None, &reason);
            let here = format!("{}{}", gw.config.auth_url.trim_end_matches('/'), ctx.path_and_query);
            return redirect(&gw.login_redirect_url(&here));
        }
    };
    let device = gw.device_of(ctx.peer);
    let jti = gw.rng.token(16);
    match gw.mfa_request_url(MFA_ENROLL_PATH, &session, device.clone(), MfaPurpose::Enroll { kind }, &jti) {
        Ok(location) => {
            gw.decide_with(
                ctx,
                None,
                GatewayVerdict::Serve,
                Some(302),
                Some(&session),
                "app launcher: add an MFA device",
                device,
                None,
            );
            redirect(&location)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn device_session(gw: &Gateway, ctx: &RequestCtx) -> Response {
    let token = bearer_token(&ctx.headers).unwrap_or("");
    match gw.session_from_token(token, DEVICE_AUDIENCE) {
        Ok(session) => match &session.device {
            Some(device) => {
                gw.devices.lock().unwrap_or_else(PoisonError::into_inner).insert(ctx.peer, session.sid.clone());
                gw.decide(ctx, None, GatewayVerdict::Serve, Some(200), Some(&session), "device session live");
                axum::Json(DeviceSessionInfo {
                    sid: session.sid.clone(),
                    user: session.user.clone(),
                    device: device.clone(),
                    expires_at: session.expires,
                })
                .into_response()
            }
            None => reject(gw, ctx, None, StatusCode::UNAUTHORIZED, "not a device session"),
        },
        Err(reason) => {
            gw.decide(ctx, None, GatewayVerdict::Unauthorized, Some(401), None, &reason);
            (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": reason }))).into_response()
        }
    }
}

async fn app_request(gw: &Gateway, ctx: RequestCtx, app: &AppConfig, body: Body) -> Response {
    let xhr = ctx
        .headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"));
    let session = match cookie_value(&ctx.headers, APP_COOKIE) {
        Some(token) => gw.session_and_claims(&token, &app.name),
        None => Err("no session".to_string()),
    };
    let (session, claims) = match session {
        Ok(s) => s,
        Err(reason) if xhr => {
            gw.decide(&ctx, Some(&app.name), GatewayVerdict::Unauthorized, Some(401), None, &reason);
            return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": reason }))).into_response();
        }
        Err(reason) => {
            gw.decide(&ctx, Some(&app.name), GatewayVerdict::Redirect, Some(302), None, &reason);
            return redirect(&gw.login_redirect_url(&gw.app_url(app, &ctx.path_and_query)));
        }
    };
    let Ok(requirement) = gw.mfa_requirement(app, &session.groups) else {
        gw.decide(
            &ctx,
            Some(&app.name),
            GatewayVerdict::Forbidden,
            Some(403),
            Some(&session),
            "policy: no allowed group",
        );
        return (StatusCode::FORBIDDEN, "access denied by policy").into_response();
    };

    let now = gw.clock.now();
    let device = gw.device_of(ctx.peer);
    let mut mfa_claim = None;
    if let Some(requirement) = requirement.filter(|_| !gw.config.danger_skip_mfa) {
        let verification = claims.mfa.as_ref().and_then(|id| session.mfa.iter().find(|v| &v.id == id));
        let problem = match verification {
            None => Some("mfa required"),
            Some(v) if !requirement.allowed.contains(&v.factor) => Some("mfa: factor type not allowed"),
            Some(v) if v.device != device => Some("mfa: verified on another device"),
            Some(v) if !requirement.every_login() && now.since(v.verified_at) > requirement.session_duration => {
                Some("mfa: the app's MFA session has expired")
            }
            Some(_) => None,
        };
        if let Some(reason) = problem {
            let (verdict, status) =
                if xhr { (GatewayVerdict::Unauthorized, 401) } else { (GatewayVerdict::Redirect, 302) };
            gw.decide_with(&ctx, Some(&app.name), verdict, Some(status), Some(&session), reason, device, None);
            if xhr {
                return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": reason }))).into_response();
            }
            return redirect(&gw.login_redirect_url(&gw.app_url(app, &ctx.path_and_query)));
        }
        mfa_claim = verification.map(|v| AppTokenMfa {
            factor: v.factor,
            verified_at: v.verified_at.as_secs(),
            device: v.device.clone(),
            by: v.by.clone(),
        });
    }
    let expires = if gw.config.danger_app_token_outlives_session {
        now.plus(gw.config.app_token_ttl)
    } else {
        let mfa_end = gw.mfa_session_end(app, &session, claims.mfa.as_deref());
        app_token_end(now, gw.config.app_token_ttl, session.expires, mfa_end)
    };
    let claims_out = AppTokenClaims {
        iss: gw.issuer().to_string(),
        aud: app.name.clone(),
        sub: session.user.clone(),
        email: session.email.clone(),
        sid: session.sid.clone(),
        iat: now.as_secs(),
        exp: expires.as_secs(),
        mfa: mfa_claim,
    };
    let app_token = match gw.app_token(claims_out) {
        Ok(t) => t,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let upstream = match Url::parse(&format!("{}{}", app.origin.trim_end_matches('/'), ctx.path_and_query)) {
        Ok(u) => u,
        Err(e) => return reject(gw, &ctx, Some(&app.name), StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return reject(gw, &ctx, Some(&app.name), StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    gw.decide_with(
        &ctx,
        Some(&app.name),
        GatewayVerdict::Forward,
        None,
        Some(&session),
        "session live, policy allows",
        device,
        claims.mfa.clone().filter(|_| !gw.config.danger_skip_mfa),
    );

    let mut fetch = Fetch::forwarded(ctx.method.clone(), upstream, &ctx.headers, body, &["cookie", APP_TOKEN_HEADER]);
    fetch.headers.push((APP_TOKEN_HEADER.to_string(), app_token));
    match gw.http.send(fetch).await {
        Ok(r) => crate::http::relay(r),
        Err(e) => {
            gw.decide(&ctx, Some(&app.name), GatewayVerdict::BadGateway, Some(502), Some(&session), &e.to_string());
            (StatusCode::BAD_GATEWAY, "origin unreachable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LabConfig;
    use crate::net::Clock;
    use crate::net::real::TokioNet;
    use crate::policy::FactorKind;

    const T: u64 = 1_772_614_800_000;

    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> UnixMillis {
            UnixMillis(T)
        }
    }

    /// The default lab's gateway, with `code` (keys only, a 12 h MFA session) as the MFA app.
    fn gateway() -> Gateway {
        let (lab, _) = LabConfig::parse(&LabConfig::default_source()).unwrap();
        let clock: SharedClock = Arc::new(Fixed);
        let recorder = Recorder::new(UnixMillis(T), clock.clone());
        let http = HttpClient::new(Arc::new(TokioNet), crate::net::Directory::default());
        Gateway::new(lab.gateway, &lab.mfa, clock, SeededRng::from_seed(1), recorder, http).unwrap()
    }

    fn session(verified_at: UnixMillis) -> Session {
        Session {
            sid: "s".into(),
            user: "bob".into(),
            email: String::new(),
            groups: vec!["engineering".into()],
            device: None,
            issued: UnixMillis(T),
            expires: UnixMillis(T + 8 * 3_600_000),
            revoked: None,
            amr: vec![],
            auth_time: None,
            mfa: vec![MfaVerification {
                id: "v1".into(),
                factor: FactorKind::SecurityKey,
                verified_at,
                device: None,
                by: "mfa".into(),
            }],
        }
    }

    #[test]
    fn tokens_for_an_mfa_app_end_with_its_mfa_session() {
        let gw = gateway();
        let (chat, code) = (gw.app_named("chat").unwrap().clone(), gw.app_named("code").unwrap().clone());
        // Verified 11 h 59 m 30 s ago: code's 12 h MFA session ends in 30 s.
        let s = session(UnixMillis(T).minus(Duration::from_secs(12 * 3600 - 30)));
        let end = gw.mfa_session_end(&code, &s, Some("v1"));
        assert_eq!(end, Some(UnixMillis(T + 30_000)));
        assert_eq!(app_token_end(UnixMillis(T), Duration::from_secs(60), s.expires, end), UnixMillis(T + 30_000));
        // Another verification, no verification, or an app without MFA: no MFA limit.
        assert_eq!(gw.mfa_session_end(&code, &s, Some("v2")), None);
        assert_eq!(gw.mfa_session_end(&code, &s, None), None);
        assert_eq!(gw.mfa_session_end(&chat, &s, Some("v1")), None);
    }

    #[test]
    fn an_app_token_never_outlives_its_session_or_mfa_session() {
        let ttl = Duration::from_secs(60);
        let now = UnixMillis(T + 500);
        // Far from any end: the TTL, in whole seconds.
        assert_eq!(app_token_end(now, ttl, UnixMillis(T + 3_600_000), None), UnixMillis(T + 60_000));
        // The session ends 10.9 s from now: the token ends with it, rounded down.
        assert_eq!(app_token_end(now, ttl, UnixMillis(T + 10_900), None), UnixMillis(T + 10_000));
        // The app's MFA session ends sooner than the session.
        let mfa_end = Some(UnixMillis(T + 5_250));
        assert_eq!(app_token_end(now, ttl, UnixMillis(T + 10_900), mfa_end), UnixMillis(T + 5_000));
        // Whatever the inputs, exp (seconds) is never past an end.
        for offset in [0u64, 1, 499, 500, 999, 1000, 59_999, 61_001] {
            let session_end = UnixMillis(T + offset);
            let exp = app_token_end(now, ttl, session_end, None);
            assert!(exp <= session_end && exp.as_secs() * 1000 == exp.0, "{offset}: {exp:?}");
        }
    }
}
