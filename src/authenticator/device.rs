//! One virtual device: passkey-authenticator plus our store, user check and
//! the knobs the crate lacks (BE/BS flags, packed self attestation).

use std::collections::BTreeMap;

use ciborium::Value;
use futures_util::FutureExt as _;
use passkey_authenticator::{
    Authenticator, CredentialStore, DiscoverabilitySupport, StoreInfo, UiHint, UserCheck, UserValidationMethod,
};
use passkey_crypto::SecretKeyT;
use passkey_types::Passkey;
use passkey_types::ctap2::make_credential::{Options, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity};
use passkey_types::ctap2::{Aaguid, Ctap2Error, Flags, StatusCode, get_assertion, make_credential};
use passkey_types::webauthn::PublicKeyCredentialDescriptor;

use super::client::ClientError;
use super::crypto::{LabSecretKey, SeededCrypto, with_rng};
use super::{AttestationFormat, AuthenticatorProfile, CounterMode, ProfileError};
use crate::rng::SeededRng;

/// The device's credential storage, ordered by credential id so lookups and
/// copies are deterministic.
#[derive(Clone, Default)]
pub(crate) struct LabStore {
    creds: BTreeMap<Vec<u8>, Passkey>,
}

#[async_trait::async_trait]
impl CredentialStore for LabStore {
    type PasskeyItem = Passkey;

    async fn find_credentials(
        &self,
        ids: Option<&[PublicKeyCredentialDescriptor]>,
        rp_id: &str,
        _user_handle: Option<&[u8]>,
    ) -> Result<Vec<Passkey>, StatusCode> {
        let found: Vec<Passkey> = match ids {
            Some(ids) => ids
                .iter()
                .filter_map(|d| self.creds.get(d.id.as_slice()))
                .filter(|p| p.rp_id == rp_id)
                .cloned()
                .collect(),
            None => self.creds.values().filter(|p| p.rp_id == rp_id).cloned().collect(),
        };
        if found.is_empty() { Err(Ctap2Error::NoCredentials.into()) } else { Ok(found) }
    }

    async fn save_credential(
        &mut self,
        cred: Passkey,
        _user: PublicKeyCredentialUserEntity,
        _rp: PublicKeyCredentialRpEntity,
        _options: Options,
    ) -> Result<(), StatusCode> {
        self.creds.insert(cred.credential_id.to_vec(), cred);
        Ok(())
    }

    async fn update_credential(&mut self, cred: &Passkey) -> Result<(), StatusCode> {
        self.creds.insert(cred.credential_id.to_vec(), cred.clone());
        Ok(())
    }

    async fn get_info(&self) -> StoreInfo {
        StoreInfo { discoverability: DiscoverabilitySupport::Full }
    }
}

/// The user at the device: always present; verified only if the device can
/// verify users and verification was asked for; refuses to re-register a key
/// that already holds an excluded credential.
pub(crate) struct LabUser {
    can_verify: bool,
}

#[async_trait::async_trait]
impl UserValidationMethod for LabUser {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        // passkey-authenticator only shows this hint for an excludeList hit and
        // leaves refusing to the user check: the user touches the key, and the
        // device answers CTAP2_ERR_CREDENTIAL_EXCLUDED.
        if let UiHint::InformExcludedCredentialFound(_) = hint {
            return Err(Ctap2Error::CredentialExcluded);
        }
        Ok(UserCheck { presence, verification: verification && self.can_verify })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(self.can_verify)
    }
}

type Inner = Authenticator<LabStore, LabUser, SeededCrypto>;

/// One physical authenticator device.
pub struct VirtualAuthenticator {
    name: String,
    profile: AuthenticatorProfile,
    rng: SeededRng,
    inner: Inner,
}

/// What the device returns from authenticatorMakeCredential, after our knobs.
pub(crate) struct Attested {
    pub(crate) fmt: String,
    pub(crate) att_stmt: Value,
    pub(crate) auth_data: Vec<u8>,
    pub(crate) credential_id: Vec<u8>,
}

/// What the device returns from authenticatorGetAssertion, after our knobs.
pub(crate) struct Asserted {
    pub(crate) credential_id: Vec<u8>,
    pub(crate) auth_data: Vec<u8>,
    pub(crate) signature: Vec<u8>,
    pub(crate) user_handle: Option<Vec<u8>>,
}

fn build_inner(profile: &AuthenticatorProfile, store: LabStore) -> Inner {
    let mut inner = Authenticator::new(
        Aaguid::from(profile.aaguid_bytes()),
        store,
        LabUser { can_verify: profile.user_verification },
        SeededCrypto,
    );
    inner.set_make_credentials_with_signature_counter(profile.counter == CounterMode::Increment);
    inner
}

fn device_rng(name: &str, rng: &SeededRng) -> SeededRng {
    rng.child(&format!("authenticator/{name}"))
}

fn status_error(status: StatusCode) -> ClientError {
    if status == StatusCode::from(Ctap2Error::NoCredentials) {
        ClientError::NoCredential
    } else if status == StatusCode::from(Ctap2Error::CredentialExcluded) {
        ClientError::CredentialExcluded
    } else if status == StatusCode::from(Ctap2Error::UnsupportedAlgorithm) {
        ClientError::UnsupportedAlgorithm
    } else {
        ClientError::Authenticator(format!("{status:?}"))
    }
}

impl VirtualAuthenticator {
    /// A fresh device with no credentials. Its keys and credential ids come
    /// from `rng.child("authenticator/<name>")`, so devices with different
    /// names made from the same stream differ, and the same seed and name
    /// always give the same device.
    pub fn new(name: &str, profile: AuthenticatorProfile, rng: &SeededRng) -> Result<Self, ProfileError> {
        profile.validate()?;
        let inner = build_inner(&profile, LabStore::default());
        Ok(VirtualAuthenticator { name: name.to_string(), rng: device_rng(name, rng), profile, inner })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's profile.
    pub fn profile(&self) -> &AuthenticatorProfile {
        &self.profile
    }

    /// A clone of this device as an attacker who extracted its keys would make:
    /// same credentials and keys, counters copied as they are NOW (so when the
    /// original is used afterwards, the clone's counter lags behind = a
    /// rollback as the RP sees it). New credentials the clone makes draw from
    /// `rng.child("authenticator/<name>")`.
    pub fn clone_device(&self, name: &str, rng: &SeededRng) -> VirtualAuthenticator {
        VirtualAuthenticator {
            name: name.to_string(),
            profile: self.profile.clone(),
            rng: device_rng(name, rng),
            inner: build_inner(&self.profile, self.inner.store().clone()),
        }
    }

    /// Number of credentials it holds.
    pub fn credential_count(&self) -> usize {
        self.inner.store().creds.len()
    }

    /// Current counter of the (first, by credential id) credential for
    /// `rp_id`; None if it holds none for that RP.
    pub fn counter_for(&self, rp_id: &str) -> Option<u32> {
        self.inner.store().creds.values().find(|p| p.rp_id == rp_id).map(|p| p.counter.unwrap_or(0))
    }

    /// Whether the device holds a credential for `rp_id` with one of `ids`.
    pub(crate) fn has_credential(&self, rp_id: &str, ids: &[Vec<u8>]) -> bool {
        ids.iter().any(|id| self.inner.store().creds.get(id).is_some_and(|p| p.rp_id == rp_id))
    }

    fn credential_key(&self, id: &[u8]) -> Result<LabSecretKey, ClientError> {
        let passkey = self
            .inner
            .store()
            .creds
            .get(id)
            .ok_or_else(|| ClientError::Authenticator("credential vanished from the store".into()))?;
        LabSecretKey::from_cose_key(&passkey.key)
            .map_err(|e| ClientError::Authenticator(format!("stored key unusable: {e:?}")))
    }

    /// authenticatorMakeCredential, then our knobs (BE/BS, packed attestation).
    pub(crate) fn make_credential(&mut self, req: make_credential::Request) -> Result<Attested, ClientError> {
        let client_data_hash = req.client_data_hash.to_vec();
        let rng = &self.rng;
        let inner = &mut self.inner;
        let response = with_rng(rng, || inner.make_credential(req).now_or_never())
            .ok_or_else(|| ClientError::Authenticator("authenticator call did not complete".into()))?
            .map_err(status_error)?;
        let mut auth = response.auth_data;
        let credential_id = auth
            .attested_credential_data
            .as_ref()
            .map(|a| a.credential_id().to_vec())
            .ok_or_else(|| ClientError::Authenticator("no attested credential data".into()))?;
        if !self.profile.backup_eligible {
            auth.flags.remove(Flags::BE | Flags::BS);
        }
        let auth_data = auth.to_vec();
        let (fmt, att_stmt) = match self.profile.attestation {
            AttestationFormat::None => (response.fmt, response.att_stmt),
            AttestationFormat::Packed => {
                let key = self.credential_key(&credential_id)?;
                let mut signed = auth_data.clone();
                signed.extend_from_slice(&client_data_hash);
                let stmt = Value::Map(vec![
                    (Value::Text("alg".into()), Value::Integer((-7).into())),
                    (Value::Text("sig".into()), Value::Bytes(key.sign_der(&signed))),
                ]);
                ("packed".to_string(), stmt)
            }
        };
        Ok(Attested { fmt, att_stmt, auth_data, credential_id })
    }

    /// authenticatorGetAssertion, then our BE/BS knob (re-signing if it
    /// changed the authenticator data).
    pub(crate) fn get_assertion(&mut self, req: get_assertion::Request) -> Result<Asserted, ClientError> {
        let client_data_hash = req.client_data_hash.to_vec();
        let rng = &self.rng;
        let inner = &mut self.inner;
        let response = with_rng(rng, || inner.get_assertion(req).now_or_never())
            .ok_or_else(|| ClientError::Authenticator("authenticator call did not complete".into()))?
            .map_err(status_error)?;
        let credential_id = response
            .credential
            .map(|c| c.id.to_vec())
            .ok_or_else(|| ClientError::Authenticator("assertion names no credential".into()))?;
        let mut auth = response.auth_data;
        let mut signature = response.signature.to_vec();
        if !self.profile.backup_eligible {
            auth.flags.remove(Flags::BE | Flags::BS);
        }
        let auth_data = auth.to_vec();
        if !self.profile.backup_eligible {
            let key = self.credential_key(&credential_id)?;
            let mut signed = auth_data.clone();
            signed.extend_from_slice(&client_data_hash);
            signature = key.sign_der(&signed);
        }
        let user_handle = response.user.map(|u| u.id.to_vec());
        Ok(Asserted { credential_id, auth_data, signature, user_handle })
    }
}
