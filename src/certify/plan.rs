//! The test plan: the checks of the catalog, run in order against one
//! provider, sharing the logins they can share.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::check::{self, CheckResult, CheckSpec, Profile, ProfileVerdict, Verdict, ids};
use super::driver::{DriverError, LoginDriver};
use super::evidence::Exchange;
use super::token::{self, DecodedToken, RFC8176_AMR};
use crate::http::{Fetch, HttpClient, HttpResponse};
use crate::net::SharedClock;
use crate::oauth::pkce_challenge;
use crate::policy::amr_factor;
use crate::rng::SeededRng;

/// What to certify, and how.
#[derive(Clone, Debug)]
pub struct CertifyOptions {
    /// The issuer identifier, exactly as configured at the gateway.
    pub issuer: String,
    /// The client registered for the gateway.
    pub client_id: String,
    /// Its secret (a public client has none).
    pub client_secret: Option<String>,
    /// Its registered redirect URI.
    pub redirect_uri: Url,
    /// The profiles to judge.
    pub profiles: Vec<Profile>,
    /// The gateway's policy allows PKCE `plain` (so it is not checked).
    pub allow_pkce_plain: bool,
    /// The `acr_values` to ask for (default: the first advertised).
    pub acr_values: Option<String>,
    /// A command that makes the provider rotate its signing key.
    pub rotate_command: Option<String>,
    /// Clock skew tolerated between certifier and provider.
    pub leeway: Duration,
}

/// A profile's verdict with its counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// Profile.
    pub profile: Profile,
    /// Overall verdict.
    pub verdict: ProfileVerdict,
    /// Checks that passed.
    pub passed: usize,
    /// Warnings.
    pub warnings: usize,
    /// Failed checks.
    pub failed: usize,
    /// Skipped (not applicable) or not run.
    pub skipped: usize,
}

/// A whole certification.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Certification {
    /// Issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// The login driver used.
    pub driver: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
    /// Verdict per profile.
    pub profiles: Vec<ProfileSummary>,
    /// Every check's result, in plan order.
    pub checks: Vec<CheckResult>,
}

impl Certification {
    /// Whether every selected profile passed.
    pub fn passed(&self) -> bool {
        self.profiles.iter().all(|p| p.verdict == ProfileVerdict::Pass)
    }

    /// The result of check `id`.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Ids of the checks with `verdict`.
    pub fn ids_with(&self, verdict: Verdict) -> Vec<&str> {
        self.checks.iter().filter(|c| c.verdict == verdict).map(|c| c.id.as_str()).collect()
    }
}

/// The discovery document: the raw JSON and the fields the plan uses.
#[derive(Clone, Debug, Default)]
struct Metadata {
    json: Value,
}

impl Metadata {
    fn str(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.json
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn url(&self, name: &str) -> Option<Url> {
        self.str(name).and_then(|s| Url::parse(s).ok())
    }
}

/// How an authorization request uses PKCE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pkce {
    S256,
    Plain,
    Omitted,
}

/// An authorization request as sent.
#[derive(Clone, Debug)]
struct AuthRequest {
    state: String,
    nonce: String,
    verifier: String,
    url: Url,
}

/// The provider's redirect back to the client.
#[derive(Clone, Debug)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

impl Callback {
    fn parse(url: Url) -> Callback {
        let get = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        Callback { code: get("code"), state: get("state"), iss: get("iss"), error: get("error") }
    }
}

/// Tokens from one code redemption.
#[derive(Clone, Debug)]
struct Tokens {
    id_token: Option<DecodedToken>,
    access_token: Option<String>,
    refresh_token: Option<String>,
    token_type: Option<String>,
    exchange: Exchange,
}

/// One completed login: what was asked, what came back.
#[derive(Clone, Debug)]
struct Login {
    request: AuthRequest,
    callback: Callback,
    evidence: Vec<Exchange>,
}

/// Runs the plan. Never panics on what the provider sends: every fault is
/// a verdict.
pub async fn certify(
    options: &CertifyOptions,
    driver: &mut dyn LoginDriver,
    http: HttpClient,
    clock: SharedClock,
    rng: SeededRng,
) -> Certification {
    let started_at = clock.now();
    let started = started_at.rfc3339();
    let plan_clock = clock.clone();
    let mut plan = Plan {
        options,
        driver,
        http,
        clock,
        rng,
        results: Vec::new(),
        meta: None,
        jwks: None,
        latest_auth_time: None,
        offline: false,
        latest_id_token: None,
    };
    plan.run().await;
    let driver_name = plan.driver.name().to_string();
    let selected = &options.profiles;
    let checks: Vec<CheckResult> = plan.results.into_iter().filter(|r| selected.contains(&r.profile)).collect();
    let profiles = Profile::ALL
        .into_iter()
        .filter(|p| selected.contains(p))
        .map(|profile| {
            let of = |v: Verdict| checks.iter().filter(|c| c.profile == profile && c.verdict == v).count();
            ProfileSummary {
                profile,
                verdict: check::profile_verdict(profile, &checks),
                passed: of(Verdict::Pass),
                warnings: of(Verdict::Warning),
                failed: of(Verdict::Fail),
                skipped: of(Verdict::Skipped) + of(Verdict::NotRun),
            }
        })
        .collect();
    Certification {
        issuer: options.issuer.clone(),
        client_id: options.client_id.clone(),
        driver: driver_name,
        started,
        duration_ms: plan_clock.now().since(started_at).as_millis() as u64,
        profiles,
        checks,
    }
}

struct Plan<'a> {
    options: &'a CertifyOptions,
    driver: &'a mut dyn LoginDriver,
    http: HttpClient,
    clock: SharedClock,
    rng: SeededRng,
    results: Vec<CheckResult>,
    meta: Option<Metadata>,
    jwks: Option<JwkSet>,
    latest_auth_time: Option<i64>,
    /// The next authorization requests ask for `offline_access`.
    offline: bool,
    /// The last ID token received (the hint for `prompt=none`).
    latest_id_token: Option<String>,
}

fn random_token(rng: &SeededRng, bytes: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rng.bytes(bytes))
}

impl Plan<'_> {
    fn record(&mut self, spec: &CheckSpec, verdict: Verdict, detail: impl Into<String>, evidence: Vec<Exchange>) {
        self.results.push(CheckResult::new(spec, verdict, detail, evidence));
    }

    fn record_all(&mut self, specs: &[CheckSpec], verdict: Verdict, detail: &str) {
        for spec in specs {
            self.record(spec, verdict, detail, Vec::new());
        }
    }

    fn wants(&self, profile: Profile) -> bool {
        self.options.profiles.contains(&profile)
    }

    async fn send(&self, purpose: &str, fetch: Fetch) -> (Result<HttpResponse, String>, Exchange) {
        let outcome = self.http.send(fetch.clone()).await.map_err(|e| e.to_string());
        let exchange = Exchange::record(purpose, &fetch, &outcome);
        (outcome, exchange)
    }

    async fn run(&mut self) {
        if !self.discovery().await {
            let rest: Vec<CheckSpec> =
                check::CATALOG.iter().filter(|c| !c.id.starts_with("discovery.")).copied().collect();
            self.record_all(&rest, Verdict::NotRun, "not run: the discovery document is unusable");
            return;
        }
        self.keys().await;
        let Some(main) = self.main_login().await else { return };
        // Session checks first: they observe the main login's provider
        // session, which the later logins may replace.
        if self.wants(Profile::SessionSemantics) {
            self.session_checks(&main).await;
        }
        self.pkce_and_redirect_checks().await;
        if self.wants(Profile::MfaEvidence) {
            self.acr_check().await;
        }
        self.rotation_check(&main).await;
    }

    // ---- discovery and keys ------------------------------------------------

    async fn discovery(&mut self) -> bool {
        let url = format!("{}/.well-known/openid-configuration", self.options.issuer.trim_end_matches('/'));
        let Ok(url) = Url::parse(&url) else {
            self.record(&ids::DISCOVERY_FETCH, Verdict::Fail, format!("`{url}` is not a URL"), Vec::new());
            return false;
        };
        let (outcome, ex) = self.send("discovery", Fetch::get(url)).await;
        let evidence = vec![ex];
        let json = match outcome {
            Ok(r) if r.status == 200 => match serde_json::from_slice::<Value>(&r.body) {
                Ok(j) if j.is_object() => j,
                Ok(_) => {
                    self.record(&ids::DISCOVERY_FETCH, Verdict::Fail, "not a JSON object", evidence);
                    return false;
                }
                Err(e) => {
                    self.record(&ids::DISCOVERY_FETCH, Verdict::Fail, format!("not JSON: {e}"), evidence);
                    return false;
                }
            },
            Ok(r) => {
                self.record(&ids::DISCOVERY_FETCH, Verdict::Fail, format!("answered {}", r.status), evidence);
                return false;
            }
            Err(e) => {
                self.record(&ids::DISCOVERY_FETCH, Verdict::Fail, format!("no answer: {e}"), evidence);
                return false;
            }
        };
        self.record(&ids::DISCOVERY_FETCH, Verdict::Pass, "served as a JSON object", evidence.clone());
        let meta = Metadata { json };
        match meta.str("issuer") {
            Some(i) if i == self.options.issuer => {
                self.record(&ids::DISCOVERY_ISSUER, Verdict::Pass, format!("issuer = {i}"), evidence.clone())
            }
            Some(i) => self.record(
                &ids::DISCOVERY_ISSUER,
                Verdict::Fail,
                format!("issuer is `{i}`, not `{}`", self.options.issuer),
                evidence.clone(),
            ),
            None => self.record(&ids::DISCOVERY_ISSUER, Verdict::Fail, "no issuer", evidence.clone()),
        }
        let mut missing: Vec<&str> = [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "response_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
        ]
        .into_iter()
        .filter(|f| meta.json.get(*f).is_none())
        .collect();
        for endpoint in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
            if meta.json.get(endpoint).is_some() && meta.url(endpoint).is_none() {
                missing.push(endpoint);
            }
        }
        let usable = meta.url("authorization_endpoint").is_some()
            && meta.url("token_endpoint").is_some()
            && meta.url("jwks_uri").is_some();
        if !missing.is_empty() {
            let detail = format!("missing or not a URL: {}", missing.join(", "));
            self.record(&ids::DISCOVERY_FIELDS, Verdict::Fail, detail, evidence.clone());
        } else if !meta.list("response_types_supported").iter().any(|t| t == "code") {
            self.record(
                &ids::DISCOVERY_FIELDS,
                Verdict::Fail,
                "`code` is not a supported response type",
                evidence.clone(),
            );
        } else {
            self.record(&ids::DISCOVERY_FIELDS, Verdict::Pass, "all required fields present", evidence.clone());
        }
        let algs = meta.list("id_token_signing_alg_values_supported");
        let (verdict, detail) = if algs.iter().any(|a| a.eq_ignore_ascii_case("none")) {
            (Verdict::Fail, format!("`none` is advertised: {algs:?}"))
        } else if !algs.iter().any(|a| a == "RS256") {
            (Verdict::Fail, format!("RS256 is not advertised: {algs:?}"))
        } else if algs.iter().any(|a| a.starts_with("HS")) {
            (Verdict::Warning, format!("symmetric algorithms advertised: {algs:?}"))
        } else {
            (Verdict::Pass, format!("{algs:?}"))
        };
        self.record(&ids::DISCOVERY_ALGS, verdict, detail, evidence.clone());
        let methods = meta.list("code_challenge_methods_supported");
        let (verdict, detail) = if methods.iter().any(|m| m == "S256") {
            (Verdict::Pass, format!("{methods:?}"))
        } else if methods.is_empty() {
            (Verdict::Fail, "code_challenge_methods_supported is not advertised".to_string())
        } else {
            (Verdict::Fail, format!("S256 not listed: {methods:?}"))
        };
        self.record(&ids::DISCOVERY_PKCE, verdict, detail, evidence);
        self.meta = Some(meta);
        usable
    }

    fn meta(&self) -> &Metadata {
        static EMPTY: std::sync::OnceLock<Metadata> = std::sync::OnceLock::new();
        self.meta.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Metadata::default))
    }

    async fn fetch_jwks(&self, purpose: &str) -> (Result<(JwkSet, Value, Option<String>), String>, Exchange) {
        let Some(url) = self.meta().url("jwks_uri") else {
            return (Err("no jwks_uri".into()), Exchange::note(purpose, "no jwks_uri"));
        };
        let (outcome, ex) = self.send(purpose, Fetch::get(url)).await;
        let parsed = match outcome {
            Ok(r) if r.status == 200 => {
                let cache = r
                    .header("cache-control")
                    .map(str::to_string)
                    .or_else(|| r.header("expires").map(|e| format!("expires: {e}")));
                match serde_json::from_slice::<Value>(&r.body) {
                    Ok(raw) => match serde_json::from_value::<JwkSet>(raw.clone()) {
                        Ok(set) => Ok((set, raw, cache)),
                        Err(e) => Err(format!("not a JWK Set this certifier can load: {e}")),
                    },
                    Err(e) => Err(format!("not JSON: {e}")),
                }
            }
            Ok(r) => Err(format!("answered {}", r.status)),
            Err(e) => Err(format!("no answer: {e}")),
        };
        (parsed, ex)
    }

    async fn keys(&mut self) {
        let (outcome, ex) = self.fetch_jwks("jwks").await;
        let evidence = vec![ex];
        let (set, raw, cache) = match outcome {
            Ok(v) => v,
            Err(e) => {
                self.record(&ids::JWKS_FETCH, Verdict::Fail, e.clone(), evidence);
                let detail = format!("not run: {e}");
                self.record_all(
                    &[ids::JWKS_KID, ids::JWKS_PUBLIC_ONLY, ids::KEYS_CACHE_HEADERS],
                    Verdict::NotRun,
                    &detail,
                );
                return;
            }
        };
        let raw_keys = raw.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let loadable = set.keys.iter().filter(|k| jsonwebtoken::DecodingKey::from_jwk(k).is_ok()).count();
        let signing = raw_keys.iter().filter(|k| k.get("use").and_then(Value::as_str) != Some("enc")).count();
        if set.keys.is_empty() || loadable == 0 || signing == 0 {
            self.record(
                &ids::JWKS_FETCH,
                Verdict::Fail,
                format!("{} keys, {loadable} loadable, {signing} for signing", set.keys.len()),
                evidence.clone(),
            );
        } else {
            self.record(
                &ids::JWKS_FETCH,
                Verdict::Pass,
                format!("{} keys, {loadable} loadable", set.keys.len()),
                evidence.clone(),
            );
        }
        let kids: Vec<Option<&str>> = raw_keys.iter().map(|k| k.get("kid").and_then(Value::as_str)).collect();
        let mut unique = std::collections::BTreeSet::new();
        let duplicate = kids.iter().flatten().find(|k| !unique.insert(**k));
        let (verdict, detail) = if raw_keys.len() > 1 && kids.iter().any(Option::is_none) {
            (Verdict::Fail, format!("{} keys and some have no kid", raw_keys.len()))
        } else if let Some(d) = duplicate {
            (Verdict::Fail, format!("kid `{d}` appears twice"))
        } else {
            (Verdict::Pass, format!("kids {:?}", kids.iter().flatten().collect::<Vec<_>>()))
        };
        self.record(&ids::JWKS_KID, verdict, detail, evidence.clone());
        let private: Vec<String> = raw_keys
            .iter()
            .filter(|k| ["d", "p", "q", "k"].iter().any(|m| k.get(*m).is_some()))
            .map(|k| k.get("kid").and_then(Value::as_str).unwrap_or("(no kid)").to_string())
            .collect();
        if private.is_empty() {
            self.record(&ids::JWKS_PUBLIC_ONLY, Verdict::Pass, "public members only", evidence.clone());
        } else {
            self.record(
                &ids::JWKS_PUBLIC_ONLY,
                Verdict::Fail,
                format!("private key material published for {private:?}"),
                evidence.clone(),
            );
        }
        match cache {
            Some(c) if c.to_ascii_lowercase().contains("no-store") || c.to_ascii_lowercase().contains("no-cache") => {
                self.record(
                    &ids::KEYS_CACHE_HEADERS,
                    Verdict::Fail,
                    format!(
                        "`{c}`: caching is forbidden, so the gateway must refetch for every token or ignore the header"
                    ),
                    evidence,
                )
            }
            Some(c) => self.record(&ids::KEYS_CACHE_HEADERS, Verdict::Pass, c, evidence),
            None => self.record(
                &ids::KEYS_CACHE_HEADERS,
                Verdict::Fail,
                "no Cache-Control or Expires: the gateway falls back to its own TTL",
                evidence,
            ),
        }
        self.jwks = Some(set);
    }

    // ---- logins ----------------------------------------------------------

    fn scopes(&self) -> String {
        let supported = self.meta().list("scopes_supported");
        let mut scopes = vec!["openid".to_string()];
        for s in ["email", "profile", "offline_access"] {
            // Offline access only where a refresh token is wanted: providers
            // rightly ask for consent each time it is requested.
            if supported.iter().any(|x| x == s) && (s != "offline_access" || self.offline) {
                scopes.push(s.to_string());
            }
        }
        scopes.join(" ")
    }

    fn authorization_request(&self, pkce: Pkce, redirect_uri: &Url, extra: &[(&str, String)]) -> Option<AuthRequest> {
        let mut url = self.meta().url("authorization_endpoint")?;
        let state = random_token(&self.rng, 12);
        let nonce = random_token(&self.rng, 12);
        let verifier = random_token(&self.rng, 32);
        let scope = self.scopes();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.options.client_id)
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("scope", &scope)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce);
            match pkce {
                Pkce::S256 => {
                    q.append_pair("code_challenge", &pkce_challenge(&verifier))
                        .append_pair("code_challenge_method", "S256");
                }
                Pkce::Plain => {
                    q.append_pair("code_challenge", &verifier).append_pair("code_challenge_method", "plain");
                }
                Pkce::Omitted => {}
            }
            if scope.contains("offline_access") && !extra.iter().any(|(k, _)| *k == "prompt") {
                // OpenID Connect Core §11: offline access is asked for with consent.
                q.append_pair("prompt", "consent");
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Some(AuthRequest { state, nonce, verifier, url })
    }

    async fn login_with(&mut self, pkce: Pkce, redirect_uri: &Url, extra: &[(&str, String)]) -> Result<Login, String> {
        let request = self.authorization_request(pkce, redirect_uri, extra).ok_or("no authorization endpoint")?;
        let mut evidence = vec![Exchange::note("authorization request", request.url.as_str())];
        match self.driver.authorize(&request.url, redirect_uri).await {
            Ok(url) => {
                evidence.push(Exchange::note("redirect back to the client", url.as_str()));
                Ok(Login { request, callback: Callback::parse(url), evidence })
            }
            Err(e) => Err(format!("the `{}` login driver: {e}", self.driver.name())),
        }
    }

    async fn login(&mut self, extra: &[(&str, String)]) -> Result<Login, String> {
        let redirect = self.options.redirect_uri.clone();
        self.login_with(Pkce::S256, &redirect, extra).await
    }

    fn client_auth(&self, fetch: Fetch, fields: &mut Vec<(String, String)>) -> Fetch {
        let Some(secret) = &self.options.client_secret else {
            fields.push(("client_id".into(), self.options.client_id.clone()));
            return fetch;
        };
        let methods = self.meta().list("token_endpoint_auth_methods_supported");
        if !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_basic")
            && methods.iter().any(|m| m == "client_secret_post")
        {
            fields.push(("client_id".into(), self.options.client_id.clone()));
            fields.push(("client_secret".into(), secret.clone()));
            return fetch;
        }
        // RFC 6749 §2.3.1: both parts form-encoded before base64.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.options.client_id),
            enc(secret)
        ));
        fetch.header("authorization", format!("Basic {basic}"))
    }

    async fn token_request(
        &self,
        purpose: &str,
        mut fields: Vec<(String, String)>,
    ) -> (Result<HttpResponse, String>, Exchange) {
        let Some(url) = self.meta().url("token_endpoint") else {
            return (Err("no token endpoint".into()), Exchange::note(purpose, "no token endpoint"));
        };
        let auth = self.client_auth(Fetch::get(url.clone()), &mut fields);
        let mut fetch = Fetch::post_form(url, &fields);
        fetch.headers = auth.headers;
        self.send(purpose, fetch).await
    }

    async fn redeem(
        &self,
        purpose: &str,
        code: &str,
        verifier: &str,
        redirect_uri: &Url,
    ) -> (Result<HttpResponse, String>, Exchange) {
        let fields = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), redirect_uri.to_string()),
            ("code_verifier".to_string(), verifier.to_string()),
        ];
        self.token_request(purpose, fields).await
    }

    fn parse_tokens(response: &HttpResponse, exchange: Exchange) -> Result<Tokens, String> {
        if response.status != 200 {
            return Err(format!("the token endpoint answered {}: {}", response.status, short(&response.text())));
        }
        let json: Value =
            serde_json::from_slice(&response.body).map_err(|e| format!("token response is not JSON: {e}"))?;
        let s = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_string);
        let id_token = match s("id_token") {
            Some(raw) => Some(DecodedToken::decode(&raw).map_err(|e| format!("id_token: {e}"))?),
            None => None,
        };
        Ok(Tokens {
            id_token,
            access_token: s("access_token"),
            refresh_token: s("refresh_token"),
            token_type: s("token_type"),
            exchange,
        })
    }

    /// Logs in with S256 and redeems the code.
    async fn login_and_redeem(&mut self, extra: &[(&str, String)]) -> Result<(Login, Tokens), String> {
        let mut login = self.login(extra).await?;
        let code = match (&login.callback.code, &login.callback.error) {
            (Some(c), _) => c.clone(),
            (None, Some(e)) => return Err(format!("the provider answered error `{e}`")),
            (None, None) => return Err("the redirect carries neither code nor error".into()),
        };
        let redirect = self.options.redirect_uri.clone();
        let (outcome, ex) = self.redeem("code redemption", &code, &login.request.verifier, &redirect).await;
        login.evidence.push(ex.clone());
        let response = outcome?;
        let tokens = Self::parse_tokens(&response, ex)?;
        if let Some(t) = &tokens.id_token {
            self.latest_id_token = Some(t.raw.clone());
        }
        Ok((login, tokens))
    }

    // ---- the main login and everything judged on it ------------------------

    async fn main_login(&mut self) -> Option<MainLogin> {
        let dependent = [
            ids::STATE_ROUND_TRIP,
            ids::ISS_PARAMETER,
            ids::ID_TOKEN_ALG,
            ids::ID_TOKEN_SIGNATURE,
            ids::ID_TOKEN_ISS,
            ids::ID_TOKEN_AUD,
            ids::ID_TOKEN_TIMES,
            ids::ID_TOKEN_NONCE,
            ids::ID_TOKEN_HASHES,
            ids::MFA_AMR_PRESENT,
            ids::MFA_AMR_REGISTERED,
            ids::MFA_AMR_MAPPING,
            ids::MFA_AUTH_TIME,
            ids::USERINFO_SUB,
            ids::CODE_REUSE,
        ];
        self.offline = true;
        let first = self.login(&[]).await;
        self.offline = false;
        let mut login = match first {
            Ok(l) => l,
            Err(e) => {
                self.record(&ids::CODE_FLOW, Verdict::Fail, e, Vec::new());
                self.record_all(&dependent, Verdict::NotRun, "not run: no login completed (see code.flow)");
                self.record_rest_not_run("not run: no login completed (see code.flow)");
                return None;
            }
        };
        let evidence = login.evidence.clone();
        // State and iss are judged on the redirect itself.
        match &login.callback.state {
            Some(s) if *s == login.request.state => {
                self.record(&ids::STATE_ROUND_TRIP, Verdict::Pass, "state came back unchanged", evidence.clone())
            }
            Some(_) => self.record(&ids::STATE_ROUND_TRIP, Verdict::Fail, "state came back changed", evidence.clone()),
            None => self.record(&ids::STATE_ROUND_TRIP, Verdict::Fail, "state did not come back", evidence.clone()),
        }
        let advertised =
            self.meta().json.get("authorization_response_iss_parameter_supported").and_then(Value::as_bool)
                == Some(true);
        match (&login.callback.iss, advertised) {
            (Some(i), _) if *i == self.options.issuer => {
                self.record(&ids::ISS_PARAMETER, Verdict::Pass, format!("iss = {i}"), evidence.clone())
            }
            (Some(i), _) => self.record(
                &ids::ISS_PARAMETER,
                Verdict::Fail,
                format!("iss is `{i}`, not the issuer"),
                evidence.clone(),
            ),
            (None, true) => self.record(
                &ids::ISS_PARAMETER,
                Verdict::Fail,
                "advertised but absent from the response",
                evidence.clone(),
            ),
            (None, false) => {
                self.record(&ids::ISS_PARAMETER, Verdict::Skipped, "RFC 9207 not advertised", evidence.clone())
            }
        }
        let Some(code) = login.callback.code.clone() else {
            let why = login.callback.error.clone().unwrap_or_else(|| "no code".into());
            self.record(&ids::CODE_FLOW, Verdict::Fail, format!("no code: {why}"), evidence);
            self.record_all(&dependent[2..], Verdict::NotRun, "not run: no code (see code.flow)");
            self.record_rest_not_run("not run: no code (see code.flow)");
            return None;
        };
        let redirect = self.options.redirect_uri.clone();
        let (outcome, ex) = self.redeem("code redemption", &code, &login.request.verifier, &redirect).await;
        login.evidence.push(ex.clone());
        let tokens = match outcome.and_then(|r| Self::parse_tokens(&r, ex)) {
            Ok(t) => t,
            Err(e) => {
                self.record(&ids::CODE_FLOW, Verdict::Fail, e, login.evidence.clone());
                self.record_all(&dependent[2..], Verdict::NotRun, "not run: no tokens (see code.flow)");
                self.record_rest_not_run("not run: no tokens (see code.flow)");
                return None;
            }
        };
        let evidence = login.evidence.clone();
        self.latest_id_token = tokens.id_token.as_ref().map(|t| t.raw.clone());
        let Some(id_token) = tokens.id_token.clone() else {
            self.record(&ids::CODE_FLOW, Verdict::Fail, "no id_token in the token response", evidence);
            self.record_all(&dependent[2..], Verdict::NotRun, "not run: no ID token (see code.flow)");
            self.record_rest_not_run("not run: no ID token (see code.flow)");
            return None;
        };
        let bearer = tokens.token_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        if tokens.access_token.is_none() || !bearer {
            self.record(
                &ids::CODE_FLOW,
                Verdict::Fail,
                format!("access token present: {}, token_type {:?}", tokens.access_token.is_some(), tokens.token_type),
                evidence.clone(),
            );
        } else {
            self.record(
                &ids::CODE_FLOW,
                Verdict::Pass,
                "code redeemed with PKCE S256: ID token and Bearer access token",
                evidence.clone(),
            );
        }
        self.judge_id_token(&id_token, &login.request.nonce, tokens.access_token.as_deref(), &code, &evidence);
        self.mfa_evidence(&id_token, &evidence);
        self.userinfo(&id_token, tokens.access_token.as_deref()).await;
        Some(MainLogin { login, tokens, id_token, code })
    }

    fn judge_id_token(
        &mut self,
        t: &DecodedToken,
        nonce: &str,
        access_token: Option<&str>,
        code: &str,
        evidence: &[Exchange],
    ) {
        let advertised = self.meta().list("id_token_signing_alg_values_supported");
        let now = self.clock.now().as_secs() as i64;
        let leeway = self.options.leeway.as_secs() as i64;
        let jwks = self.jwks.clone().unwrap_or(JwkSet { keys: Vec::new() });
        // A signature is only judged under an accepted algorithm: `none` and
        // HS* fail id-token.alg, and nothing more is learnt from them.
        let signature = if token::ACCEPTED_ALGS.contains(&t.alg()) {
            token::check_signature(t, &jwks)
        } else {
            (Verdict::NotRun, format!("not run: algorithm `{}` is not accepted (see id-token.alg)", t.alg()))
        };
        let findings = [
            (ids::ID_TOKEN_ALG, token::check_alg(t, &advertised)),
            (ids::ID_TOKEN_SIGNATURE, signature),
            (ids::ID_TOKEN_ISS, token::check_iss(t, &self.options.issuer)),
            (ids::ID_TOKEN_AUD, token::check_aud(t, &self.options.client_id)),
            (ids::ID_TOKEN_TIMES, token::check_times(t, now, leeway)),
            (ids::ID_TOKEN_NONCE, token::check_nonce(t, nonce)),
            (ids::ID_TOKEN_HASHES, token::check_hashes(t, access_token, code)),
        ];
        for (spec, (verdict, detail)) in findings {
            self.record(&spec, verdict, detail, evidence.to_vec());
        }
    }

    fn mfa_evidence(&mut self, t: &DecodedToken, evidence: &[Exchange]) {
        let ev = evidence.to_vec();
        match t.amr() {
            None => {
                let detail = if t.claims.get("amr").is_some() {
                    "amr is not an array of strings"
                } else {
                    "no amr claim: the gateway cannot see how the user authenticated"
                };
                self.record(&ids::MFA_AMR_PRESENT, Verdict::Fail, detail, ev.clone());
                self.record_all(&[ids::MFA_AMR_REGISTERED, ids::MFA_AMR_MAPPING], Verdict::NotRun, "not run: no amr");
            }
            Some(amr) => {
                self.record(&ids::MFA_AMR_PRESENT, Verdict::Pass, format!("amr {amr:?}"), ev.clone());
                let unregistered: Vec<&String> = amr.iter().filter(|v| !RFC8176_AMR.contains(&v.as_str())).collect();
                if unregistered.is_empty() {
                    self.record(
                        &ids::MFA_AMR_REGISTERED,
                        Verdict::Pass,
                        format!("all registered: {amr:?}"),
                        ev.clone(),
                    );
                } else {
                    self.record(
                        &ids::MFA_AMR_REGISTERED,
                        Verdict::Fail,
                        format!("not in RFC 8176: {unregistered:?}"),
                        ev.clone(),
                    );
                }
                let mapping: Vec<String> = amr
                    .iter()
                    .map(|v| format!("{v} → {}", amr_factor(v).map(|f| f.as_str()).unwrap_or("(no factor type)")))
                    .collect();
                if amr.iter().any(|v| amr_factor(v).is_some()) {
                    self.record(&ids::MFA_AMR_MAPPING, Verdict::Pass, mapping.join(", "), ev.clone());
                } else {
                    let detail = format!(
                        "{}: the provider's evidence can never satisfy an application's MFA; users are prompted at the edge",
                        mapping.join(", ")
                    );
                    self.record(&ids::MFA_AMR_MAPPING, Verdict::Fail, detail, ev.clone());
                }
            }
        }
        let iat = t.time_claim("iat").unwrap_or(0);
        let leeway = self.options.leeway.as_secs() as i64;
        match t.time_claim("auth_time") {
            // A sign-in that just happened cannot be older than a day or
            // later than the token.
            Some(at) if at > iat + leeway || at < iat - 86_400 => self.record(
                &ids::MFA_AUTH_TIME,
                Verdict::Fail,
                format!("auth_time {at} is not the time of this sign-in (iat {iat}): the evidence's age is unknowable"),
                ev,
            ),
            Some(at) => self.record(&ids::MFA_AUTH_TIME, Verdict::Pass, format!("auth_time {at}, iat {iat}"), ev),
            None => self.record(
                &ids::MFA_AUTH_TIME,
                Verdict::Fail,
                "no auth_time claim in the ID token of an ordinary sign-in (Core §2 makes it optional unless max_age \
                 or the claim is requested): the gateway cannot tell how old the provider's evidence is",
                ev,
            ),
        }
    }

    async fn userinfo(&mut self, t: &DecodedToken, access_token: Option<&str>) {
        let Some(url) = self.meta().url("userinfo_endpoint") else {
            self.record(&ids::USERINFO_SUB, Verdict::Skipped, "no userinfo_endpoint advertised", Vec::new());
            return;
        };
        let Some(at) = access_token else {
            self.record(&ids::USERINFO_SUB, Verdict::NotRun, "not run: no access token", Vec::new());
            return;
        };
        let (outcome, ex) =
            self.send("userinfo", Fetch::get(url).header("authorization", format!("Bearer {at}"))).await;
        let claims = match outcome {
            Ok(r) if r.status == 200 => {
                if r.header("content-type").is_some_and(|c| c.starts_with("application/jwt")) {
                    DecodedToken::decode(r.text().trim()).map(|d| d.claims).map_err(|e| e.to_string())
                } else {
                    serde_json::from_slice::<Value>(&r.body).map_err(|e| format!("not JSON: {e}"))
                }
            }
            Ok(r) => Err(format!("answered {}", r.status)),
            Err(e) => Err(format!("no answer: {e}")),
        };
        let (verdict, detail) = match claims {
            Ok(c) => match (c.get("sub").and_then(Value::as_str), t.str_claim("sub")) {
                (Some(a), Some(b)) if a == b => (Verdict::Pass, format!("sub = {a}")),
                (a, b) => (Verdict::Fail, format!("userinfo sub {a:?}, ID token sub {b:?}")),
            },
            Err(e) => (Verdict::Fail, e),
        };
        self.record(&ids::USERINFO_SUB, verdict, detail, vec![ex]);
    }

    fn record_rest_not_run(&mut self, detail: &str) {
        let done: Vec<&str> = self.results.iter().map(|r| r.id.as_str()).collect();
        let rest: Vec<CheckSpec> = check::CATALOG.iter().filter(|c| !done.contains(&c.id)).copied().collect();
        self.record_all(&rest, Verdict::NotRun, detail);
    }

    // ---- PKCE and redirect URI ------------------------------------------

    async fn pkce_and_redirect_checks(&mut self) {
        // Wrong verifier.
        match self.login(&[]).await {
            Ok(login) => match login.callback.code.clone() {
                Some(code) => {
                    let redirect = self.options.redirect_uri.clone();
                    let wrong = random_token(&self.rng, 32);
                    let (outcome, ex) = self.redeem("redemption with a wrong verifier", &code, &wrong, &redirect).await;
                    let mut evidence = login.evidence;
                    evidence.push(ex);
                    let (verdict, detail) = refused(&outcome, "a wrong code_verifier");
                    self.record(&ids::PKCE_WRONG_VERIFIER, verdict, detail, evidence);
                }
                None => self.record(
                    &ids::PKCE_WRONG_VERIFIER,
                    Verdict::NotRun,
                    "not run: the login gave no code",
                    login.evidence,
                ),
            },
            Err(e) => self.record(&ids::PKCE_WRONG_VERIFIER, Verdict::NotRun, format!("not run: {e}"), Vec::new()),
        }
        // Redirect URI mismatch at the token endpoint.
        match self.login(&[]).await {
            Ok(login) => match login.callback.code.clone() {
                Some(code) => {
                    let other = other_redirect(&self.options.redirect_uri);
                    let (outcome, ex) = self
                        .redeem("redemption with another redirect_uri", &code, &login.request.verifier, &other)
                        .await;
                    let mut evidence = login.evidence;
                    evidence.push(ex);
                    let (verdict, detail) = refused(&outcome, "another redirect_uri");
                    self.record(&ids::REDIRECT_TOKEN_MISMATCH, verdict, detail, evidence);
                }
                None => self.record(
                    &ids::REDIRECT_TOKEN_MISMATCH,
                    Verdict::NotRun,
                    "not run: the login gave no code",
                    login.evidence,
                ),
            },
            Err(e) => self.record(&ids::REDIRECT_TOKEN_MISMATCH, Verdict::NotRun, format!("not run: {e}"), Vec::new()),
        }
        // PKCE plain.
        if self.options.allow_pkce_plain {
            self.record(
                &ids::PKCE_PLAIN,
                Verdict::Skipped,
                "the gateway's policy allows plain (--allow-pkce-plain)",
                Vec::new(),
            );
        } else {
            let redirect = self.options.redirect_uri.clone();
            let (verdict, detail, evidence) = self.downgraded_login(Pkce::Plain, &redirect).await;
            self.record(&ids::PKCE_PLAIN, verdict, detail, evidence);
        }
        let redirect = self.options.redirect_uri.clone();
        let (verdict, detail, evidence) = self.downgraded_login(Pkce::Omitted, &redirect).await;
        self.record(&ids::PKCE_MISSING, verdict, detail, evidence);
        // Unregistered redirect URI: the provider must not redirect there.
        let bad = other_redirect(&self.options.redirect_uri);
        match self.login_with(Pkce::S256, &bad, &[]).await {
            Ok(login) => {
                let detail = format!(
                    "the provider redirected to the unregistered {bad} (code present: {})",
                    login.callback.code.is_some()
                );
                self.record(&ids::REDIRECT_UNREGISTERED, Verdict::Fail, detail, login.evidence);
            }
            Err(e) => self.record(
                &ids::REDIRECT_UNREGISTERED,
                Verdict::Pass,
                format!("no redirect to {bad} ({e})"),
                Vec::new(),
            ),
        }
    }

    /// A login with weakened PKCE: refused at the authorization endpoint
    /// (pass), or a code that redeems (fail), or a code the token endpoint
    /// refuses (a warning: refused, but late).
    async fn downgraded_login(&mut self, pkce: Pkce, redirect: &Url) -> (Verdict, String, Vec<Exchange>) {
        let what = if pkce == Pkce::Plain { "code_challenge_method=plain" } else { "no code_challenge" };
        match self.login_with(pkce, redirect, &[]).await {
            Ok(login) => {
                let mut evidence = login.evidence.clone();
                match (&login.callback.code, &login.callback.error) {
                    (None, Some(e)) => {
                        (Verdict::Pass, format!("refused with `{e}` at the authorization endpoint"), evidence)
                    }
                    (None, None) => (Verdict::Pass, "no code issued".into(), evidence),
                    (Some(code), _) => {
                        let verifier = if pkce == Pkce::Plain { login.request.verifier.clone() } else { String::new() };
                        let mut fields = vec![
                            ("grant_type".to_string(), "authorization_code".to_string()),
                            ("code".to_string(), code.clone()),
                            ("redirect_uri".to_string(), redirect.to_string()),
                        ];
                        if !verifier.is_empty() {
                            fields.push(("code_verifier".to_string(), verifier));
                        }
                        let (outcome, ex) = self.token_request("redemption of the downgraded code", fields).await;
                        evidence.push(ex);
                        match outcome {
                            Ok(r) if r.status == 200 => (
                                Verdict::Fail,
                                format!("{what} was accepted: a code was issued and redeemed"),
                                evidence,
                            ),
                            _ => (
                                Verdict::Warning,
                                format!("a code was issued for {what}, but the token endpoint refused it"),
                                evidence,
                            ),
                        }
                    }
                }
            }
            Err(e) => (Verdict::Pass, format!("no redirect back ({e})"), Vec::new()),
        }
    }

    // ---- session semantics ----------------------------------------------

    async fn session_checks(&mut self, main: &MainLogin) {
        let session_checks =
            [ids::SESSION_PROMPT_NONE, ids::SESSION_PROMPT_LOGIN, ids::SESSION_MAX_AGE, ids::SESSION_LOGOUT];
        if !self.driver.keeps_session() {
            let detail = format!(
                "not run: the `{}` login driver does not keep the provider's session between logins",
                self.driver.name()
            );
            self.record_all(&session_checks, Verdict::NotRun, &detail);
            self.refresh_checks(main).await;
            return;
        }
        let mut first_auth = main.id_token.time_claim("auth_time");
        let sub = main.id_token.str_claim("sub").map(str::to_string);
        // prompt=none with the session live, as a gateway's silent re-check
        // sends it: with the latest ID token as a hint (Core §3.1.2.1,
        // RECOMMENDED) and a generous max_age, which makes auth_time
        // REQUIRED in the answer, the baseline for the freshness checks.
        let hint = self.latest_id_token.clone().unwrap_or_else(|| main.id_token.raw.clone());
        let silent = [("prompt", "none".to_string()), ("max_age", "86400".to_string()), ("id_token_hint", hint)];
        match self.login_and_redeem(&silent).await {
            Ok((login, tokens)) => {
                first_auth = tokens.id_token.as_ref().and_then(|t| t.time_claim("auth_time")).or(first_auth);
                let same = tokens.id_token.as_ref().and_then(|t| t.str_claim("sub").map(str::to_string)) == sub;
                let (v, d) = if same {
                    (Verdict::Pass, "a code without any page, same sub".to_string())
                } else {
                    (Verdict::Fail, "a code, but for another subject".to_string())
                };
                let mut ev = login.evidence;
                ev.push(tokens.exchange);
                self.record(&ids::SESSION_PROMPT_NONE, v, d, ev);
            }
            Err(e) => self.record(&ids::SESSION_PROMPT_NONE, Verdict::Fail, e, Vec::new()),
        }
        // Make auth_time observably later (it has one-second resolution).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (v, d, ev) = self.fresh_auth_time(&[("prompt", "login".into())], first_auth).await;
        self.record(&ids::SESSION_PROMPT_LOGIN, v, d, ev);
        // max_age=1 is exceeded only once more than a whole second has
        // passed on the provider's one-second clock.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let latest = self.latest_auth_time.or(first_auth);
        let (v, d, ev) = self.fresh_auth_time(&[("max_age", "1".into())], latest).await;
        self.record(&ids::SESSION_MAX_AGE, v, d, ev);
        self.logout_check(main).await;
        // Last: revoking a refresh token may rightly end the whole grant
        // (RFC 7009 §2.1), and with it the provider session used above.
        self.refresh_checks(main).await;
    }

    async fn fresh_auth_time(
        &mut self,
        extra: &[(&str, String)],
        previous: Option<i64>,
    ) -> (Verdict, String, Vec<Exchange>) {
        let asked = extra.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        match self.login_and_redeem(extra).await {
            Ok((login, tokens)) => {
                let mut ev = login.evidence;
                ev.push(tokens.exchange.clone());
                let at = tokens.id_token.as_ref().and_then(|t| t.time_claim("auth_time"));
                match (at, previous) {
                    (None, _) => (Verdict::Fail, format!("{asked}: the ID token has no auth_time"), ev),
                    (Some(now), Some(before)) if now > before => {
                        self.latest_auth_time = Some(now);
                        (Verdict::Pass, format!("{asked}: auth_time {now}, after the previous {before}"), ev)
                    }
                    (Some(0), Some(_)) => (
                        Verdict::Fail,
                        format!(
                            "{asked}: auth_time is 0 (see mfa.auth-time), so no new authentication can be observed"
                        ),
                        ev,
                    ),
                    (Some(now), Some(before)) => (
                        Verdict::Fail,
                        format!(
                            "{asked}: auth_time {now} is not after the previous {before}: the user was not authenticated again"
                        ),
                        ev,
                    ),
                    (Some(now), None) => (
                        Verdict::Warning,
                        format!("{asked}: auth_time {now}, but the first login had none to compare"),
                        ev,
                    ),
                }
            }
            Err(e) => (Verdict::Fail, format!("{asked}: {e}"), Vec::new()),
        }
    }

    async fn refresh_checks(&mut self, main: &MainLogin) {
        if main.tokens.refresh_token.is_none() {
            let detail = "no refresh token issued (scopes asked: ".to_string() + &self.scopes() + ")";
            self.record_all(
                &[
                    ids::SESSION_REFRESH,
                    ids::SESSION_REFRESH_ROTATION,
                    ids::SESSION_REVOCATION,
                    ids::SESSION_REVOCATION_ACCESS,
                ],
                Verdict::Skipped,
                &detail,
            );
            return;
        }
        // A login of its own: the session checks' logout may rightly have
        // revoked the main login's tokens.
        let all = [
            ids::SESSION_REFRESH,
            ids::SESSION_REFRESH_ROTATION,
            ids::SESSION_REVOCATION,
            ids::SESSION_REVOCATION_ACCESS,
        ];
        self.offline = true;
        let fresh = self.login_and_redeem(&[]).await;
        self.offline = false;
        let (rt, sub) = match fresh {
            Ok((_, t)) => match t.refresh_token.clone() {
                Some(rt) => (rt, t.id_token.as_ref().and_then(|i| i.str_claim("sub").map(str::to_string))),
                None => {
                    self.record_all(&all, Verdict::NotRun, "not run: a second login got no refresh token");
                    return;
                }
            },
            Err(e) => {
                self.record_all(&all, Verdict::NotRun, &format!("not run: {e}"));
                return;
            }
        };
        let (outcome, ex) = self.refresh("refresh", &rt).await;
        let refreshed = outcome.and_then(|r| Self::parse_tokens(&r, ex.clone()));
        let new_rt = match &refreshed {
            Ok(t) => {
                let (v, d) = match &t.id_token {
                    Some(id) if id.str_claim("sub").map(str::to_string) != sub => {
                        (Verdict::Fail, "the refreshed ID token is for another subject".to_string())
                    }
                    Some(id) if id.str_claim("iss") != Some(self.options.issuer.as_str()) => {
                        (Verdict::Fail, "the refreshed ID token has another issuer".to_string())
                    }
                    Some(_) => (Verdict::Pass, "new tokens; the ID token has the same sub and iss".to_string()),
                    None => (Verdict::Pass, "new access token (no ID token: allowed by Core §12.2)".to_string()),
                };
                self.record(&ids::SESSION_REFRESH, v, d, vec![ex.clone()]);
                t.refresh_token.clone()
            }
            Err(e) => {
                self.record(&ids::SESSION_REFRESH, Verdict::Fail, e.clone(), vec![ex.clone()]);
                None
            }
        };
        // Rotation: the used refresh token again.
        if refreshed.is_ok() {
            match &new_rt {
                Some(n) if *n != rt => {
                    let (outcome, ex) = self.refresh("reuse of the rotated refresh token", &rt).await;
                    let (v, d) = refused(&outcome, "the already-rotated refresh token");
                    self.record(&ids::SESSION_REFRESH_ROTATION, v, d, vec![ex]);
                }
                _ => self.record(
                    &ids::SESSION_REFRESH_ROTATION,
                    Verdict::Fail,
                    "refresh tokens are not rotated",
                    Vec::new(),
                ),
            }
        } else {
            self.record(&ids::SESSION_REFRESH_ROTATION, Verdict::NotRun, "not run: refresh failed", Vec::new());
        }
        if refreshed.is_err() {
            let detail = "not run: refresh does not work, so a refusal after revocation would prove nothing";
            self.record_all(&[ids::SESSION_REVOCATION], Verdict::NotRun, detail);
            self.record_all(&[ids::SESSION_REVOCATION_ACCESS], Verdict::NotRun, detail);
            return;
        }
        // Revocation on a login of its own (rotation reuse may have ended the grant).
        let Some(endpoint) = self.meta().url("revocation_endpoint") else {
            self.record_all(
                &[ids::SESSION_REVOCATION, ids::SESSION_REVOCATION_ACCESS],
                Verdict::Skipped,
                "no revocation_endpoint advertised",
            );
            return;
        };
        self.offline = true;
        let revocable = self.login_and_redeem(&[]).await;
        self.offline = false;
        match revocable {
            Ok((_, tokens)) => {
                match &tokens.refresh_token {
                    Some(rt) => {
                        let (revoke, ex1) = self.revoke(&endpoint, rt, "refresh_token").await;
                        let (outcome, ex2) = self.refresh("refresh after revocation", rt).await;
                        let (v, d) = match revoke {
                            Ok(r) if r.status == 200 => refused(&outcome, "the revoked refresh token"),
                            Ok(r) => (Verdict::Fail, format!("the revocation endpoint answered {}", r.status)),
                            Err(e) => (Verdict::Fail, format!("revocation: {e}")),
                        };
                        self.record(&ids::SESSION_REVOCATION, v, d, vec![tokens.exchange.clone(), ex1, ex2]);
                    }
                    None => self.record(
                        &ids::SESSION_REVOCATION,
                        Verdict::NotRun,
                        "not run: this login got no refresh token",
                        Vec::new(),
                    ),
                }
                match (&tokens.access_token, self.meta().url("userinfo_endpoint")) {
                    (Some(at), Some(userinfo)) => {
                        let (_, ex1) = self.revoke(&endpoint, at, "access_token").await;
                        let (outcome, ex2) = self
                            .send(
                                "userinfo after revocation",
                                Fetch::get(userinfo).header("authorization", format!("Bearer {at}")),
                            )
                            .await;
                        let (v, d) = match outcome {
                            Ok(r) if r.status == 200 => {
                                (Verdict::Fail, "userinfo still answers 200 for the revoked access token".to_string())
                            }
                            Ok(r) => (Verdict::Pass, format!("userinfo answered {}", r.status)),
                            Err(e) => (Verdict::Fail, format!("userinfo: {e}")),
                        };
                        self.record(&ids::SESSION_REVOCATION_ACCESS, v, d, vec![ex1, ex2]);
                    }
                    _ => self.record(
                        &ids::SESSION_REVOCATION_ACCESS,
                        Verdict::Skipped,
                        "no access token or no userinfo endpoint",
                        Vec::new(),
                    ),
                }
            }
            Err(e) => {
                let detail = format!("not run: {e}");
                self.record_all(&[ids::SESSION_REVOCATION, ids::SESSION_REVOCATION_ACCESS], Verdict::NotRun, &detail);
            }
        }
    }

    async fn refresh(&self, purpose: &str, refresh_token: &str) -> (Result<HttpResponse, String>, Exchange) {
        let fields = vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), refresh_token.to_string()),
        ];
        self.token_request(purpose, fields).await
    }

    async fn revoke(&self, endpoint: &Url, token: &str, hint: &str) -> (Result<HttpResponse, String>, Exchange) {
        let mut fields =
            vec![("token".to_string(), token.to_string()), ("token_type_hint".to_string(), hint.to_string())];
        let auth = self.client_auth(Fetch::get(endpoint.clone()), &mut fields);
        let mut fetch = Fetch::post_form(endpoint.clone(), &fields);
        fetch.headers = auth.headers;
        self.send(&format!("revocation of the {hint}"), fetch).await
    }

    async fn logout_check(&mut self, main: &MainLogin) {
        let Some(mut end) = self.meta().url("end_session_endpoint") else {
            self.record(&ids::SESSION_LOGOUT, Verdict::Skipped, "no end_session_endpoint advertised", Vec::new());
            return;
        };
        let hint = self.latest_id_token.clone().unwrap_or_else(|| main.id_token.raw.clone());
        end.query_pairs_mut().append_pair("id_token_hint", &hint).append_pair("client_id", &self.options.client_id);
        let mut evidence = vec![Exchange::note("RP-initiated logout", end.as_str())];
        if let Err(e) = self.driver.logout(&end).await {
            let verdict = if matches!(e, DriverError::Unsupported { .. }) { Verdict::NotRun } else { Verdict::Fail };
            self.record(&ids::SESSION_LOGOUT, verdict, format!("logout: {e}"), evidence);
            return;
        }
        match self.login(&[("prompt", "none".into()), ("id_token_hint", hint)]).await {
            Ok(login) => {
                evidence.extend(login.evidence);
                let (v, d) = match (&login.callback.error, &login.callback.code) {
                    (Some(e), _) if e == "login_required" || e == "interaction_required" => {
                        (Verdict::Pass, format!("prompt=none after logout: `{e}`"))
                    }
                    (Some(e), _) => {
                        (Verdict::Warning, format!("prompt=none after logout: error `{e}` (expected login_required)"))
                    }
                    (None, Some(_)) => (
                        Verdict::Fail,
                        "prompt=none after logout still issued a code: the provider session survived the logout".into(),
                    ),
                    (None, None) => (Verdict::Fail, "prompt=none after logout: neither code nor error".into()),
                };
                self.record(&ids::SESSION_LOGOUT, v, d, evidence);
            }
            Err(e) => {
                self.record(&ids::SESSION_LOGOUT, Verdict::Fail, format!("prompt=none after logout: {e}"), evidence)
            }
        }
    }

    // ---- MFA: acr_values ------------------------------------------------

    async fn acr_check(&mut self) {
        let acr = match (&self.options.acr_values, self.meta().list("acr_values_supported").first()) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => {
                self.record(
                    &ids::MFA_ACR_VALUES,
                    Verdict::Skipped,
                    "no acr_values_supported advertised and none given (--acr-values)",
                    Vec::new(),
                );
                return;
            }
        };
        match self.login_and_redeem(&[("acr_values", acr.clone())]).await {
            Ok((login, tokens)) => {
                let mut ev = login.evidence;
                ev.push(tokens.exchange.clone());
                let got = tokens.id_token.as_ref().and_then(|t| t.str_claim("acr").map(str::to_string));
                let requested: Vec<&str> = acr.split(' ').collect();
                let (v, d) = match got {
                    Some(g) if requested.contains(&g.as_str()) => {
                        (Verdict::Pass, format!("asked {acr:?}, got acr {g:?}"))
                    }
                    Some(g) => (Verdict::Fail, format!("asked {acr:?}, got acr {g:?}")),
                    None => (Verdict::Fail, format!("asked {acr:?}, the ID token has no acr")),
                };
                self.record(&ids::MFA_ACR_VALUES, v, d, ev);
            }
            Err(e) => self.record(&ids::MFA_ACR_VALUES, Verdict::Fail, format!("acr_values={acr}: {e}"), Vec::new()),
        }
    }

    // ---- key rotation and code reuse ----------------------------------------

    async fn rotation_check(&mut self, main: &MainLogin) {
        // Code reuse goes last: a provider may rightly revoke the whole grant.
        let redirect = self.options.redirect_uri.clone();
        let (outcome, ex) =
            self.redeem("second redemption of the code", &main.code, &main.login.request.verifier, &redirect).await;
        let (v, d) = refused(&outcome, "the code a second time");
        self.record(&ids::CODE_REUSE, v, d, vec![main.tokens.exchange.clone(), ex]);

        let Some(command) = self.options.rotate_command.clone() else {
            self.record(
                &ids::KEYS_ROTATION,
                Verdict::Skipped,
                "rotation cannot be triggered from outside the provider (give --rotate-command)",
                Vec::new(),
            );
            return;
        };
        let old_kid = main.id_token.kid().map(str::to_string);
        if let Err(e) = super::driver::run_hook(&command).await {
            self.record(&ids::KEYS_ROTATION, Verdict::NotRun, format!("the rotate command: {e}"), Vec::new());
            return;
        }
        let login = self.login_and_redeem(&[]).await;
        let (jwks, ex) = self.fetch_jwks("JWKS refetch after rotation").await;
        let (v, d, mut ev) = match (login, jwks) {
            (Ok((l, t)), Ok((set, _, _))) => {
                let mut ev = l.evidence;
                ev.push(t.exchange.clone());
                match t.id_token {
                    Some(id) => {
                        let new_kid = id.kid().map(str::to_string);
                        let (sig, sig_detail) = token::check_signature(&id, &set);
                        if new_kid == old_kid {
                            (
                                Verdict::Fail,
                                format!(
                                    "tokens are still signed with `{}` after the rotation",
                                    old_kid.unwrap_or_default()
                                ),
                                ev,
                            )
                        } else if sig != Verdict::Pass {
                            (
                                Verdict::Fail,
                                format!("the new token does not verify after one refetch: {sig_detail}"),
                                ev,
                            )
                        } else {
                            (
                                Verdict::Pass,
                                format!("new kid {new_kid:?} (was {old_kid:?}) verified after one refetch"),
                                ev,
                            )
                        }
                    }
                    None => (Verdict::Fail, "no ID token after rotation".into(), ev),
                }
            }
            (Err(e), _) => (Verdict::Fail, format!("login after rotation: {e}"), Vec::new()),
            (_, Err(e)) => (Verdict::Fail, format!("JWKS after rotation: {e}"), Vec::new()),
        };
        ev.push(ex);
        self.record(&ids::KEYS_ROTATION, v, d, ev);
    }
}

/// The main login, kept for the checks that build on it.
struct MainLogin {
    login: Login,
    tokens: Tokens,
    id_token: DecodedToken,
    code: String,
}

/// A request the provider must refuse: any 4xx (or an OAuth error body) passes.
fn refused(outcome: &Result<HttpResponse, String>, what: &str) -> (Verdict, String) {
    match outcome {
        Ok(r) if r.status == 200 => (Verdict::Fail, format!("{what} was accepted (200)")),
        Ok(r) if (400..500).contains(&r.status) => {
            let error = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|j| j.get("error").and_then(Value::as_str).map(str::to_string));
            (Verdict::Pass, format!("{what} refused: {} {}", r.status, error.unwrap_or_default()))
        }
        Ok(r) => (Verdict::Fail, format!("{what}: unexpected status {}", r.status)),
        Err(e) => (Verdict::Fail, format!("{what}: no answer ({e})")),
    }
}

/// A redirect URI that is certainly not registered: same origin, another path.
fn other_redirect(registered: &Url) -> Url {
    let mut other = registered.clone();
    let path = format!("{}/lockstep-unregistered", registered.path().trim_end_matches('/'));
    other.set_path(&path);
    other.set_query(None);
    other
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    t.replace('\n', " ")
}
