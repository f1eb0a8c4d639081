//! The independent MFA service at the edge: a second authority that does
//! not trust the identity provider.
//!
//! It keeps its own factor store, signs its evidence with its own key, and
//! keeps its own MFA session (the `LS_MFA` cookie, bound to the device the
//! gateway saw). The gateway sends users here with a request it signed
//! (who, which session, which device, which factor types, how fresh); the
//! service asks for a factor and sends them back with evidence. Enrollment
//! comes from the gateway's App Launcher, which is exempt from the MFA
//! requirement: adding a factor when one exists needs a verification with
//! an existing one (valid `change_verification`, same device); the first
//! factor is open or needs an enrollment code, per `first_enrollment`.
//!
//! WebAuthn is webauthn-rs (security keys through its security-key API,
//! platform biometrics through its passkey API, which requires user
//! verification); TOTP is `crate::totp` at the injected clock's time.
//! webauthn-rs draws its challenges from OS randomness: they never reach
//! the trace, which records outcomes and the facts of each factor.

mod pages;
pub mod store;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;
use webauthn_rs::prelude::{
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    SecurityKeyAuthentication, SecurityKeyRegistration, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use self::pages::{FormSpec, page};
use self::store::{Factor, FactorSecret, FactorStore, credential_label};
use crate::authenticator::{aaguid_of_registration, assertion_facts};
use crate::config::{FirstEnrollment, MfaConfig};
use crate::http::cookies::cookie_value;
use crate::http::{HttpClient, PeerAddr, RemoteKeys, redirect, with_cookie};
use crate::jose::{Expect, KeyError, MacKey, SigningKey, jwk_set};
use crate::net::{Net, SharedClock, UnixMillis};
use crate::policy::{FactorKind, parse_aaguid};
use crate::protocol::{
    CERTS_PATH, MFA_AUDIENCE, MFA_CERTS_PATH, MFA_ENROLL_PATH, MFA_VERIFY_PATH, MfaEvidenceClaims, MfaPurpose,
    MfaRequestClaims,
};
use crate::rng::SeededRng;
use crate::totp::TotpVerifier;
use crate::trace::{EventBody, FactorFacts, Recorder};

/// The MFA service's own session cookie (device-bound).
pub const MFA_COOKIE: &str = "LS_MFA";
const MFA_SESSION_AUDIENCE: &str = "lockstep-mfa-session";
/// Lifetime of the evidence handed to the gateway.
const EVIDENCE_TTL: Duration = Duration::from_secs(120);
/// Largest form the service reads.
const MAX_FORM: usize = 64 * 1024;
/// Most ceremonies kept open at once (oldest dropped first).
const MAX_CEREMONIES: usize = 4096;

/// The service.
pub struct MfaService {
    config: MfaConfig,
    gateway_url: String,
    clock: SharedClock,
    rng: SeededRng,
    recorder: Recorder,
    http: HttpClient,
    /// Signs evidence for the gateway.
    key: SigningKey,
    /// Signs the MFA session cookie.
    cookie_key: MacKey,
    webauthn: Webauthn,
    gateway_keys: RemoteKeys,
    state: Mutex<State_>,
}

#[derive(Default)]
struct State_ {
    store: FactorStore,
    ceremonies: BTreeMap<String, Ceremony>,
    /// user -> (device, when) of the last verification usable to change factors.
    change_verified: BTreeMap<String, (Option<String>, UnixMillis)>,
    /// user -> one-time enrollment code issued by an administrator.
    enrollment_codes: BTreeMap<String, String>,
    /// user -> times of recent failed verifications.
    failures: BTreeMap<String, Vec<UnixMillis>>,
}

struct Ceremony {
    request: MfaRequestClaims,
    token: String,
    created: UnixMillis,
    step: Step,
}

enum Step {
    GetSecurityKey(SecurityKeyAuthentication),
    GetBiometrics(PasskeyAuthentication),
    Totp,
    CreateSecurityKey(SecurityKeyRegistration),
    CreateBiometrics(PasskeyRegistration),
    CreateTotp(Vec<u8>),
}

/// What a successful factor check established.
struct FactorCheck {
    factor: FactorKind,
    /// `webauthn`, `totp` or `mfa_session`.
    method: &'static str,
    /// When the factor itself was checked.
    verified_at: UnixMillis,
    facts: Option<FactorFacts>,
}

/// The MFA session cookie's claims.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MfaSessionClaims {
    iss: String,
    aud: String,
    sub: String,
    device: Option<String>,
    factor: FactorKind,
    verified_at: UnixMillis,
    /// The verification it records (its evidence id).
    id: String,
    iat: u64,
    exp: u64,
}

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MfaServiceError {
    /// The WebAuthn relying party is misconfigured.
    #[error("mfa: webauthn relying party: {0}")]
    Webauthn(String),
    /// Its key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

#[derive(Deserialize)]
struct RequestQuery {
    #[serde(default)]
    request: String,
}

#[derive(Deserialize)]
struct FactorForm {
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    enrollment_code: String,
}

/// What came of a check, for the page and the trace.
struct Refusal {
    status: StatusCode,
    user: Option<String>,
    factor: Option<FactorKind>,
    stage: &'static str,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, stage: &'static str, reason: impl Into<String>) -> Self {
        Refusal { status, user: None, factor: None, stage, reason: reason.into() }
    }
    fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }
    fn factor(mut self, factor: FactorKind) -> Self {
        self.factor = Some(factor);
        self
    }
}

/// Parses a posted WebAuthn credential into the JSON (kept for the facts
/// the trace records) and the webauthn-rs type.
fn parse_credential<T: serde::de::DeserializeOwned>(text: &str) -> Result<(serde_json::Value, T), String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("credential: {e}"))?;
    let parsed = serde_json::from_value(json.clone()).map_err(|e| format!("credential: {e}"))?;
    Ok((json, parsed))
}

fn user_uuid(user: &str) -> Uuid {
    let digest = Sha256::digest(user.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

impl MfaService {
    /// The service for `config`, trusting requests signed by the gateway at `gateway_url`.
    pub fn new(
        config: MfaConfig,
        gateway_url: &str,
        clock: SharedClock,
        rng: SeededRng,
        recorder: Recorder,
        http: HttpClient,
    ) -> Result<Self, MfaServiceError> {
        let origin = Url::parse(&config.url).map_err(|e| MfaServiceError::Webauthn(e.to_string()))?;
        let webauthn = WebauthnBuilder::new(&config.rp_id, &origin)
            .and_then(|b| b.rp_name("Lockstep MFA").build())
            .map_err(|e| MfaServiceError::Webauthn(e.to_string()))?;
        let gateway_url = gateway_url.trim_end_matches('/').to_string();
        Ok(MfaService {
            key: SigningKey::es256(&rng.child("signing-key"))?,
            cookie_key: MacKey::generate(&rng.child("cookie-key")),
            gateway_keys: RemoteKeys::new(format!("{gateway_url}{CERTS_PATH}"), clock.clone()),
            gateway_url,
            config,
            clock,
            rng,
            recorder,
            http,
            webauthn,
            state: Mutex::new(State_::default()),
        })
    }

    /// Serves on `addr` until the host stops.
    pub async fn run(self: Arc<Self>, net: Net, addr: SocketAddr) -> io::Result<()> {
        let listener = net.bind(addr).await?;
        crate::http::serve(listener, self.router()).await
    }

    /// The service's routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(MFA_VERIFY_PATH, get(verify_start))
            .route(MFA_ENROLL_PATH, get(enroll_start))
            .route("/verify/webauthn", post(verify_webauthn))
            .route("/verify/totp", post(verify_totp))
            .route("/enroll/webauthn", post(enroll_webauthn))
            .route("/enroll/totp", post(enroll_totp))
            .route(MFA_CERTS_PATH, get(certs))
            .layer(DefaultBodyLimit::max(MAX_FORM))
            .with_state(self)
    }

    /// An administrator issues a one-time enrollment code to `user`.
    pub fn issue_enrollment_code(&self, user: &str) -> String {
        let code = self.rng.token(12);
        self.state().enrollment_codes.insert(user.to_string(), code.clone());
        code
    }

    /// An administrator deletes every factor of `user`; returns how many.
    pub fn delete_factors(&self, user: &str) -> usize {
        self.state().store.remove_all(user)
    }

    fn state(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(&self, peer: IpAddr, refusal: Refusal) -> Response {
        self.recorder.record(EventBody::MfaRejected {
            user: refusal.user.clone(),
            factor: refusal.factor,
            stage: refusal.stage.to_string(),
            reason: refusal.reason.clone(),
            peer,
        });
        page(refusal.status, "Verification failed", &refusal.reason, &[])
    }

    async fn check_request(&self, token: &str) -> Result<MfaRequestClaims, Refusal> {
        let expect =
            Expect { issuer: &self.gateway_url, audience: MFA_AUDIENCE, leeway_s: 0, danger_ignore_expiry: false };
        let claims: MfaRequestClaims = self
            .gateway_keys
            .verify(&self.http, token, &expect)
            .await
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "request", format!("gateway request: {e}")))?;
        if !claims.return_to.starts_with(&self.gateway_url) {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, "request", "return_to is not the gateway's"));
        }
        Ok(claims)
    }

    fn open_ceremony(&self, request: &MfaRequestClaims, token: &str, step: Step) -> String {
        let id = self.rng.token(16);
        let now = self.clock.now();
        let ttl = self.config.challenge_ttl;
        let mut state = self.state();
        state.ceremonies.retain(|_, c| now.since(c.created) < ttl);
        while state.ceremonies.len() >= MAX_CEREMONIES {
            let oldest = state.ceremonies.iter().min_by_key(|(_, c)| c.created).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => state.ceremonies.remove(&k),
                None => break,
            };
        }
        state
            .ceremonies
            .insert(id.clone(), Ceremony { request: request.clone(), token: token.to_string(), created: now, step });
        id
    }

    /// Takes a ceremony out (each is single use).
    fn take_ceremony(&self, id: &str, stage: &'static str) -> Result<Ceremony, Refusal> {
        let now = self.clock.now();
        let ceremony = self
            .state()
            .ceremonies
            .remove(id)
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, stage, "unknown or used challenge"))?;
        if now.since(ceremony.created) >= self.config.challenge_ttl {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, stage, "challenge expired").user(&ceremony.request.sub));
        }
        Ok(ceremony)
    }

    fn rate_limited(&self, user: &str) -> bool {
        let now = self.clock.now();
        let window = self.config.failure_window;
        let mut state = self.state();
        let failures = state.failures.entry(user.to_string()).or_default();
        failures.retain(|t| now.since(*t) < window);
        failures.len() >= self.config.max_failures as usize
    }

    fn note_failure(&self, user: &str) {
        let now = self.clock.now();
        self.state().failures.entry(user.to_string()).or_default().push(now);
    }

    /// The verification forms for `request`: one per enrolled, allowed type.
    fn verification_forms(&self, request: &MfaRequestClaims, token: &str, allowed: &[FactorKind]) -> Vec<FormSpec> {
        let (keys, passkeys, has_totp) = {
            let state = self.state();
            let store = &state.store;
            let has_totp = store.factors(&request.sub).iter().any(|f| f.kind() == FactorKind::Totp);
            (store.security_keys(&request.sub), store.biometrics(&request.sub), has_totp)
        };
        let mut forms = Vec::new();
        if allowed.contains(&FactorKind::SecurityKey)
            && !keys.is_empty()
            && let Ok((options, state)) = self.webauthn.start_securitykey_authentication(&keys)
        {
            let ceremony = self.open_ceremony(request, token, Step::GetSecurityKey(state));
            forms.push(FormSpec::WebauthnGet { ceremony, kind: FactorKind::SecurityKey, options: to_json(&options) });
        }
        if allowed.contains(&FactorKind::Biometrics)
            && !passkeys.is_empty()
            && let Ok((options, state)) = self.webauthn.start_passkey_authentication(&passkeys)
        {
            let ceremony = self.open_ceremony(request, token, Step::GetBiometrics(state));
            forms.push(FormSpec::WebauthnGet { ceremony, kind: FactorKind::Biometrics, options: to_json(&options) });
        }
        if allowed.contains(&FactorKind::Totp) && has_totp {
            let ceremony = self.open_ceremony(request, token, Step::Totp);
            forms.push(FormSpec::Totp { ceremony });
        }
        forms
    }

    /// A verified factor: evidence for the gateway (or, during enrollment,
    /// the right to change factors), and the MFA session cookie. `token` is
    /// the gateway's request as received (an enrollment resumes with it).
    fn verified(&self, request: &MfaRequestClaims, token: &str, check: FactorCheck, peer: IpAddr) -> Response {
        let FactorCheck { factor, method, verified_at, facts } = check;
        let now = self.clock.now();
        let id = self.rng.token(12);
        self.state().failures.remove(&request.sub);
        self.recorder.record(EventBody::MfaVerified {
            id: id.clone(),
            user: request.sub.clone(),
            sid: request.sid.clone(),
            device: request.device.clone(),
            factor,
            method: method.to_string(),
            verified_t: self.recorder.trace_time(verified_at),
            peer,
            facts,
        });
        let cookie = self
            .cookie_key
            .sign(&MfaSessionClaims {
                iss: self.config.url.clone(),
                aud: MFA_SESSION_AUDIENCE.to_string(),
                sub: request.sub.clone(),
                device: request.device.clone(),
                factor,
                verified_at,
                id: id.clone(),
                iat: now.as_secs(),
                exp: verified_at.plus(self.config.organization.session_duration.max(Duration::from_secs(1))).as_secs(),
            })
            .ok();
        let response = match &request.purpose {
            MfaPurpose::Enroll { .. } => {
                self.state().change_verified.insert(request.sub.clone(), (request.device.clone(), now));
                let mut location = format!("{}{MFA_ENROLL_PATH}?request=", self.config.url.trim_end_matches('/'));
                location.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
                redirect(&location)
            }
            MfaPurpose::Verify { .. } => {
                let evidence = MfaEvidenceClaims {
                    iss: self.config.url.trim_end_matches('/').to_string(),
                    aud: self.gateway_url.clone(),
                    sub: request.sub.clone(),
                    sid: request.sid.clone(),
                    device: request.device.clone(),
                    factor,
                    verified_at,
                    request: request.jti.clone(),
                    jti: id,
                    iat: now.as_secs(),
                    exp: now.plus(EVIDENCE_TTL).as_secs(),
                };
                match self.key.sign(&evidence) {
                    Ok(token) => {
                        let mut location = format!("{}?evidence=", request.return_to);
                        location.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
                        redirect(&location)
                    }
                    Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        };
        match cookie {
            Some(c) => {
                // Secure when served over https (real mode on loopback is plain http).
                let secure = if self.config.url.starts_with("https:") { "; Secure" } else { "" };
                with_cookie(response, &format!("{MFA_COOKIE}={c}; Path=/; HttpOnly{secure}; SameSite=Lax"))
            }
            None => response,
        }
    }

    /// The MFA session cookie, if it proves a verification that `request`
    /// accepts (same user and device, allowed type, fresh enough).
    fn mfa_session(&self, headers: &HeaderMap, request: &MfaRequestClaims) -> Option<MfaSessionClaims> {
        let MfaPurpose::Verify { allowed, max_age_s, .. } = &request.purpose else { return None };
        if *max_age_s == 0 {
            return None;
        }
        let token = cookie_value(headers, MFA_COOKIE)?;
        let expect = Expect {
            issuer: &self.config.url,
            audience: MFA_SESSION_AUDIENCE,
            leeway_s: 0,
            danger_ignore_expiry: false,
        };
        let claims: MfaSessionClaims = self.cookie_key.verify(&token, &expect, self.clock.now()).ok()?;
        let fresh = self.clock.now().since(claims.verified_at) <= Duration::from_secs(*max_age_s);
        let still_enrolled = self.state().store.factors(&claims.sub).iter().any(|f| f.kind() == claims.factor);
        (claims.sub == request.sub
            && claims.device == request.device
            && allowed.contains(&claims.factor)
            && fresh
            && still_enrolled)
            .then_some(claims)
    }

    fn webauthn_facts(&self, credential: &serde_json::Value, uv_required: bool) -> Option<FactorFacts> {
        let facts = assertion_facts(credential).ok()?;
        Some(FactorFacts {
            credential: credential_label(&facts.credential_id),
            totp_step: None,
            origin: Some(facts.origin),
            counter: Some(facts.counter),
            user_verified: Some(facts.user_verified),
            uv_required,
            backup_eligible: Some(facts.backup_eligible),
        })
    }
}

async fn certs(State(mfa): State<Arc<MfaService>>) -> Response {
    axum::Json(jwk_set(&[&mfa.key])).into_response()
}

async fn verify_start(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    Query(q): Query<RequestQuery>,
) -> Response {
    let peer = peer.0.ip();
    let request = match mfa.check_request(&q.request).await {
        Ok(r) => r,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let MfaPurpose::Verify { allowed, .. } = &request.purpose else {
        return mfa.refuse(peer, Refusal::new(StatusCode::BAD_REQUEST, "verify", "not a verification request"));
    };
    if let Some(session) = mfa.mfa_session(&headers, &request) {
        let check = FactorCheck {
            factor: session.factor,
            method: "mfa_session",
            verified_at: session.verified_at,
            facts: None,
        };
        return mfa.verified(&request, &q.request, check, peer);
    }
    if mfa.rate_limited(&request.sub) {
        let refusal =
            Refusal::new(StatusCode::TOO_MANY_REQUESTS, "verify", "too many failed attempts; wait").user(&request.sub);
        return mfa.refuse(peer, refusal);
    }
    let forms = mfa.verification_forms(&request, &q.request, allowed);
    if forms.is_empty() {
        let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        let reason =
            format!("no enrolled authenticator of an allowed type ({}); add one in the App Launcher", names.join(", "));
        return mfa.refuse(peer, Refusal::new(StatusCode::FORBIDDEN, "verify", reason).user(&request.sub));
    }
    page(StatusCode::UNAUTHORIZED, "Second factor required", "Verify with one of your authenticators.", &forms)
}

async fn verify_webauthn(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    axum::Form(form): axum::Form<FactorForm>,
) -> Response {
    let peer = peer.0.ip();
    let ceremony = match mfa.take_ceremony(&form.ceremony, "verify") {
        Ok(c) => c,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let user = ceremony.request.sub.clone();
    let (factor, uv_required) = match &ceremony.step {
        Step::GetSecurityKey(_) => (FactorKind::SecurityKey, false),
        Step::GetBiometrics(_) => (FactorKind::Biometrics, true),
        _ => return mfa.refuse(peer, Refusal::new(StatusCode::BAD_REQUEST, "verify", "not a WebAuthn challenge")),
    };
    let refuse = |status, reason: String| Refusal::new(status, "verify", reason).user(&user).factor(factor);
    if mfa.rate_limited(&user) {
        return mfa.refuse(peer, refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; wait".into()));
    }
    let (json, credential): (_, PublicKeyCredential) = match parse_credential(&form.credential) {
        Ok(parsed) => parsed,
        Err(reason) => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, reason)),
    };
    let result = match &ceremony.step {
        Step::GetSecurityKey(state) => mfa.webauthn.finish_securitykey_authentication(&credential, state),
        Step::GetBiometrics(state) => mfa.webauthn.finish_passkey_authentication(&credential, state),
        _ => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, "not a WebAuthn challenge".into())),
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            mfa.note_failure(&user);
            let reason = match e {
                WebauthnError::CredentialPossibleCompromise => {
                    "sign counter went backwards: possible cloned authenticator".to_string()
                }
                WebauthnError::InvalidRPOrigin => "origin in client data is not the MFA service's".to_string(),
                other => format!("assertion refused: {other}"),
            };
            return mfa.refuse(peer, refuse(StatusCode::UNAUTHORIZED, reason));
        }
    };
    if uv_required && !result.user_verified() {
        mfa.note_failure(&user);
        return mfa.refuse(peer, refuse(StatusCode::UNAUTHORIZED, "user verification required".into()));
    }
    // Remember the new counter so that a clone's rollback shows.
    let label = credential_label(result.cred_id().as_ref());
    if !mfa.config.danger_skip_counter_update {
        let mut state = mfa.state();
        for f in state.store.factors_mut(&user).iter_mut().filter(|f| f.id == label) {
            match &mut f.secret {
                FactorSecret::SecurityKey(k) => {
                    k.update_credential(&result);
                }
                FactorSecret::Biometrics(k) => {
                    k.update_credential(&result);
                }
                FactorSecret::Totp(_) => {}
            }
        }
    }
    let facts = mfa.webauthn_facts(&json, uv_required);
    let now = mfa.clock.now();
    let check = FactorCheck { factor, method: "webauthn", verified_at: now, facts };
    mfa.verified(&ceremony.request, &ceremony.token, check, peer)
}

async fn verify_totp(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    axum::Form(form): axum::Form<FactorForm>,
) -> Response {
    let peer = peer.0.ip();
    let ceremony = match mfa.take_ceremony(&form.ceremony, "verify") {
        Ok(c) => c,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let user = ceremony.request.sub.clone();
    let refuse = |status, reason: String| Refusal::new(status, "verify", reason).user(&user).factor(FactorKind::Totp);
    if !matches!(ceremony.step, Step::Totp) {
        return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, "not a TOTP challenge".into()));
    }
    if mfa.rate_limited(&user) {
        return mfa.refuse(peer, refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; wait".into()));
    }
    let code = form.code.trim();
    let digits = usize::from(mfa.config.totp.digits);
    if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
        mfa.note_failure(&user);
        let reason = format!("a code is {digits} digits");
        return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, reason));
    }
    let now = mfa.clock.now();
    let outcome = {
        let mut state = mfa.state();
        let allow_reuse = mfa.config.danger_allow_totp_reuse;
        let mut outcome = Err(crate::totp::TotpError::Wrong);
        for f in state.store.factors_mut(&user).iter_mut() {
            if let FactorSecret::Totp(v) = &mut f.secret {
                outcome = v.verify(code, now, allow_reuse).map(|step| (f.id.clone(), step));
                if outcome.is_ok() {
                    break;
                }
            }
        }
        outcome
    };
    match outcome {
        Ok((credential, step)) => {
            let facts = FactorFacts {
                credential,
                totp_step: Some(step),
                origin: None,
                counter: None,
                user_verified: None,
                uv_required: false,
                backup_eligible: None,
            };
            let check = FactorCheck { factor: FactorKind::Totp, method: "totp", verified_at: now, facts: Some(facts) };
            mfa.verified(&ceremony.request, &ceremony.token, check, peer)
        }
        Err(e) => {
            mfa.note_failure(&user);
            let status = if matches!(e, crate::totp::TotpError::Malformed { .. }) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            mfa.refuse(peer, refuse(status, e.to_string()))
        }
    }
}

async fn enroll_start(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<RequestQuery>,
) -> Response {
    let peer = peer.0.ip();
    let request = match mfa.check_request(&q.request).await {
        Ok(r) => r,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let MfaPurpose::Enroll { kind } = request.purpose.clone() else {
        return mfa.refuse(peer, Refusal::new(StatusCode::BAD_REQUEST, "enroll", "not an enrollment request"));
    };
    let user = request.sub.clone();
    let now = mfa.clock.now();
    let (existing, change_ok) = {
        let state = mfa.state();
        let existing: Vec<FactorKind> = state.store.factors(&user).iter().map(Factor::kind).collect();
        let change_ok = state
            .change_verified
            .get(&user)
            .is_some_and(|(device, at)| *device == request.device && now.since(*at) <= mfa.config.change_verification);
        (existing, change_ok)
    };
    if !existing.is_empty() && !change_ok {
        // Changing factors: verify with an existing one first.
        let forms = mfa.verification_forms(&request, &q.request, &existing);
        return page(
            StatusCode::UNAUTHORIZED,
            "Verify before adding a factor",
            "Adding an authenticator needs a verification with one you already have.",
            &forms,
        );
    }
    let code_required = existing.is_empty() && mfa.config.first_enrollment == FirstEnrollment::EnrollmentCode;
    let exclude = mfa.state().store.credential_ids(&user);
    let exclude = (!exclude.is_empty()).then_some(exclude);
    let form = match kind {
        FactorKind::SecurityKey => {
            match mfa.webauthn.start_securitykey_registration(user_uuid(&user), &user, &user, exclude, None, None) {
                Ok((options, state)) => {
                    let ceremony = mfa.open_ceremony(&request, &q.request, Step::CreateSecurityKey(state));
                    FormSpec::WebauthnCreate { ceremony, kind, options: to_json(&options), code_required }
                }
                Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        FactorKind::Biometrics => {
            match mfa.webauthn.start_passkey_registration(user_uuid(&user), &user, &user, exclude) {
                Ok((options, state)) => {
                    let ceremony = mfa.open_ceremony(&request, &q.request, Step::CreateBiometrics(state));
                    FormSpec::WebauthnCreate { ceremony, kind, options: to_json(&options), code_required }
                }
                Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        FactorKind::Totp => {
            let secret = mfa.rng.bytes(20);
            let uri = match TotpVerifier::otpauth_uri(&mfa.config.totp, &secret, "Lockstep", &user) {
                Ok(u) => u,
                Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            };
            let ceremony = mfa.open_ceremony(&request, &q.request, Step::CreateTotp(secret));
            FormSpec::TotpEnroll { ceremony, otpauth: uri, code_required }
        }
    };
    page(StatusCode::OK, "Add an authenticator", &format!("Register your {kind}."), &[form])
}

impl MfaService {
    /// Checks the first-enrollment rule and consumes the code if one is needed.
    fn first_enrollment_allowed(&self, user: &str, code: &str) -> Result<bool, String> {
        let mut state = self.state();
        let first = state.store.factors(user).is_empty();
        if !first || self.config.first_enrollment == FirstEnrollment::Open {
            return Ok(first);
        }
        match state.enrollment_codes.get(user) {
            Some(expected) if !code.is_empty() && expected == code => {
                state.enrollment_codes.remove(user);
                Ok(true)
            }
            _ => Err("a first authenticator needs the enrollment code an administrator issued".into()),
        }
    }

    fn enrolled(&self, user: &str, factor: Factor, first: bool, aaguid: Option<String>, peer: IpAddr) -> Response {
        let kind = factor.kind();
        self.recorder.record(EventBody::MfaEnrolled {
            user: user.to_string(),
            factor: kind,
            credential: factor.id.clone(),
            aaguid,
            first,
            peer,
        });
        self.state().store.add(user, factor);
        page(StatusCode::CREATED, "Authenticator added", &format!("Your {kind} is enrolled."), &[])
    }
}

async fn enroll_webauthn(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    axum::Form(form): axum::Form<FactorForm>,
) -> Response {
    let peer = peer.0.ip();
    let ceremony = match mfa.take_ceremony(&form.ceremony, "enroll") {
        Ok(c) => c,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let user = ceremony.request.sub.clone();
    let kind = match &ceremony.step {
        Step::CreateSecurityKey(_) => FactorKind::SecurityKey,
        Step::CreateBiometrics(_) => FactorKind::Biometrics,
        _ => return mfa.refuse(peer, Refusal::new(StatusCode::BAD_REQUEST, "enroll", "not a WebAuthn registration")),
    };
    let refuse = |status, reason: String| Refusal::new(status, "enroll", reason).user(&user).factor(kind);
    let (json, registration): (_, RegisterPublicKeyCredential) = match parse_credential(&form.credential) {
        Ok(parsed) => parsed,
        Err(reason) => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, reason)),
    };
    let aaguid = match aaguid_of_registration(&json) {
        Ok(a) => a,
        Err(e) => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, format!("attestation: {e}"))),
    };
    // The AAGUID allow-list is checked at enrollment only, as documented.
    let required = &mfa.config.organization.required_aaguids;
    if kind == FactorKind::SecurityKey
        && !required.is_empty()
        && !required.iter().filter_map(|a| parse_aaguid(a).ok()).any(|a| a == aaguid)
    {
        let reason = format!("AAGUID {} is not on the organization's allow-list", hex::encode(aaguid));
        return mfa.refuse(peer, refuse(StatusCode::FORBIDDEN, reason));
    }
    let secret = match &ceremony.step {
        Step::CreateSecurityKey(state) => {
            mfa.webauthn.finish_securitykey_registration(&registration, state).map(FactorSecret::SecurityKey)
        }
        Step::CreateBiometrics(state) => {
            mfa.webauthn.finish_passkey_registration(&registration, state).map(FactorSecret::Biometrics)
        }
        _ => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, "not a WebAuthn registration".into())),
    };
    let secret = match secret {
        Ok(s) => s,
        Err(e) => return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, format!("registration refused: {e}"))),
    };
    // The first-enrollment rule last, so that a failed registration does not burn a code.
    let first = match mfa.first_enrollment_allowed(&user, &form.enrollment_code) {
        Ok(first) => first,
        Err(reason) => return mfa.refuse(peer, refuse(StatusCode::FORBIDDEN, reason)),
    };
    let cred_id = match &secret {
        FactorSecret::SecurityKey(k) => k.cred_id().to_vec(),
        FactorSecret::Biometrics(k) => k.cred_id().to_vec(),
        FactorSecret::Totp(_) => Vec::new(),
    };
    let factor = Factor { id: credential_label(&cred_id), enrolled: mfa.clock.now(), secret };
    mfa.enrolled(&user, factor, first, Some(hex::encode(aaguid)), peer)
}

async fn enroll_totp(
    State(mfa): State<Arc<MfaService>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    axum::Form(form): axum::Form<FactorForm>,
) -> Response {
    let peer = peer.0.ip();
    let ceremony = match mfa.take_ceremony(&form.ceremony, "enroll") {
        Ok(c) => c,
        Err(refusal) => return mfa.refuse(peer, refusal),
    };
    let user = ceremony.request.sub.clone();
    let refuse = |status, reason: String| Refusal::new(status, "enroll", reason).user(&user).factor(FactorKind::Totp);
    let Step::CreateTotp(secret) = &ceremony.step else {
        return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, "not a TOTP enrollment".into()));
    };
    if mfa.state().store.factors(&user).iter().any(|f| f.kind() == FactorKind::Totp) {
        return mfa.refuse(peer, refuse(StatusCode::CONFLICT, "one authenticator app per user".into()));
    }
    let mut verifier = match TotpVerifier::new(&mfa.config.totp, secret) {
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if let Err(e) = verifier.verify(form.code.trim(), mfa.clock.now(), false) {
        return mfa.refuse(peer, refuse(StatusCode::BAD_REQUEST, format!("confirmation code: {e}")));
    }
    let first = match mfa.first_enrollment_allowed(&user, &form.enrollment_code) {
        Ok(first) => first,
        Err(reason) => return mfa.refuse(peer, refuse(StatusCode::FORBIDDEN, reason)),
    };
    let id = format!("totp-{}", &URL_SAFE_NO_PAD.encode(Sha256::digest(secret))[..8]);
    let factor = Factor { id, enrolled: mfa.clock.now(), secret: FactorSecret::Totp(verifier) };
    mfa.enrolled(&user, factor, first, None, peer)
}

#[cfg(test)]
mod tests;
