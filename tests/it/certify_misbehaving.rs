//! `lab certify idp` against OpenID providers that misbehave on purpose.
//!
//! A wiremock server on loopback plays the provider: discovery, JWKS, an
//! authorization endpoint that signs everyone in at once (302 back to the
//! redirect URI with `code`, `state` and RFC 9207 `iss`, so the `redirect`
//! login driver works), a token endpoint that checks client
//! authentication, the code's `redirect_uri`, PKCE S256 and single use, and
//! userinfo. The endpoints are `wiremock::Respond` implementations sharing
//! one state (codes, their nonce, challenge and redirect URI; access
//! tokens) behind a mutex.
//!
//! The well-behaved baseline passes every check of Basic and MFA evidence.
//! Each misbehaviour is one knob on the same provider, and must fail exactly
//! its check: the failing set is the baseline's plus that one id, and every
//! other verdict stays as in the baseline, except the ones named (and
//! explained) in the variant's test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lockstep::certify::driver::{self, DriverSettings};
use lockstep::certify::{
    CATALOG, Certification, CertifyOptions, CheckResult, Profile, ProfileVerdict, Verdict, certify,
};
use lockstep::jose::{IDP_RSA_PEM, SigningKey};
use lockstep::net::real::SystemClock;
use lockstep::rng::SeededRng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::peers::http_client;

const CLIENT_ID: &str = "lab-gateway";
const CLIENT_SECRET: &str = "mock-op-secret";
/// Nothing listens there: the `redirect` driver stops at the redirect.
const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";
const SUBJECT: &str = "alice";
/// The provider's only `acr` value: advertised, and in every ID token (the
/// mock's one sign-in method is password plus a one-time code).
const ACR: &str = "urn:lockstep:acr:mfa";
/// Password and a one-time code: registered in RFC 8176, and `otp` maps to
/// the gateway's TOTP factor type.
const AMR: [&str; 2] = ["pwd", "otp"];
/// The public half of the provider's RSA key (`fixtures/keys/`): what a
/// key-confusion attacker feeds to HMAC.
const PUBLIC_PEM: &str = include_str!("../../fixtures/keys/idp-rs256.pub.pem");
/// The issuer a token names in the wrong-`iss` variant.
const OTHER_ISSUER: &str = "https://other-idp.example";
/// The audience in the wrong-`aud` variant.
const OTHER_CLIENT: &str = "another-client";
/// The `kid` in the unknown-key variant: not in the JWKS.
const UNPUBLISHED_KID: &str = "kid-not-in-jwks";
/// The profiles certified: the redirect driver keeps no session, so
/// Session semantics could only be not-run, and Key management needs a
/// rotation trigger the mock does not have.
const PROFILES: [Profile; 2] = [Profile::Basic, Profile::MfaEvidence];
/// The baseline's failing checks (asserted by the baseline's own test).
const BASELINE_FAILING: [&str; 0] = [];

/// One knob on the provider: what it gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// None: the baseline.
    WellBehaved,
    /// ID tokens name another issuer.
    WrongIss,
    /// ID tokens are for another client.
    WrongAud,
    /// ID tokens carry no `nonce` although one was sent.
    NoNonce,
    /// ID tokens are unsigned (`alg: none`).
    AlgNone,
    /// ID tokens are HS256, keyed with the provider's public key.
    Hs256PublicKey,
    /// ID tokens expired an hour before they were issued.
    Expired,
    /// A redeemed code is accepted again.
    CodeReuseAccepted,
    /// ID tokens name a `kid` the JWKS does not publish.
    UnknownKid,
}

/// What an authorization request left behind for the token endpoint.
#[derive(Clone, Debug)]
struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    auth_time: u64,
    redeemed: bool,
}

#[derive(Debug, Default)]
struct OpState {
    next: u64,
    codes: HashMap<String, Grant>,
    /// Access token -> subject.
    access_tokens: HashMap<String, String>,
    /// Redemptions of a code already redeemed, and how many were accepted.
    reuse_attempts: u32,
    reuses_accepted: u32,
}

/// The provider: its configuration and its shared state.
struct Op {
    issuer: String,
    misbehaviour: Misbehaviour,
    key: SigningKey,
    state: Mutex<OpState>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn oauth_error(status: u16, error: &str, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("cache-control", "no-store")
        .set_body_json(json!({"error": error, "error_description": description}))
}

impl Op {
    fn new(issuer: String, misbehaviour: Misbehaviour) -> Op {
        let key = SigningKey::rs256_from_pem(IDP_RSA_PEM).expect("the fixture RSA key loads");
        Op { issuer, misbehaviour, key, state: Mutex::new(OpState::default()) }
    }

    fn state(&self) -> MutexGuard<'_, OpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn endpoint(&self, p: &str) -> String {
        format!("{}{p}", self.issuer)
    }

    fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("/authorize"),
            "token_endpoint": self.endpoint("/token"),
            "jwks_uri": self.endpoint("/jwks"),
            "userinfo_endpoint": self.endpoint("/userinfo"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "scopes_supported": ["openid"],
            "acr_values_supported": [ACR],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "at_hash"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// GET /authorize: signs the user in at once. Errors that cannot be
    /// sent back safely (unknown client, unregistered redirect URI) are a
    /// page; the others go back to the client (RFC 6749 §4.1.2.1).
    fn authorize(&self, request: &Request) -> ResponseTemplate {
        let q = |name: &str| query(&request.url, name);
        if q("client_id").as_deref() != Some(CLIENT_ID) {
            return ResponseTemplate::new(400).set_body_string("unknown client");
        }
        let Some(redirect_uri) = q("redirect_uri").filter(|r| r == REDIRECT_URI) else {
            return ResponseTemplate::new(400).set_body_string("redirect_uri is not registered for this client");
        };
        let Ok(mut back) = Url::parse(&redirect_uri) else {
            return ResponseTemplate::new(400).set_body_string("redirect_uri is not a URL");
        };
        let state = q("state");
        let refusal = if q("response_type").as_deref() != Some("code") {
            Some("unsupported_response_type")
        } else if !q("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid")) {
            Some("invalid_scope")
        } else if q("code_challenge").is_none() || q("code_challenge_method").as_deref() != Some("S256") {
            // PKCE S256 is required; `plain` is refused.
            Some("invalid_request")
        } else {
            None
        };
        let challenge = q("code_challenge").unwrap_or_default();
        {
            let mut pairs = back.query_pairs_mut();
            match refusal {
                Some(error) => {
                    pairs.append_pair("error", error);
                }
                None => {
                    let mut st = self.state();
                    st.next += 1;
                    let code = format!("code-{}", st.next);
                    let grant = Grant {
                        redirect_uri: redirect_uri.clone(),
                        challenge,
                        nonce: q("nonce"),
                        auth_time: now_secs(),
                        redeemed: false,
                    };
                    st.codes.insert(code.clone(), grant);
                    pairs.append_pair("code", &code);
                }
            }
            if let Some(s) = &state {
                pairs.append_pair("state", s);
            }
            pairs.append_pair("iss", &self.issuer);
        }
        ResponseTemplate::new(302).insert_header("location", back.as_str())
    }

    /// Client authentication: `client_secret_basic` (RFC 6749 §2.3.1, both
    /// parts form-encoded before base64).
    fn client_authenticated(request: &Request) -> bool {
        let Some(value) = request.headers.get("authorization").and_then(|v| v.to_str().ok()) else { return false };
        let Some(encoded) = value.strip_prefix("Basic ") else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        let Some((id, secret)) = text.split_once(':') else { return false };
        let dec =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        dec(id).as_deref() == Some(CLIENT_ID) && dec(secret).as_deref() == Some(CLIENT_SECRET)
    }

    /// POST /token: the authorization code grant.
    fn token(&self, request: &Request) -> ResponseTemplate {
        if !Self::client_authenticated(request) {
            return oauth_error(401, "invalid_client", "client authentication failed")
                .insert_header("www-authenticate", "Basic realm=\"mock-op\"");
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str);
        if field("grant_type") != Some("authorization_code") {
            return oauth_error(400, "unsupported_grant_type", "only authorization_code");
        }
        let code = field("code").unwrap_or_default();
        let mut st = self.state();
        let reuse_accepted = self.misbehaviour == Misbehaviour::CodeReuseAccepted;
        let grant = match st.codes.get_mut(code) {
            None => return oauth_error(400, "invalid_grant", "unknown code"),
            Some(g) if g.redeemed => {
                let g = g.clone();
                st.reuse_attempts += 1;
                if !reuse_accepted {
                    return oauth_error(400, "invalid_grant", "code already used");
                }
                st.reuses_accepted += 1;
                g
            }
            Some(g) => {
                // One attempt per code, successful or not.
                g.redeemed = true;
                g.clone()
            }
        };
        if field("redirect_uri") != Some(grant.redirect_uri.as_str()) {
            return oauth_error(400, "invalid_grant", "redirect_uri does not match the authorization request");
        }
        let verifier = field("code_verifier").unwrap_or_default();
        if verifier.is_empty() || b64url(&Sha256::digest(verifier.as_bytes())) != grant.challenge {
            return oauth_error(400, "invalid_grant", "PKCE verification failed");
        }
        st.next += 1;
        let access_token = format!("at-{}", st.next);
        st.access_tokens.insert(access_token.clone(), SUBJECT.to_string());
        drop(st);
        let id_token = match self.id_token(&grant, &access_token) {
            Ok(t) => t,
            Err(e) => return oauth_error(500, "server_error", &e),
        };
        ResponseTemplate::new(200).insert_header("cache-control", "no-store").set_body_json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }))
    }

    /// The ID token of `grant`, with this provider's misbehaviour.
    fn id_token(&self, grant: &Grant, access_token: &str) -> Result<String, String> {
        let now = now_secs();
        let m = self.misbehaviour;
        let digest = Sha256::digest(access_token.as_bytes());
        let mut claims = json!({
            "iss": if m == Misbehaviour::WrongIss { OTHER_ISSUER } else { self.issuer.as_str() },
            "sub": SUBJECT,
            "aud": if m == Misbehaviour::WrongAud { OTHER_CLIENT } else { CLIENT_ID },
            "iat": now,
            // An hour in the past: far beyond any leeway.
            "exp": if m == Misbehaviour::Expired { now - 3600 } else { now + 300 },
            "auth_time": grant.auth_time,
            "acr": ACR,
            "amr": AMR,
            "at_hash": b64url(&digest[..16]),
        });
        if let (Some(nonce), false) = (&grant.nonce, m == Misbehaviour::NoNonce) {
            claims["nonce"] = json!(nonce);
        }
        match m {
            Misbehaviour::AlgNone => {
                let header = json!({"alg": "none", "typ": "JWT", "kid": self.key.kid()});
                Ok(format!("{}.{}.", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes())))
            }
            Misbehaviour::Hs256PublicKey => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(self.key.kid().to_string());
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(PUBLIC_PEM.as_bytes()))
                    .map_err(|e| e.to_string())
            }
            Misbehaviour::UnknownKid => self.key.sign_with_kid(&claims, UNPUBLISHED_KID).map_err(|e| e.to_string()),
            _ => self.key.sign(&claims).map_err(|e| e.to_string()),
        }
    }

    /// GET /userinfo with a Bearer access token.
    fn userinfo(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        match token.and_then(|t| self.state().access_tokens.get(&t).cloned()) {
            Some(sub) => ResponseTemplate::new(200).set_body_json(json!({"sub": sub})),
            None => ResponseTemplate::new(401).insert_header("www-authenticate", "Bearer error=\"invalid_token\""),
        }
    }
}

/// One endpoint of the provider, as a wiremock responder.
#[derive(Clone)]
struct Endpoint {
    op: Arc<Op>,
    kind: EndpointKind,
}

#[derive(Clone, Copy)]
enum EndpointKind {
    Discovery,
    Jwks,
    Authorize,
    Token,
    Userinfo,
}

impl Respond for Endpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        match self.kind {
            EndpointKind::Discovery => ResponseTemplate::new(200).set_body_json(self.op.discovery()),
            EndpointKind::Jwks => ResponseTemplate::new(200)
                .insert_header("cache-control", "public, max-age=300")
                .set_body_json(lockstep::jose::jwk_set(&[&self.op.key])),
            EndpointKind::Authorize => self.op.authorize(request),
            EndpointKind::Token => self.op.token(request),
            EndpointKind::Userinfo => self.op.userinfo(request),
        }
    }
}

/// A provider with `misbehaviour`, serving on loopback.
async fn start_op(misbehaviour: Misbehaviour) -> (MockServer, Arc<Op>) {
    let server = MockServer::start().await;
    let op = Arc::new(Op::new(server.uri().trim_end_matches('/').to_string(), misbehaviour));
    let routes = [
        ("GET", "/.well-known/openid-configuration", EndpointKind::Discovery),
        ("GET", "/jwks", EndpointKind::Jwks),
        ("GET", "/authorize", EndpointKind::Authorize),
        ("POST", "/token", EndpointKind::Token),
        ("GET", "/userinfo", EndpointKind::Userinfo),
    ];
    for (verb, route, kind) in routes {
        Mock::given(method(verb)).and(path(route)).respond_with(Endpoint { op: op.clone(), kind }).mount(&server).await;
    }
    (server, op)
}

/// Certifies a provider with `misbehaviour`; returns the certification and
/// the provider (to see what it was asked).
async fn certify_op(misbehaviour: Misbehaviour) -> (Certification, Arc<Op>) {
    let (server, op) = start_op(misbehaviour).await;
    let settings = DriverSettings { username: String::new(), password: String::new(), client_id: CLIENT_ID.into() };
    let mut login = driver::driver("redirect", &settings).expect("the redirect driver exists");
    let options = CertifyOptions {
        issuer: op.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        redirect_uri: Url::parse(REDIRECT_URI).expect("a URL"),
        profiles: PROFILES.to_vec(),
        allow_pkce_plain: false,
        acr_values: None,
        rotate_command: None,
        leeway: std::time::Duration::from_secs(60),
    };
    let cert = certify(&options, login.as_mut(), http_client(), Arc::new(SystemClock), SeededRng::from_seed(11)).await;
    drop(server);
    (cert, op)
}

fn check<'c>(cert: &'c Certification, id: &str) -> &'c CheckResult {
    cert.check(id).unwrap_or_else(|| panic!("{id} is not in the certification"))
}

fn verdict_of(cert: &Certification, profile: Profile) -> ProfileVerdict {
    cert.profiles.iter().find(|p| p.profile == profile).map(|p| p.verdict).expect("a selected profile")
}

/// The checks of the selected profiles, in catalog order.
fn selected_ids() -> Vec<&'static str> {
    CATALOG.iter().filter(|c| PROFILES.contains(&c.profile)).map(|c| c.id).collect()
}

/// Certifies the provider with `misbehaviour` and asserts that exactly
/// `expected` fails on top of the baseline, that the other checks keep the
/// baseline's verdict (`pass`) except those in `also_changed`, and that the
/// failure's detail names the fault (`detail_names`).
async fn assert_fails_exactly(
    misbehaviour: Misbehaviour,
    expected: &str,
    also_changed: &[(&str, Verdict)],
    detail_names: &[&str],
) -> (Certification, Arc<Op>) {
    let (cert, op) = certify_op(misbehaviour).await;
    let report = lockstep::certify::report::markdown(&cert);
    let mut want_failing: Vec<&str> = BASELINE_FAILING.to_vec();
    want_failing.push(expected);
    want_failing.sort_unstable();
    let mut failing = cert.ids_with(Verdict::Fail);
    failing.sort_unstable();
    assert_eq!(failing, want_failing, "{misbehaviour:?}: failing checks\n{report}");
    for id in selected_ids() {
        let want = if id == expected {
            Verdict::Fail
        } else {
            also_changed.iter().find(|(c, _)| *c == id).map_or(Verdict::Pass, |(_, v)| *v)
        };
        let got = check(&cert, id);
        assert_eq!(got.verdict, want, "{misbehaviour:?}: {id}: {}\n{report}", got.detail);
    }
    assert_eq!(cert.checks.len(), selected_ids().len(), "{misbehaviour:?}: every selected check has a verdict");
    assert_eq!(verdict_of(&cert, Profile::Basic), ProfileVerdict::Fail, "{misbehaviour:?}");
    assert_eq!(verdict_of(&cert, Profile::MfaEvidence), ProfileVerdict::Pass, "{misbehaviour:?}");
    assert!(!cert.passed(), "{misbehaviour:?}");
    let failed = check(&cert, expected);
    for name in detail_names {
        assert!(
            failed.detail.contains(name),
            "{misbehaviour:?}: {expected}'s detail does not name {name:?}: {}",
            failed.detail
        );
    }
    assert!(!failed.evidence.is_empty(), "{misbehaviour:?}: {expected} has no evidence");
    (cert, op)
}

/// The evidence of `id`'s verdict has the token response, with the ID
/// token shown as its decoded claims, containing `text`.
fn evidence_shows(cert: &Certification, id: &str, text: &str) -> bool {
    check(cert, id).evidence.iter().any(|e| e.purpose == "code redemption" && e.response_body.contains(text))
}

/// The mock's own keys are what the fixtures say: the public PEM is the
/// private key's public half (a token the provider signs verifies with it),
/// so the key-confusion variant really keys HMAC with the provider's public
/// key.
#[test]
fn the_public_key_fixture_is_the_providers_public_key() {
    let op = Op::new("http://op.test".into(), Misbehaviour::WellBehaved);
    let token = op.key.sign(&json!({"sub": SUBJECT})).unwrap();
    let key = DecodingKey::from_rsa_pem(PUBLIC_PEM.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
}

/// The well-behaved provider passes every check of Basic and MFA evidence:
/// the mock honours everything these profiles ask (PKCE S256 only, single
/// use codes bound to their redirect URI, RFC 9207 `iss`, `at_hash`, `amr`,
/// `auth_time`, `acr_values`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_baseline_passes_basic_and_mfa_evidence() {
    let (cert, op) = certify_op(Misbehaviour::WellBehaved).await;
    let report = lockstep::certify::report::markdown(&cert);
    assert_eq!(cert.ids_with(Verdict::Fail), BASELINE_FAILING, "{report}");
    let ids: Vec<&str> = cert.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), selected_ids().len(), "{report}");
    for id in selected_ids() {
        let c = check(&cert, id);
        assert_eq!(c.verdict, Verdict::Pass, "{id}: {}\n{report}", c.detail);
    }
    assert_eq!(verdict_of(&cert, Profile::Basic), ProfileVerdict::Pass);
    assert_eq!(verdict_of(&cert, Profile::MfaEvidence), ProfileVerdict::Pass);
    assert!(cert.passed());
    assert_eq!(cert.driver, "redirect");
    // What passed was really exercised: the refusals came from the mock.
    assert!(check(&cert, "code.reuse").detail.contains("invalid_grant"), "{:?}", check(&cert, "code.reuse"));
    assert!(check(&cert, "pkce.wrong-verifier").detail.contains("invalid_grant"));
    assert!(check(&cert, "redirect-uri.token-mismatch").detail.contains("invalid_grant"));
    assert!(check(&cert, "pkce.plain-rejected").detail.contains("invalid_request"));
    assert!(check(&cert, "id-token.hashes").detail.contains("at_hash matches"));
    assert!(check(&cert, "mfa.amr-mapping").detail.contains("otp → "), "{}", check(&cert, "mfa.amr-mapping").detail);
    assert!(check(&cert, "mfa.acr-values").detail.contains(ACR));
    let st = op.state();
    assert_eq!((st.reuse_attempts, st.reuses_accepted), (1, 0), "one reuse attempt, refused");
    drop(st);
    let json = serde_json::to_string(&cert).unwrap();
    assert!(!json.contains(CLIENT_SECRET), "the client secret leaked into the certification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_wrong_iss_fails_id_token_iss() {
    let (cert, _) =
        assert_fails_exactly(Misbehaviour::WrongIss, "id-token.iss", &[], &[&format!("`{OTHER_ISSUER}`")]).await;
    assert!(evidence_shows(&cert, "id-token.iss", OTHER_ISSUER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_wrong_aud_fails_id_token_aud() {
    let (cert, _) = assert_fails_exactly(Misbehaviour::WrongAud, "id-token.aud", &[], &[OTHER_CLIENT, CLIENT_ID]).await;
    assert!(evidence_shows(&cert, "id-token.aud", OTHER_CLIENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_no_nonce_fails_id_token_nonce() {
    assert_fails_exactly(Misbehaviour::NoNonce, "id-token.nonce", &[], &["no nonce"]).await;
}

/// An unsigned token fails `id-token.alg`. Two checks cannot be judged
/// under `none` and are not run rather than failed (the fault is the
/// algorithm's): the signature (there is none), and `at_hash` (its hash
/// function is the algorithm's, and `none` has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_alg_none_fails_id_token_alg() {
    let (cert, _) = assert_fails_exactly(
        Misbehaviour::AlgNone,
        "id-token.alg",
        &[("id-token.signature", Verdict::NotRun), ("id-token.hashes", Verdict::NotRun)],
        &["`none`"],
    )
    .await;
    assert!(check(&cert, "id-token.signature").detail.contains("see id-token.alg"));
    assert!(check(&cert, "id-token.hashes").detail.contains("see id-token.alg"));
}

/// Key confusion: HS256 keyed with the provider's public key (which anyone
/// can fetch) fails `id-token.alg`; the signature is not judged under an
/// algorithm the gateway never accepts. HS256 names SHA-256, so `at_hash`
/// is still judged, and matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_hs256_keyed_with_the_public_key_fails_id_token_alg() {
    let (cert, _) = assert_fails_exactly(
        Misbehaviour::Hs256PublicKey,
        "id-token.alg",
        &[("id-token.signature", Verdict::NotRun)],
        &["`HS256`"],
    )
    .await;
    assert!(check(&cert, "id-token.signature").detail.contains("see id-token.alg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_expired_token_fails_id_token_times() {
    assert_fails_exactly(Misbehaviour::Expired, "id-token.times", &[], &["expired", "s before now"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_reused_code_accepted_fails_code_reuse() {
    let (_, op) =
        assert_fails_exactly(Misbehaviour::CodeReuseAccepted, "code.reuse", &[], &["second time was accepted (200)"])
            .await;
    let st = op.state();
    assert_eq!((st.reuse_attempts, st.reuses_accepted), (1, 1), "the certifier's one reuse was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_misbehaving_kid_not_in_jwks_fails_id_token_signature() {
    assert_fails_exactly(
        Misbehaviour::UnknownKid,
        "id-token.signature",
        &[],
        &[&format!("`{UNPUBLISHED_KID}`"), "not in the JWKS"],
    )
    .await;
}
