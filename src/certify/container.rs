//! Providers in containers, for users who have a Docker engine:
//! `lab certify idp --container keycloak[:TAG]`.
//!
//! This module is the part that needs no engine: which image to start and
//! how (command, environment, files, port, readiness), the provider's
//! configuration (a Keycloak realm with the gateway's client and a user),
//! what to certify once it runs, and whether an engine answers at all. The
//! `lab` binary starts the container with `testcontainers` behind its
//! `containers` feature; without an engine it stops with
//! [`ContainerError::NoEngine`] before anything is pulled.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

/// A provider the certifier knows how to start in a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The provider's name, as given on the command line.
    pub provider: String,
    /// Image name, without the tag.
    pub image: String,
    /// Image tag.
    pub tag: String,
    /// The container's command (arguments to the image's entry point).
    pub cmd: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Files copied into the container before it starts: path, contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// The container port the provider listens on (published on a free
    /// loopback port of the host).
    pub port: u16,
    /// A line on the container's stdout that says it is ready.
    pub ready_line: String,
    /// How long to wait for that line (the first start pulls the image).
    pub startup_timeout: Duration,
    /// The issuer's path on the published port (`/realms/NAME`).
    pub issuer_path: String,
    /// What the certifier signs in with.
    pub login: ContainerLogin,
}

/// The client and user the container's provider is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLogin {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Registered redirect URI (nothing listens there).
    pub redirect_uri: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// The built-in login driver that fits the provider's pages.
    pub driver: String,
}

impl ContainerSpec {
    /// The issuer once the container's port is published at `host_port`
    /// on loopback.
    pub fn issuer(&self, host_port: u16) -> String {
        format!("http://127.0.0.1:{host_port}{}", self.issuer_path)
    }
}

/// Why a container cannot be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    /// The provider is not one this certifier can start.
    #[error("--container `{given}`: unknown provider; known: {known}")]
    UnknownProvider {
        /// What was asked for.
        given: String,
        /// The providers this certifier can start.
        known: String,
    },
    /// The tag is not a Docker tag.
    #[error("--container `{given}`: `{tag}` is not an image tag (letters, digits, `_`, `.`, `-`; at most 128)")]
    BadTag {
        /// What was asked for.
        given: String,
        /// The tag.
        tag: String,
    },
    /// `DOCKER_HOST` names no endpoint this certifier can reach.
    #[error("DOCKER_HOST `{value}`: {why}")]
    BadDockerHost {
        /// The variable's value.
        value: String,
        /// Why it is unusable.
        why: String,
    },
    /// Nothing answers as a Docker engine.
    #[error(
        "no Docker engine at {endpoint}: {why}. `--container` needs a running Docker engine (set DOCKER_HOST to \
         reach another one); without one, start the provider yourself and pass --issuer"
    )]
    NoEngine {
        /// Where it was looked for.
        endpoint: String,
        /// What happened.
        why: String,
    },
}

/// The providers `--container` can start.
pub const PROVIDERS: &[&str] = &["keycloak"];

/// Keycloak's default tag: a release whose realm import and
/// `KC_BOOTSTRAP_ADMIN_*` variables this spec is written for.
pub const KEYCLOAK_DEFAULT_TAG: &str = "26.0";

/// The spec for `--container NAME[:TAG]`.
pub fn provider(given: &str) -> Result<ContainerSpec, ContainerError> {
    let (name, tag) = match given.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (given, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(ContainerError::BadTag { given: given.to_string(), tag: t.to_string() });
        }
    }
    match name {
        "keycloak" => Ok(keycloak(tag.unwrap_or(KEYCLOAK_DEFAULT_TAG))),
        _ => Err(ContainerError::UnknownProvider { given: given.to_string(), known: PROVIDERS.join(", ") }),
    }
}

const REALM: &str = "lockstep";
const REALM_FILE: &str = "/opt/keycloak/data/import/lockstep-realm.json";

/// Keycloak in development mode with one realm imported at start: the
/// gateway's confidential client (code flow, PKCE S256 required, the
/// lab's redirect URI) and the user `alice`.
pub fn keycloak(tag: &str) -> ContainerSpec {
    let login = ContainerLogin {
        client_id: "lab-gateway".into(),
        client_secret: "lab-gateway-secret".into(),
        redirect_uri: "http://127.0.0.1:9/cb".into(),
        username: "alice".into(),
        password: "alicepass".into(),
        driver: "form".into(),
    };
    let realm = keycloak_realm(&login);
    ContainerSpec {
        provider: "keycloak".into(),
        image: "quay.io/keycloak/keycloak".into(),
        tag: tag.to_string(),
        cmd: vec!["start-dev".into(), "--import-realm".into(), "--http-port=8080".into()],
        env: vec![
            ("KC_BOOTSTRAP_ADMIN_USERNAME".into(), "admin".into()),
            ("KC_BOOTSTRAP_ADMIN_PASSWORD".into(), "admin".into()),
        ],
        files: vec![(REALM_FILE.into(), realm)],
        port: 8080,
        ready_line: "Listening on:".into(),
        startup_timeout: Duration::from_secs(180),
        issuer_path: format!("/realms/{REALM}"),
        login,
    }
}

/// The realm Keycloak imports (its JSON export format).
fn keycloak_realm(login: &ContainerLogin) -> Vec<u8> {
    let redirect = &login.redirect_uri;
    let logged_out = redirect.trim_end_matches("/cb").to_string() + "/logged-out";
    let realm = json!({
        "realm": REALM,
        "enabled": true,
        "sslRequired": "none",
        "clients": [{
            "clientId": login.client_id,
            "enabled": true,
            "protocol": "openid-connect",
            "publicClient": false,
            "clientAuthenticatorType": "client-secret",
            "secret": login.client_secret,
            "standardFlowEnabled": true,
            "implicitFlowEnabled": false,
            "directAccessGrantsEnabled": false,
            "redirectUris": [redirect],
            "attributes": {
                "pkce.code.challenge.method": "S256",
                "post.logout.redirect.uris": logged_out,
            },
        }],
        "users": [{
            "username": login.username,
            "enabled": true,
            "email": format!("{}@lab.test", login.username),
            "emailVerified": true,
            "firstName": "Alice",
            "lastName": "Lab",
            "credentials": [{"type": "password", "value": login.password, "temporary": false}],
        }],
    });
    serde_json::to_vec_pretty(&realm).unwrap_or_default()
}

/// Where a Docker engine is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address (`host:port`), plain HTTP.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The engine endpoint from `DOCKER_HOST` (its value, if set), or the
/// default socket.
pub fn endpoint(docker_host: Option<&str>) -> Result<Endpoint, ContainerError> {
    let Some(value) = docker_host.filter(|v| !v.trim().is_empty()) else {
        return Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")));
    };
    let bad = |why: &str| ContainerError::BadDockerHost { value: value.to_string(), why: why.to_string() };
    if let Some(path) = value.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad("no socket path"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = value.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
            return Err(bad("expected tcp://HOST:PORT"));
        }
        return Ok(Endpoint::Tcp(addr.to_string()));
    }
    Err(bad("only unix:// and tcp:// endpoints are supported (TLS endpoints are not)"))
}

/// Asks the engine at `endpoint` for `GET /_ping` and requires `OK`.
/// Blocking, bounded by `timeout`; run it before anything is pulled.
pub fn probe(endpoint: &Endpoint, timeout: Duration) -> Result<(), ContainerError> {
    let no_engine = |why: String| ContainerError::NoEngine { endpoint: endpoint.to_string(), why };
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut answer = Vec::new();
    match endpoint {
        Endpoint::Unix(path) => {
            #[cfg(unix)]
            {
                let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| no_engine(e.to_string()))?;
                s.set_read_timeout(Some(timeout)).map_err(|e| no_engine(e.to_string()))?;
                s.set_write_timeout(Some(timeout)).map_err(|e| no_engine(e.to_string()))?;
                s.write_all(request).map_err(|e| no_engine(e.to_string()))?;
                s.take(64 * 1024).read_to_end(&mut answer).map_err(|e| no_engine(e.to_string()))?;
            }
            #[cfg(not(unix))]
            {
                let _ = (path, request, timeout);
                return Err(no_engine("Unix sockets are not available on this platform".into()));
            }
        }
        Endpoint::Tcp(addr) => {
            use std::net::ToSocketAddrs;
            let sock = addr
                .to_socket_addrs()
                .map_err(|e| no_engine(e.to_string()))?
                .next()
                .ok_or_else(|| no_engine("the host has no address".into()))?;
            let mut s = std::net::TcpStream::connect_timeout(&sock, timeout).map_err(|e| no_engine(e.to_string()))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| no_engine(e.to_string()))?;
            s.write_all(request).map_err(|e| no_engine(e.to_string()))?;
            s.take(64 * 1024).read_to_end(&mut answer).map_err(|e| no_engine(e.to_string()))?;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_ok = text.lines().next().is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    let body_ok = text.split("\r\n\r\n").nth(1).is_some_and(|b| b.trim() == "OK");
    if status_ok && body_ok {
        Ok(())
    } else {
        let first = text.lines().next().unwrap_or("(no answer)").chars().take(80).collect::<String>();
        Err(no_engine(format!("it does not answer as a Docker engine (`{first}`)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloak_is_the_default_tag_and_a_tag_can_be_chosen() {
        let spec = provider("keycloak").unwrap();
        assert_eq!((spec.image.as_str(), spec.tag.as_str()), ("quay.io/keycloak/keycloak", KEYCLOAK_DEFAULT_TAG));
        assert_eq!(provider("keycloak:25.0.6").unwrap().tag, "25.0.6");
        assert_eq!(spec.issuer(32768), "http://127.0.0.1:32768/realms/lockstep");
        assert!(spec.cmd.contains(&"--import-realm".to_string()));
        assert_eq!(spec.files.len(), 1);
        assert!(spec.files[0].0.starts_with("/opt/keycloak/data/import/"));
    }

    #[test]
    fn unknown_providers_and_bad_tags_are_named() {
        let e = provider("okta").unwrap_err();
        assert_eq!(e.to_string(), "--container `okta`: unknown provider; known: keycloak");
        for tag in ["", "a b", "-x", "x/y", &"9".repeat(129)] {
            let given = format!("keycloak:{tag}");
            assert!(matches!(provider(&given), Err(ContainerError::BadTag { .. })), "{given}");
        }
    }

    /// The realm file is what the certifier will sign in with: the client
    /// with its secret, redirect URI and S256 PKCE, and the user.
    #[test]
    fn the_realm_registers_the_gateway_client_and_the_user() {
        let spec = provider("keycloak").unwrap();
        let realm: serde_json::Value = serde_json::from_slice(&spec.files[0].1).unwrap();
        assert_eq!(realm["realm"], "lockstep");
        let client = &realm["clients"][0];
        assert_eq!(client["clientId"], spec.login.client_id.as_str());
        assert_eq!(client["secret"], spec.login.client_secret.as_str());
        assert_eq!(client["redirectUris"][0], spec.login.redirect_uri.as_str());
        assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
        assert_eq!(client["publicClient"], false);
        let user = &realm["users"][0];
        assert_eq!(user["username"], spec.login.username.as_str());
        assert_eq!(user["credentials"][0]["value"], spec.login.password.as_str());
        assert_eq!(user["credentials"][0]["temporary"], false);
    }

    #[test]
    fn docker_host_is_read_or_defaults_to_the_local_socket() {
        assert_eq!(endpoint(None).unwrap(), Endpoint::Unix("/var/run/docker.sock".into()));
        assert_eq!(endpoint(Some("")).unwrap(), Endpoint::Unix("/var/run/docker.sock".into()));
        assert_eq!(
            endpoint(Some("unix:///run/user/1000/docker.sock")).unwrap().to_string(),
            "unix:///run/user/1000/docker.sock"
        );
        assert_eq!(endpoint(Some("tcp://127.0.0.1:2375")).unwrap(), Endpoint::Tcp("127.0.0.1:2375".into()));
        for bad in ["ssh://host", "tcp://nohost", "unix://", "npipe:////./pipe/docker_engine"] {
            let e = endpoint(Some(bad)).unwrap_err();
            assert!(e.to_string().starts_with(&format!("DOCKER_HOST `{bad}`:")), "{e}");
        }
    }

    #[test]
    fn a_missing_socket_means_no_engine_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(dir.path().join("docker.sock"));
        let e = probe(&ep, Duration::from_secs(1)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ContainerError::NoEngine { .. }));
        assert!(text.contains(&ep.to_string()) && text.contains("--issuer"), "{text}");
    }

    /// A fake engine on a Unix socket: `_ping` answered `OK` is an engine;
    /// anything else is not.
    #[cfg(unix)]
    #[test]
    fn the_probe_accepts_only_an_engine_that_answers_ok() {
        let dir = tempfile::tempdir().unwrap();
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", true),
            ("HTTP/1.1 404 Not Found\r\n\r\nnope", false),
            ("SSH-2.0-OpenSSH\r\n", false),
        ] {
            let path = dir.path().join(format!("engine-{ok}-{}.sock", answer.len()));
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /_ping "));
                s.write_all(answer.as_bytes()).unwrap();
            });
            let got = probe(&Endpoint::Unix(path), Duration::from_secs(2));
            server.join().unwrap();
            assert_eq!(got.is_ok(), ok, "{answer:?}: {got:?}");
        }
    }
}
