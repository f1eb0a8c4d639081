//! Virtual FIDO2 authenticators and the browser-side WebAuthn client.
//!
//! The lab's scenarios enrol and use hardware-like authenticators against a
//! WebAuthn relying party. The authenticator itself is 1Password's
//! `passkey-authenticator` (CTAP2 makeCredential / getAssertion, credential
//! storage, user presence / verification); we supply its three seams:
//!
//! * a credential store ([`VirtualAuthenticator`] keeps credentials in an
//!   ordered map, so cloning a device copies them exactly);
//! * a user-check that can or cannot verify the user (the profile's
//!   `user_verification`);
//! * a crypto backend whose keys and credential ids come from the lab's
//!   [`SeededRng`] (see the `crypto` submodule for how the static RNG trait is
//!   fed).
//!
//! We chose these crates over soft-u2f because they speak CTAP2 (UV, AAGUID,
//! resident keys) and let us plug in storage and randomness.
//!
//! The one part we do ourselves, because passkey-authenticator has no knob for
//! it: the crate always sets the backup-eligible and backed-up flags (it models
//! synced passkeys) and always answers with attestation format "none". For a
//! profile with `backup_eligible: false` we clear BE and BS in the
//! authenticator data and, for assertions, re-sign
//! `authenticatorData || SHA-256(clientDataJSON)` with the credential's own key
//! (taken from our store) so the signature stays valid. For
//! [`AttestationFormat::Packed`] we build a packed *self* attestation statement
//! (`{alg: -7, sig}` signed by the credential key) the same way.
//!
//! [`WebauthnClient`] plays the browser: it checks the RP ID against its
//! origin, builds `clientDataJSON` per WebAuthn Level 3, calls the
//! authenticator, and assembles the JSON a browser posts back (the shapes
//! webauthn-rs serializes its challenges to and deserializes responses from).

mod client;
mod crypto;
mod device;
mod parse;

pub use client::{ClientError, WebauthnClient};
pub use device::VirtualAuthenticator;
pub use parse::{AssertionFacts, ParseError, aaguid_of_registration, assertion_facts};

use serde::{Deserialize, Serialize};

/// Which kind of authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorKind {
    /// A roaming FIDO2 security key (USB/NFC), attachment "cross-platform".
    SecurityKey,
    /// A platform authenticator (Touch ID, Windows Hello), attachment "platform".
    Platform,
    /// A legacy U2F/CTAP1 key: no user verification, all-zero AAGUID.
    U2f,
}

/// Sign-counter behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterMode {
    /// Counter starts at 0 at registration and goes up by one per assertion.
    #[default]
    Increment,
    /// Counter is always 0 (no counter, as synced passkeys do).
    Zero,
}

/// Attestation statement format returned at registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationFormat {
    /// fmt "none", empty statement.
    #[default]
    None,
    /// fmt "packed", self attestation (alg -7, signed by the credential key).
    Packed,
}

/// How a scenario describes one authenticator.
///
/// Deserializes with unknown fields denied; `user_verification` defaults to
/// true except for `u2f`, `counter` to `increment`, `backup_eligible` to false
/// and `attestation` to `none`. Call [`validate`](Self::validate) for
/// contradictions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(from = "ProfileSpec")]
pub struct AuthenticatorProfile {
    /// Which kind of authenticator.
    pub kind: AuthenticatorKind,
    /// 32 hex chars, no dashes; None = all zeros (what U2F/CTAP1 keys send).
    pub aaguid: Option<String>,
    /// Can perform user verification (PIN/biometric). Defaults to true,
    /// except for `u2f`.
    pub user_verification: bool,
    /// Sign-counter behaviour (default `increment`).
    pub counter: CounterMode,
    /// Whether credentials are backup eligible (default false).
    pub backup_eligible: bool,
    /// Attestation format (default `none`).
    pub attestation: AttestationFormat,
}

/// The serialized form of [`AuthenticatorProfile`]: `user_verification` is
/// optional and defaults by kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    kind: AuthenticatorKind,
    #[serde(default)]
    aaguid: Option<String>,
    #[serde(default)]
    user_verification: Option<bool>,
    #[serde(default)]
    counter: CounterMode,
    #[serde(default)]
    backup_eligible: bool,
    #[serde(default)]
    attestation: AttestationFormat,
}

impl From<ProfileSpec> for AuthenticatorProfile {
    fn from(s: ProfileSpec) -> Self {
        AuthenticatorProfile {
            kind: s.kind,
            aaguid: s.aaguid,
            user_verification: s.user_verification.unwrap_or(s.kind != AuthenticatorKind::U2f),
            counter: s.counter,
            backup_eligible: s.backup_eligible,
            attestation: s.attestation,
        }
    }
}

/// A profile that contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The AAGUID is not 32 hex characters.
    #[error("aaguid {0:?} is not 32 hex characters (no dashes)")]
    BadAaguid(String),
    /// U2F/CTAP1 keys have no AAGUID.
    #[error("a u2f authenticator has no aaguid (it sends all zeros)")]
    U2fWithAaguid,
    /// U2F/CTAP1 keys cannot verify the user.
    #[error("a u2f authenticator cannot perform user verification")]
    U2fWithUserVerification,
    /// U2F/CTAP1 keys are device-bound.
    #[error("a u2f authenticator's credentials are not backup eligible")]
    U2fBackupEligible,
    /// Platform authenticators verify the user (biometric/PIN).
    #[error("a platform authenticator must perform user verification")]
    PlatformWithoutUserVerification,
}

impl AuthenticatorProfile {
    /// A profile with the defaults for `kind`.
    pub fn of_kind(kind: AuthenticatorKind) -> Self {
        AuthenticatorProfile {
            kind,
            aaguid: None,
            user_verification: kind != AuthenticatorKind::U2f,
            counter: CounterMode::Increment,
            backup_eligible: false,
            attestation: AttestationFormat::None,
        }
    }

    /// Checks the profile for contradictions.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if let Some(a) = &self.aaguid {
            parse_aaguid(a)?;
        }
        match self.kind {
            AuthenticatorKind::U2f => {
                if self.aaguid.is_some() {
                    return Err(ProfileError::U2fWithAaguid);
                }
                if self.user_verification {
                    return Err(ProfileError::U2fWithUserVerification);
                }
                if self.backup_eligible {
                    return Err(ProfileError::U2fBackupEligible);
                }
            }
            AuthenticatorKind::Platform if !self.user_verification => {
                return Err(ProfileError::PlatformWithoutUserVerification);
            }
            _ => {}
        }
        Ok(())
    }

    /// The AAGUID as bytes: all zeros when absent (or, for a profile that
    /// fails [`validate`](Self::validate), when malformed).
    pub fn aaguid_bytes(&self) -> [u8; 16] {
        self.aaguid.as_deref().and_then(|a| parse_aaguid(a).ok()).unwrap_or([0u8; 16])
    }

    /// The WebAuthn `authenticatorAttachment` of this kind.
    pub fn attachment(&self) -> &'static str {
        match self.kind {
            AuthenticatorKind::Platform => "platform",
            AuthenticatorKind::SecurityKey | AuthenticatorKind::U2f => "cross-platform",
        }
    }

    /// The transports the client reports at registration.
    pub fn transports(&self) -> &'static [&'static str] {
        match self.kind {
            AuthenticatorKind::Platform => &["internal"],
            AuthenticatorKind::SecurityKey | AuthenticatorKind::U2f => &["usb"],
        }
    }
}

fn parse_aaguid(s: &str) -> Result<[u8; 16], ProfileError> {
    let bad = || ProfileError::BadAaguid(s.to_string());
    if s.len() != 32 {
        return Err(bad());
    }
    let v = hex::decode(s).map_err(|_| bad())?;
    <[u8; 16]>::try_from(v.as_slice()).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
