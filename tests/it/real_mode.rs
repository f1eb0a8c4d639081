//! Real mode: the same components serve a whole sign-in over real loopback
//! sockets (tokio side of the seam, system clock).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use lockstep::config::LabConfig;
use lockstep::http::{Browser, Credentials, FactorResponder, Fetch, HttpClient, Landing, Navigation};
use lockstep::net::Clock;
use lockstep::net::real::{SystemClock, TokioNet};
use lockstep::protocol::DeviceSessionInfo;
use lockstep::realmode::{RealLab, RealOptions};
use lockstep::trace::{EventBody, Recorder};
use url::Url;

fn alice() -> Credentials {
    Credentials { username: "alice".into(), password: "correct-horse-battery".into() }
}

#[tokio::test]
async fn a_browser_and_a_device_sign_in_over_real_sockets() {
    let (lab, _) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    let recorder = Recorder::new(SystemClock.now(), Arc::new(SystemClock));
    let options = RealOptions { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), base_port: None, seed: Some(5) };
    let real = RealLab::start(&lab, &options, recorder.clone()).await.unwrap();
    assert!(real.config.idp.issuer.starts_with("http://idp.lab.test:"), "{}", real.config.idp.issuer);
    let gateway_port = real.endpoints["gateway"].port();
    let net = TokioNet::shared();
    let browser = Browser::new(HttpClient::new(net.clone(), real.directory.clone()), Arc::new(SystemClock));
    let chat = Url::parse(&format!("http://chat.lab.test:{gateway_port}/inbox")).unwrap();

    // No session: a script gets 401.
    let xhr = Navigation { xhr: true, ..Navigation::default() };
    match browser.navigate(chat.clone(), &xhr).await.unwrap() {
        Landing::Page(p) => assert_eq!(p.status, 401),
        other => panic!("{other:?}"),
    }
    // Signing in through the IdP's form gets the app.
    let login = Navigation { login: Some(alice()), ..Navigation::default() };
    match browser.navigate(chat.clone(), &login).await.unwrap() {
        Landing::Page(p) => {
            assert_eq!(p.status, 200, "{}\n{}", p.text(), recorder.snapshot().to_jsonl());
            assert_eq!(p.text(), "chat: hello alice (GET /inbox)\n", "{}", recorder.snapshot().to_jsonl());
        }
        other => panic!("{other:?}"),
    }

    // A device registration ends in a hand-off to the agent with a token
    // that the device API accepts, until the administrator revokes it.
    let window = Browser::new(HttpClient::new(net.clone(), real.directory.clone()), Arc::new(SystemClock));
    let start = Url::parse(&format!("{}/auth/login?device=dev-real", real.config.gateway.auth_url)).unwrap();
    let token = match window.navigate(start, &login).await.unwrap() {
        Landing::Handoff(url) => {
            assert!(url.as_str().starts_with("lockstep://registered?token="), "{url}");
            url.query_pairs().find(|(k, _)| k == "token").unwrap().1.into_owned()
        }
        other => panic!("{other:?}"),
    };
    let api = HttpClient::new(net, real.directory.clone());
    let session_url = Url::parse(&format!("{}/device/session", real.config.gateway.auth_url)).unwrap();
    let ask = || Fetch::get(session_url.clone()).header("authorization", format!("Bearer {token}"));
    let r = api.send(ask()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let info: DeviceSessionInfo = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((info.user.as_str(), info.device.as_str()), ("alice", "dev-real"));
    assert_eq!(real.gateway.revoke_user("alice").len(), 2);
    assert_eq!(api.send(ask()).await.unwrap().status, 401);

    // The same trace events as in the simulation.
    let trace = recorder.snapshot();
    let issued = trace.events.iter().filter(|e| matches!(e.body, EventBody::SessionIssued { .. })).count();
    assert_eq!(issued, 2);
    assert!(trace.events.iter().any(|e| matches!(&e.body, EventBody::OriginRequest { status: 200, .. })));
}

/// The independent MFA service on real sockets: a security key enrolled
/// through the App Launcher, then asked for by the source-code app.
#[tokio::test]
async fn edge_mfa_with_a_security_key_over_real_sockets() {
    use lockstep::authenticator::{AuthenticatorKind, AuthenticatorProfile, VirtualAuthenticator};
    use lockstep::rng::SeededRng;
    use lockstep::world::factors::{Factor, Responder};

    let (lab, _) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    let recorder = Recorder::new(SystemClock.now(), Arc::new(SystemClock));
    let options = RealOptions { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), base_port: None, seed: Some(6) };
    let real = RealLab::start(&lab, &options, recorder.clone()).await.unwrap();
    let gateway_port = real.endpoints["gateway"].port();
    let browser = Browser::new(HttpClient::new(TokioNet::shared(), real.directory.clone()), Arc::new(SystemClock));
    let key = VirtualAuthenticator::new(
        "key",
        AuthenticatorProfile::of_kind(AuthenticatorKind::SecurityKey),
        &SeededRng::from_seed(1),
    )
    .unwrap();
    let key = Factor::Webauthn(Arc::new(tokio::sync::Mutex::new(key)));
    let responder = || Responder {
        factor: Some(key.clone()),
        verify_with: None,
        relay_origin: None,
        naive_client: false,
        replay_last_code: false,
        enrollment_code: None,
        clock: Arc::new(SystemClock),
        treat_http_as_secure: true,
    };
    let bob = Credentials { username: "bob".into(), password: "tr0ub4dor&3".into() };
    let code = Url::parse(&format!("http://code.lab.test:{gateway_port}/")).unwrap();

    // Without a factor the login stops at the MFA service's prompt ...
    let plain = Navigation { login: Some(bob.clone()), ..Navigation::default() };
    match browser.navigate(code.clone(), &plain).await.unwrap() {
        Landing::Page(p) => assert_eq!(p.status, 403, "no factor enrolled yet: {}", p.text()),
        other => panic!("{other:?}"),
    }
    // ... the App Launcher enrols the key ...
    let add = Url::parse(&format!("{}/launcher/mfa/add?kind=security_key", real.config.gateway.auth_url)).unwrap();
    let with_key = Navigation { login: Some(bob), factor: Some(responder().handle()), ..Navigation::default() };
    match browser.navigate(add, &with_key).await.unwrap() {
        Landing::Page(p) => assert_eq!(p.status, 201, "{} {}", p.url, p.text()),
        other => panic!("{other:?}"),
    }
    // ... and the key opens the app. Step by step, to show that the MFA
    // service's evidence only works in the browser that was sent for it.
    let prompt = match browser.navigate(code.clone(), &plain).await.unwrap() {
        Landing::Page(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(prompt.status, 401, "the MFA prompt: {}", prompt.text());
    let form = lockstep::http::form::forms(&prompt.text())
        .into_iter()
        .find(|f| f.value("mfa") == Some("webauthn-get"))
        .expect("a security-key form");
    let fields = responder().answer(&form, &prompt.url.origin().ascii_serialization()).await.expect("the key answers");
    let answered = browser.fetch(Fetch::post_form(prompt.url.join(&form.action).unwrap(), &fields)).await.unwrap();
    assert_eq!(answered.status, 302, "{}", answered.text());
    let evidence = answered.location().expect("back to the gateway with evidence");
    assert!(evidence.path().ends_with("/auth/mfa"), "{evidence}");
    let thief = Browser::new(HttpClient::new(TokioNet::shared(), real.directory.clone()), Arc::new(SystemClock));
    assert_eq!(thief.fetch(Fetch::get(evidence.clone())).await.unwrap().status, 403, "evidence in another browser");
    match browser.navigate(evidence, &Navigation { follow: true, ..Navigation::default() }).await.unwrap() {
        Landing::Page(p) => assert_eq!(p.text(), "code: hello bob (GET /)\n", "{}", recorder.snapshot().to_jsonl()),
        other => panic!("{other:?}"),
    }
    let trace = recorder.snapshot();
    assert!(trace.events.iter().any(|e| matches!(&e.body, EventBody::MfaEnrolled { user, .. } if user == "bob")));
    assert!(
        trace.events.iter().any(|e| matches!(&e.body, EventBody::MfaVerified { method, .. } if method == "webauthn"))
    );
}
