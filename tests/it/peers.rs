//! Real OpenID Connect providers that nobody here wrote, started by the
//! tests themselves (tests/peers/README.md): panva's `oidc-provider` (npm,
//! pinned by tests/peers/oidc-provider/package-lock.json, installed once
//! with `npm ci` into `target/peers/`) and Debian's Glewlwyd (a fresh
//! sqlite database and provisioning over its admin REST API per start).
//!
//! Each fixture picks a free loopback port, runs the provider as a child
//! (killed on drop, output in a log file under `target/peers/`), and waits
//! until discovery answers. Without node or glewlwyd a test prints
//! `SKIPPED: ... missing (install: ...)` and passes, unless
//! `LOCKSTEP_REQUIRE_PEERS` is set (by `.ci/run`), which turns a missing
//! peer into a failure: the rule of [`crate::peer`].

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::http::{Fetch, HttpClient, HttpResponse};
use lockstep::net::Directory;
use lockstep::net::real::TokioNet;
use url::Url;

use crate::peer;

/// How long a provider may take to answer discovery after its start.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The client every peer is provisioned with.
pub const CLIENT_ID: &str = "lab-gateway";
/// Its secret.
pub const CLIENT_SECRET: &str = "lab-gateway-secret";
/// The redirect URI: nothing listens on port 9 of loopback, so a driver
/// that fetched it would fail.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";
/// Where the client is sent after logout (never fetched either).
pub const POST_LOGOUT_REDIRECT_URI: &str = "http://127.0.0.1:9/logged-out";

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/peers` (or under `CARGO_TARGET_DIR`).
fn cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    let target = if target.is_absolute() { target } else { repo().join(target) };
    target.join("peers")
}

/// What installs panva's oidc-provider's runtime (the tests then `npm ci`
/// the provider itself into `target/peers/`).
pub const OIDC_PROVIDER_INSTALL: &str = "apt-get install nodejs npm";
/// What installs Glewlwyd and the tools its fixture uses.
pub const GLEWLWYD_INSTALL: &str = "apt-get install --no-install-recommends glewlwyd sqlite3 openssl";

/// A free port on loopback (the kernel's pick; released before the peer binds it).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A client on real sockets that knows `localhost`.
pub fn http_client() -> HttpClient {
    let mut directory = Directory::default();
    directory.insert("localhost", IpAddr::V4(Ipv4Addr::LOCALHOST));
    HttpClient::new(TokioNet::shared(), directory)
}

/// A peer's process: killed (and reaped) on drop; its output is in `log`.
pub struct PeerProcess {
    name: &'static str,
    child: Child,
    /// The file holding its stdout and stderr.
    pub log: PathBuf,
}

impl PeerProcess {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Self, String> {
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(PeerProcess { name, child, log })
    }

    /// An error message with the log's tail.
    pub fn failure(&mut self, what: &str) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" ({name} exited: {s})", name = self.name),
            _ => String::new(),
        };
        format!("{}: {what}{status}\nlog {}:\n{}", self.name, self.log.display(), log_tail(&self.log))
    }

    /// Waits until `url` answers (any status `ok` accepts), within
    /// [`READY_WITHIN`].
    async fn wait_until(&mut self, url: &Url, ok: impl Fn(&HttpResponse) -> bool) -> Result<Duration, String> {
        let started = Instant::now();
        let client = http_client();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.failure(&format!("exited before {url} answered")));
            }
            if let Ok(r) = client.send(Fetch::get(url.clone())).await
                && ok(&r)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > READY_WITHIN {
                return Err(self.failure(&format!("{url} did not answer within {READY_WITHIN:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test needs to know about a running provider.
pub struct Peer {
    /// Issuer identifier (discovery is at `issuer/.well-known/openid-configuration`).
    pub issuer: Url,
    /// The confidential client.
    pub client_id: String,
    /// Its secret (client_secret_basic).
    pub client_secret: String,
    /// Its registered redirect URI.
    pub redirect_uri: Url,
    /// Its registered post-logout redirect URI.
    pub post_logout_redirect_uri: Url,
    /// A user who can sign in.
    pub username: String,
    /// Their password.
    pub password: String,
    /// From spawn to discovery answering (provisioning included).
    pub startup: Duration,
    /// The process.
    pub process: PeerProcess,
}

impl Peer {
    /// The discovery document, fetched.
    pub async fn discovery(&self) -> serde_json::Value {
        let r = http_client().send(Fetch::get(discovery_of(&self.issuer))).await.expect("discovery");
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("discovery is not JSON ({e}): {}", r.text()))
    }
}

fn discovery_of(issuer: &Url) -> Url {
    Url::parse(&format!("{}/.well-known/openid-configuration", issuer.as_str().trim_end_matches('/')))
        .expect("discovery URL")
}

/// `npm ci` of tests/peers/oidc-provider into the cache, once per lock
/// file: later runs (and the other tests of this run) reuse it.
fn oidc_provider_install() -> Result<PathBuf, String> {
    static INSTALLED: OnceLock<Mutex<Option<Result<PathBuf, String>>>> = OnceLock::new();
    let cell = INSTALLED.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(done) = guard.as_ref() {
        return done.clone();
    }
    let result = (|| {
        let source = repo().join("tests/peers/oidc-provider");
        let dir = cache_root().join("oidc-provider");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let lock = std::fs::read(source.join("package-lock.json")).map_err(|e| format!("package-lock.json: {e}"))?;
        let stamp = dir.join("installed.lock.json");
        let fresh = std::fs::read(&stamp).is_ok_and(|s| s == lock) && dir.join("node_modules/oidc-provider").is_dir();
        if !fresh {
            for f in ["package.json", "package-lock.json"] {
                std::fs::copy(source.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
            }
            let started = Instant::now();
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"])
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("cannot run npm: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "npm ci in {} failed ({}):\n{}",
                    dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::fs::write(&stamp, &lock).map_err(|e| e.to_string())?;
            eprintln!("oidc-provider installed into {} in {:?}", dir.display(), started.elapsed());
        }
        // The server script is ours and may change without the lock file.
        std::fs::copy(source.join("server.mjs"), dir.join("server.mjs")).map_err(|e| format!("server.mjs: {e}"))?;
        Ok(dir)
    })();
    *guard = Some(result.clone());
    result
}

/// panva's `oidc-provider` (tests/peers/oidc-provider/server.mjs): issuer
/// `http://localhost:<port>`, client `lab-gateway` (client_secret_basic,
/// PKCE S256 required), any login name with any password.
pub struct OidcProviderPeer;

impl OidcProviderPeer {
    /// A running provider, or `None` after the skip line.
    pub async fn start() -> Option<Peer> {
        if !peer::works("node", "--version") || !peer::works("npm", "--version") {
            return peer::missing("oidc-provider", OIDC_PROVIDER_INSTALL);
        }
        peer::found("oidc-provider");
        match Self::try_start().await {
            Ok(peer) => Some(peer),
            Err(e) => panic!("{e}"),
        }
    }

    async fn try_start() -> Result<Peer, String> {
        let dir = oidc_provider_install()?;
        let port = free_port()?;
        let issuer = Url::parse(&format!("http://localhost:{port}")).map_err(|e| e.to_string())?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("server-{}-{n}.log", std::process::id()));
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("ISSUER", issuer.as_str().trim_end_matches('/'))
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", REDIRECT_URI)
            .env("POST_LOGOUT_REDIRECT_URI", POST_LOGOUT_REDIRECT_URI);
        let mut process = PeerProcess::spawn("oidc-provider", cmd, log)?;
        let startup = process.wait_until(&discovery_of(&issuer), |r| r.status == 200).await?;
        Ok(Peer {
            issuer: Url::parse(issuer.as_str().trim_end_matches('/')).map_err(|e| e.to_string())?,
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uri: Url::parse(REDIRECT_URI).map_err(|e| e.to_string())?,
            post_logout_redirect_uri: Url::parse(POST_LOGOUT_REDIRECT_URI).map_err(|e| e.to_string())?,
            username: "alice".into(),
            password: "any-password".into(),
            startup,
            process,
        })
    }
}

/// curl, which our login-command script (tests/peers/oidc-provider/login.sh)
/// drives the provider with: `Some(())` when it is installed, else `None`
/// after the SKIPPED line.
pub fn curl() -> Option<()> {
    if !peer::works("curl", "--version") {
        return peer::missing("curl", "apt-get install curl");
    }
    peer::found("curl");
    Some(())
}

/// Debian's schema for Glewlwyd's sqlite database (its admin is
/// `admin`/`password`).
const GLEWLWYD_SCHEMA: &str = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3";

/// Glewlwyd 2.7 (Debian): a fresh database per start, provisioned over its
/// admin REST API with the `oidc` plugin (RS256 key from `openssl
/// genpkey`, PKCE S256 only, refresh tokens, revocation, session
/// management), client `lab-gateway` and user `alice`/`alicepass`.
/// Issuer `http://127.0.0.1:<port>/api/oidc`.
pub struct GlewlwydPeer;

impl GlewlwydPeer {
    /// A running, provisioned Glewlwyd, or `None` after the skip line.
    pub async fn start() -> Option<Peer> {
        let glewlwyd = Command::new("glewlwyd").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if glewlwyd.is_err()
            || !peer::works("sqlite3", "--version")
            || !peer::works("openssl", "version")
            || !Path::new(GLEWLWYD_SCHEMA).is_file()
        {
            return peer::missing("Glewlwyd", GLEWLWYD_INSTALL);
        }
        peer::found("Glewlwyd");
        match Self::try_start().await {
            Ok(peer) => Some(peer),
            Err(e) => panic!("{e}"),
        }
    }

    async fn try_start() -> Result<Peer, String> {
        let port = free_port()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = cache_root().join("glewlwyd").join(format!("run-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let db = dir.join("glewlwyd.db");
        let schema = File::open(GLEWLWYD_SCHEMA).map_err(|e| format!("{GLEWLWYD_SCHEMA}: {e}"))?;
        let out =
            Command::new("sqlite3").arg(&db).stdin(schema).output().map_err(|e| format!("cannot run sqlite3: {e}"))?;
        if !out.status.success() {
            return Err(format!("sqlite3 {}: {}", db.display(), String::from_utf8_lossy(&out.stderr)));
        }
        let base = format!("http://127.0.0.1:{port}");
        let template = std::fs::read_to_string(repo().join("tests/peers/glewlwyd/glewlwyd.conf.in"))
            .map_err(|e| format!("glewlwyd.conf.in: {e}"))?;
        let conf = dir.join("glewlwyd.conf");
        let text = template
            .replace("@PORT@", &port.to_string())
            .replace("@EXTERNAL_URL@", &base)
            .replace("@DB@", &db.display().to_string());
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;

        let started = Instant::now();
        let mut cmd = Command::new("glewlwyd");
        cmd.arg(format!("--config-file={}", conf.display())).current_dir(&dir);
        let mut process = PeerProcess::spawn("glewlwyd", cmd, dir.join("glewlwyd.log"))?;
        let api = Url::parse(&format!("{base}/api/")).map_err(|e| e.to_string())?;
        // Up once its API answers (the plugin does not exist yet).
        process.wait_until(&api.join("auth/scheme/").map_err(|e| e.to_string())?, |_| true).await?;
        let issuer = Url::parse(&format!("{base}/api/oidc")).map_err(|e| e.to_string())?;
        if let Err(e) = provision(&api, &issuer).await {
            return Err(process.failure(&format!("provisioning: {e}")));
        }
        process.wait_until(&discovery_of(&issuer), |r| r.status == 200).await?;
        Ok(Peer {
            issuer,
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uri: Url::parse(REDIRECT_URI).map_err(|e| e.to_string())?,
            post_logout_redirect_uri: Url::parse(POST_LOGOUT_REDIRECT_URI).map_err(|e| e.to_string())?,
            username: "alice".into(),
            password: "alicepass".into(),
            startup: started.elapsed(),
            process,
        })
    }
}

/// `openssl` with `input` on stdin; its stdout.
fn openssl(args: &[&str], input: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// A JSON request with the admin's session cookie.
fn json(method: http::Method, url: Url, cookie: Option<&str>, body: &serde_json::Value) -> Fetch {
    let mut fetch = Fetch {
        method,
        url,
        headers: Vec::new(),
        body: Some(("application/json".into(), Bytes::from(body.to_string()))),
    };
    if let Some(c) = cookie {
        fetch = fetch.header("cookie", c);
    }
    fetch
}

/// Glewlwyd's admin API: the `oidc` plugin, the client, the user.
async fn provision(api: &Url, issuer: &Url) -> Result<(), String> {
    let key = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], None)?;
    let public = openssl(&["pkey", "-pubout"], Some(&key))?;
    let client = http_client();
    let url = |path: &str| api.join(path).map_err(|e| e.to_string());
    let login = client
        .send(json(
            http::Method::POST,
            url("auth/")?,
            None,
            &serde_json::json!({"username": "admin", "password": "password"}),
        ))
        .await
        .map_err(|e| format!("admin login: {e}"))?;
    if login.status != 200 {
        return Err(format!("admin login answered {}: {}", login.status, login.text()));
    }
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .ok_or("admin login set no session cookie")?
        .to_string();
    let calls = [
        (
            "auth plugin `oidc`",
            url("mod/plugin/")?,
            serde_json::json!({
                "module": "oidc", "name": "oidc", "display_name": "OpenID Connect", "enabled": true,
                "parameters": {
                    "iss": issuer.as_str(),
                    "jwt-type": "rsa", "jwt-key-size": "256", "key": key, "cert": public,
                    "jwks-show": true,
                    "code-duration": 600, "access-token-duration": 3600, "refresh-token-duration": 1_209_600,
                    "auth-type-code-enabled": true, "auth-type-refresh-enabled": true,
                    "auth-type-id-token-enabled": true,
                    "auth-type-token-enabled": false, "auth-type-implicit-enabled": false,
                    "auth-type-password-enabled": false, "auth-type-client-enabled": false,
                    "auth-type-none-enabled": false,
                    "pkce-allowed": true, "pkce-method-plain-allowed": false,
                    "allowed-scope": ["openid"],
                    "email-claim": "mandatory", "name-claim": "mandatory",
                    "introspection-revocation-allowed": true,
                    "introspection-revocation-allow-target-client": true,
                    "introspection-revocation-auth-scope": [],
                    "session-management-allowed": true,
                    "session-cookie-name": "GLEWLWYD2_OIDC_SID", "session-cookie-expiration": 3600
                }
            }),
        ),
        (
            "client `lab-gateway`",
            url("client/")?,
            serde_json::json!({
                "client_id": CLIENT_ID, "name": "Lab gateway", "enabled": true,
                "confidential": true, "password": CLIENT_SECRET,
                // Without it, 2.7.5 answers `unauthorized_client` at the
                // token endpoint and logs nothing.
                "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
                "redirect_uri": [REDIRECT_URI],
                // One string: 2.7.5 refuses a list here.
                "post_logout_redirect_uris": POST_LOGOUT_REDIRECT_URI,
                "authorization_type": ["code", "authorization_code", "refresh_token"],
                "scope": []
            }),
        ),
        (
            "user `alice`",
            url("user/")?,
            serde_json::json!({
                "username": "alice", "password": "alicepass", "name": "Alice", "email": "alice@lab.test",
                "scope": ["openid", "g_profile"], "enabled": true
            }),
        ),
    ];
    for (what, url, body) in calls {
        let r = client
            .send(json(http::Method::POST, url, Some(&cookie), &body))
            .await
            .map_err(|e| format!("adding {what}: {e}"))?;
        if r.status != 200 {
            return Err(format!("adding {what}: {} {}", r.status, r.text()));
        }
    }
    Ok(())
}

/// Posts `fields` with the client's basic credentials; the status and JSON body.
pub async fn client_post(peer: &Peer, url: Url, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
    use base64::Engine as _;
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", peer.client_id, peer.client_secret));
    let fetch = Fetch::post_form(url, &fields).header("authorization", format!("Basic {basic}"));
    let r = http_client().send(fetch).await.expect("token endpoint");
    let value = serde_json::from_slice(&r.body).unwrap_or_else(|_| serde_json::json!({"unparsed": r.text()}));
    (r.status, value)
}
