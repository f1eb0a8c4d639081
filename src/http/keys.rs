//! A peer's published signing keys (a JWKS URL): the one key cache every
//! verifier of the lab uses (the gateway for the IdP's ID tokens and the MFA
//! service's evidence, origins and the MFA service for the gateway's tokens).
//!
//! * **TTL.** A fetched key set is used until its TTL ends: the response's
//!   `Cache-Control: max-age`, bounded by the policy's `max_ttl` (the bound
//!   also applies when the header is absent). Past it the set is fetched
//!   again before any token is verified, so a key the peer removed stops
//!   being accepted within one TTL. If that fetch fails the stale set is
//!   dropped: the cache fails closed.
//! * **Unknown `kid`.** A token naming a key the cached set lacks triggers a
//!   refetch (the peer may have rotated), at most once per `min_refetch`
//!   since the last fetch of any kind: a flood of unknown key ids costs at
//!   most one fetch per interval.
//! * **Verified tokens.** A token whose signature verified under the cached
//!   set is remembered with its claims (at most [`VERIFIED_TOKENS`], the
//!   oldest forgotten first), keyed by its exact bytes, as Envoy's JWT cache
//!   does: seen again (the gateway reuses an app token for up to a second),
//!   it skips the signature check but never the claims checks, which run
//!   against the clock at every use.
//! * **Time of the check.** The time claims (`exp`, `nbf`, `iat`) are
//!   checked against the cache's clock read at the instant they are
//!   checked: after any key fetch, never at the time the token arrived, so
//!   a slow key endpoint neither stretches a token's life nor makes a fresh
//!   token look issued in the future. Every fetch, failed or not, forgets
//!   them all, so a key the peer removed stops counting exactly when it
//!   would without the memo. Signatures are checked outside the cache's
//!   lock, so verifiers on other threads do not queue behind one another.
//! * **Trace.** A cache given a recorder ([`RemoteKeys::traced`]) records
//!   each fetch with its reason (`first_use`, `ttl_expired`, `unknown_kid`),
//!   each rejected token with its reason, and each accepted token's key id.
//!
//! All time comes from the injected clock.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use jsonwebtoken::jwk::JwkSet;
use serde::de::DeserializeOwned;
use url::Url;

use super::client::{Fetch, HttpClient};
use crate::jose::{Expect, TokenError, check_claims, decode_header, verify, verify_signature};
use crate::net::{SharedClock, UnixMillis};
use crate::trace::{EventBody, Recorder};

/// Default bound on how long a fetched key set is trusted.
pub const DEFAULT_JWKS_MAX_TTL: Duration = Duration::from_secs(300);

/// Minimum time between two fetches triggered by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How many verified tokens a key cache remembers.
pub const VERIFIED_TOKENS: usize = 1024;

/// How long keys are cached and how often unknown key ids may refetch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// Upper bound on a key set's TTL (and the TTL without `max-age`).
    pub max_ttl: Duration,
    /// Minimum time since the last fetch before an unknown `kid` refetches.
    pub min_refetch: Duration,
    /// Broken on purpose: a fetched set never expires (the JWKS cache
    /// without a TTL that keeps trusting a removed key).
    pub danger_no_ttl: bool,
}

impl Default for KeyCachePolicy {
    fn default() -> Self {
        KeyCachePolicy { max_ttl: DEFAULT_JWKS_MAX_TTL, min_refetch: JWKS_REFETCH_INTERVAL, danger_no_ttl: false }
    }
}

/// Why the key set was fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchReason {
    /// Nothing was cached.
    FirstUse,
    /// The cached set's TTL ended.
    TtlExpired,
    /// A token named a key id the cached set lacks.
    UnknownKid,
}

impl FetchReason {
    /// The reason as recorded in the trace.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchReason::FirstUse => "first_use",
            FetchReason::TtlExpired => "ttl_expired",
            FetchReason::UnknownKid => "unknown_kid",
        }
    }
}

/// Why a token could not be verified against the keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The key set could not be fetched.
    #[error("keys unavailable: {0}")]
    Unavailable(String),
    /// The token failed verification.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token names an unknown key and a refetch is not yet allowed.
    #[error("no key `{0}` in the key set (refetch rate-limited)")]
    UnknownKeyRateLimited(String),
}

#[derive(Debug, Default)]
struct CacheState {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<UnixMillis>,
    expires: Option<UnixMillis>,
    /// Counts fetches: a signature checked under an older set is not remembered.
    generation: u64,
    /// Tokens whose signature verified under `keys`, with their claims.
    verified: IndexMap<String, serde_json::Value>,
}

impl CacheState {
    fn remember(&mut self, generation: u64, token: &str, claims: &serde_json::Value) {
        if generation != self.generation {
            return;
        }
        if self.verified.len() >= VERIFIED_TOKENS {
            self.verified.shift_remove_index(0);
        }
        self.verified.insert(token.to_string(), claims.clone());
    }
}

/// The keys published at one URL.
pub struct RemoteKeys {
    url: String,
    clock: SharedClock,
    policy: KeyCachePolicy,
    recorder: Option<Recorder>,
    state: tokio::sync::Mutex<CacheState>,
}

/// The `max-age` of a `Cache-Control` header value, if any.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .map(str::trim)
        .find_map(|d| {
            let (name, value) = d.split_once('=')?;
            name.trim().eq_ignore_ascii_case("max-age").then(|| value.trim().trim_matches('"').parse().ok())?
        })
        .map(Duration::from_secs)
}

impl RemoteKeys {
    /// Keys to be fetched from `url` (a bad URL fails each verification),
    /// with the default policy.
    pub fn new(url: String, clock: SharedClock) -> Self {
        RemoteKeys::with_policy(url, clock, KeyCachePolicy::default())
    }

    /// Keys to be fetched from `url` under `policy`.
    pub fn with_policy(url: String, clock: SharedClock, policy: KeyCachePolicy) -> Self {
        RemoteKeys { url, clock, policy, recorder: None, state: tokio::sync::Mutex::new(CacheState::default()) }
    }

    /// Records fetches, rejections and acceptances with `recorder`.
    pub fn traced(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn record(&self, body: impl FnOnce() -> EventBody) {
        if let Some(r) = &self.recorder {
            r.record(body());
        }
    }

    /// Fetches the set into `state`; on failure the cache is emptied.
    async fn fetch(
        &self,
        http: &HttpClient,
        state: &mut CacheState,
        reason: FetchReason,
    ) -> Result<Arc<JwkSet>, KeysError> {
        let result = self.fetch_raw(http).await;
        let now = self.clock.now();
        state.fetched = Some(now);
        state.generation += 1;
        state.verified.clear();
        match result {
            Ok((keys, ttl)) => {
                let kids = keys.keys.iter().map(|k| k.common.key_id.clone().unwrap_or_default()).collect();
                self.record(|| EventBody::JwksFetched {
                    url: self.url.clone(),
                    reason: reason.as_str().into(),
                    result: "ok".into(),
                    kids,
                    ttl_ms: crate::net::millis(ttl),
                });
                let keys = Arc::new(keys);
                state.keys = Some(keys.clone());
                state.expires = Some(now.plus(ttl));
                Ok(keys)
            }
            Err(e) => {
                self.record(|| EventBody::JwksFetched {
                    url: self.url.clone(),
                    reason: reason.as_str().into(),
                    result: e.clone(),
                    kids: Vec::new(),
                    ttl_ms: 0,
                });
                // Fail closed: a stale set is not trusted past its TTL.
                state.keys = None;
                state.expires = None;
                Err(KeysError::Unavailable(e))
            }
        }
    }

    async fn fetch_raw(&self, http: &HttpClient) -> Result<(JwkSet, Duration), String> {
        let url = Url::parse(&self.url).map_err(|e| format!("{}: {e}", self.url))?;
        let response = http.send(Fetch::get(url)).await.map_err(|e| e.to_string())?;
        if response.status != 200 {
            return Err(format!("{} answered {}", self.url, response.status));
        }
        let keys: JwkSet = serde_json::from_slice(&response.body).map_err(|e| format!("{}: {e}", self.url))?;
        let ttl = response
            .header("cache-control")
            .and_then(max_age)
            .map_or(self.policy.max_ttl, |a| a.min(self.policy.max_ttl));
        Ok((keys, ttl))
    }

    /// The current key set: fetched on first use or past its TTL.
    async fn current(&self, http: &HttpClient, state: &mut CacheState) -> Result<Arc<JwkSet>, KeysError> {
        let now = self.clock.now();
        match (&state.keys, state.expires) {
            (Some(keys), Some(expires)) if now < expires || self.policy.danger_no_ttl => Ok(keys.clone()),
            (Some(_), _) => self.fetch(http, state, FetchReason::TtlExpired).await,
            (None, _) if state.fetched.is_none() => self.fetch(http, state, FetchReason::FirstUse).await,
            // Emptied by a failed fetch: try again (an outage is not a first use).
            (None, _) => self.fetch(http, state, FetchReason::TtlExpired).await,
        }
    }

    /// Verifies `token` against the keys, refetching them (at a bounded
    /// rate) if it names an unknown key id. Its time claims are checked at
    /// the instant of the check (this cache's clock, read after any fetch).
    pub async fn verify<T: DeserializeOwned>(
        &self,
        http: &HttpClient,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<T, KeysError> {
        let result = self.verify_inner(http, token, expect).await;
        let (kid, alg) = match decode_header(token) {
            Ok(h) => (h.kid, format!("{:?}", h.alg)),
            Err(TokenError::AlgorithmNotAccepted(a)) => (None, a),
            Err(_) => (None, "?".into()),
        };
        match &result {
            Ok(_) => self.record(|| EventBody::TokenAccepted { keys: self.url.clone(), kid, alg }),
            Err(e) => {
                self.record(|| EventBody::TokenRejected { keys: self.url.clone(), kid, alg, reason: e.to_string() })
            }
        }
        result
    }

    async fn verify_inner<T: DeserializeOwned>(
        &self,
        http: &HttpClient,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<T, KeysError> {
        // Refuse what no key could make acceptable before touching the cache.
        decode_header(token)?;
        let mut state = self.state.lock().await;
        let keys = self.current(http, &mut state).await?;
        if let Some(claims) = state.verified.get(token) {
            return Ok(check_claims(claims.clone(), expect, self.clock.now())?);
        }
        let generation = state.generation;
        drop(state);
        match verify_signature(token, &keys) {
            Ok(claims) => {
                self.state.lock().await.remember(generation, token, &claims);
                Ok(check_claims(claims, expect, self.clock.now())?)
            }
            Err(TokenError::UnknownKey(kid)) => {
                let mut state = self.state.lock().await;
                if state.generation != generation {
                    // Another verifier fetched meanwhile: the new set answers.
                    let keys = self.current(http, &mut state).await?;
                    return Ok(verify(token, &keys, expect, self.clock.now())?);
                }
                let now = self.clock.now();
                let recently = state.fetched.is_some_and(|t| now.since(t) < self.policy.min_refetch);
                if recently {
                    return Err(KeysError::UnknownKeyRateLimited(kid));
                }
                let keys = self.fetch(http, &mut state, FetchReason::UnknownKid).await?;
                Ok(verify(token, &keys, expect, self.clock.now())?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::jose::{SigningKey, jwk_set};
    use crate::net::Clock;
    use crate::net::real::TokioNet;
    use crate::net::{Directory, Network};
    use crate::rng::SeededRng;
    use crate::trace::Trace;

    const T0: u64 = 1_772_614_800_000;

    struct ManualClock(AtomicU64);
    impl Clock for ManualClock {
        fn now(&self) -> UnixMillis {
            UnixMillis(self.0.load(Ordering::SeqCst))
        }
    }

    /// What the test server publishes, and how often it was asked.
    struct Published {
        keys: Mutex<(Vec<SigningKey>, Option<String>, u16)>,
        fetches: AtomicUsize,
        /// The verifier's clock and how far each fetch moves it (a slow key endpoint).
        clock: Arc<ManualClock>,
        fetch_takes_ms: AtomicU64,
    }

    async fn jwks(State(p): State<Arc<Published>>) -> axum::response::Response {
        p.fetches.fetch_add(1, Ordering::SeqCst);
        p.clock.0.fetch_add(p.fetch_takes_ms.load(Ordering::SeqCst), Ordering::SeqCst);
        let (keys, cache_control, status) = p.keys.lock().unwrap().clone();
        let set = jwk_set(&keys.iter().collect::<Vec<_>>());
        let mut response = axum::Json(set).into_response();
        *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
        if let Some(cc) = cache_control {
            response.headers_mut().insert("cache-control", cc.parse().unwrap());
        }
        response
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Claims {
        iss: String,
        aud: String,
        exp: u64,
        iat: u64,
    }

    struct Fixture {
        keys: RemoteKeys,
        http: HttpClient,
        clock: Arc<ManualClock>,
        published: Arc<Published>,
        recorder: Recorder,
    }

    impl Fixture {
        async fn new(published: Vec<SigningKey>, cache_control: Option<&str>) -> Fixture {
            let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
            let published = Arc::new(Published {
                keys: Mutex::new((published, cache_control.map(str::to_string), 200)),
                fetches: AtomicUsize::new(0),
                clock: clock.clone(),
                fetch_takes_ms: AtomicU64::new(0),
            });
            let listener = TokioNet.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = Router::new().route("/jwks", get(jwks)).with_state(published.clone());
            tokio::spawn(crate::http::serve(listener, router));
            let shared: SharedClock = clock.clone();
            let recorder = Recorder::new(UnixMillis(T0), shared.clone());
            let keys = RemoteKeys::new(format!("http://{addr}/jwks"), shared).traced(recorder.clone());
            let http = HttpClient::new(Arc::new(TokioNet), Directory::default());
            Fixture { keys, http, clock, published, recorder }
        }

        fn advance(&self, d: Duration) {
            self.clock.0.fetch_add(crate::net::millis(d), Ordering::SeqCst);
        }

        fn publish(&self, keys: Vec<SigningKey>) {
            self.published.keys.lock().unwrap().0 = keys;
        }

        fn fetches(&self) -> usize {
            self.published.fetches.load(Ordering::SeqCst)
        }

        fn token(&self, key: &SigningKey) -> String {
            let now = self.clock.now().as_secs();
            key.sign(&Claims { iss: "i".into(), aud: "a".into(), exp: now + 3600, iat: now }).unwrap()
        }

        async fn verify(&self, token: &str) -> Result<Claims, KeysError> {
            let expect = Expect { issuer: "i", audience: "a", leeway_s: 0, danger_ignore_expiry: false };
            self.keys.verify(&self.http, token, &expect).await
        }

        fn fetch_reasons(&self) -> Vec<String> {
            let trace: Trace = self.recorder.snapshot();
            trace
                .events
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::JwksFetched { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn key(label: &str) -> SigningKey {
        SigningKey::es256(&SeededRng::from_seed(7).child(label)).unwrap()
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("Max-Age = 5 ,no-transform"), Some(Duration::from_secs(5)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[tokio::test]
    async fn keys_are_cached_for_their_ttl_and_the_bound_caps_max_age() {
        let a = key("a");
        // The peer asks for a day; the policy caps it at five minutes.
        let f = Fixture::new(vec![a.clone()], Some("max-age=86400")).await;
        f.verify(&f.token(&a)).await.unwrap();
        f.advance(DEFAULT_JWKS_MAX_TTL - Duration::from_secs(1));
        f.verify(&f.token(&a)).await.unwrap();
        assert_eq!(f.fetches(), 1, "within the TTL the cached set is used");
        f.advance(Duration::from_secs(1));
        f.verify(&f.token(&a)).await.unwrap();
        assert_eq!(f.fetches(), 2);
        assert_eq!(f.fetch_reasons(), ["first_use", "ttl_expired"]);
    }

    #[tokio::test]
    async fn a_removed_key_is_rejected_once_its_ttl_ends() {
        let (a, b) = (key("a"), key("b"));
        let f = Fixture::new(vec![a.clone(), b.clone()], Some("max-age=60")).await;
        f.verify(&f.token(&a)).await.unwrap();
        f.publish(vec![b.clone()]);
        f.advance(Duration::from_secs(59));
        assert!(f.verify(&f.token(&a)).await.is_ok(), "still cached: the TTL bounds the exposure");
        f.advance(Duration::from_secs(1));
        let err = f.verify(&f.token(&a)).await.map(|_| ()).unwrap_err();
        assert!(
            matches!(err, KeysError::Token(TokenError::UnknownKey(_)) | KeysError::UnknownKeyRateLimited(_)),
            "{err}"
        );
        assert!(f.verify(&f.token(&b)).await.is_ok());
        assert_eq!(f.fetches(), 2, "one TTL refetch, no refetch for the removed kid right after it");
        let rejected =
            f.recorder.snapshot().events.iter().filter(|e| matches!(e.body, EventBody::TokenRejected { .. })).count();
        assert_eq!(rejected, 1);
    }

    #[tokio::test]
    async fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
        let (a, b) = (key("a"), key("b"));
        let f = Fixture::new(vec![a.clone()], None).await;
        f.verify(&f.token(&a)).await.unwrap();
        f.publish(vec![a.clone(), b.clone()]);
        f.advance(JWKS_REFETCH_INTERVAL);
        f.verify(&f.token(&b)).await.unwrap();
        f.verify(&f.token(&b)).await.unwrap();
        assert_eq!(f.fetch_reasons(), ["first_use", "unknown_kid"]);
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_refetches_at_a_bounded_rate() {
        let a = key("a");
        let f = Fixture::new(vec![a.clone()], None).await;
        f.verify(&f.token(&a)).await.unwrap();
        let rogue = SeededRng::from_seed(99);
        // 3 rounds of 40 tokens, each round 5 s apart: 15 s in all.
        for round in 0..3 {
            for i in 0..40 {
                let k = key(&format!("rogue-{round}-{i}-{}", rogue.next_u64()));
                assert!(f.verify(&f.token(&k)).await.is_err());
            }
            f.advance(Duration::from_secs(5));
        }
        // 15 s / 10 s interval: at most 2 refetches (t = 10 s and never again before 20 s).
        let reasons = f.fetch_reasons();
        assert_eq!(reasons.iter().filter(|r| *r == "unknown_kid").count(), 1, "{reasons:?}");
        assert_eq!(f.fetches(), 2);
        assert!(f.verify(&f.token(&a)).await.is_ok(), "the real key still works");
    }

    #[tokio::test]
    async fn a_remembered_token_still_has_its_claims_checked_and_dies_with_its_key() {
        let (a, b) = (key("a"), key("b"));
        let f = Fixture::new(vec![a.clone(), b.clone()], Some("max-age=60")).await;
        let now = f.clock.now().as_secs();
        let short = a.sign(&Claims { iss: "i".into(), aud: "a".into(), exp: now + 10, iat: now }).unwrap();
        let long = f.token(&a);
        f.verify(&short).await.unwrap();
        f.verify(&long).await.unwrap();
        f.verify(&long).await.unwrap();
        assert_eq!(f.keys.state.lock().await.verified.len(), 2, "each token's signature is checked once");
        f.advance(Duration::from_secs(10));
        let err = f.verify(&short).await.map(|_| ()).unwrap_err();
        assert!(matches!(err, KeysError::Token(TokenError::Expired { .. })), "remembered, yet expired: {err}");
        // The peer drops key a; past the TTL the refetch forgets every remembered token.
        f.publish(vec![b.clone()]);
        f.advance(Duration::from_secs(50));
        assert!(f.verify(&long).await.is_err(), "a remembered token outlives its key");
        assert!(f.keys.state.lock().await.verified.is_empty());
    }

    #[tokio::test]
    async fn time_claims_are_checked_after_a_slow_key_fetch() {
        let a = key("a");
        let f = Fixture::new(vec![a.clone()], None).await;
        // The key endpoint takes 20 s to answer the first fetch.
        f.published.fetch_takes_ms.store(20_000, Ordering::SeqCst);
        let now = f.clock.now().as_secs();
        let short = a.sign(&Claims { iss: "i".into(), aud: "a".into(), exp: now + 10, iat: now }).unwrap();
        let err = f.verify(&short).await.map(|_| ()).unwrap_err();
        assert!(
            matches!(err, KeysError::Token(TokenError::Expired { .. })),
            "expired during the fetch, checked after it: {err}"
        );
        // A token issued while the fetch ran is not "issued in the future".
        f.advance(Duration::from_secs(300));
        let then = f.clock.now().as_secs();
        let fresh = a.sign(&Claims { iss: "i".into(), aud: "a".into(), exp: then + 100, iat: then + 20 }).unwrap();
        f.verify(&fresh).await.unwrap();
        assert_eq!(f.fetch_reasons(), ["first_use", "ttl_expired"]);
    }

    #[tokio::test]
    async fn the_verified_token_memo_is_bounded_oldest_first() {
        let a = key("a");
        let f = Fixture::new(vec![a.clone()], None).await;
        let now = f.clock.now().as_secs();
        let tokens: Vec<String> = (0..=VERIFIED_TOKENS as u64)
            .map(|i| a.sign(&Claims { iss: "i".into(), aud: "a".into(), exp: now + 100 + i, iat: now }).unwrap())
            .collect();
        for t in &tokens {
            f.verify(t).await.unwrap();
        }
        let state = f.keys.state.lock().await;
        assert_eq!(state.verified.len(), VERIFIED_TOKENS);
        assert!(!state.verified.contains_key(&tokens[0]) && state.verified.contains_key(&tokens[VERIFIED_TOKENS]));
    }

    #[tokio::test]
    async fn a_failed_refetch_past_the_ttl_fails_closed() {
        let a = key("a");
        let f = Fixture::new(vec![a.clone()], Some("max-age=30")).await;
        f.verify(&f.token(&a)).await.unwrap();
        f.published.keys.lock().unwrap().2 = 503;
        f.advance(Duration::from_secs(30));
        assert!(matches!(f.verify(&f.token(&a)).await, Err(KeysError::Unavailable(_))));
        f.published.keys.lock().unwrap().2 = 200;
        f.verify(&f.token(&a)).await.unwrap();
        assert_eq!(f.fetch_reasons(), ["first_use", "ttl_expired", "ttl_expired"]);
    }

    #[tokio::test]
    async fn forged_algorithms_never_reach_the_network() {
        let a = key("a");
        let f = Fixture::new(vec![a.clone()], None).await;
        let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJpIn0.";
        assert!(matches!(f.verify(none).await, Err(KeysError::Token(TokenError::AlgorithmNotAccepted(_)))));
        assert_eq!(f.fetches(), 0);
    }
}
