//! The MFA service's own factor store: what each user enrolled, kept apart
//! from the identity provider.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{CredentialID, Passkey, SecurityKey};

use crate::net::UnixMillis;
use crate::policy::FactorKind;
use crate::totp::TotpVerifier;

/// The secret half of an enrolled factor.
#[derive(Clone, Debug)]
pub enum FactorSecret {
    /// A TOTP secret and its used-steps memory.
    Totp(TotpVerifier),
    /// A roaming security key (webauthn-rs credential).
    SecurityKey(SecurityKey),
    /// A platform authenticator with user verification (webauthn-rs passkey).
    Biometrics(Passkey),
}

/// One enrolled factor.
#[derive(Clone, Debug)]
pub struct Factor {
    /// Short id, recorded in traces.
    pub id: String,
    /// When it was enrolled.
    pub enrolled: UnixMillis,
    /// The secret.
    pub secret: FactorSecret,
}

impl Factor {
    /// Its policy type.
    pub fn kind(&self) -> FactorKind {
        match self.secret {
            FactorSecret::Totp(_) => FactorKind::Totp,
            FactorSecret::SecurityKey(_) => FactorKind::SecurityKey,
            FactorSecret::Biometrics(_) => FactorKind::Biometrics,
        }
    }
}

/// A short, stable id for a WebAuthn credential id.
pub fn credential_label(credential_id: &[u8]) -> String {
    format!("cred-{}", &hex::encode(Sha256::digest(credential_id))[..10])
}

/// Factors by user.
#[derive(Debug, Default)]
pub struct FactorStore {
    users: BTreeMap<String, Vec<Factor>>,
}

impl FactorStore {
    /// A user's factors.
    pub fn factors(&self, user: &str) -> &[Factor] {
        self.users.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A user's factors, mutable.
    pub fn factors_mut(&mut self, user: &str) -> &mut Vec<Factor> {
        self.users.entry(user.to_string()).or_default()
    }

    /// Adds a factor.
    pub fn add(&mut self, user: &str, factor: Factor) {
        self.factors_mut(user).push(factor);
    }

    /// A user's security keys, as webauthn-rs credentials.
    pub fn security_keys(&self, user: &str) -> Vec<SecurityKey> {
        self.factors(user)
            .iter()
            .filter_map(|f| match &f.secret {
                FactorSecret::SecurityKey(k) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// A user's platform authenticators, as webauthn-rs passkeys.
    pub fn biometrics(&self, user: &str) -> Vec<Passkey> {
        self.factors(user)
            .iter()
            .filter_map(|f| match &f.secret {
                FactorSecret::Biometrics(k) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// The credential ids of a user's WebAuthn factors.
    pub fn credential_ids(&self, user: &str) -> Vec<CredentialID> {
        self.factors(user)
            .iter()
            .filter_map(|f| match &f.secret {
                FactorSecret::SecurityKey(k) => Some(k.cred_id().clone()),
                FactorSecret::Biometrics(k) => Some(k.cred_id().clone()),
                FactorSecret::Totp(_) => None,
            })
            .collect()
    }

    /// Removes every factor of `user` (an administrator's lockout recovery);
    /// returns how many.
    pub fn remove_all(&mut self, user: &str) -> usize {
        self.users.remove(user).map(|v| v.len()).unwrap_or(0)
    }
}
