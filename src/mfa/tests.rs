//! Bad input at every MFA endpoint: refused with a 4xx and a recorded
//! rejection, never a panic, never a verification.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use proptest::prelude::*;
use tower::ServiceExt;

use super::*;
use crate::config::LabConfig;
use crate::net::real::TokioNet;
use crate::net::{Clock, Directory};

struct Fixed(UnixMillis);
impl Clock for Fixed {
    fn now(&self) -> UnixMillis {
        self.0
    }
}

const NOW: UnixMillis = UnixMillis(1_772_614_800_000);

fn service() -> (Arc<MfaService>, Recorder) {
    let (lab, _) = LabConfig::parse(&LabConfig::default_source()).expect("default lab");
    let clock: SharedClock = Arc::new(Fixed(NOW));
    let recorder = Recorder::new(NOW, clock.clone());
    let http = HttpClient::new(Arc::new(TokioNet), Directory::default());
    let mfa = MfaService::new(lab.mfa, &lab.gateway.auth_url, clock, SeededRng::from_seed(5), recorder.clone(), http)
        .expect("service");
    (Arc::new(mfa), recorder)
}

fn request_claims(purpose: MfaPurpose) -> MfaRequestClaims {
    MfaRequestClaims {
        iss: "https://gateway.lab.test".into(),
        aud: MFA_AUDIENCE.into(),
        sub: "alice".into(),
        sid: "s1".into(),
        device: Some("dev-1".into()),
        purpose,
        return_to: "https://gateway.lab.test/auth/mfa".into(),
        jti: "j1".into(),
        iat: NOW.as_secs(),
        exp: NOW.as_secs() + 600,
    }
}

/// Opens one ceremony of each kind; returns (path, ceremony id) pairs.
fn ceremonies(mfa: &MfaService) -> Vec<(&'static str, String)> {
    let verify = request_claims(MfaPurpose::Verify {
        app: "chat".into(),
        allowed: vec![FactorKind::Totp, FactorKind::SecurityKey],
        max_age_s: 3600,
    });
    let enroll_key = request_claims(MfaPurpose::Enroll { kind: FactorKind::SecurityKey });
    let (options, reg) = mfa
        .webauthn
        .start_securitykey_registration(user_uuid("alice"), "alice", "alice", None, None, None)
        .expect("registration options");
    drop(options);
    let (_, passkey_reg) =
        mfa.webauthn.start_passkey_registration(user_uuid("alice"), "alice", "alice", None).expect("passkey options");
    vec![
        ("/verify/totp", mfa.open_ceremony(&verify, "t", Step::Totp)),
        ("/enroll/webauthn", mfa.open_ceremony(&enroll_key, "t", Step::CreateSecurityKey(reg))),
        ("/enroll/webauthn", mfa.open_ceremony(&enroll_key, "t", Step::CreateBiometrics(passkey_reg))),
        ("/enroll/totp", mfa.open_ceremony(&enroll_key, "t", Step::CreateTotp(vec![9u8; 20]))),
        ("/verify/webauthn", "no-such-ceremony".to_string()),
    ]
}

async fn post(mfa: &Arc<MfaService>, path: &str, body: String) -> StatusCode {
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    req.extensions_mut().insert(ConnectInfo(PeerAddr(SocketAddr::from(([198, 51, 100, 66], 4000)))));
    mfa.clone().router().oneshot(req).await.map(|r| r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Payloads a hostile client sends: random text, JSON of the wrong shape,
/// truncated or garbled credentials, codes of every length.
fn payload() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[0-9]{0,12}",
        Just("{}".to_string()),
        Just("{\"id\":\"AA\",\"rawId\":\"AA\",\"type\":\"public-key\",\"response\":{}}".to_string()),
        Just(
            "{\"id\":\"AA\",\"rawId\":\"AA\",\"type\":\"public-key\",\"response\":{\"clientDataJSON\":\"e30\",\
             \"attestationObject\":\"oA\"},\"extensions\":{}}"
                .to_string()
        ),
        "[A-Za-z0-9_-]{0,200}".prop_map(|b| format!(
            "{{\"id\":\"{b}\",\"rawId\":\"{b}\",\"type\":\"public-key\",\"response\":{{\"clientDataJSON\":\"{b}\",\
             \"authenticatorData\":\"{b}\",\"signature\":\"{b}\",\"attestationObject\":\"{b}\"}},\"extensions\":{{}}}}"
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_endpoint_refuses_garbage_without_panicking(credential in payload(), code in payload()) {
        let rt = runtime();
        let (mfa, recorder) = service();
        for (path, ceremony) in ceremonies(&mfa) {
            let body = form(&[("ceremony", &ceremony), ("credential", &credential), ("code", &code)]);
            let status = rt.block_on(post(&mfa, path, body));
            prop_assert!(status.is_client_error(), "{path}: {status}");
        }
        let trace = recorder.snapshot();
        let accepted = trace
            .events
            .iter()
            .filter(|e| matches!(e.body, EventBody::MfaVerified { .. } | EventBody::MfaEnrolled { .. }))
            .count();
        let rejected = trace.events.iter().filter(|e| matches!(e.body, EventBody::MfaRejected { .. })).count();
        prop_assert_eq!(accepted, 0);
        prop_assert!(rejected >= 5, "only {} rejections recorded", rejected);
    }
}

async fn get(mfa: &Arc<MfaService>, path_and_query: &str) -> StatusCode {
    let mut req = Request::get(path_and_query).body(Body::empty()).expect("request");
    req.extensions_mut().insert(ConnectInfo(PeerAddr(SocketAddr::from(([198, 51, 100, 66], 4000)))));
    mfa.clone().router().oneshot(req).await.map(|r| r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A forged or garbled gateway request never opens a ceremony.
    #[test]
    fn forged_gateway_requests_are_refused(token in "[A-Za-z0-9_.-]{0,300}") {
        let rt = runtime();
        let (mfa, recorder) = service();
        for path in [MFA_VERIFY_PATH, MFA_ENROLL_PATH] {
            let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("request", &token).finish();
            let status = rt.block_on(get(&mfa, &format!("{path}?{q}")));
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", path);
        }
        prop_assert!(mfa.state().ceremonies.is_empty());
        let rejected = recorder.snapshot().events.iter().filter(|e| matches!(e.body, EventBody::MfaRejected { .. })).count();
        prop_assert_eq!(rejected, 2);
    }
}

#[test]
fn malformed_totp_codes_are_400_and_each_ceremony_is_single_use() {
    let rt = runtime();
    let (mfa, _) = service();
    let (path, ceremony) = ceremonies(&mfa).remove(0);
    assert_eq!(
        rt.block_on(post(&mfa, path, form(&[("ceremony", &ceremony), ("code", "12ab56")]))),
        StatusCode::BAD_REQUEST
    );
    // The ceremony was consumed by the failed attempt.
    let again = rt.block_on(post(&mfa, path, form(&[("ceremony", &ceremony), ("code", "123456")])));
    assert_eq!(again, StatusCode::BAD_REQUEST);
}

#[test]
fn oversized_payloads_are_refused_with_413() {
    let rt = runtime();
    let (mfa, _) = service();
    let big = "A".repeat(MAX_FORM + 1);
    let status = rt.block_on(post(&mfa, "/verify/webauthn", form(&[("credential", &big)])));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn failures_are_rate_limited_per_user() {
    let rt = runtime();
    let (mfa, _) = service();
    // Alice has a TOTP factor; wrong codes count against her.
    mfa.state().store.add(
        "alice",
        Factor {
            id: "totp-x".into(),
            enrolled: NOW,
            secret: FactorSecret::Totp(TotpVerifier::new(&mfa.config.totp, &[9u8; 20]).expect("verifier")),
        },
    );
    let verify =
        request_claims(MfaPurpose::Verify { app: "chat".into(), allowed: vec![FactorKind::Totp], max_age_s: 0 });
    let mut statuses = Vec::new();
    for _ in 0..mfa.config.max_failures + 1 {
        let ceremony = mfa.open_ceremony(&verify, "t", Step::Totp);
        statuses.push(rt.block_on(post(&mfa, "/verify/totp", form(&[("ceremony", &ceremony), ("code", "000000")]))));
    }
    let limit = mfa.config.max_failures as usize;
    assert!(statuses[..limit].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(statuses[limit], StatusCode::TOO_MANY_REQUESTS);
}
