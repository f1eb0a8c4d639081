//! A deterministic [`CryptoBackend`] for passkey-authenticator.
//!
//! passkey-crypto's [`RngBackend`] has only static methods (no `&self`), so
//! it cannot carry a per-device stream. We feed it from a thread-local that
//! [`with_rng`] sets to the device's [`SeededRng`] for exactly the duration of
//! one authenticator call, and restores afterwards. The authenticator call is
//! driven to completion inside that scope in a single poll (our store and user
//! check never suspend), so the thread-local cannot leak into another task or
//! thread. Outside such a scope (nothing in this module does that) the backend
//! falls back to a fixed, seeded stream: still deterministic, never OS entropy.
//!
//! Keys are P-256 (ES256) with our own `p256` crate; signatures are ECDSA with
//! RFC 6979 deterministic nonces, so the same key and message always give the
//! same signature.

use std::cell::RefCell;
use std::ops::RangeInclusive;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use passkey_crypto::coset::{CoseKey, CoseKeyBuilder, KeyType, Label, RegisteredLabelWithPrivate};
use passkey_crypto::hash::Sha256Backend;
use passkey_crypto::rng::RngBackend;
use passkey_crypto::{CoseKeyConversionError, CryptoBackend, PublicKeyT, SecretKeyT, iana};
use sha2::{Digest, Sha256};

use crate::rng::SeededRng;

thread_local! {
    static CURRENT: RefCell<Option<SeededRng>> = const { RefCell::new(None) };
}

/// Runs `f` with `rng` as the stream behind [`SeededRngBackend`], restoring the
/// previous stream afterwards (also on unwind).
pub(crate) fn with_rng<T>(rng: &SeededRng, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<SeededRng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(rng.clone()))));
    f()
}

fn fill(buf: &mut [u8]) {
    CURRENT.with(|c| match &*c.borrow() {
        Some(rng) => rng.fill(buf),
        None => SeededRng::from_seed(0).child("passkey-crypto/unscoped").fill(buf),
    })
}

/// The [`RngBackend`] passkey-authenticator draws credential ids from.
pub(crate) struct SeededRngBackend;

impl RngBackend for SeededRngBackend {
    fn random_vec(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill(&mut v);
        v
    }

    fn random_array<const N: usize>() -> [u8; N] {
        let mut a = [0u8; N];
        fill(&mut a);
        a
    }

    fn from_range(range: RangeInclusive<u8>) -> u8 {
        let (lo, hi) = (*range.start(), *range.end());
        if hi <= lo {
            return lo;
        }
        let mut b = [0u8; 8];
        fill(&mut b);
        let span = u64::from(hi - lo) + 1;
        // span <= 256, so the remainder fits in a u8.
        lo.saturating_add(u8::try_from(u64::from_be_bytes(b) % span).unwrap_or(0))
    }
}

/// SHA-256 (and HMAC-SHA-256) with the `sha2` crate.
pub(crate) struct LabSha256;

impl Sha256Backend for LabSha256 {
    fn sha256(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn hmac_sha256(key: &[u8], bytes: &[u8]) -> [u8; 32] {
        // RFC 2104 with a 64-byte block.
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        inner.update(bytes);
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// The crypto backend of every virtual authenticator: ES256 only, keys drawn
/// from the device's seeded stream.
pub(crate) struct SeededCrypto;

impl CryptoBackend for SeededCrypto {
    type Rng = SeededRngBackend;
    type Sha256 = LabSha256;
    type SecretKey = LabSecretKey;

    fn enumerate_algorithms(&self) -> Vec<iana::Algorithm> {
        vec![iana::Algorithm::ES256]
    }

    fn generate_key(&self, algorithm: iana::Algorithm) -> Result<LabSecretKey, passkey_crypto::Error> {
        if algorithm != iana::Algorithm::ES256 {
            return Err("only ES256 is supported".into());
        }
        // A 32-byte draw is a valid scalar except with probability ~2^-32; retry a few times.
        for _ in 0..16 {
            let mut d = [0u8; 32];
            fill(&mut d);
            if let Ok(key) = SigningKey::from_slice(&d) {
                return Ok(LabSecretKey(key));
            }
        }
        Err("could not draw a P-256 scalar".into())
    }
}

/// A P-256 credential private key.
pub(crate) struct LabSecretKey(pub(crate) SigningKey);

/// A P-256 credential public key.
pub(crate) struct LabPublicKey(VerifyingKey);

fn ec2_param(key: &CoseKey, label: i64) -> Option<&[u8]> {
    key.params.iter().find(|(l, _)| *l == Label::Int(label)).and_then(|(_, v)| v.as_bytes()).map(Vec::as_slice)
}

fn check_es256(key: &CoseKey) -> Result<(), CoseKeyConversionError> {
    match key.alg {
        Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256)) => {}
        _ => return Err(CoseKeyConversionError::UnsupportedAlgorithm),
    }
    if key.kty != KeyType::Assigned(iana::KeyType::EC2) {
        return Err(CoseKeyConversionError::InvalidCredential);
    }
    let crv = key.params.iter().find(|(l, _)| *l == Label::Int(iana::Ec2KeyParameter::Crv as i64));
    match crv.and_then(|(_, v)| v.as_integer()) {
        Some(c) if i128::from(c) == iana::EllipticCurve::P_256 as i128 => Ok(()),
        _ => Err(CoseKeyConversionError::InvalidCredential),
    }
}

fn xy(key: &VerifyingKey) -> (Vec<u8>, Vec<u8>) {
    let point = key.to_encoded_point(false);
    // Uncompressed SEC1: 0x04 || x(32) || y(32).
    let bytes = point.as_bytes();
    let x = bytes.get(1..33).map(<[u8]>::to_vec).unwrap_or_default();
    let y = bytes.get(33..65).map(<[u8]>::to_vec).unwrap_or_default();
    (x, y)
}

fn verifying_key_from_cose(key: &CoseKey) -> Result<VerifyingKey, CoseKeyConversionError> {
    check_es256(key)?;
    let x = ec2_param(key, iana::Ec2KeyParameter::X as i64).ok_or(CoseKeyConversionError::InvalidCredential)?;
    let y = ec2_param(key, iana::Ec2KeyParameter::Y as i64).ok_or(CoseKeyConversionError::InvalidCredential)?;
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| CoseKeyConversionError::InvalidCredential)
}

impl LabSecretKey {
    /// ECDSA-P256-SHA256 over `msg`, DER encoded (RFC 6979 nonces).
    pub(crate) fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

impl SecretKeyT for LabSecretKey {
    type PublicKey = LabPublicKey;

    fn from_cose_key(cose_key: &CoseKey) -> Result<Self, CoseKeyConversionError> {
        check_es256(cose_key)?;
        let d =
            ec2_param(cose_key, iana::Ec2KeyParameter::D as i64).ok_or(CoseKeyConversionError::InvalidCredential)?;
        SigningKey::from_slice(d).map(LabSecretKey).map_err(|_| CoseKeyConversionError::InvalidCredential)
    }

    fn sign(&mut self, target: &[u8]) -> Vec<u8> {
        self.sign_der(target)
    }

    fn public_key(&self) -> LabPublicKey {
        LabPublicKey(*self.0.verifying_key())
    }

    fn to_cose_key(&self) -> CoseKey {
        let (x, y) = xy(self.0.verifying_key());
        CoseKeyBuilder::new_ec2_priv_key(iana::EllipticCurve::P_256, x, y, self.0.to_bytes().to_vec())
            .algorithm(iana::Algorithm::ES256)
            .build()
    }
}

impl PublicKeyT for LabPublicKey {
    fn verify(&self, target: &[u8], signature: &[u8]) -> Result<(), passkey_crypto::Error> {
        let sig = Signature::from_der(signature)?;
        self.0.verify(target, &sig)?;
        Ok(())
    }

    fn der_from_cose_key(cose_key: &CoseKey) -> Result<Vec<u8>, CoseKeyConversionError> {
        let key = verifying_key_from_cose(cose_key)?;
        key.to_public_key_der().map(|d| d.as_bytes().to_vec()).map_err(|_| CoseKeyConversionError::InvalidCredential)
    }

    fn to_cose_key(&self) -> CoseKey {
        let (x, y) = xy(&self.0);
        CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, x, y).algorithm(iana::Algorithm::ES256).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_follow_the_scoped_stream() {
        let a = SeededRng::from_seed(1);
        let b = SeededRng::from_seed(1);
        let ka = with_rng(&a, || SeededCrypto.generate_key(iana::Algorithm::ES256)).map(|k| k.to_cose_key());
        let kb = with_rng(&b, || SeededCrypto.generate_key(iana::Algorithm::ES256)).map(|k| k.to_cose_key());
        assert_eq!(ka.ok(), kb.ok());
        let ia: [u8; 16] = with_rng(&SeededRng::from_seed(2), SeededRngBackend::random_array);
        let ib: [u8; 16] = with_rng(&SeededRng::from_seed(3), SeededRngBackend::random_array);
        assert_ne!(ia, ib);
    }

    #[test]
    fn cose_round_trip_and_signatures_verify() {
        let rng = SeededRng::from_seed(9);
        let key = with_rng(&rng, || SeededCrypto.generate_key(iana::Algorithm::ES256));
        let Ok(key) = key else { panic!("key generation failed") };
        let back = LabSecretKey::from_cose_key(&key.to_cose_key());
        let Ok(mut back) = back else { panic!("private COSE key did not parse") };
        let sig = back.sign(b"hello");
        assert_eq!(sig, key.sign_der(b"hello"), "RFC 6979 signatures are deterministic");
        assert!(key.public_key().verify(b"hello", &sig).is_ok());
        assert!(key.public_key().verify(b"hellp", &sig).is_err());
        assert!(LabPublicKey::der_from_cose_key(&key.public_key().to_cose_key()).is_ok());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = LabSha256::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
