//! The certifier's built-in login drivers against real providers started by
//! the fixtures of `peers.rs`: each driver must bring back a redirect with a
//! `code` and the exact `state` sent, and the code must buy an ID token at
//! the provider's token endpoint.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use base64::Engine as _;
use lockstep::certify::driver::{self, DriverError, DriverSettings};
use lockstep::oauth::pkce_challenge;
use url::Url;

use crate::peers::{self, GlewlwydPeer, OidcProviderPeer, Peer, client_post};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One authorization request and what it takes to redeem its code.
struct Authorization {
    url: Url,
    state: String,
    nonce: String,
    verifier: String,
}

fn settings(peer: &Peer) -> DriverSettings {
    DriverSettings {
        username: peer.username.clone(),
        password: peer.password.clone(),
        client_id: peer.client_id.clone(),
    }
}

fn endpoint(discovery: &serde_json::Value, name: &str) -> Url {
    let s = discovery[name].as_str().unwrap_or_else(|| panic!("discovery has no {name}: {discovery}"));
    Url::parse(s).unwrap()
}

/// A code + PKCE S256 request with a state that needs encoding.
fn authorization(peer: &Peer, discovery: &serde_json::Value, scope: &str, extra: &[(&str, &str)]) -> Authorization {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let state = format!("st {n}/{}+&=", std::process::id());
    let nonce = format!("nonce-{n}-{}", std::process::id());
    let verifier = format!("verifier-{n:04}-{}-{}", std::process::id(), "x".repeat(40));
    let mut url = endpoint(discovery, "authorization_endpoint");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &peer.client_id)
        .append_pair("redirect_uri", peer.redirect_uri.as_str())
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        url.query_pairs_mut().append_pair(k, v);
    }
    Authorization { url, state, nonce, verifier }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The code of a redirect that must carry it and the request's state.
fn code_of(redirect: &Url, peer: &Peer, request: &Authorization) -> String {
    assert!(driver::is_redirect_to(redirect, &peer.redirect_uri), "{redirect}");
    assert_eq!(param(redirect, "state").as_deref(), Some(request.state.as_str()), "{redirect}");
    assert_eq!(param(redirect, "error"), None, "{redirect}");
    param(redirect, "code").unwrap_or_else(|| panic!("no code in {redirect}"))
}

/// Redeems `code`; the ID token and its claims (checked for audience and
/// nonce).
async fn redeem(
    peer: &Peer,
    discovery: &serde_json::Value,
    code: &str,
    request: &Authorization,
) -> (String, serde_json::Value) {
    let (id_token, claims, _) = redeem_all(peer, discovery, code, request).await;
    (id_token, claims)
}

/// As [`redeem`], with the whole token response.
async fn redeem_all(
    peer: &Peer,
    discovery: &serde_json::Value,
    code: &str,
    request: &Authorization,
) -> (String, serde_json::Value, serde_json::Value) {
    let (status, body) = client_post(
        peer,
        endpoint(discovery, "token_endpoint"),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", peer.redirect_uri.as_str()),
            ("code_verifier", &request.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "token endpoint: {body}");
    let id_token = body["id_token"].as_str().unwrap_or_else(|| panic!("no id_token: {body}")).to_string();
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3, "{id_token}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).expect("payload base64url");
    let claims: serde_json::Value = serde_json::from_slice(&payload).expect("payload JSON");
    let aud_ok = claims["aud"] == serde_json::json!(peer.client_id)
        || claims["aud"].as_array().is_some_and(|a| a.contains(&serde_json::json!(peer.client_id)));
    assert!(aud_ok, "aud: {claims}");
    assert_eq!(claims["nonce"].as_str(), Some(request.nonce.as_str()), "{claims}");
    (id_token, claims, body)
}

fn report_startup(name: &str, peer: &Peer) {
    eprintln!("{name} ready in {:?} (log {})", peer.startup, peer.process.log.display());
}

#[tokio::test]
async fn the_form_driver_signs_in_at_oidc_provider_keeps_its_session_and_logs_out() {
    let Some(peer) = OidcProviderPeer::start().await else { return };
    report_startup("oidc-provider", &peer);
    let discovery = peer.discovery().await;
    let mut d = driver::driver("form", &settings(&peer)).unwrap();
    assert!(d.keeps_session());

    let started = Instant::now();
    let request = authorization(&peer, &discovery, "openid email profile", &[]);
    let redirect = d.authorize(&request.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &request);
    let (id_token, claims) = redeem(&peer, &discovery, &code, &request).await;
    assert_eq!(claims["sub"].as_str(), Some(peer.username.as_str()), "{claims}");
    eprintln!("form driver: login, consent and code exchange in {:?}", started.elapsed());

    // The same user agent still has the provider's session.
    let silent = authorization(&peer, &discovery, "openid email profile", &[("prompt", "none")]);
    let redirect = d.authorize(&silent.url, &peer.redirect_uri).await.unwrap();
    code_of(&redirect, &peer, &silent);

    // Logout through the provider's confirmation page ends it.
    let mut end = endpoint(&discovery, "end_session_endpoint");
    end.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", peer.post_logout_redirect_uri.as_str())
        .append_pair("state", "bye");
    d.logout(&end).await.unwrap();
    let after = authorization(&peer, &discovery, "openid", &[("prompt", "none")]);
    let redirect = d.authorize(&after.url, &peer.redirect_uri).await.unwrap();
    assert_eq!(param(&redirect, "state").as_deref(), Some(after.state.as_str()), "{redirect}");
    assert_eq!(param(&redirect, "error").as_deref(), Some("login_required"), "{redirect}");
    assert_eq!(param(&redirect, "code"), None, "{redirect}");
}

/// A site whose every page is a login form (a provider that refuses the
/// password by showing the form again); returns its port.
fn always_a_login_form() -> u16 {
    serve(8, |_| {
        let page = r#"<html><form method="post" action="/login"><input name="username"><input type="password" name="password"></form></html>"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
    })
}

#[tokio::test]
async fn the_form_driver_reports_a_login_form_that_comes_back() {
    let port = always_a_login_form();
    let settings = DriverSettings { username: "u".into(), password: "p".into(), client_id: "c".into() };
    let mut d = driver::driver("form", &settings).unwrap();
    let authorize = Url::parse(&format!("http://localhost:{port}/auth")).unwrap();
    match d.authorize(&authorize, &Url::parse("http://127.0.0.1:9/cb").unwrap()).await {
        Err(DriverError::NoRedirect(m)) => assert!(m.contains("login form came back"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oidc_provider_issues_refresh_tokens_for_offline_access_with_consent() {
    let Some(peer) = OidcProviderPeer::start().await else { return };
    let discovery = peer.discovery().await;
    let mut d = driver::driver("form", &settings(&peer)).unwrap();
    // The library's default: `offline_access` counts only with `prompt=consent`.
    let without = authorization(&peer, &discovery, "openid offline_access", &[]);
    let redirect = d.authorize(&without.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &without);
    let (_, _, body) = redeem_all(&peer, &discovery, &code, &without).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    let with = authorization(&peer, &discovery, "openid offline_access", &[("prompt", "consent")]);
    let redirect = d.authorize(&with.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &with);
    let (_, _, body) = redeem_all(&peer, &discovery, &code, &with).await;
    let refresh = body["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh_token: {body}"));
    let (status, body) = client_post(
        &peer,
        endpoint(&discovery, "token_endpoint"),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string(), "{body}");
}

#[tokio::test]
async fn the_form_driver_signs_in_at_the_labs_own_idp_in_real_mode() {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use lockstep::config::LabConfig;
    use lockstep::net::Clock as _;
    use lockstep::net::real::SystemClock;
    use lockstep::realmode::{RealLab, RealOptions};
    use lockstep::trace::Recorder;

    let (lab, _) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    let recorder = Recorder::new(SystemClock.now(), Arc::new(SystemClock));
    let options = RealOptions { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), base_port: None, seed: Some(11) };
    let real = RealLab::start(&lab, &options, recorder).await.unwrap();
    let client = &real.config.idp.clients[0];
    let redirect_uri = Url::parse(&client.redirect_uris[0]).unwrap();
    let user = &real.config.idp.users[0];
    let authorize = |state: &str| {
        let mut url = Url::parse(&format!("{}/authorize", real.config.idp.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("scope", "openid")
            .append_pair("state", state)
            .append_pair("nonce", "n")
            .append_pair("code_challenge", &pkce_challenge("a-verifier-of-the-lab-that-is-long-enough-0"))
            .append_pair("code_challenge_method", "S256");
        url
    };
    let settings = |password: &str| DriverSettings {
        username: user.username.clone(),
        password: password.to_string(),
        client_id: client.client_id.clone(),
    };

    let mut d = driver::FormDriver::with_directory(settings(&user.password), real.directory.clone());
    let redirect =
        lockstep::certify::driver::LoginDriver::authorize(&mut d, &authorize("lab 1"), &redirect_uri).await.unwrap();
    assert!(driver::is_redirect_to(&redirect, &redirect_uri), "{redirect}");
    assert_eq!(param(&redirect, "state").as_deref(), Some("lab 1"));
    assert!(param(&redirect, "code").is_some_and(|c| !c.is_empty()), "{redirect}");

    let mut wrong = driver::FormDriver::with_directory(settings("not-the-password"), real.directory.clone());
    match lockstep::certify::driver::LoginDriver::authorize(&mut wrong, &authorize("lab 2"), &redirect_uri).await {
        Err(DriverError::NoRedirect(m)) => {
            assert!(m.contains("login form came back") && m.contains("Wrong user name or password"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_redirect_driver_stops_at_a_login_page_with_the_reason() {
    let Some(peer) = OidcProviderPeer::start().await else { return };
    let discovery = peer.discovery().await;
    let mut d = driver::driver("redirect", &settings(&peer)).unwrap();
    let request = authorization(&peer, &discovery, "openid", &[]);
    match d.authorize(&request.url, &peer.redirect_uri).await {
        Err(DriverError::NoRedirect(m)) => assert!(m.contains("stopped at 200") && m.contains("/interaction/"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A loopback HTTP server for `requests` requests, answering each request
/// target with `answer`'s raw response; returns its port.
fn serve(requests: usize, answer: impl Fn(&Url) -> String + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let url = Url::parse(&format!("http://127.0.0.1:{port}{target}")).unwrap();
            let _ = stream.write_all(answer(&url).as_bytes());
        }
    });
    port
}

/// A provider that signs everyone in: `/auth` redirects to `/step`, which
/// redirects to the redirect URI with a code and the request's state.
fn auto_provider() -> u16 {
    serve(8, |url| {
        let state = param(url, "state").unwrap_or_default();
        let redirect = param(url, "redirect_uri").unwrap_or_default();
        let location = if url.path() == "/auth" {
            let mut next = url.join("/step").unwrap();
            next.query_pairs_mut().append_pair("state", &state).append_pair("redirect_uri", &redirect);
            next.to_string()
        } else {
            let mut next = Url::parse(&redirect).unwrap();
            next.query_pairs_mut().append_pair("code", "mock-code").append_pair("state", &state);
            next.to_string()
        };
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    })
}

#[tokio::test]
async fn the_redirect_driver_follows_a_mock_provider_to_the_redirect_uri() {
    let port = auto_provider();
    let settings = DriverSettings { username: "u".into(), password: "p".into(), client_id: "c".into() };
    let mut d = driver::driver("redirect", &settings).unwrap();
    let redirect_uri = Url::parse("http://127.0.0.1:9/cb").unwrap();
    let mut authorize = Url::parse(&format!("http://localhost:{port}/auth")).unwrap();
    authorize.query_pairs_mut().append_pair("state", "s 1&2").append_pair("redirect_uri", redirect_uri.as_str());
    let redirect = d.authorize(&authorize, &redirect_uri).await.unwrap();
    assert_eq!(param(&redirect, "state").as_deref(), Some("s 1&2"));
    assert_eq!(param(&redirect, "code").as_deref(), Some("mock-code"));
}

#[tokio::test]
async fn the_glewlwyd_driver_signs_in_through_glewlwyds_api_and_logs_out() {
    let Some(peer) = GlewlwydPeer::start().await else { return };
    report_startup("Glewlwyd", &peer);
    let discovery = peer.discovery().await;
    let mut d = driver::driver("glewlwyd", &settings(&peer)).unwrap();
    let started = Instant::now();
    let request = authorization(&peer, &discovery, "openid", &[]);
    let redirect = d.authorize(&request.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &request);
    redeem(&peer, &discovery, &code, &request).await;
    eprintln!("glewlwyd driver: login, grant and code exchange in {:?}", started.elapsed());

    // The session carries over: a second authorization needs no login.
    let again = authorization(&peer, &discovery, "openid", &[]);
    let redirect = d.authorize(&again.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &again);
    // (Each login is a new Glewlwyd session: only the latest ID token names a live one.)
    let (id_token, _) = redeem(&peer, &discovery, &code, &again).await;

    // Glewlwyd answers `prompt=none` only with an `id_token_hint`: a code
    // while the session lives, an error once the driver has logged out.
    let silent = authorization(&peer, &discovery, "openid", &[("prompt", "none"), ("id_token_hint", &id_token)]);
    let redirect = d.authorize(&silent.url, &peer.redirect_uri).await.unwrap();
    code_of(&redirect, &peer, &silent);
    let mut end = endpoint(&discovery, "end_session_endpoint");
    end.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", peer.post_logout_redirect_uri.as_str());
    d.logout(&end).await.unwrap();
    let after = authorization(&peer, &discovery, "openid", &[("prompt", "none"), ("id_token_hint", &id_token)]);
    let redirect = d.authorize(&after.url, &peer.redirect_uri).await.unwrap();
    assert_eq!(param(&redirect, "state").as_deref(), Some(after.state.as_str()), "{redirect}");
    assert_eq!(param(&redirect, "code"), None, "{redirect}");
    let error = param(&redirect, "error").unwrap_or_default();
    assert!(["login_required", "interaction_required"].contains(&error.as_str()), "{redirect}");
}

#[tokio::test]
async fn the_glewlwyd_driver_reports_a_refused_password() {
    let Some(peer) = GlewlwydPeer::start().await else { return };
    let discovery = peer.discovery().await;
    let mut s = settings(&peer);
    s.password = "wrong".into();
    let mut d = driver::driver("glewlwyd", &s).unwrap();
    let request = authorization(&peer, &discovery, "openid", &[]);
    match d.authorize(&request.url, &peer.redirect_uri).await {
        Err(DriverError::Http(m)) => assert!(m.contains("Glewlwyd login") && m.contains("401"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn login_script() -> String {
    format!("sh {}/tests/peers/oidc-provider/login.sh", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn the_command_driver_signs_in_at_oidc_provider_with_our_curl_script() {
    let Some(()) = peers::curl() else { return };
    let Some(peer) = OidcProviderPeer::start().await else { return };
    let discovery = peer.discovery().await;
    let mut d = driver::command_driver(&login_script(), &settings(&peer)).unwrap();
    let request = authorization(&peer, &discovery, "openid email", &[]);
    let redirect = d.authorize(&request.url, &peer.redirect_uri).await.unwrap();
    let code = code_of(&redirect, &peer, &request);
    let (_, claims) = redeem(&peer, &discovery, &code, &request).await;
    assert_eq!(claims["sub"].as_str(), Some(peer.username.as_str()), "{claims}");
}

#[tokio::test]
async fn a_failing_login_command_says_how_it_failed() {
    let settings = DriverSettings { username: "u".into(), password: "p".into(), client_id: "c".into() };
    let mut d = driver::command_driver(&login_script(), &settings).unwrap();
    // Nothing listens on port 9: curl fails, and so does the script.
    let authorize = Url::parse("http://127.0.0.1:9/auth?client_id=c").unwrap();
    let redirect_uri = Url::parse("http://127.0.0.1:9/cb").unwrap();
    match d.authorize(&authorize, &redirect_uri).await {
        Err(DriverError::Command(m)) => {
            assert!(m.contains("login.sh") && m.contains("exit status"), "{m}");
            assert!(m.contains("curl"), "stderr is quoted: {m}");
        }
        other => panic!("{other:?}"),
    }
}
