//! Signing and verifying JWTs, through the `jsonwebtoken` crate.
//!
//! Time claims (`exp`, `nbf`, `iat`) are checked here against the injected
//! clock, never the system clock: `jsonwebtoken` has no clock hook, so its
//! own time validation is switched off. Signatures, algorithms and key
//! selection are the crate's.

use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::net::UnixMillis;
use crate::rng::SeededRng;

/// The RSA key of the identity provider (a published test fixture).
pub const IDP_RSA_PEM: &str = include_str!("../fixtures/keys/idp-rs256.pem");

/// Algorithms a verifier in the lab ever accepts: never `none` or HS*.
pub const ACCEPTED_ALGS: [Algorithm; 4] = [Algorithm::ES256, Algorithm::RS256, Algorithm::PS256, Algorithm::ES384];

/// Why a key could not be made or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key material was not usable.
    #[error("invalid key: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A private signing key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

impl SigningKey {
    /// A P-256 key drawn from `rng` (deterministic for a seed).
    pub fn es256(rng: &SeededRng) -> Result<SigningKey, KeyError> {
        let secret = loop {
            // A uniformly random 32-byte string is a valid scalar with
            // overwhelming probability; draw again in the rare other case.
            if let Ok(k) = p256::SecretKey::from_slice(&rng.bytes(32)) {
                break k;
            }
        };
        let der = secret.to_pkcs8_der().map_err(|e| KeyError::Invalid(e.to_string()))?;
        SigningKey::from_encoding_key(EncodingKey::from_ec_der(der.as_bytes()), Algorithm::ES256)
    }

    /// An RSA key from a PEM (PKCS#1 or PKCS#8).
    pub fn rs256_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| KeyError::Invalid(e.to_string()))?;
        SigningKey::from_encoding_key(key, Algorithm::RS256)
    }

    fn from_encoding_key(encoding: EncodingKey, alg: Algorithm) -> Result<SigningKey, KeyError> {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let thumbprint = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let kid: String = thumbprint.chars().take(16).collect();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(SigningKey { kid, alg, encoding, jwk })
    }

    /// The key id (a prefix of the RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` as a compact JWS with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign_with_kid(claims, &self.kid)
    }

    /// Signs `claims` with this key but names `kid` in the header (a forger
    /// claiming someone else's key, or an unknown one).
    pub fn sign_with_kid<T: Serialize>(&self, claims: &T, kid: &str) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// A secret key for tokens that the same party issues and verifies (the
/// gateway's session cookies and device tokens): HS256. Tokens of other
/// parties are never checked with it ([`verify`] refuses HS*), so there is
/// no algorithm confusion to exploit.
#[derive(Clone)]
pub struct MacKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// A 256-bit key drawn from `rng`.
    pub fn generate(rng: &SeededRng) -> MacKey {
        let secret = rng.bytes(32);
        MacKey { encoding: EncodingKey::from_secret(&secret), decoding: DecodingKey::from_secret(&secret) }
    }

    /// Signs `claims` (HS256).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Verifies a token this key signed, and its registered claims at `now`.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        expect: &Expect<'_>,
        now: UnixMillis,
    ) -> Result<T, TokenError> {
        let header = decode_header(token)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::AlgorithmNotAccepted(format!("{:?}", header.alg)));
        }
        check_claims(decode_signed(token, &self.decoding, header.alg)?, expect, now)
    }
}

/// A JWK set made of the public halves of `keys`.
pub fn jwk_set(keys: &[&SigningKey]) -> JwkSet {
    JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() }
}

/// Why a token was refused. Each variant names the check that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or its header or claims are not JSON of the right shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not on the allow-list (e.g. `none`, HS256).
    #[error("algorithm {0} is not accepted")]
    AlgorithmNotAccepted(String),
    /// No key with this `kid` (or no unambiguous key without one).
    #[error("no key `{0}` in the key set")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `iss` differs from the expected issuer.
    #[error("issuer `{got}` is not `{expected}`")]
    WrongIssuer {
        /// Expected issuer.
        expected: String,
        /// Issuer in the token.
        got: String,
    },
    /// `aud` does not contain the expected audience.
    #[error("audience does not contain `{0}`")]
    WrongAudience(String),
    /// `exp` is in the past (beyond the leeway).
    #[error("expired at {exp} (now {now}, leeway {leeway_s}s)")]
    Expired {
        /// `exp`, seconds.
        exp: u64,
        /// Now, seconds.
        now: u64,
        /// Leeway, seconds.
        leeway_s: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("not valid before {0}")]
    NotYetValid(u64),
    /// `iat` is in the future (beyond the leeway).
    #[error("issued in the future ({0})")]
    IssuedInFuture(u64),
    /// A required claim is missing.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// `nonce` differs from the one sent.
    #[error("nonce mismatch")]
    NonceMismatch,
}

/// What a verifier expects of a token. The time of the check is not part of
/// it: it is passed to each check, read from the injected clock at the
/// instant the claims are checked (a verifier that fetches keys first reads
/// it after the fetch, see [`crate::http::RemoteKeys`]).
#[derive(Clone, Debug)]
pub struct Expect<'a> {
    /// Exact issuer.
    pub issuer: &'a str,
    /// An audience the token must name.
    pub audience: &'a str,
    /// Clock leeway on `exp`, `nbf` and `iat`, seconds.
    pub leeway_s: u64,
    /// Skip the `exp` check (only for deliberately broken components).
    pub danger_ignore_expiry: bool,
}

/// The registered claims every verified token has.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RegisteredClaims {
    /// Issuer.
    pub iss: Option<String>,
    /// Audience: a string or a list.
    pub aud: Option<serde_json::Value>,
    /// Expiry, seconds.
    pub exp: Option<u64>,
    /// Not before, seconds.
    pub nbf: Option<u64>,
    /// Issued at, seconds.
    pub iat: Option<u64>,
}

/// Verifies a token's signature against `keys` and its registered claims
/// against `expect` at `now`, then returns its claims as `T`.
pub fn verify<T: DeserializeOwned>(
    token: &str,
    keys: &JwkSet,
    expect: &Expect<'_>,
    now: UnixMillis,
) -> Result<T, TokenError> {
    check_claims(verify_signature(token, keys)?, expect, now)
}

/// Checks a token's header (`alg` on the allow-list, a matching key) and its
/// signature against `keys` (the crate's job), and returns its claims
/// unchecked. Pair it with [`check_claims`].
pub fn verify_signature(token: &str, keys: &JwkSet) -> Result<serde_json::Value, TokenError> {
    let header = decode_header(token)?;
    if !ACCEPTED_ALGS.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAccepted(format!("{:?}", header.alg)));
    }
    let jwk = select_key(keys, header.kid.as_deref(), header.alg)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Malformed(format!("key: {e}")))?;
    decode_signed(token, &key, header.alg)
}

/// Checks the registered claims of a token whose signature verified against
/// `expect`, the time claims at `now` (ours: the injected clock), then
/// returns the claims as `T`.
pub fn check_claims<T: DeserializeOwned>(
    claims: serde_json::Value,
    expect: &Expect<'_>,
    now: UnixMillis,
) -> Result<T, TokenError> {
    let registered: RegisteredClaims =
        serde_json::from_value(claims.clone()).map_err(|e| TokenError::Malformed(e.to_string()))?;
    check_registered(&registered, expect, now)?;
    serde_json::from_value(claims).map_err(|e| TokenError::Malformed(e.to_string()))
}

/// Checks the signature with `key` (the crate's job); the claims come back unchecked.
fn decode_signed(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<serde_json::Value, TokenError> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAccepted(format!("{alg:?}")),
            _ => TokenError::Malformed(e.to_string()),
        }
    })?;
    Ok(data.claims)
}

/// Parses a token's header, mapping unknown algorithms (`none`, ...) to
/// [`TokenError::AlgorithmNotAccepted`].
pub fn decode_header(token: &str) -> Result<Header, TokenError> {
    jsonwebtoken::decode_header(token).map_err(|e| {
        // An `alg` that the crate does not know (such as `none`) fails here.
        let raw_alg = token
            .split('.')
            .next()
            .and_then(|h| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok()
            })
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_string));
        match raw_alg {
            Some(alg) => TokenError::AlgorithmNotAccepted(alg),
            None => TokenError::Malformed(e.to_string()),
        }
    })
}

fn select_key<'k>(keys: &'k JwkSet, kid: Option<&str>, alg: Algorithm) -> Result<&'k Jwk, TokenError> {
    match kid {
        Some(kid) => keys.find(kid).ok_or_else(|| TokenError::UnknownKey(kid.to_string())),
        None => {
            let family = alg.family();
            let mut candidates =
                keys.keys.iter().filter(|k| DecodingKey::from_jwk(k).map(|d| d.family() == family).unwrap_or(false));
            match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(k),
                _ => Err(TokenError::UnknownKey("(no kid)".into())),
            }
        }
    }
}

fn check_registered(c: &RegisteredClaims, expect: &Expect<'_>, now: UnixMillis) -> Result<(), TokenError> {
    let iss = c.iss.as_deref().ok_or(TokenError::MissingClaim("iss"))?;
    if iss != expect.issuer {
        return Err(TokenError::WrongIssuer { expected: expect.issuer.to_string(), got: iss.to_string() });
    }
    let aud_ok = match &c.aud {
        Some(serde_json::Value::String(a)) => a == expect.audience,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expect.audience)),
        Some(_) => false,
        None => return Err(TokenError::MissingClaim("aud")),
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience(expect.audience.to_string()));
    }
    let now = now.as_secs();
    let exp = c.exp.ok_or(TokenError::MissingClaim("exp"))?;
    if !expect.danger_ignore_expiry && now >= exp.saturating_add(expect.leeway_s) {
        return Err(TokenError::Expired { exp, now, leeway_s: expect.leeway_s });
    }
    if let Some(nbf) = c.nbf
        && nbf > now.saturating_add(expect.leeway_s)
    {
        return Err(TokenError::NotYetValid(nbf));
    }
    let iat = c.iat.ok_or(TokenError::MissingClaim("iat"))?;
    if iat > now.saturating_add(expect.leeway_s) {
        return Err(TokenError::IssuedInFuture(iat));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect() -> Expect<'static> {
        Expect { issuer: "https://idp.test", audience: "rp", leeway_s: 30, danger_ignore_expiry: false }
    }

    fn at(now_s: u64) -> UnixMillis {
        UnixMillis::from_secs(now_s)
    }

    fn claims(iat: u64, exp: u64) -> serde_json::Value {
        json!({"iss": "https://idp.test", "aud": "rp", "sub": "alice", "iat": iat, "exp": exp})
    }

    #[test]
    fn es256_keys_are_deterministic_per_seed_and_tokens_verify() {
        let k1 = SigningKey::es256(&SeededRng::from_seed(1)).unwrap();
        let k2 = SigningKey::es256(&SeededRng::from_seed(1)).unwrap();
        assert_eq!(k1.kid(), k2.kid());
        // ECDSA here is RFC 6979 deterministic: same key, same claims, same token.
        let t = k1.sign(&claims(1000, 1300)).unwrap();
        assert_eq!(t, k2.sign(&claims(1000, 1300)).unwrap());
        let v: serde_json::Value = verify(&t, &jwk_set(&[&k1]), &expect(), at(1100)).unwrap();
        assert_eq!(v["sub"], "alice");
    }

    #[test]
    fn rs256_fixture_key_signs_and_verifies() {
        let k = SigningKey::rs256_from_pem(IDP_RSA_PEM).unwrap();
        let t = k.sign(&claims(1000, 1300)).unwrap();
        let _: serde_json::Value = verify(&t, &jwk_set(&[&k]), &expect(), at(1000)).unwrap();
    }

    #[test]
    fn each_registered_claim_check_fails_on_its_own() {
        let k = SigningKey::es256(&SeededRng::from_seed(2)).unwrap();
        let keys = jwk_set(&[&k]);
        let t = k.sign(&claims(1000, 1300)).unwrap();
        // exp + leeway is the boundary.
        assert!(verify::<serde_json::Value>(&t, &keys, &expect(), at(1329)).is_ok());
        assert!(matches!(verify::<serde_json::Value>(&t, &keys, &expect(), at(1330)), Err(TokenError::Expired { .. })));
        assert!(matches!(
            verify::<serde_json::Value>(&t, &keys, &expect(), at(900)),
            Err(TokenError::IssuedInFuture(1000))
        ));
        let mut e = expect();
        e.issuer = "https://evil.test";
        assert!(matches!(verify::<serde_json::Value>(&t, &keys, &e, at(1100)), Err(TokenError::WrongIssuer { .. })));
        let mut e = expect();
        e.audience = "other";
        assert!(matches!(verify::<serde_json::Value>(&t, &keys, &e, at(1100)), Err(TokenError::WrongAudience(_))));
        let mut e = expect();
        e.danger_ignore_expiry = true;
        assert!(verify::<serde_json::Value>(&t, &keys, &e, at(5000)).is_ok());
    }

    #[test]
    fn mac_keys_verify_their_own_tokens_only() {
        let k = MacKey::generate(&SeededRng::from_seed(5));
        let other = MacKey::generate(&SeededRng::from_seed(6));
        let t = k.sign(&claims(1000, 1300)).unwrap();
        let v: serde_json::Value = k.verify(&t, &expect(), at(1000)).unwrap();
        assert_eq!(v["sub"], "alice");
        assert_eq!(other.verify::<serde_json::Value>(&t, &expect(), at(1000)), Err(TokenError::BadSignature));
        assert!(matches!(k.verify::<serde_json::Value>(&t, &expect(), at(1400)), Err(TokenError::Expired { .. })));
        // An asymmetric token is not a MAC token, whatever it claims.
        let es = SigningKey::es256(&SeededRng::from_seed(7)).unwrap().sign(&claims(1000, 1300)).unwrap();
        assert!(matches!(
            k.verify::<serde_json::Value>(&es, &expect(), at(1000)),
            Err(TokenError::AlgorithmNotAccepted(_))
        ));
        // ... and a MAC token is never accepted by the public-key verifier.
        let es_key = SigningKey::es256(&SeededRng::from_seed(7)).unwrap();
        assert!(matches!(
            verify::<serde_json::Value>(&t, &jwk_set(&[&es_key]), &expect(), at(1000)),
            Err(TokenError::AlgorithmNotAccepted(_))
        ));
    }

    #[test]
    fn forged_tokens_are_refused() {
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let k = SigningKey::es256(&SeededRng::from_seed(3)).unwrap();
        let other = SigningKey::es256(&SeededRng::from_seed(4)).unwrap();
        let keys = jwk_set(&[&k]);
        // alg none
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims(1000, 1300)));
        assert_eq!(
            verify::<serde_json::Value>(&none, &keys, &expect(), at(1000)),
            Err(TokenError::AlgorithmNotAccepted("none".into()))
        );
        // HS256 (e.g. signed with the public key as a secret)
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(1000, 1300),
            &EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert!(matches!(
            verify::<serde_json::Value>(&hs, &keys, &expect(), at(1000)),
            Err(TokenError::AlgorithmNotAccepted(_))
        ));
        // signed by another key under our kid
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(k.kid().to_string());
        let forged = jsonwebtoken::encode(&header, &claims(1000, 1300), &other.encoding).unwrap();
        assert_eq!(verify::<serde_json::Value>(&forged, &keys, &expect(), at(1000)), Err(TokenError::BadSignature));
        // unknown kid
        let t = other.sign(&claims(1000, 1300)).unwrap();
        assert!(matches!(verify::<serde_json::Value>(&t, &keys, &expect(), at(1000)), Err(TokenError::UnknownKey(_))));
        // garbage
        assert!(matches!(
            verify::<serde_json::Value>("a.b", &keys, &expect(), at(1000)),
            Err(TokenError::Malformed(_))
        ));
    }
}
