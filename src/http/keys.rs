//! A peer's published signing keys (a JWKS URL), fetched on first use and
//! refetched when a token names a key id the cached set lacks.

use jsonwebtoken::jwk::JwkSet;
use serde::de::DeserializeOwned;
use url::Url;

use super::client::{Fetch, HttpClient};
use crate::jose::{Expect, TokenError, verify};

/// The keys published at one URL.
pub struct RemoteKeys {
    url: String,
    cached: tokio::sync::Mutex<Option<JwkSet>>,
}

impl RemoteKeys {
    /// Keys to be fetched from `url` (a bad URL fails each verification).
    pub fn new(url: String) -> Self {
        RemoteKeys { url, cached: tokio::sync::Mutex::new(None) }
    }

    async fn keys(&self, http: &HttpClient, refresh: bool) -> Result<JwkSet, String> {
        let mut cached = self.cached.lock().await;
        if let Some(k) = cached.as_ref()
            && !refresh
        {
            return Ok(k.clone());
        }
        let url = Url::parse(&self.url).map_err(|e| format!("{}: {e}", self.url))?;
        let response = http.send(Fetch::get(url)).await.map_err(|e| e.to_string())?;
        if response.status != 200 {
            return Err(format!("{} answered {}", self.url, response.status));
        }
        let keys: JwkSet = serde_json::from_slice(&response.body).map_err(|e| format!("{}: {e}", self.url))?;
        *cached = Some(keys.clone());
        Ok(keys)
    }

    /// Verifies `token` against the keys, refetching them once if it names
    /// an unknown key id.
    pub async fn verify<T: DeserializeOwned>(
        &self,
        http: &HttpClient,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<T, String> {
        let keys = self.keys(http, false).await?;
        match verify::<T>(token, &keys, expect) {
            Err(TokenError::UnknownKey(_)) => {
                let keys = self.keys(http, true).await?;
                verify(token, &keys, expect).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }
}
