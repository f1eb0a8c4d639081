//! Reading facts back out of the credential JSON a client posts: what the
//! relying party's enrolment checks and trace need. Never panics on input.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ciborium::Value;

/// Malformed credential JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A required field is missing or not a string.
    #[error("missing or non-string field {0}")]
    Missing(&'static str),
    /// A field is not base64url.
    #[error("field {0} is not base64url")]
    Base64(&'static str),
    /// The attestation object is not the expected CBOR.
    #[error("attestationObject: {0}")]
    Cbor(String),
    /// The authenticator data is too short or lacks what is needed.
    #[error("authenticatorData: {0}")]
    AuthData(String),
    /// clientDataJSON is not the expected JSON.
    #[error("clientDataJSON: {0}")]
    ClientData(String),
}

/// Decodes base64url (padding tolerated), falling back to standard base64.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(s).ok().or_else(|| STANDARD_NO_PAD.decode(s).ok())
}

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str], name: &'static str) -> Result<&'a str, ParseError> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p).ok_or(ParseError::Missing(name))?;
    }
    cur.as_str().ok_or(ParseError::Missing(name))
}

fn b64_field(v: &serde_json::Value, path: &[&str], name: &'static str) -> Result<Vec<u8>, ParseError> {
    b64_decode(field(v, path, name)?).ok_or(ParseError::Base64(name))
}

const FLAG_UV: u8 = 1 << 2;
const FLAG_BE: u8 = 1 << 3;
const FLAG_AT: u8 = 1 << 6;

/// Reads the AAGUID out of a registration response JSON (attestationObject ->
/// authData bytes 37..53), for the RP's AAGUID allow-list check at enrolment.
pub fn aaguid_of_registration(credential: &serde_json::Value) -> Result<[u8; 16], ParseError> {
    let att = b64_field(credential, &["response", "attestationObject"], "response.attestationObject")?;
    let value: Value = ciborium::de::from_reader(att.as_slice()).map_err(|e| ParseError::Cbor(e.to_string()))?;
    let Value::Map(entries) = value else { return Err(ParseError::Cbor("not a map".into())) };
    let auth_data = entries
        .iter()
        .find(|(k, _)| k.as_text() == Some("authData"))
        .and_then(|(_, v)| v.as_bytes())
        .ok_or_else(|| ParseError::Cbor("no authData byte string".into()))?;
    let flags = *auth_data.get(32).ok_or_else(|| ParseError::AuthData("shorter than 37 bytes".into()))?;
    if flags & FLAG_AT == 0 {
        return Err(ParseError::AuthData("no attested credential data (AT flag clear)".into()));
    }
    auth_data
        .get(37..53)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .ok_or_else(|| ParseError::AuthData("too short for an AAGUID".into()))
}

/// Facts from an assertion's clientDataJSON/authenticatorData the RP records in its trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFacts {
    /// clientDataJSON.origin: where the browser says it was.
    pub origin: String,
    /// clientDataJSON.type ("webauthn.get").
    pub typ: String,
    /// The signature counter.
    pub counter: u32,
    /// The UV flag.
    pub user_verified: bool,
    /// The BE flag.
    pub backup_eligible: bool,
    /// The credential id (rawId, or id if rawId is absent).
    pub credential_id: Vec<u8>,
}

/// Reads [`AssertionFacts`] from an assertion (`PublicKeyCredential`) JSON.
/// Does not verify anything: that is the relying party's job.
pub fn assertion_facts(credential: &serde_json::Value) -> Result<AssertionFacts, ParseError> {
    let cdj = b64_field(credential, &["response", "clientDataJSON"], "response.clientDataJSON")?;
    let cd: serde_json::Value = serde_json::from_slice(&cdj).map_err(|e| ParseError::ClientData(e.to_string()))?;
    let origin = cd.get("origin").and_then(|v| v.as_str()).ok_or(ParseError::ClientData("no origin".into()))?;
    let typ = cd.get("type").and_then(|v| v.as_str()).ok_or(ParseError::ClientData("no type".into()))?;
    let ad = b64_field(credential, &["response", "authenticatorData"], "response.authenticatorData")?;
    let flags = *ad.get(32).ok_or_else(|| ParseError::AuthData("shorter than 37 bytes".into()))?;
    let counter = ad
        .get(33..37)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| ParseError::AuthData("shorter than 37 bytes".into()))?;
    let credential_id = match b64_field(credential, &["rawId"], "rawId") {
        Ok(id) => id,
        Err(ParseError::Missing(_)) => b64_field(credential, &["id"], "id")?,
        Err(e) => return Err(e),
    };
    Ok(AssertionFacts {
        origin: origin.to_string(),
        typ: typ.to_string(),
        counter,
        user_verified: flags & FLAG_UV != 0,
        backup_eligible: flags & FLAG_BE != 0,
        credential_id,
    })
}
