//! Time-based one-time passwords (RFC 6238) through `totp-rs`, always at an
//! explicit time taken from the injected clock, never the system's.
//!
//! Two roles: [`TotpVerifier`] is the MFA service's check (skew window,
//! single use per step as RFC 6238 §5.2 requires, which `totp-rs` leaves to
//! the caller), and [`TotpApp`] is the user's authenticator app with a clock
//! of its own that may run fast or slow.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Totp};

use crate::net::UnixMillis;

/// The hash a TOTP uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotpAlgorithm {
    /// HMAC-SHA1 (the documented default).
    #[default]
    SHA1,
    /// HMAC-SHA256.
    SHA256,
    /// HMAC-SHA512.
    SHA512,
}

impl TotpAlgorithm {
    fn to_crate(self) -> Algorithm {
        match self {
            TotpAlgorithm::SHA1 => Algorithm::SHA1,
            TotpAlgorithm::SHA256 => Algorithm::SHA256,
            TotpAlgorithm::SHA512 => Algorithm::SHA512,
        }
    }
}

/// TOTP parameters (SHA1, 30 s, 6 digits, one step of skew by default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpSettings {
    /// Hash.
    #[serde(default)]
    pub algorithm: TotpAlgorithm,
    /// Digits per code (6 to 8).
    #[serde(default = "six")]
    pub digits: u8,
    /// Time step.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub step: Duration,
    /// Steps accepted either side of the verifier's current one.
    #[serde(default = "one")]
    pub skew: u8,
}

fn six() -> u8 {
    6
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn one() -> u8 {
    1
}

impl Default for TotpSettings {
    fn default() -> Self {
        TotpSettings { algorithm: TotpAlgorithm::SHA1, digits: 6, step: thirty_seconds(), skew: 1 }
    }
}

/// Why a TOTP could not be set up or a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Parameters the RFC (or `totp-rs`) refuses.
    #[error("TOTP parameters: {0}")]
    Parameters(String),
    /// The code is not `digits` decimal digits.
    #[error("a code is {digits} digits, got {got} characters")]
    Malformed {
        /// Digits expected.
        digits: u8,
        /// Length received.
        got: usize,
    },
    /// No step within the skew window gives this code.
    #[error("wrong code or outside the time window")]
    Wrong,
    /// The code's step was already used (RFC 6238 §5.2).
    #[error("code already used (step {step})")]
    Reused {
        /// The step of the code.
        step: u64,
    },
}

fn build(settings: &TotpSettings, secret: &[u8], account: Option<(&str, &str)>) -> Result<Totp, TotpError> {
    let mut builder = Builder::new()
        .with_algorithm(settings.algorithm.to_crate())
        .with_digits(settings.digits)
        .with_skew(u16::from(settings.skew))
        .with_step_duration(settings.step.as_secs())
        .with_secret(secret.to_vec());
    if let Some((issuer, account)) = account {
        builder = builder.with_issuer(Some(issuer.to_string())).with_account_name(account.to_string());
    }
    builder.build().map_err(|e| TotpError::Parameters(e.to_string()))
}

/// The MFA service's view of one enrolled TOTP secret.
#[derive(Clone, Debug)]
pub struct TotpVerifier {
    totp: Totp,
    settings: TotpSettings,
    /// The highest step accepted so far: codes of that step and earlier are
    /// refused (single use, and no going back in time).
    last_step: Option<u64>,
}

impl TotpVerifier {
    /// A verifier for `secret` (at least 16 bytes, as the RFC requires).
    pub fn new(settings: &TotpSettings, secret: &[u8]) -> Result<Self, TotpError> {
        Ok(TotpVerifier { totp: build(settings, secret, None)?, settings: settings.clone(), last_step: None })
    }

    /// The `otpauth://` URI an authenticator app scans at enrollment.
    pub fn otpauth_uri(
        settings: &TotpSettings,
        secret: &[u8],
        issuer: &str,
        account: &str,
    ) -> Result<String, TotpError> {
        build(settings, secret, Some((issuer, account)))?.to_url().map_err(|e| TotpError::Parameters(e.to_string()))
    }

    /// Checks `code` at `now`; on success returns its step and remembers it
    /// (unless `allow_reuse`, a deliberately broken verifier).
    pub fn verify(&mut self, code: &str, now: UnixMillis, allow_reuse: bool) -> Result<u64, TotpError> {
        let digits = self.settings.digits;
        if code.len() != usize::from(digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Malformed { digits, got: code.chars().count() });
        }
        let step = self.totp.check(code, now.as_secs()).ok_or(TotpError::Wrong)?;
        if !allow_reuse && self.last_step.is_some_and(|last| step <= last) {
            return Err(TotpError::Reused { step });
        }
        self.last_step = Some(self.last_step.map_or(step, |last| last.max(step)));
        Ok(step)
    }
}

/// The code for `secret` at `now` (what an administrator's console shows).
pub fn code_at(settings: &TotpSettings, secret: &[u8], now: UnixMillis) -> Result<String, TotpError> {
    Ok(build(settings, secret, None)?.generate(now.as_secs()).to_string())
}

/// Decodes a base32 secret (RFC 4648, no padding needed).
pub fn decode_base32(secret: &str) -> Result<Vec<u8>, TotpError> {
    totp_rs::Secret::try_from_base32(secret.trim().to_uppercase())
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| TotpError::Parameters(format!("secret is not base32: {e:?}")))
}

/// A user's authenticator app: a secret scanned from an `otpauth://` URI and
/// a clock that is `skew` off the true time.
#[derive(Clone, Debug)]
pub struct TotpApp {
    totp: Option<Totp>,
    skew_ms: i64,
    last_shown: Option<String>,
}

impl TotpApp {
    /// An app with no account yet, whose clock is `skew_ms` off.
    pub fn new(skew_ms: i64) -> Self {
        TotpApp { totp: None, skew_ms, last_shown: None }
    }

    /// Scans an enrollment URI.
    pub fn scan(&mut self, uri: &str) -> Result<(), TotpError> {
        self.totp = Some(Totp::from_url(uri).map_err(|e| TotpError::Parameters(e.to_string()))?);
        Ok(())
    }

    /// Whether an account has been scanned.
    pub fn enrolled(&self) -> bool {
        self.totp.is_some()
    }

    /// The code the app shows at true time `now`.
    pub fn code(&mut self, now: UnixMillis) -> Option<String> {
        let own = (now.0 as i64).saturating_add(self.skew_ms).max(0) as u64;
        let code = self.totp.as_ref()?.generate(own / 1000).to_string();
        self.last_shown = Some(code.clone());
        Some(code)
    }

    /// The code it showed last (what a shoulder-surfer or a phishing page saw).
    pub fn last_shown(&self) -> Option<&str> {
        self.last_shown.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: u64) -> UnixMillis {
        UnixMillis(s * 1000)
    }

    /// RFC 6238 Appendix B: every published vector (8 digits, 30 s, T0 = 0).
    #[test]
    fn rfc_6238_appendix_b() {
        let seeds: [(TotpAlgorithm, &[u8]); 3] = [
            (TotpAlgorithm::SHA1, b"12345678901234567890"),
            (TotpAlgorithm::SHA256, b"12345678901234567890123456789012"),
            (TotpAlgorithm::SHA512, b"1234567890123456789012345678901234567890123456789012345678901234"),
        ];
        let table: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (i, (alg, seed)) in seeds.iter().enumerate() {
            let settings = TotpSettings { algorithm: *alg, digits: 8, step: thirty_seconds(), skew: 0 };
            let totp = build(&settings, seed, None).expect("valid parameters");
            for (t, codes) in &table {
                assert_eq!(totp.generate(*t).to_string(), codes[i], "{alg:?} at {t}");
                let mut v = TotpVerifier::new(&settings, seed).expect("valid parameters");
                assert_eq!(v.verify(codes[i], ms(*t), false), Ok(t / 30), "{alg:?} at {t}");
            }
        }
    }

    fn verifier(skew: u8) -> (TotpVerifier, TotpApp) {
        let settings = TotpSettings { skew, ..TotpSettings::default() };
        let secret = [7u8; 20];
        let uri = TotpVerifier::otpauth_uri(&settings, &secret, "Lockstep", "alice").expect("uri");
        assert!(uri.starts_with("otpauth://totp/Lockstep:alice?"), "{uri}");
        let mut app = TotpApp::new(0);
        app.scan(&uri).expect("scan");
        (TotpVerifier::new(&settings, &secret).expect("verifier"), app)
    }

    #[test]
    fn a_code_is_accepted_once_and_earlier_steps_never_again() {
        let (mut v, mut app) = verifier(1);
        let now = ms(1_800_000_000);
        let code = app.code(now).expect("enrolled");
        let step = v.verify(&code, now, false).expect("fresh code");
        assert_eq!(v.verify(&code, now, false), Err(TotpError::Reused { step }));
        // The previous step's code is inside the skew window but older than the one used.
        let old = app.code(UnixMillis(now.0 - 30_000)).expect("enrolled");
        assert_eq!(v.verify(&old, now, false), Err(TotpError::Reused { step: step - 1 }));
        // A deliberately broken verifier accepts the replay.
        assert_eq!(v.verify(&code, now, true), Ok(step));
    }

    #[test]
    fn skew_window_is_configurable() {
        let now = ms(1_800_000_015);
        let (mut strict, mut app) = verifier(0);
        let late = app.code(UnixMillis(now.0 - 30_000)).expect("enrolled");
        assert_eq!(strict.verify(&late, now, false), Err(TotpError::Wrong));
        let (mut lax, _) = verifier(1);
        assert!(lax.verify(&late, now, false).is_ok());
        let too_late = app.code(UnixMillis(now.0 - 61_000)).expect("enrolled");
        assert_eq!(lax.verify(&too_late, now, false), Err(TotpError::Wrong));
    }

    #[test]
    fn an_app_whose_clock_drifts_past_the_window_is_refused() {
        let (mut v, _) = verifier(1);
        let settings = TotpSettings::default();
        let uri = TotpVerifier::otpauth_uri(&settings, &[7u8; 20], "Lockstep", "alice").expect("uri");
        let mut fast = TotpApp::new(95_000);
        fast.scan(&uri).expect("scan");
        let now = ms(1_800_000_000);
        let code = fast.code(now).expect("enrolled");
        assert_eq!(v.verify(&code, now, false), Err(TotpError::Wrong));
    }

    #[test]
    fn malformed_codes_are_refused_before_any_check() {
        let (mut v, _) = verifier(1);
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "123 456"] {
            assert!(matches!(v.verify(bad, ms(0), false), Err(TotpError::Malformed { .. })), "{bad:?}");
        }
        assert!(TotpVerifier::new(&TotpSettings::default(), &[1u8; 8]).is_err(), "short secret");
    }
}
