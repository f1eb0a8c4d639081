//! The browser side of WebAuthn: what `navigator.credentials.create()` and
//! `.get()` do between the relying party's options and the authenticator.

use passkey_crypto::iana;
use passkey_crypto::iana::EnumI64 as _;
use passkey_types::ctap2::make_credential::PublicKeyCredentialRpEntity;
use passkey_types::ctap2::{get_assertion, make_credential};
use passkey_types::webauthn::{
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::VirtualAuthenticator;
use super::parse::{b64, b64_decode};

/// Why the client refused or failed a ceremony.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The relying party's options are malformed.
    #[error("bad options: {0}")]
    BadOptions(String),
    /// The client's own origin is not a usable https origin.
    #[error("bad client origin {0:?}")]
    BadOrigin(String),
    /// The options' rpId is neither the origin's host nor a registrable suffix of it.
    #[error("rpId {rp_id:?} is not valid for origin {origin:?}")]
    RpIdMismatch {
        /// The rpId the options asked for.
        rp_id: String,
        /// The client's origin.
        origin: String,
    },
    /// The options ask for an attachment this authenticator does not have.
    #[error("options want a {requested} authenticator, this one is {actual}")]
    AttachmentMismatch {
        /// What the options asked for.
        requested: String,
        /// What the device is.
        actual: String,
    },
    /// The authenticator holds no credential the options allow.
    #[error("no matching credential on the authenticator")]
    NoCredential,
    /// The authenticator already holds a credential from excludeCredentials.
    #[error("the authenticator already holds an excluded credential")]
    CredentialExcluded,
    /// None of the options' pubKeyCredParams is one the authenticator supports (it does ES256).
    #[error("no supported algorithm in pubKeyCredParams")]
    UnsupportedAlgorithm,
    /// The options require user verification and the authenticator cannot do it.
    #[error("user verification required but the authenticator cannot verify users")]
    UserVerificationUnavailable,
    /// The authenticator failed (CTAP2 status or an internal problem).
    #[error("authenticator error: {0}")]
    Authenticator(String),
}

/// The browser side of WebAuthn: what navigator.credentials.create()/get() do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebauthnClient {
    /// The origin the browser shows in its address bar, e.g. "https://mfa.lab.test".
    pub origin: String,
    /// A real browser refuses when the options' rpId is not the origin's host
    /// or a registrable suffix of it ([`ClientError::RpIdMismatch`]); `false`
    /// models a compromised/naive client that signs anyway (then the RP must
    /// reject the origin in clientDataJSON).
    pub enforce_rp_id: bool,
    /// Treat a plain-http origin as a secure context, as Chromium's
    /// `--unsafely-treat-insecure-origin-as-secure` does (real mode serves
    /// the lab over loopback without TLS); otherwise only https works.
    pub treat_http_as_secure: bool,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(rename = "publicKey")]
    public_key: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreationOptions {
    rp: RpIn,
    user: UserIn,
    challenge: String,
    pub_key_cred_params: Vec<ParamIn>,
    #[serde(default)]
    exclude_credentials: Option<Vec<DescriptorIn>>,
    #[serde(default)]
    authenticator_selection: Option<SelectionIn>,
}

#[derive(Deserialize)]
struct RpIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIn {
    id: String,
    name: String,
    display_name: String,
}

#[derive(Deserialize)]
struct ParamIn {
    #[serde(rename = "type")]
    typ: String,
    alg: i64,
}

#[derive(Deserialize)]
struct DescriptorIn {
    #[serde(rename = "type")]
    typ: String,
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectionIn {
    #[serde(default)]
    authenticator_attachment: Option<String>,
    #[serde(default)]
    resident_key: Option<String>,
    #[serde(default)]
    require_resident_key: bool,
    #[serde(default)]
    user_verification: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestOptions {
    challenge: String,
    #[serde(default)]
    rp_id: Option<String>,
    #[serde(default)]
    allow_credentials: Vec<DescriptorIn>,
    #[serde(default)]
    user_verification: Option<String>,
}

fn bad(e: impl std::fmt::Display) -> ClientError {
    ClientError::BadOptions(e.to_string())
}

fn decode(s: &str, what: &str) -> Result<Vec<u8>, ClientError> {
    b64_decode(s).ok_or_else(|| bad(format!("{what} is not base64url")))
}

fn descriptors(list: &[DescriptorIn]) -> Result<Vec<PublicKeyCredentialDescriptor>, ClientError> {
    list.iter()
        .filter(|d| d.typ == "public-key")
        .map(|d| {
            Ok(PublicKeyCredentialDescriptor {
                ty: PublicKeyCredentialType::PublicKey,
                id: decode(&d.id, "credential id")?.into(),
                transports: None,
            })
        })
        .collect()
}

impl WebauthnClient {
    /// A client at `origin` that enforces the rpId rule, as real browsers do.
    pub fn new(origin: &str) -> Self {
        WebauthnClient { origin: origin.to_string(), enforce_rp_id: true, treat_http_as_secure: false }
    }

    /// The serialized origin and its host.
    fn origin_and_host(&self) -> Result<(String, String), ClientError> {
        let bad_origin = || ClientError::BadOrigin(self.origin.clone());
        let url = url::Url::parse(&self.origin).map_err(|_| bad_origin())?;
        if url.scheme() != "https" && !(self.treat_http_as_secure && url.scheme() == "http") {
            return Err(bad_origin());
        }
        let host = url.host_str().ok_or_else(bad_origin)?.to_string();
        Ok((url.origin().ascii_serialization(), host))
    }

    /// Resolves the rpId (default: the origin's host) and, if enforcing,
    /// checks it is the host or a suffix of it on a label boundary. (A real
    /// browser consults the Public Suffix List; we only refuse single-label
    /// suffixes such as "test".)
    pub(crate) fn rp_id(&self, requested: Option<&str>, origin: &str, host: &str) -> Result<String, ClientError> {
        let rp_id = requested.unwrap_or(host).to_ascii_lowercase();
        if self.enforce_rp_id {
            let host = host.to_ascii_lowercase();
            let ok = rp_id == host || (rp_id.contains('.') && host.ends_with(&format!(".{rp_id}")));
            if !ok {
                return Err(ClientError::RpIdMismatch { rp_id, origin: origin.to_string() });
            }
        }
        Ok(rp_id)
    }

    /// clientDataJSON exactly as WebAuthn Level 3 serializes it.
    fn client_data(typ: &str, challenge: &[u8], origin: &str) -> Result<Vec<u8>, ClientError> {
        let s = |v: &str| serde_json::to_string(v).map_err(|e| ClientError::Authenticator(e.to_string()));
        Ok(format!(
            "{{\"type\":{},\"challenge\":{},\"origin\":{},\"crossOrigin\":false}}",
            s(typ)?,
            s(&b64(challenge))?,
            s(origin)?
        )
        .into_bytes())
    }

    /// Whether to ask the authenticator for UV, per the options' policy.
    fn want_uv(policy: Option<&str>, device: &VirtualAuthenticator) -> Result<bool, ClientError> {
        let can = device.profile().user_verification;
        match policy.unwrap_or("preferred") {
            "required" if !can => Err(ClientError::UserVerificationUnavailable),
            "required" => Ok(true),
            "preferred" => Ok(can),
            "discouraged" => Ok(false),
            other => Err(bad(format!("unknown userVerification {other:?}"))),
        }
    }

    /// navigator.credentials.create(). `options` is the JSON the RP sends, in
    /// the shape webauthn-rs's `CreationChallengeResponse` serializes to
    /// (`{"publicKey": {...}}`, binary fields base64url). Returns the JSON the
    /// browser posts back, in the shape webauthn-rs's
    /// `RegisterPublicKeyCredential` deserializes from.
    pub async fn create(
        &self,
        authenticator: &mut VirtualAuthenticator,
        options: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let opts = Envelope::<CreationOptions>::deserialize(options).map_err(bad)?.public_key;
        let (origin, host) = self.origin_and_host()?;
        let rp_id = self.rp_id(opts.rp.id.as_deref(), &origin, &host)?;
        let challenge = decode(&opts.challenge, "challenge")?;
        let user_id = decode(&opts.user.id, "user.id")?;
        let selection = opts.authenticator_selection.as_ref();
        if let Some(requested) = selection.and_then(|s| s.authenticator_attachment.as_deref()) {
            let actual = authenticator.profile().attachment();
            if requested != actual {
                return Err(ClientError::AttachmentMismatch {
                    requested: requested.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let uv = Self::want_uv(selection.and_then(|s| s.user_verification.as_deref()), authenticator)?;
        let rk = selection.is_some_and(|s| s.require_resident_key || s.resident_key.as_deref() == Some("required"));
        let params: Vec<PublicKeyCredentialParameters> = opts
            .pub_key_cred_params
            .iter()
            .filter(|p| p.typ == "public-key")
            .filter_map(|p| iana::Algorithm::from_i64(p.alg))
            .map(|alg| PublicKeyCredentialParameters { ty: PublicKeyCredentialType::PublicKey, alg })
            .collect();
        let exclude = opts.exclude_credentials.as_deref().map(descriptors).transpose()?;

        let client_data = Self::client_data("webauthn.create", &challenge, &origin)?;
        let client_data_hash = Sha256::digest(&client_data).to_vec();
        let request = make_credential::Request {
            client_data_hash: client_data_hash.into(),
            rp: PublicKeyCredentialRpEntity { id: rp_id, name: opts.rp.name.clone() },
            user: PublicKeyCredentialUserEntity {
                id: user_id.into(),
                display_name: opts.user.display_name.clone(),
                name: opts.user.name.clone(),
            },
            pub_key_cred_params: params,
            exclude_list: exclude,
            extensions: None,
            options: make_credential::Options { rk, up: true, uv },
            pin_auth: None,
            pin_protocol: None,
        };
        let attested = authenticator.make_credential(request)?;

        let attestation_object = ciborium::Value::Map(vec![
            (ciborium::Value::Text("fmt".into()), ciborium::Value::Text(attested.fmt)),
            (ciborium::Value::Text("attStmt".into()), attested.att_stmt),
            (ciborium::Value::Text("authData".into()), ciborium::Value::Bytes(attested.auth_data)),
        ]);
        let mut att_bytes = Vec::new();
        ciborium::ser::into_writer(&attestation_object, &mut att_bytes)
            .map_err(|e| ClientError::Authenticator(format!("attestationObject encoding: {e}")))?;
        let id = b64(&attested.credential_id);
        Ok(json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "authenticatorAttachment": authenticator.profile().attachment(),
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&att_bytes),
                "transports": authenticator.profile().transports(),
            },
            "extensions": {},
        }))
    }

    /// navigator.credentials.get(). `options` has the shape of webauthn-rs's
    /// `RequestChallengeResponse`; the result has the shape of its
    /// `PublicKeyCredential`. Only credentials listed in allowCredentials and
    /// bound to the rpId are used (an empty list gives
    /// [`ClientError::NoCredential`]: no discoverable-credential flow).
    pub async fn get(
        &self,
        authenticator: &mut VirtualAuthenticator,
        options: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let opts = Envelope::<RequestOptions>::deserialize(options).map_err(bad)?.public_key;
        let (origin, host) = self.origin_and_host()?;
        let rp_id = self.rp_id(opts.rp_id.as_deref(), &origin, &host)?;
        let challenge = decode(&opts.challenge, "challenge")?;
        let allow = descriptors(&opts.allow_credentials)?;
        let uv = Self::want_uv(opts.user_verification.as_deref(), authenticator)?;
        let ids: Vec<Vec<u8>> = allow.iter().map(|d| d.id.to_vec()).collect();
        if !authenticator.has_credential(&rp_id, &ids) {
            return Err(ClientError::NoCredential);
        }

        let client_data = Self::client_data("webauthn.get", &challenge, &origin)?;
        let client_data_hash = Sha256::digest(&client_data).to_vec();
        let request = get_assertion::Request {
            rp_id,
            client_data_hash: client_data_hash.into(),
            allow_list: Some(allow),
            extensions: None,
            options: get_assertion::Options { up: true, uv },
            pin_auth: None,
            pin_protocol: None,
        };
        let asserted = authenticator.get_assertion(request)?;
        let id = b64(&asserted.credential_id);
        Ok(json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "authenticatorAttachment": authenticator.profile().attachment(),
            "response": {
                "clientDataJSON": b64(&client_data),
                "authenticatorData": b64(&asserted.auth_data),
                "signature": b64(&asserted.signature),
                "userHandle": asserted.user_handle.as_deref().map(b64),
            },
            "extensions": {},
        }))
    }
}
