//! The gateway as an OpenID Connect relying party: discovery, the
//! provider's keys (the shared [`RemoteKeys`] cache: TTL, bounded refetch on
//! unknown keys, traced), the authorization code exchange with PKCE, and ID
//! token validation.

use std::sync::Arc;

use serde::Deserialize;
use url::Url;

pub use crate::http::keys::JWKS_REFETCH_INTERVAL;
use crate::http::keys::{KeyCachePolicy, KeysError};
use crate::http::{Fetch, HttpClient, RemoteKeys};
use crate::jose::{Expect, TokenError};
use crate::net::{SharedClock, UnixMillis};
use crate::oauth::{ProviderMetadata, TokenResponse, pkce_challenge};
use crate::trace::Recorder;

/// Why a sign-in failed at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The discovery document could not be fetched or is wrong.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The JWKS could not be fetched.
    #[error("jwks: {0}")]
    Jwks(String),
    /// The token endpoint refused or failed.
    #[error("token endpoint: {0}")]
    TokenEndpoint(String),
    /// The ID token failed validation.
    #[error("id token: {0}")]
    IdToken(#[from] TokenError),
    /// The ID token names a key that is not (yet) in the provider's set and
    /// a refetch is not allowed yet.
    #[error("id token: {0}")]
    KeyRateLimited(String),
    /// The `state` is unknown or expired.
    #[error("unknown or expired state")]
    UnknownState,
    /// The provider returned an error instead of a code.
    #[error("provider error: {0}")]
    Provider(String),
}

/// A sign-in in progress, keyed by its `state`.
#[derive(Clone, Debug)]
pub struct PendingLogin {
    /// The nonce sent.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// What to do after the sign-in.
    pub target: Target,
    /// When it started.
    pub created: UnixMillis,
}

/// Where a sign-in leads.
#[derive(Clone, Debug)]
pub enum Target {
    /// Back to an application URL.
    App {
        /// App name.
        app: String,
        /// The URL the user asked for.
        url: Url,
    },
    /// A device registration (the agent's sign-in window).
    Device {
        /// Device id.
        device: String,
    },
    /// A page of the gateway's own App Launcher.
    Launcher {
        /// The URL asked for.
        url: Url,
    },
}

/// The ID token claims the gateway uses.
#[derive(Clone, Debug, Deserialize)]
pub struct IdentityClaims {
    /// Subject.
    pub sub: String,
    /// Email, if given.
    #[serde(default)]
    pub email: Option<String>,
    /// Groups, if given.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Nonce echoed by the provider.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Authentication methods (RFC 8176), if given.
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the user authenticated at the provider (seconds), if given.
    #[serde(default)]
    pub auth_time: Option<u64>,
    /// Every other claim (vendor claims such as `roles`, `oid`, `tid`).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

impl IdentityClaims {
    /// The user's groups, read from the claim named `claim` (`groups`, or a
    /// vendor's `roles`); a claim that is not a list of strings gives none.
    pub fn groups_from(&self, claim: &str) -> Vec<String> {
        if claim == "groups" {
            return self.groups.clone();
        }
        match self.other.get(claim) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The relying party's cached view of its provider.
pub struct ProviderCache {
    metadata: Option<ProviderMetadata>,
    keys: Option<Arc<RemoteKeys>>,
    clock: SharedClock,
    policy: KeyCachePolicy,
    recorder: Recorder,
}

impl ProviderCache {
    /// An empty cache whose key cache will follow `policy` and record with `recorder`.
    pub fn new(clock: SharedClock, policy: KeyCachePolicy, recorder: Recorder) -> Self {
        ProviderCache { metadata: None, keys: None, clock, policy, recorder }
    }
}

impl From<KeysError> for LoginError {
    fn from(e: KeysError) -> Self {
        match e {
            KeysError::Unavailable(m) => LoginError::Jwks(m),
            KeysError::Token(t) => LoginError::IdToken(t),
            e @ KeysError::UnknownKeyRateLimited(_) => LoginError::KeyRateLimited(e.to_string()),
        }
    }
}

/// Settings of the relying party.
#[derive(Clone, Debug)]
pub struct RelyingParty {
    /// Expected issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Redirect URI registered at the provider.
    pub redirect_uri: String,
    /// Clock leeway in seconds.
    pub leeway_s: u64,
}

impl RelyingParty {
    /// Fetches (once) and checks the discovery document.
    pub async fn metadata(
        &self,
        http: &HttpClient,
        cache: &tokio::sync::Mutex<ProviderCache>,
    ) -> Result<ProviderMetadata, LoginError> {
        if let Some(m) = cache.lock().await.metadata.clone() {
            return Ok(m);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let url = Url::parse(&url).map_err(|e| LoginError::Discovery(e.to_string()))?;
        let response = http.send(Fetch::get(url)).await.map_err(|e| LoginError::Discovery(e.to_string()))?;
        if response.status != 200 {
            return Err(LoginError::Discovery(format!("status {}", response.status)));
        }
        let metadata: ProviderMetadata =
            serde_json::from_slice(&response.body).map_err(|e| LoginError::Discovery(e.to_string()))?;
        if metadata.issuer != self.issuer {
            return Err(LoginError::Discovery(format!(
                "issuer `{}` does not match the configured `{}`",
                metadata.issuer, self.issuer
            )));
        }
        cache.lock().await.metadata = Some(metadata.clone());
        Ok(metadata)
    }

    /// The authorization request URL for a new sign-in.
    pub fn authorization_url(
        &self,
        metadata: &ProviderMetadata,
        state: &str,
        pending: &PendingLogin,
    ) -> Result<Url, LoginError> {
        let mut url = Url::parse(&metadata.authorization_endpoint).map_err(|e| LoginError::Discovery(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pkce_challenge(&pending.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url)
    }

    /// Exchanges `code` and validates the ID token it yields. Its times are
    /// checked when it is verified, after the exchange and any key fetch
    /// (see [`RelyingParty::validate`]), not when the callback arrived.
    pub async fn complete(
        &self,
        http: &HttpClient,
        cache: &tokio::sync::Mutex<ProviderCache>,
        code: &str,
        pending: &PendingLogin,
    ) -> Result<IdentityClaims, LoginError> {
        let metadata = self.metadata(http, cache).await?;
        let url = Url::parse(&metadata.token_endpoint).map_err(|e| LoginError::Discovery(e.to_string()))?;
        let fields = [
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), self.redirect_uri.clone()),
            ("code_verifier".to_string(), pending.verifier.clone()),
        ];
        let basic = {
            use base64::Engine as _;
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&self.client_id),
                enc(&self.client_secret)
            ))
        };
        let response = http
            .send(Fetch::post_form(url, &fields).header("authorization", format!("Basic {basic}")))
            .await
            .map_err(|e| LoginError::TokenEndpoint(e.to_string()))?;
        if response.status != 200 {
            return Err(LoginError::TokenEndpoint(format!("status {}: {}", response.status, response.text())));
        }
        let tokens: TokenResponse =
            serde_json::from_slice(&response.body).map_err(|e| LoginError::TokenEndpoint(e.to_string()))?;
        let id_token =
            tokens.id_token.ok_or_else(|| LoginError::TokenEndpoint("no id_token in the response".into()))?;
        let claims = self.validate(http, cache, &id_token).await?;
        if claims.nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(LoginError::IdToken(TokenError::NonceMismatch));
        }
        Ok(claims)
    }

    /// Validates an ID token's signature (against the provider's keys) and
    /// registered claims; the caller checks the nonce. `exp`, `iat` and
    /// `nbf` are checked with the leeway against the clock read at the
    /// instant of the check, after the key cache fetched whatever it needed.
    pub async fn validate(
        &self,
        http: &HttpClient,
        cache: &tokio::sync::Mutex<ProviderCache>,
        id_token: &str,
    ) -> Result<IdentityClaims, LoginError> {
        let expect = Expect {
            issuer: &self.issuer,
            audience: &self.client_id,
            leeway_s: self.leeway_s,
            danger_ignore_expiry: false,
        };
        let keys = self.keys(http, cache).await?;
        Ok(keys.verify::<IdentityClaims>(http, id_token, &expect).await?)
    }

    /// The provider's key cache, made once its `jwks_uri` is known.
    async fn keys(
        &self,
        http: &HttpClient,
        cache: &tokio::sync::Mutex<ProviderCache>,
    ) -> Result<Arc<RemoteKeys>, LoginError> {
        if let Some(k) = cache.lock().await.keys.clone() {
            return Ok(k);
        }
        let metadata = self.metadata(http, cache).await?;
        Url::parse(&metadata.jwks_uri).map_err(|e| LoginError::Jwks(e.to_string()))?;
        let mut c = cache.lock().await;
        if let Some(k) = c.keys.clone() {
            return Ok(k);
        }
        let keys = Arc::new(
            RemoteKeys::with_policy(metadata.jwks_uri.clone(), c.clock.clone(), c.policy).traced(c.recorder.clone()),
        );
        c.keys = Some(keys.clone());
        Ok(keys)
    }
}
