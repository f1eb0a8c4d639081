//! End-to-end tests against webauthn-rs as the relying party.

use futures_util::FutureExt as _;
use serde_json::Value;
use webauthn_rs::prelude::*;

use super::{AttestationFormat, *};
use crate::rng::SeededRng;

const RP_ID: &str = "mfa.lab.test";
const ORIGIN: &str = "https://mfa.lab.test";

fn rp() -> Webauthn {
    let origin = Url::parse(ORIGIN).expect("origin");
    WebauthnBuilder::new(RP_ID, &origin).expect("builder").build().expect("webauthn")
}

fn client() -> WebauthnClient {
    WebauthnClient::new(ORIGIN)
}

fn device(name: &str, profile: AuthenticatorProfile, seed: u64) -> VirtualAuthenticator {
    VirtualAuthenticator::new(name, profile, &SeededRng::from_seed(seed)).expect("valid profile")
}

fn security_key() -> AuthenticatorProfile {
    AuthenticatorProfile::of_kind(AuthenticatorKind::SecurityKey)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("deserialize")
}

// The client is async only for the API's sake; it never suspends.
fn create(c: &WebauthnClient, d: &mut VirtualAuthenticator, o: &Value) -> Result<Value, ClientError> {
    c.create(d, o).now_or_never().expect("create completes in one poll")
}

fn get(c: &WebauthnClient, d: &mut VirtualAuthenticator, o: &Value) -> Result<Value, ClientError> {
    c.get(d, o).now_or_never().expect("get completes in one poll")
}

fn user() -> Uuid {
    Uuid::from_u128(0x1234)
}

/// Registers `d` as a security key and returns the RP's credential and the registration JSON.
fn register_sk(rp: &Webauthn, d: &mut VirtualAuthenticator) -> (SecurityKey, Value) {
    let (ccr, state) = rp.start_securitykey_registration(user(), "alice", "Alice", None, None, None).expect("start");
    let reg = create(&client(), d, &to_json(&ccr)).expect("create");
    let sk = rp.finish_securitykey_registration(&from_json(reg.clone()), &state).expect("finish registration");
    (sk, reg)
}

fn authenticate_sk(
    rp: &Webauthn,
    c: &WebauthnClient,
    d: &mut VirtualAuthenticator,
    sk: &SecurityKey,
) -> (Value, WebauthnResult<AuthenticationResult>) {
    let (rcr, state) = rp.start_securitykey_authentication(std::slice::from_ref(sk)).expect("start auth");
    let cred = get(c, d, &to_json(&rcr)).expect("get");
    let result = rp.finish_securitykey_authentication(&from_json(cred.clone()), &state);
    (cred, result)
}

#[test]
fn security_key_registers_and_authenticates_with_increasing_counter() {
    let rp = rp();
    let mut d = device("yubi", security_key(), 1);
    let (mut sk, reg) = register_sk(&rp, &mut d);
    assert_eq!(reg["authenticatorAttachment"], "cross-platform");
    assert_eq!(d.credential_count(), 1);
    assert_eq!(d.counter_for(RP_ID), Some(0));
    let (cred, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    let first = result.expect("first authentication");
    assert_eq!(first.counter(), 1);
    assert!(!first.backup_eligible());
    let facts = assertion_facts(&cred).expect("facts");
    assert!(!facts.backup_eligible);
    assert_eq!(facts.origin, ORIGIN);
    assert_eq!(facts.typ, "webauthn.get");
    assert_eq!(facts.credential_id, AsRef::<[u8]>::as_ref(sk.cred_id()).to_vec());
    sk.update_credential(&first);
    let (_, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    assert_eq!(result.expect("second authentication").counter(), 2);
    assert_eq!(d.counter_for(RP_ID), Some(2));
    assert_eq!(d.counter_for("other.test"), None);
}

#[test]
fn backup_eligible_profile_keeps_the_crate_flags() {
    let rp = rp();
    let mut profile = security_key();
    profile.backup_eligible = true;
    let mut d = device("synced", profile, 1);
    let (sk, _) = register_sk(&rp, &mut d);
    let (cred, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    // webauthn-rs refuses a BE credential at security-key authentication only if
    // it changed since registration; it was BE at registration too.
    assert!(result.expect("authentication").backup_eligible());
    assert!(assertion_facts(&cred).expect("facts").backup_eligible);
}

#[test]
fn platform_passkey_with_user_verification() {
    let rp = rp();
    let mut d = device("touchid", AuthenticatorProfile::of_kind(AuthenticatorKind::Platform), 2);
    let (ccr, state) = rp.start_passkey_registration(user(), "alice", "Alice", None).expect("start");
    let reg = create(&client(), &mut d, &to_json(&ccr)).expect("create");
    assert_eq!(reg["authenticatorAttachment"], "platform");
    let passkey = rp.finish_passkey_registration(&from_json(reg), &state).expect("finish registration");
    let (rcr, state) = rp.start_passkey_authentication(std::slice::from_ref(&passkey)).expect("start auth");
    let cred = get(&client(), &mut d, &to_json(&rcr)).expect("get");
    assert!(assertion_facts(&cred).expect("facts").user_verified);
    let result = rp.finish_passkey_authentication(&from_json(cred), &state).expect("authentication");
    assert!(result.user_verified());
}

#[test]
fn key_without_uv_cannot_satisfy_passkey_registration() {
    let rp = rp();
    let mut profile = security_key();
    profile.user_verification = false;
    let mut d = device("cheap-key", profile, 3);
    let (ccr, _) = rp.start_passkey_registration(user(), "alice", "Alice", None).expect("start");
    assert_eq!(create(&client(), &mut d, &to_json(&ccr)), Err(ClientError::UserVerificationUnavailable));
    assert_eq!(d.credential_count(), 0);
    // With "preferred"/"discouraged" it proceeds, without UV.
    let (sk, _) = register_sk(&rp, &mut d);
    let (cred, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    assert!(!assertion_facts(&cred).expect("facts").user_verified);
    assert!(!result.expect("authentication").user_verified());
}

#[test]
fn cloned_key_is_caught_by_counter_rollback() {
    let rp = rp();
    let mut original = device("yubi", security_key(), 4);
    let (mut sk, _) = register_sk(&rp, &mut original);
    let mut clone = original.clone_device("yubi-clone", &SeededRng::from_seed(99));
    assert_eq!(clone.credential_count(), 1);
    for expected in 1..=2 {
        let (_, result) = authenticate_sk(&rp, &client(), &mut original, &sk);
        let result = result.expect("original authenticates");
        assert_eq!(result.counter(), expected);
        sk.update_credential(&result);
    }
    let (cred, result) = authenticate_sk(&rp, &client(), &mut clone, &sk);
    assert_eq!(assertion_facts(&cred).expect("facts").counter, 1, "clone's counter lags behind");
    assert!(
        matches!(result, Err(WebauthnError::CredentialPossibleCompromise)),
        "webauthn-rs must flag the counter rollback, got {result:?}"
    );
}

#[test]
fn wrong_origin_is_refused_by_browser_and_by_rp() {
    let rp = rp();
    let mut d = device("yubi", security_key(), 5);
    let (sk, _) = register_sk(&rp, &mut d);
    let phish = "https://mfa.lab-test.example";
    let (rcr, state) = rp.start_securitykey_authentication(std::slice::from_ref(&sk)).expect("start auth");
    let honest = WebauthnClient { origin: phish.to_string(), enforce_rp_id: true, treat_http_as_secure: false };
    assert!(matches!(get(&honest, &mut d, &to_json(&rcr)), Err(ClientError::RpIdMismatch { .. })));
    let naive = WebauthnClient { origin: phish.to_string(), enforce_rp_id: false, treat_http_as_secure: false };
    let cred = get(&naive, &mut d, &to_json(&rcr)).expect("naive client signs anyway");
    assert_eq!(assertion_facts(&cred).expect("facts").origin, phish);
    let result = rp.finish_securitykey_authentication(&from_json(cred), &state);
    assert!(
        matches!(result, Err(WebauthnError::InvalidRPOrigin)),
        "RP must reject the phishing origin, got {result:?}"
    );
}

#[test]
fn rp_id_suffix_rule() {
    let c = WebauthnClient::new("https://login.mfa.lab.test");
    assert!(c.rp_id(Some("mfa.lab.test"), ORIGIN, "login.mfa.lab.test").is_ok());
    assert!(c.rp_id(Some("lab.test"), ORIGIN, "login.mfa.lab.test").is_ok());
    assert!(c.rp_id(Some("test"), ORIGIN, "login.mfa.lab.test").is_err());
    assert!(c.rp_id(Some("ab.test"), ORIGIN, "login.mfa.lab.test").is_err());
    assert!(c.rp_id(Some("other.example"), ORIGIN, "login.mfa.lab.test").is_err());
}

#[test]
fn u2f_profile_registers_with_zero_aaguid_and_custom_aaguid_is_reported() {
    let rp = rp();
    let profile: AuthenticatorProfile = serde_json::from_value(serde_json::json!({"kind": "u2f"})).expect("profile");
    assert!(!profile.user_verification);
    assert_eq!(profile.aaguid, None);
    let mut d = device("old-u2f", profile, 6);
    let (sk, reg) = register_sk(&rp, &mut d);
    assert_eq!(aaguid_of_registration(&reg), Ok([0u8; 16]));
    let (_, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    assert!(!result.expect("authentication").user_verified());

    let aaguid = "cb69481e8ff7403993ec0a2729a154a8";
    let mut profile = security_key();
    profile.aaguid = Some(aaguid.to_string());
    let mut d = device("yubi5", profile.clone(), 6);
    let (_, reg) = register_sk(&rp, &mut d);
    let expected: [u8; 16] = hex::decode(aaguid).expect("hex").try_into().expect("16 bytes");
    assert_eq!(aaguid_of_registration(&reg), Ok(expected));
    assert_eq!(profile.aaguid_bytes(), expected);
}

#[test]
fn profile_defaults_and_validation() {
    let p: AuthenticatorProfile = serde_json::from_value(serde_json::json!({"kind": "platform"})).expect("profile");
    assert!(p.user_verification);
    assert_eq!(p.counter, CounterMode::Increment);
    assert_eq!(p.attestation, AttestationFormat::None);
    assert!(!p.backup_eligible);
    assert!(p.validate().is_ok());
    let unknown = serde_json::from_value::<AuthenticatorProfile>(serde_json::json!({"kind": "platform", "pin": 1}));
    assert!(unknown.is_err(), "unknown fields are denied");
    let parse = |v: Value| serde_json::from_value::<AuthenticatorProfile>(v).expect("profile").validate();
    use serde_json::json;
    assert_eq!(parse(json!({"kind": "u2f", "aaguid": "00".repeat(16)})), Err(ProfileError::U2fWithAaguid));
    assert_eq!(parse(json!({"kind": "u2f", "user_verification": true})), Err(ProfileError::U2fWithUserVerification));
    assert_eq!(parse(json!({"kind": "u2f", "backup_eligible": true})), Err(ProfileError::U2fBackupEligible));
    assert_eq!(
        parse(json!({"kind": "platform", "user_verification": false})),
        Err(ProfileError::PlatformWithoutUserVerification)
    );
    assert!(matches!(parse(json!({"kind": "security_key", "aaguid": "xyz"})), Err(ProfileError::BadAaguid(_))));
    assert!(matches!(
        parse(json!({"kind": "security_key", "aaguid": "cb69481e-8ff7-4039-93ec-0a2729a154a8"})),
        Err(ProfileError::BadAaguid(_))
    ));
    let bad = AuthenticatorProfile { aaguid: Some("zz".into()), ..security_key() };
    assert!(VirtualAuthenticator::new("x", bad, &SeededRng::from_seed(0)).is_err());
    let p: AuthenticatorProfile = serde_json::from_value(
        json!({"kind": "security_key", "counter": "zero", "attestation": "packed", "backup_eligible": true}),
    )
    .expect("profile");
    assert_eq!((p.counter, p.attestation, p.backup_eligible), (CounterMode::Zero, AttestationFormat::Packed, true));
}

#[test]
fn packed_self_attestation_is_accepted_without_a_ca_list() {
    let rp = rp();
    let mut profile = security_key();
    profile.attestation = AttestationFormat::Packed;
    let mut d = device("packed", profile, 7);
    let (ccr, state) = rp.start_securitykey_registration(user(), "alice", "Alice", None, None, None).expect("start");
    let reg = create(&client(), &mut d, &to_json(&ccr)).expect("create");
    let att = super::parse::b64_decode(reg["response"]["attestationObject"].as_str().expect("str")).expect("b64");
    let obj: ciborium::Value = ciborium::de::from_reader(att.as_slice()).expect("cbor");
    let fmt = obj.as_map().and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("fmt"))).map(|(_, v)| v.clone());
    assert_eq!(fmt, Some(ciborium::Value::Text("packed".into())));
    let sk = rp.finish_securitykey_registration(&from_json(reg), &state).expect("packed self attestation accepted");
    let (_, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
    assert!(result.is_ok());
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    // Fixed options (not webauthn-rs's, whose challenges are random).
    let creation = serde_json::json!({"publicKey": {
        "rp": {"id": RP_ID, "name": "MFA"},
        "user": {"id": "AAAAAAAAAAAAAAAAAAASNA", "name": "alice", "displayName": "Alice"},
        "challenge": "Y2hhbGxlbmdlLWNoYWxsZW5nZS1jaGFsbGVuZ2U",
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "authenticatorSelection": {"userVerification": "preferred"},
        "attestation": "none"
    }});
    let run = |seed: u64, attestation: AttestationFormat| {
        let mut profile = security_key();
        profile.attestation = attestation;
        let mut d = device("yubi", profile, seed);
        let reg = create(&client(), &mut d, &creation).expect("create");
        let request = serde_json::json!({"publicKey": {
            "challenge": "Z2V0LWNoYWxsZW5nZQ",
            "rpId": RP_ID,
            "allowCredentials": [{"type": "public-key", "id": reg["rawId"]}],
            "userVerification": "discouraged"
        }});
        let asserted = get(&client(), &mut d, &request).expect("get");
        (reg, asserted)
    };
    for attestation in [AttestationFormat::None, AttestationFormat::Packed] {
        let a = run(11, attestation);
        let b = run(11, attestation);
        let c = run(12, attestation);
        assert_eq!(a, b, "same seed, same options => identical JSON");
        assert_ne!(a.0["rawId"], c.0["rawId"]);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
    }
    // UV follows the policy on a device that can verify: discouraged => no UV, preferred => UV.
    let (reg, discouraged) = run(11, AttestationFormat::None);
    assert!(!assertion_facts(&discouraged).expect("facts").user_verified);
    let mut d = device("yubi", security_key(), 11);
    let again = create(&client(), &mut d, &creation).expect("create");
    assert_eq!(again, reg);
    let preferred = serde_json::json!({"publicKey": {
        "challenge": "Z2V0LWNoYWxsZW5nZQ",
        "rpId": RP_ID,
        "allowCredentials": [{"type": "public-key", "id": reg["rawId"]}],
        "userVerification": "preferred"
    }});
    let asserted = get(&client(), &mut d, &preferred).expect("get");
    assert!(assertion_facts(&asserted).expect("facts").user_verified);
    // Two devices from the same stream but with different names differ.
    let rng = SeededRng::from_seed(11);
    let mut d1 = VirtualAuthenticator::new("a", security_key(), &rng).expect("device");
    let mut d2 = VirtualAuthenticator::new("b", security_key(), &rng).expect("device");
    let r1 = create(&client(), &mut d1, &creation).expect("create");
    let r2 = create(&client(), &mut d2, &creation).expect("create");
    assert_ne!(r1["rawId"], r2["rawId"]);
}

#[test]
fn zero_counter_mode_stays_zero_and_is_accepted() {
    let rp = rp();
    let mut profile = security_key();
    profile.counter = CounterMode::Zero;
    let mut d = device("nocounter", profile, 8);
    let (mut sk, _) = register_sk(&rp, &mut d);
    for _ in 0..3 {
        let (cred, result) = authenticate_sk(&rp, &client(), &mut d, &sk);
        assert_eq!(assertion_facts(&cred).expect("facts").counter, 0);
        let result = result.expect("repeated zero counters are accepted");
        assert_eq!(result.counter(), 0);
        sk.update_credential(&result);
    }
    assert_eq!(d.counter_for(RP_ID), Some(0));
}

#[test]
fn get_only_uses_allowed_credentials_for_the_rp() {
    let rp = rp();
    let mut d = device("yubi", security_key(), 9);
    let (sk, _) = register_sk(&rp, &mut d);
    let (rcr, _) = rp.start_securitykey_authentication(std::slice::from_ref(&sk)).expect("start auth");
    let mut opts = to_json(&rcr);
    let mut empty = opts.clone();
    empty["publicKey"]["allowCredentials"] = serde_json::json!([]);
    assert_eq!(get(&client(), &mut d, &empty), Err(ClientError::NoCredential));
    let mut stranger = device("other", security_key(), 10);
    assert_eq!(get(&client(), &mut stranger, &opts), Err(ClientError::NoCredential));
    // Same credential id, different RP: not used.
    opts["publicKey"]["rpId"] = "lab.test".into();
    assert_eq!(get(&client(), &mut d, &opts), Err(ClientError::NoCredential));
}

#[test]
fn excluded_credential_is_refused() {
    let rp = rp();
    let mut d = device("yubi", security_key(), 13);
    let (sk, _) = register_sk(&rp, &mut d);
    let exclude = vec![sk.cred_id().clone()];
    let (ccr, _) =
        rp.start_securitykey_registration(user(), "alice", "Alice", Some(exclude), None, None).expect("start");
    assert_eq!(create(&client(), &mut d, &to_json(&ccr)), Err(ClientError::CredentialExcluded));
    assert_eq!(d.credential_count(), 1);
}

#[test]
fn malformed_input_gives_errors_not_panics() {
    use serde_json::json;
    let garbage = [
        json!(null),
        json!({}),
        json!({"response": 5}),
        json!({"response": {"attestationObject": "!!!", "clientDataJSON": "%%", "authenticatorData": "@"}}),
        json!({"response": {"attestationObject": "", "clientDataJSON": "", "authenticatorData": ""}}),
        json!({"response": {"attestationObject": "oA", "clientDataJSON": "e30", "authenticatorData": "AAAA"}}),
        // CBOR {"authData": h'00'} and truncated CBOR.
        json!({"response": {"attestationObject": "oWhhdXRoRGF0YUEA"}}),
        json!({"response": {"attestationObject": "o2NmbXQ"}}),
        // clientDataJSON without origin; authenticatorData of 36 bytes.
        json!({"rawId": "AA", "response": {"clientDataJSON": "eyJ0eXBlIjoieCJ9", "authenticatorData": "A".repeat(48)}}),
    ];
    for g in &garbage {
        assert!(aaguid_of_registration(g).is_err(), "{g}");
        assert!(assertion_facts(g).is_err(), "{g}");
    }
    // A registration whose authData is cut short after the flags.
    let rp = rp();
    let mut d = device("yubi", security_key(), 14);
    let (_, mut reg) = register_sk(&rp, &mut d);
    let att = super::parse::b64_decode(reg["response"]["attestationObject"].as_str().expect("str")).expect("b64");
    for cut in [1, att.len() / 2, att.len() - 1] {
        reg["response"]["attestationObject"] = super::parse::b64(&att[..cut]).into();
        assert!(aaguid_of_registration(&reg).is_err());
    }

    let c = client();
    let bad_options = [
        json!(null),
        json!({"publicKey": 1}),
        json!({"publicKey": {"challenge": "AA"}}),
        json!({"publicKey": {"rp": {"id": RP_ID}, "user": {"id": "AA", "name": "a", "displayName": "A"},
            "challenge": "not base64!", "pubKeyCredParams": [{"type": "public-key", "alg": -7}]}}),
        json!({"publicKey": {"rp": {"id": RP_ID}, "user": {"id": "AA", "name": "a", "displayName": "A"},
            "challenge": "AA", "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "authenticatorSelection": {"userVerification": "sometimes"}}}),
    ];
    for o in &bad_options {
        assert!(matches!(create(&c, &mut d, o), Err(ClientError::BadOptions(_))), "{o}");
    }
    let rsa_only = json!({"publicKey": {"rp": {"id": RP_ID}, "user": {"id": "AA", "name": "a", "displayName": "A"},
        "challenge": "AA", "pubKeyCredParams": [{"type": "public-key", "alg": -257}, {"type": "x", "alg": -7}]}});
    assert_eq!(create(&c, &mut d, &rsa_only), Err(ClientError::UnsupportedAlgorithm));
    let bad_requests = [
        json!([]),
        json!({"publicKey": {}}),
        json!({"publicKey": {"challenge": 5}}),
        json!({"publicKey": {"challenge": "AA", "rpId": RP_ID, "allowCredentials": [{"type": "public-key", "id": "***"}]}}),
        json!({"publicKey": {"challenge": "AA", "rpId": RP_ID, "allowCredentials": "x"}}),
    ];
    for o in &bad_requests {
        assert!(matches!(get(&c, &mut d, o), Err(ClientError::BadOptions(_))), "{o}");
    }
    let broken = WebauthnClient::new("not a url");
    let req = json!({"publicKey": {"challenge": "AA", "rpId": RP_ID, "allowCredentials": []}});
    assert!(matches!(get(&broken, &mut d, &req), Err(ClientError::BadOrigin(_))));
}

#[test]
fn tampered_packed_signature_is_rejected() {
    let rp = rp();
    let mut profile = security_key();
    profile.attestation = AttestationFormat::Packed;
    let mut d = device("packed", profile, 15);
    let (ccr, state) = rp.start_securitykey_registration(user(), "alice", "Alice", None, None, None).expect("start");
    let mut reg = create(&client(), &mut d, &to_json(&ccr)).expect("create");
    let att = super::parse::b64_decode(reg["response"]["attestationObject"].as_str().expect("str")).expect("b64");
    let mut obj: ciborium::Value = ciborium::de::from_reader(att.as_slice()).expect("cbor");
    let Some(entries) = obj.as_map_mut() else { panic!("attestationObject is a map") };
    let Some((_, stmt)) = entries.iter_mut().find(|(k, _)| k.as_text() == Some("attStmt")) else { panic!("attStmt") };
    let Some(stmt) = stmt.as_map_mut() else { panic!("attStmt is a map") };
    let Some((_, sig)) = stmt.iter_mut().find(|(k, _)| k.as_text() == Some("sig")) else { panic!("sig") };
    let Some(sig) = sig.as_bytes_mut() else { panic!("sig is bytes") };
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&obj, &mut bytes).expect("encode");
    reg["response"]["attestationObject"] = super::parse::b64(&bytes).into();
    let result = rp.finish_securitykey_registration(&from_json(reg), &state);
    assert!(matches!(result, Err(WebauthnError::AttestationStatementSigInvalid)), "got {result:?}");
}

#[test]
fn devices_are_send() {
    fn send<T: Send>() {}
    send::<VirtualAuthenticator>();
    send::<std::sync::Arc<std::sync::Mutex<VirtualAuthenticator>>>();
}
