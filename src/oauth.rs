//! Shared OAuth 2.0 / OpenID Connect definitions (RFC 6749, RFC 7636,
//! OpenID Connect Discovery 1.0) used by the lab's provider and relying party.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `BASE64URL(SHA256(verifier))`: the PKCE S256 transform (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The fields of a discovery document that a relying party uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// Issuer identifier; must equal the URL it was fetched from.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// JWKS URI.
    pub jwks_uri: String,
    /// Userinfo endpoint, if any.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// A token endpoint's successful response (the fields the lab uses).
#[derive(Clone, Debug, Deserialize)]
pub struct TokenResponse {
    /// The ID token.
    pub id_token: Option<String>,
    /// The access token.
    pub access_token: Option<String>,
    /// `Bearer`.
    pub token_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
