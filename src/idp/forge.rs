//! Forged ID tokens: what an attacker (or a misbehaving provider) puts in
//! front of a relying party. Each kind is one attack class a verifier must
//! refuse; see the research notes (IdP compromise / forged ID token,
//! JWKS rotation).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

pub use crate::config::Forgery;

use crate::jose::{KeyError, SigningKey};
use crate::rng::SeededRng;

impl Forgery {
    /// Every kind, with its name as written in scenario and lab files.
    pub const ALL: [(Forgery, &'static str); 5] = [
        (Forgery::AlgNone, "alg_none"),
        (Forgery::KeyConfusion, "key_confusion"),
        (Forgery::UnpublishedKey, "unpublished_key"),
        (Forgery::UnknownKid, "unknown_kid"),
        (Forgery::RemovedKey, "removed_key"),
    ];

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        Forgery::ALL.iter().find(|(f, _)| *f == self).map_or("?", |(_, n)| n)
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Forgery> {
        Forgery::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }
}

/// The keys a forger can see or hold.
pub struct ForgerKeys<'a> {
    /// The key the provider signs with now (its public half is published).
    pub published: &'a SigningKey,
    /// The key most recently removed from the JWKS, if any.
    pub removed: Option<&'a SigningKey>,
    /// The forger's own randomness.
    pub rng: &'a SeededRng,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The forger's own key (deterministic for the run's seed).
fn own_key(rng: &SeededRng) -> Result<SigningKey, KeyError> {
    SigningKey::es256(&rng.child("forger-key"))
}

/// A token of kind `kind` carrying `claims`.
pub fn forge<T: Serialize>(kind: Forgery, claims: &T, keys: &ForgerKeys<'_>) -> Result<String, KeyError> {
    let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
    let kid = keys.published.kid();
    match kind {
        Forgery::AlgNone => {
            let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
            Ok(format!("{}.{}.", b64(header.to_string().as_bytes()), b64(&payload)))
        }
        Forgery::KeyConfusion => {
            let secret = serde_json::to_vec(keys.published.public_jwk()).map_err(|e| KeyError::Sign(e.to_string()))?;
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.to_string());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret))
                .map_err(|e| KeyError::Sign(e.to_string()))
        }
        Forgery::UnpublishedKey => own_key(keys.rng)?.sign_with_kid(claims, kid),
        Forgery::UnknownKid => own_key(keys.rng)?.sign(claims),
        Forgery::RemovedKey => match keys.removed {
            Some(k) => k.sign(claims),
            None => Err(KeyError::Sign("no key has been removed from the JWKS yet".into())),
        },
    }
}

/// `count` tokens, each signed by the forger under a different unknown `kid`.
pub fn kid_flood<T: Serialize>(claims: &T, count: usize, rng: &SeededRng) -> Result<Vec<String>, KeyError> {
    let key = own_key(rng)?;
    (0..count).map(|_| key.sign_with_kid(claims, &format!("rogue-{}", rng.hex_id(6)))).collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::JwkSet;

    use serde::Deserialize;

    use super::*;
    use crate::jose::{Expect, TokenError, jwk_set, verify};
    use crate::net::UnixMillis;

    #[derive(Serialize, Deserialize)]
    struct C {
        iss: String,
        aud: String,
        exp: u64,
        iat: u64,
    }

    const NOW: u64 = 1_772_614_800;

    fn check(token: &str, keys: &JwkSet) -> Result<C, TokenError> {
        let expect = Expect { issuer: "https://idp", audience: "gw", leeway_s: 0, danger_ignore_expiry: false };
        verify(token, keys, &expect, UnixMillis::from_secs(NOW))
    }

    #[test]
    fn every_forgery_is_refused_for_its_own_reason() {
        let rng = SeededRng::from_seed(3);
        let published = SigningKey::es256(&rng.child("idp")).unwrap();
        let removed = SigningKey::es256(&rng.child("old")).unwrap();
        let set = jwk_set(&[&published]);
        let claims = C { iss: "https://idp".into(), aud: "gw".into(), exp: NOW + 60, iat: NOW };
        let keys = ForgerKeys { published: &published, removed: Some(&removed), rng: &rng };
        // The control: the genuine key verifies.
        assert!(check(&published.sign(&claims).unwrap(), &set).is_ok());
        let got = |k| check(&forge(k, &claims, &keys).unwrap(), &set).map(|_| ()).unwrap_err();
        assert_eq!(got(Forgery::AlgNone), TokenError::AlgorithmNotAccepted("none".into()));
        assert_eq!(got(Forgery::KeyConfusion), TokenError::AlgorithmNotAccepted("HS256".into()));
        assert_eq!(got(Forgery::UnpublishedKey), TokenError::BadSignature);
        assert!(matches!(got(Forgery::UnknownKid), TokenError::UnknownKey(_)));
        assert_eq!(got(Forgery::RemovedKey), TokenError::UnknownKey(removed.kid().to_string()));
        // ...while a verifier that still has the removed key accepts it: the TTL matters.
        let stale = jwk_set(&[&published, &removed]);
        assert!(check(&forge(Forgery::RemovedKey, &claims, &keys).unwrap(), &stale).is_ok());
    }

    #[test]
    fn a_kid_flood_names_a_different_unknown_kid_each_time() {
        let rng = SeededRng::from_seed(3);
        let claims = C { iss: "i".into(), aud: "a".into(), exp: NOW + 60, iat: NOW };
        let tokens = kid_flood(&claims, 20, &rng).unwrap();
        let kids: std::collections::BTreeSet<String> =
            tokens.iter().map(|t| crate::jose::decode_header(t).unwrap().kid.unwrap()).collect();
        assert_eq!(kids.len(), 20);
    }

    #[test]
    fn names_round_trip() {
        for (f, n) in Forgery::ALL {
            assert_eq!(Forgery::from_name(n), Some(f));
            assert_eq!(f.as_str(), n);
        }
        assert_eq!(Forgery::from_name("none"), None);
    }
}
