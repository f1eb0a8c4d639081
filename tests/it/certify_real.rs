//! `lab certify idp` against real providers nobody here wrote, started by
//! the fixtures of `peers.rs`. Every failing check must be a real finding
//! about that provider; each is named and explained below.

use std::sync::Arc;

use lockstep::certify::driver::{self, DriverSettings};
use lockstep::certify::{Certification, CertifyOptions, Profile, ProfileVerdict, Verdict, certify, report};
use lockstep::net::real::SystemClock;
use lockstep::rng::SeededRng;

use crate::peers::{self, GlewlwydPeer, OidcProviderPeer, Peer, http_client};

async fn certify_peer(peer: &Peer, driver_name: &str) -> Certification {
    let settings = DriverSettings {
        username: peer.username.clone(),
        password: peer.password.clone(),
        client_id: peer.client_id.clone(),
    };
    let mut login = driver::driver(driver_name, &settings).unwrap();
    let options = CertifyOptions {
        issuer: peer.issuer.as_str().trim_end_matches('/').to_string(),
        client_id: peer.client_id.clone(),
        client_secret: Some(peer.client_secret.clone()),
        redirect_uri: peer.redirect_uri.clone(),
        profiles: Profile::ALL.to_vec(),
        allow_pkce_plain: false,
        acr_values: None,
        rotate_command: None,
        leeway: std::time::Duration::from_secs(60),
    };
    let cert = certify(&options, login.as_mut(), http_client(), Arc::new(SystemClock), SeededRng::from_seed(5)).await;
    eprintln!("{}", report::markdown(&cert));
    cert
}

fn verdict_of(cert: &Certification, profile: Profile) -> ProfileVerdict {
    cert.profiles.iter().find(|p| p.profile == profile).map(|p| p.verdict).unwrap()
}

/// The reports agree with the certification and keep no secret.
fn check_reports(peer: &Peer, cert: &Certification) {
    let dir = tempfile::tempdir().unwrap();
    let written = report::write_all(dir.path(), cert).unwrap();
    assert_eq!(written.len(), 4);
    let json = std::fs::read_to_string(dir.path().join("certification.json")).unwrap();
    let back: Certification = serde_json::from_str(&json).unwrap();
    assert_eq!(back.ids_with(Verdict::Fail), cert.ids_with(Verdict::Fail));
    assert!(!json.contains(&peer.client_secret), "the client secret leaked into certification.json");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure").count(), cert.ids_with(Verdict::Fail).len());
    let html = std::fs::read_to_string(dir.path().join("certification.html")).unwrap();
    for id in cert.ids_with(Verdict::Fail) {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing from the HTML report");
    }
}

/// panva's oidc-provider with its defaults passes Basic and Session
/// semantics. Its two failures are real: its ID tokens carry no `amr` (the
/// library emits it only when an account supplies one) and no `auth_time`
/// unless `max_age` or the claim is requested, so a gateway can neither
/// accept its MFA nor judge the evidence's age. Warnings: the JWKS has no
/// cache lifetime, and refresh tokens of a confidential client are not
/// rotated (the library's default `rotateRefreshToken`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_passes_basic_and_session_and_fails_mfa_evidence_for_real_reasons() {
    let Some(peer) = OidcProviderPeer::start().await else { return };
    let cert = certify_peer(&peer, "form").await;
    println!("oidc-provider certification took {} ms", cert.duration_ms);
    assert_eq!(cert.ids_with(Verdict::Fail), ["mfa.amr-present", "mfa.auth-time"]);
    assert_eq!(cert.ids_with(Verdict::Warning), ["keys.cache-headers", "session.refresh-rotation"]);
    assert_eq!(verdict_of(&cert, Profile::Basic), ProfileVerdict::Pass);
    assert_eq!(verdict_of(&cert, Profile::SessionSemantics), ProfileVerdict::Pass);
    assert_eq!(verdict_of(&cert, Profile::MfaEvidence), ProfileVerdict::Fail);
    assert_eq!(verdict_of(&cert, Profile::KeyManagement), ProfileVerdict::Pass);
    assert!(!cert.passed());
    // What passed was really exercised: a code reuse was refused by the provider.
    assert!(cert.check("code.reuse").unwrap().detail.contains("invalid_grant"), "{:?}", cert.check("code.reuse"));
    assert_eq!(cert.check("session.logout").unwrap().verdict, Verdict::Pass);
    check_reports(&peer, &cert);
}

/// Glewlwyd 2.7.5 passes Basic. Its failures are real: every ID token has
/// `auth_time` 0, so neither `prompt=login` nor `max_age` can be seen to
/// force a new authentication, and the evidence's age is unknowable.
/// Warnings: its `amr` is the unregistered `session`, it accepts
/// authorization requests without PKCE (the client may use it; it is
/// allowed, not required), its JWKS is `no-store`, and refresh tokens are
/// not rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glewlwyd_passes_basic_and_its_auth_time_findings_are_named() {
    let Some(peer) = GlewlwydPeer::start().await else { return };
    let cert = certify_peer(&peer, "glewlwyd").await;
    println!("Glewlwyd certification took {} ms", cert.duration_ms);
    assert_eq!(cert.ids_with(Verdict::Fail), ["mfa.auth-time", "session.prompt-login", "session.max-age"]);
    assert_eq!(
        cert.ids_with(Verdict::Warning),
        ["keys.cache-headers", "mfa.amr-registered", "mfa.amr-mapping", "session.refresh-rotation", "pkce.required"]
    );
    assert!(cert.check("mfa.auth-time").unwrap().detail.starts_with("auth_time 0 "));
    assert_eq!(verdict_of(&cert, Profile::Basic), ProfileVerdict::Pass);
    assert_eq!(verdict_of(&cert, Profile::MfaEvidence), ProfileVerdict::Fail);
    assert_eq!(verdict_of(&cert, Profile::SessionSemantics), ProfileVerdict::Fail);
    assert_eq!(cert.check("session.prompt-none").unwrap().verdict, Verdict::Pass);
    assert_eq!(cert.check("session.revocation").unwrap().verdict, Verdict::Pass);
    check_reports(&peer, &cert);
}

/// The `lab` binary built beside this test binary.
fn lab_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let lab = dir.join("lab");
    assert!(lab.is_file(), "{} is missing: run the workspace's tests (cargo test --workspace)", lab.display());
    lab
}

/// The command line's contract: `--login-command` drives the login, and
/// the exit code is 0 only when every selected profile passes: Basic
/// alone passes (0); with MFA evidence it does not (1); session checks
/// cannot run through a command that keeps no observable session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_certify_exit_code_follows_the_selected_profiles_with_a_login_command() {
    let Some(()) = peers::curl() else { return };
    let Some(peer) = OidcProviderPeer::start().await else { return };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc-provider/login.sh");
    let run = |profiles: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(lab_binary())
            .args(["certify", "idp", "--issuer", peer.issuer.as_str().trim_end_matches('/')])
            .args(["--client-id", &peer.client_id, "--redirect-uri", peer.redirect_uri.as_str()])
            .args(["--login-command", &format!("sh {}", script.display()), "--profile", profiles])
            .arg("--report-dir")
            .arg(dir.path())
            .env("LAB_CLIENT_SECRET", &peer.client_secret)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = std::fs::read_to_string(dir.path().join("certification.json")).unwrap_or_default();
        (out.status.code(), stdout, json)
    };
    let (code, stdout, json) = run("basic");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("CERTIFIED") && json.contains("\"driver\": \"command\""), "{stdout}");
    let (code, stdout, _) = run("basic,mfa-evidence,session-semantics");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("fail mfa.amr-present") && stdout.contains("not-run session.prompt-none"), "{stdout}");
}
