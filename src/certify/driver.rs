//! Login drivers: how the certifier's user agent gets from an authorization
//! request to the provider's redirect back to the client.
//!
//! Built-in drivers speak the login flows of the providers the lab is
//! tested against; `--login-command` hands the authorization URL to any
//! program that prints the final redirect URL.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use url::Url;

use crate::http::form::{self, HtmlForm};
use crate::http::{Browser, Fetch, HttpClient, HttpResponse};
use crate::net::Directory;
use crate::net::real::{SystemClock, TokioNet};

/// Why a driver could not complete a login.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver cannot do this (e.g. log out of a browser it does not own).
    #[error("not supported by the `{driver}` driver: {what}")]
    Unsupported {
        /// Driver name.
        driver: String,
        /// What was asked.
        what: String,
    },
    /// An HTTP exchange failed or answered unexpectedly.
    #[error("{0}")]
    Http(String),
    /// The provider never redirected to the redirect URI.
    #[error("no redirect to the redirect URI: {0}")]
    NoRedirect(String),
    /// The external login command failed.
    #[error("login command: {0}")]
    Command(String),
}

/// What every driver may need to sign in.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    /// User name typed into the provider's login.
    pub username: String,
    /// Password.
    pub password: String,
    /// The client the authorization is for (some providers ask for consent
    /// per client).
    pub client_id: String,
}

/// A user agent that can complete a provider's login.
#[async_trait]
pub trait LoginDriver: Send {
    /// The driver's name, as the report shows it.
    fn name(&self) -> &str;

    /// Follows `authorize` (a complete authorization request URL) through
    /// the provider's login and consent until the provider redirects to
    /// `redirect_uri`, and returns that redirect URL (carrying `code` and
    /// `state`, or `error`) without fetching it.
    async fn authorize(&mut self, authorize: &Url, redirect_uri: &Url) -> Result<Url, DriverError>;

    /// Whether successive `authorize` calls share one provider session
    /// (its single-sign-on cookie), so that `prompt=none`, `prompt=login`
    /// and logout are observable.
    fn keeps_session(&self) -> bool {
        false
    }

    /// Visits an RP-initiated logout URL in the same user agent, confirming
    /// the provider's logout page if it shows one.
    async fn logout(&mut self, end_session: &Url) -> Result<(), DriverError> {
        Err(DriverError::Unsupported { driver: self.name().to_string(), what: format!("logout at {end_session}") })
    }
}

/// Whether `url` is the redirect URI (same scheme, host, port and path;
/// the query carries the response).
pub fn is_redirect_to(url: &Url, redirect_uri: &Url) -> bool {
    url.scheme() == redirect_uri.scheme()
        && url.host_str() == redirect_uri.host_str()
        && url.port_or_known_default() == redirect_uri.port_or_known_default()
        && url.path() == redirect_uri.path()
}

/// The built-in drivers' names, as `--login-driver` takes them.
pub const DRIVER_NAMES: [&str; 3] = ["redirect", "form", "glewlwyd"];

/// A built-in driver by name (`redirect`, `form`, `glewlwyd`).
pub fn driver(name: &str, settings: &DriverSettings) -> Result<Box<dyn LoginDriver>, DriverError> {
    match name {
        "redirect" => Ok(Box::new(RedirectDriver::new())),
        "form" => Ok(Box::new(FormDriver::new(settings.clone()))),
        "glewlwyd" => Ok(Box::new(GlewlwydDriver::new(settings.clone()))),
        other => Err(DriverError::Unsupported {
            driver: other.to_string(),
            what: format!(
                "no such login driver; built-in drivers: {} (or --login-command CMD)",
                DRIVER_NAMES.join(", ")
            ),
        }),
    }
}

/// The `--login-command` driver for `cmd`.
pub fn command_driver(cmd: &str, settings: &DriverSettings) -> Result<Box<dyn LoginDriver>, DriverError> {
    Ok(Box::new(CommandDriver::new(cmd, settings)?))
}

/// Redirects a driver follows in one navigation at most.
const MAX_HOPS: usize = 24;
/// Forms (login, consent, confirmations) a driver submits in one navigation
/// at most.
const MAX_FORMS: usize = 6;
/// How much of a page an error quotes.
const SNIPPET: usize = 300;

/// The names the built-in drivers resolve by default: `localhost` (IP
/// literals resolve by themselves).
pub fn default_directory() -> Directory {
    let mut directory = Directory::default();
    directory.insert("localhost", IpAddr::V4(Ipv4Addr::LOCALHOST));
    directory
}

/// A browser on real sockets resolving names with `directory`.
fn browser_with(directory: Directory) -> Browser {
    Browser::new(HttpClient::new(TokioNet::shared(), directory), Arc::new(SystemClock))
}

fn real_browser() -> Browser {
    browser_with(default_directory())
}

/// Refuses what the built-in drivers cannot fetch (they speak plain HTTP).
fn check_fetchable(url: &Url) -> Result<(), DriverError> {
    match url.scheme() {
        "http" => Ok(()),
        "https" => Err(DriverError::Http(format!(
            "{url}: the built-in drivers speak plain HTTP only; use --login-command for an https provider"
        ))),
        other => Err(DriverError::NoRedirect(format!("the provider sent the browser to a `{other}:` URL: {url}"))),
    }
}

async fn fetch(browser: &Browser, request: Fetch) -> Result<HttpResponse, DriverError> {
    check_fetchable(&request.url)?;
    let what = format!("{} {}", request.method, request.url);
    browser.fetch(request).await.map_err(|e| DriverError::Http(format!("{what}: {e}")))
}

/// Where a redirect response points, or an error naming it.
fn location_of(response: &HttpResponse) -> Result<Url, DriverError> {
    response.location().ok_or_else(|| {
        DriverError::Http(format!("{} answered {} without a usable Location", response.url, response.status))
    })
}

/// The start of a page, on one line, for error messages.
fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(SNIPPET) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn stopped_at(response: &HttpResponse) -> DriverError {
    DriverError::NoRedirect(format!("stopped at {} {}: {}", response.status, response.url, snippet(&response.text())))
}

/// Whether a form input takes a password.
fn is_password(input: &(String, String, String)) -> bool {
    input.2 == "password"
}

/// The input a user types the login name into: a conventional name first,
/// else the first text or e-mail input.
fn login_input(form: &HtmlForm) -> Option<String> {
    const NAMES: [&str; 6] = ["username", "login", "email", "user", "user_name", "loginfmt"];
    NAMES
        .iter()
        .find(|n| form.has_input(n))
        .map(|n| n.to_string())
        .or_else(|| form.inputs.iter().find(|(_, _, ty)| ty == "text" || ty == "email").map(|(n, _, _)| n.clone()))
}

/// The request a form's submission makes, pressing its first named submit
/// button (as Enter does) when the page has one for it.
fn submission(
    page: &HttpResponse,
    html: &str,
    index: usize,
    fields: Vec<(String, String)>,
) -> Result<Fetch, DriverError> {
    let forms = form::forms(html);
    let Some(f) = forms.get(index) else {
        return Err(DriverError::Http(format!("{}: no form {index}", page.url)));
    };
    let mut fields = fields;
    let id = form::form_ids(html).get(index).cloned().flatten();
    let pressed = form::buttons(html).into_iter().find(|b| match &b.form {
        Some(owner) => id.as_deref() == Some(owner.as_str()),
        None => b.in_form == Some(index),
    });
    if let Some(b) = pressed
        && !fields.iter().any(|(n, _)| *n == b.name)
    {
        fields.push((b.name, b.value));
    }
    let action = if f.action.is_empty() {
        page.url.clone()
    } else {
        page.url
            .join(&f.action)
            .map_err(|e| DriverError::Http(format!("{}: form action `{}`: {e}", page.url, f.action)))?
    };
    if f.method == "post" {
        Ok(Fetch::post_form(action, &fields))
    } else {
        let mut url = action;
        url.query_pairs_mut().clear().extend_pairs(&fields);
        Ok(Fetch::get(url))
    }
}

/// A URL carrying `fields` as its query (a form posted to the redirect URI,
/// as `response_mode=form_post` does, seen as the redirect it stands for).
fn with_query(url: &Url, fields: &[(String, String)]) -> Url {
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(fields);
    out
}

/// Follows redirects and submits the forms of a provider's pages until it
/// redirects to `redirect_uri`. With `credentials`, login forms are filled
/// in; without, a login page ends the walk.
async fn walk(
    browser: &Browser,
    start: Fetch,
    redirect_uri: &Url,
    credentials: Option<(&str, &str)>,
) -> Result<Url, DriverError> {
    let mut next = start;
    let mut forms_sent = 0;
    let mut logins = 0;
    for _ in 0..MAX_HOPS {
        let response = fetch(browser, next).await?;
        if response.is_redirect() {
            let location = location_of(&response)?;
            if is_redirect_to(&location, redirect_uri) {
                return Ok(location);
            }
            check_fetchable(&location)?;
            next = Fetch::get(location);
            continue;
        }
        if response.status >= 400 {
            return Err(DriverError::Http(format!(
                "{} answered {}: {}",
                response.url,
                response.status,
                snippet(&response.text())
            )));
        }
        let html = response.text();
        let forms = form::forms(&html);
        let Some(credentials) = credentials else {
            return Err(stopped_at(&response));
        };
        if forms_sent >= MAX_FORMS {
            return Err(DriverError::NoRedirect(format!(
                "{forms_sent} forms submitted and still no redirect; last page {} {}: {}",
                response.status,
                response.url,
                snippet(&html)
            )));
        }
        let login = forms.iter().position(|f| f.inputs.iter().any(is_password));
        let (index, fields) = if let Some(i) = login {
            if logins > 0 {
                return Err(DriverError::NoRedirect(format!(
                    "the login form came back after signing in (wrong credentials?) at {}: {}",
                    response.url,
                    snippet(&html)
                )));
            }
            logins += 1;
            let f = &forms[i];
            let password = f.inputs.iter().find(|input| is_password(input)).map(|(n, _, _)| n.clone());
            let mut overrides: Vec<(String, String)> = Vec::new();
            if let Some(name) = login_input(f) {
                overrides.push((name, credentials.0.to_string()));
            }
            if let Some(name) = password {
                overrides.push((name, credentials.1.to_string()));
            }
            let refs: Vec<(&str, &str)> = overrides.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            (i, f.fields_with(&refs))
        } else if let Some(i) = forms.iter().position(|f| f.method == "post") {
            // Consent, a confirmation, or a page that posts itself.
            (i, forms[i].fields_with(&[]))
        } else {
            return Err(stopped_at(&response));
        };
        let request = submission(&response, &html, index, fields)?;
        if is_redirect_to(&request.url, redirect_uri) {
            // form_post: the response is in the form, which the driver
            // never posts (nothing listens at the redirect URI).
            let fields: Vec<(String, String)> = match &request.body {
                Some((_, body)) => url::form_urlencoded::parse(body).into_owned().collect(),
                None => request.url.query_pairs().into_owned().collect(),
            };
            return Ok(with_query(redirect_uri, &fields));
        }
        forms_sent += 1;
        next = request;
    }
    Err(DriverError::NoRedirect(format!("more than {MAX_HOPS} redirects without reaching {redirect_uri}")))
}

/// `redirect`: no login page, only redirects (mock providers that sign
/// everyone in). A fresh profile for every authorization.
pub struct RedirectDriver {
    browser: Browser,
}

impl RedirectDriver {
    /// A driver with a fresh profile.
    pub fn new() -> Self {
        RedirectDriver { browser: real_browser() }
    }
}

impl Default for RedirectDriver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl LoginDriver for RedirectDriver {
    fn name(&self) -> &str {
        "redirect"
    }

    async fn authorize(&mut self, authorize: &Url, redirect_uri: &Url) -> Result<Url, DriverError> {
        self.browser.reset();
        walk(&self.browser, Fetch::get(authorize.clone()), redirect_uri, None).await
    }
}

/// `form`: an HTML-form user. Fills the login form (a password input and a
/// login, username or e-mail input), submits consent and confirmation
/// forms, follows redirects. One profile (cookie jar) for the driver's
/// life, so the provider's session carries over between calls.
pub struct FormDriver {
    settings: DriverSettings,
    browser: Browser,
}

impl FormDriver {
    /// A driver signing in with `settings`' credentials.
    pub fn new(settings: DriverSettings) -> Self {
        FormDriver { settings, browser: real_browser() }
    }

    /// The same, resolving names with `directory` (e.g. the lab's names in
    /// real mode, which `lab serve` maps to loopback).
    pub fn with_directory(settings: DriverSettings, directory: Directory) -> Self {
        FormDriver { settings, browser: browser_with(directory) }
    }
}

#[async_trait]
impl LoginDriver for FormDriver {
    fn name(&self) -> &str {
        "form"
    }

    async fn authorize(&mut self, authorize: &Url, redirect_uri: &Url) -> Result<Url, DriverError> {
        let credentials = (self.settings.username.as_str(), self.settings.password.as_str());
        walk(&self.browser, Fetch::get(authorize.clone()), redirect_uri, Some(credentials)).await
    }

    fn keeps_session(&self) -> bool {
        true
    }

    async fn logout(&mut self, end_session: &Url) -> Result<(), DriverError> {
        logout_walk(&self.browser, end_session).await
    }
}

/// Visits a logout URL: follows redirects on the provider's origin,
/// confirms a logout form; done at a page without a form or at a redirect
/// away from the provider (the client's post-logout URI, never fetched).
async fn logout_walk(browser: &Browser, end_session: &Url) -> Result<(), DriverError> {
    let origin = end_session.origin();
    let mut next = Fetch::get(end_session.clone());
    let mut forms_sent = 0;
    for _ in 0..MAX_HOPS {
        let response = fetch(browser, next).await?;
        if response.is_redirect() {
            let location = location_of(&response)?;
            if location.origin() != origin {
                return Ok(());
            }
            next = Fetch::get(location);
            continue;
        }
        if response.status >= 400 {
            return Err(DriverError::Http(format!(
                "logout at {} answered {}: {}",
                response.url,
                response.status,
                snippet(&response.text())
            )));
        }
        let html = response.text();
        let forms = form::forms(&html);
        let Some(index) = forms.iter().position(|f| f.method == "post") else {
            return if forms_sent > 0 || response.status == 200 { Ok(()) } else { Err(stopped_at(&response)) };
        };
        if forms_sent >= MAX_FORMS {
            return Err(DriverError::Http(format!("logout: {forms_sent} forms submitted, still at {}", response.url)));
        }
        let request = submission(&response, &html, index, forms[index].fields_with(&[]))?;
        if request.url.origin() != origin {
            return Ok(());
        }
        forms_sent += 1;
        next = request;
    }
    Err(DriverError::Http(format!("logout: more than {MAX_HOPS} redirects from {end_session}")))
}

/// `glewlwyd`: Glewlwyd's login API, as its login page uses it: the user
/// signs in (`POST <api>/auth/`), grants the client its scopes (`PUT
/// <api>/auth/grant/<client>`), and the authorization resumes with
/// `g_continue`. The session cookie is kept between calls.
pub struct GlewlwydDriver {
    settings: DriverSettings,
    browser: Browser,
}

impl GlewlwydDriver {
    /// A driver signing in with `settings`' credentials.
    pub fn new(settings: DriverSettings) -> Self {
        GlewlwydDriver { settings, browser: real_browser() }
    }
}

/// Glewlwyd's API root (`…/api`) from a plugin endpoint (`…/api/<plugin>/<endpoint>`).
fn glewlwyd_api(endpoint: &Url) -> Result<Url, DriverError> {
    let segments: Vec<&str> = endpoint.path_segments().map(|s| s.collect()).unwrap_or_default();
    if segments.len() < 3 {
        return Err(DriverError::Http(format!(
            "{endpoint} is not a Glewlwyd plugin endpoint (…/<api>/<plugin>/<endpoint>)"
        )));
    }
    let mut api = endpoint.clone();
    api.set_query(None);
    api.set_fragment(None);
    api.set_path(&format!("/{}/", segments[..segments.len() - 2].join("/")));
    Ok(api)
}

fn json_request(method: Method, url: Url, body: &serde_json::Value) -> Fetch {
    Fetch { method, url, headers: Vec::new(), body: Some(("application/json".into(), Bytes::from(body.to_string()))) }
}

fn expect_ok(response: &HttpResponse, what: &str) -> Result<(), DriverError> {
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(DriverError::Http(format!(
            "{what}: {} answered {}: {}",
            response.url,
            response.status,
            snippet(&response.text())
        )))
    }
}

fn join(base: &Url, path: &str) -> Result<Url, DriverError> {
    base.join(path).map_err(|e| DriverError::Http(format!("{base} + {path}: {e}")))
}

#[async_trait]
impl LoginDriver for GlewlwydDriver {
    fn name(&self) -> &str {
        "glewlwyd"
    }

    async fn authorize(&mut self, authorize: &Url, redirect_uri: &Url) -> Result<Url, DriverError> {
        let api = glewlwyd_api(authorize)?;
        // Glewlwyd answers at once when it can (`prompt=none`, with a live
        // session or not); otherwise it shows its login page, even to a
        // signed-in user, until the request carries `g_continue`.
        let first = fetch(&self.browser, Fetch::get(authorize.clone())).await?;
        if !first.is_redirect() {
            return Err(stopped_at(&first));
        }
        let location = location_of(&first)?;
        if is_redirect_to(&location, redirect_uri) {
            return Ok(location);
        }
        // Otherwise its login page: do what the page's script does.
        let param = |url: &Url, name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let scope = param(&location, "scope").or_else(|| param(authorize, "scope")).unwrap_or_else(|| "openid".into());
        let body = serde_json::json!({"username": self.settings.username, "password": self.settings.password});
        let login = fetch(&self.browser, json_request(Method::POST, join(&api, "auth/")?, &body)).await?;
        expect_ok(&login, "Glewlwyd login")?;
        let grant_url = join(&api, &format!("auth/grant/{}", self.settings.client_id))?;
        let grant =
            fetch(&self.browser, json_request(Method::PUT, grant_url, &serde_json::json!({"scope": scope}))).await?;
        expect_ok(&grant, "Glewlwyd consent")?;
        let mut resume = authorize.clone();
        resume.query_pairs_mut().append_key_only("g_continue");
        let response = fetch(&self.browser, Fetch::get(resume)).await?;
        if !response.is_redirect() {
            return Err(stopped_at(&response));
        }
        let location = location_of(&response)?;
        if is_redirect_to(&location, redirect_uri) {
            Ok(location)
        } else {
            Err(DriverError::NoRedirect(format!("after signing in, Glewlwyd sent the browser to {location}")))
        }
    }

    fn keeps_session(&self) -> bool {
        true
    }

    /// Glewlwyd's end-session endpoint redirects to its login page with
    /// `prompt=end_session`, whose script deletes the OIDC session
    /// (`DELETE <api>/<plugin>/session/<sid>`) and the user's session
    /// (`DELETE <api>/auth/`). The driver does the same.
    async fn logout(&mut self, end_session: &Url) -> Result<(), DriverError> {
        let api = glewlwyd_api(end_session)?;
        let response = fetch(&self.browser, Fetch::get(end_session.clone())).await?;
        if !response.is_redirect() {
            return Err(DriverError::Http(format!(
                "Glewlwyd's end session answered {} instead of a redirect: {}",
                response.status,
                snippet(&response.text())
            )));
        }
        let location = location_of(&response)?;
        let param = |name: &str| location.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        if param("prompt").as_deref() != Some("end_session") {
            return Err(DriverError::Http(format!(
                "Glewlwyd's end session did not ask to end the session (sent the browser to {location})"
            )));
        }
        let (Some(sid), Some(plugin)) = (param("sid"), param("plugin")) else {
            return Err(DriverError::Http(format!("Glewlwyd's end session page lacks `sid` or `plugin`: {location}")));
        };
        let delete = |url: Url| Fetch { method: Method::DELETE, url, headers: Vec::new(), body: None };
        let session = fetch(&self.browser, delete(join(&api, &format!("{plugin}/session/{sid}"))?)).await?;
        expect_ok(&session, "ending Glewlwyd's OIDC session")?;
        let user = fetch(&self.browser, delete(join(&api, "auth/")?)).await?;
        expect_ok(&user, "ending Glewlwyd's user session")
    }
}

/// How long a login command may run by default.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a failing command's stderr an error quotes.
const STDERR_TAIL: usize = 800;

/// `--login-command CMD`: runs `sh -c 'CMD "$@"' sh URL`, so CMD gets the
/// authorization URL as its last argument, and reads the final redirect
/// URL from the last non-empty line of its standard output. The command
/// also finds `LOCKSTEP_REDIRECT_URI`, `LOCKSTEP_CLIENT_ID`,
/// `LOCKSTEP_USERNAME` and `LOCKSTEP_PASSWORD` in its environment. It has
/// no session the certifier can observe.
pub struct CommandDriver {
    command: String,
    settings: DriverSettings,
    timeout: Duration,
}

impl CommandDriver {
    /// A driver running `command` (a shell command line).
    pub fn new(command: &str, settings: &DriverSettings) -> Result<Self, DriverError> {
        if command.trim().is_empty() {
            return Err(DriverError::Command("the login command is empty".into()));
        }
        Ok(CommandDriver { command: command.to_string(), settings: settings.clone(), timeout: COMMAND_TIMEOUT })
    }

    /// The same driver with another time limit per login.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The redirect URL in a login command's standard output: its last
/// non-empty line, which must be a URL at the redirect URI.
pub fn parse_command_output(stdout: &str, redirect_uri: &Url) -> Result<Url, DriverError> {
    let Some(line) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Err(DriverError::Command("printed nothing on stdout (expected the final redirect URL)".into()));
    };
    let url = Url::parse(line).map_err(|e| {
        DriverError::Command(format!("the last line of its output is not a URL ({e}): `{}`", snippet(line)))
    })?;
    if !is_redirect_to(&url, redirect_uri) {
        return Err(DriverError::Command(format!("printed {url}, which is not at the redirect URI {redirect_uri}")));
    }
    Ok(url)
}

fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().rev().nth(max) {
        Some((i, _)) => format!("…{}", &text[i..]),
        None => text.to_string(),
    }
}

#[async_trait]
impl LoginDriver for CommandDriver {
    fn name(&self) -> &str {
        "command"
    }

    async fn authorize(&mut self, authorize: &Url, redirect_uri: &Url) -> Result<Url, DriverError> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} \"$@\"", self.command))
            .arg("sh")
            .arg(authorize.as_str())
            .env("LOCKSTEP_REDIRECT_URI", redirect_uri.as_str())
            .env("LOCKSTEP_CLIENT_ID", &self.settings.client_id)
            .env("LOCKSTEP_USERNAME", &self.settings.username)
            .env("LOCKSTEP_PASSWORD", &self.settings.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DriverError::Command(format!("cannot run `sh`: {e}")))?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(DriverError::Command(format!("`{}`: {e}", self.command))),
            Err(_) => {
                return Err(DriverError::Command(format!(
                    "`{}` did not finish within {:?} (killed)",
                    self.command, self.timeout
                )));
            }
        };
        if !output.status.success() {
            return Err(DriverError::Command(format!(
                "`{}` failed ({}); stderr: {}",
                self.command,
                output.status,
                tail(&output.stderr, STDERR_TAIL)
            )));
        }
        parse_command_output(&String::from_utf8_lossy(&output.stdout), redirect_uri).map_err(|e| match e {
            DriverError::Command(m) => {
                DriverError::Command(format!("`{}` {m}; stderr: {}", self.command, tail(&output.stderr, STDERR_TAIL)))
            }
            other => other,
        })
    }
}

/// Runs a user's hook command (e.g. `--rotate-command`) through `sh -c`,
/// bounded by [`COMMAND_TIMEOUT`]; an error carries the exit status and
/// the tail of its stderr.
pub async fn run_hook(command: &str) -> Result<(), DriverError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Err(_) => Err(DriverError::Command(format!("`{command}` ran longer than {COMMAND_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(DriverError::Command(format!("`{command}` did not start: {e}"))),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.chars().rev().take(STDERR_TAIL).collect::<Vec<_>>().into_iter().rev().collect();
            Err(DriverError::Command(format!("`{command}` exited with {}: {}", out.status, tail.trim())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DriverSettings {
        DriverSettings { username: "alice".into(), password: "pw".into(), client_id: "c".into() }
    }

    fn cb() -> Url {
        Url::parse("http://127.0.0.1:9/cb").unwrap()
    }

    #[tokio::test]
    async fn a_hook_that_fails_says_how() {
        assert!(run_hook("true").await.is_ok());
        let e = run_hook("echo rotation refused >&2; exit 3").await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("rotation refused"), "{e}");
    }

    #[test]
    fn the_last_non_empty_line_is_the_redirect() {
        let out = "opening http://idp/auth\nhttp://127.0.0.1:9/cb?code=x&state=s\n\n  \n";
        let url = parse_command_output(out, &cb()).unwrap();
        assert_eq!(url.query(), Some("code=x&state=s"));
    }

    #[test]
    fn output_that_is_not_a_redirect_to_the_redirect_uri_is_an_error() {
        for (out, expect) in [
            ("", "printed nothing"),
            ("\n \n", "printed nothing"),
            ("http://127.0.0.1:9/cb?code=x\nnot a url", "not a URL"),
            ("http://127.0.0.1:9/other?code=x", "not at the redirect URI"),
            ("http://127.0.0.1:10/cb?code=x", "not at the redirect URI"),
        ] {
            match parse_command_output(out, &cb()) {
                Err(DriverError::Command(m)) => assert!(m.contains(expect), "{out:?}: {m}"),
                other => panic!("{out:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_driver_names_list_the_built_in_ones() {
        let Err(e) = driver("keycloak", &settings()) else { panic!("accepted") };
        let m = e.to_string();
        for name in DRIVER_NAMES {
            assert!(m.contains(name), "{m}");
        }
        for name in DRIVER_NAMES {
            assert_eq!(driver(name, &settings()).unwrap().name(), name);
        }
        assert!(command_driver("  ", &settings()).is_err());
    }

    #[test]
    fn glewlwyd_api_root_comes_from_the_plugin_endpoint() {
        let u = Url::parse("http://127.0.0.1:4593/api/oidc/auth?x=1").unwrap();
        assert_eq!(glewlwyd_api(&u).unwrap().as_str(), "http://127.0.0.1:4593/api/");
        assert!(glewlwyd_api(&Url::parse("http://h/auth").unwrap()).is_err());
    }

    #[tokio::test]
    async fn the_command_gets_the_url_last_and_the_settings_in_its_environment() {
        let mut d = CommandDriver::new(
            "f() { test \"$LOCKSTEP_USERNAME:$LOCKSTEP_CLIENT_ID\" = alice:c || exit 3; \
               test \"$2\" = 'http://idp.test/auth?a=1&b=2' || { echo \"got $*\" >&2; exit 4; }; \
               echo noise; echo \"$LOCKSTEP_REDIRECT_URI?code=1&state=$1\"; }; f first",
            &settings(),
        )
        .unwrap();
        let authorize = Url::parse("http://idp.test/auth?a=1&b=2").unwrap();
        let url = d.authorize(&authorize, &cb()).await.unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/cb?code=1&state=first");
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_status_and_stderr() {
        let mut d = CommandDriver::new("echo 'bad password' >&2; exit 7", &settings()).unwrap();
        let Err(DriverError::Command(m)) = d.authorize(&cb(), &cb()).await else { panic!("no error") };
        assert!(m.contains("exit status: 7") && m.contains("bad password"), "{m}");
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_the_timeout() {
        let mut d = CommandDriver::new("sleep 30; :", &settings()).unwrap().with_timeout(Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        let Err(DriverError::Command(m)) = d.authorize(&cb(), &cb()).await else { panic!("no error") };
        assert!(m.contains("did not finish"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_submission_presses_the_forms_named_button() {
        let html = r#"<form id="op.logoutForm" method="post" action="/session/end/confirm"><input type="hidden" name="xsrf" value="s"/></form>
            <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes</button>"#;
        let page = HttpResponse {
            status: 200,
            headers: Default::default(),
            body: Bytes::from(html),
            url: Url::parse("http://localhost:3000/session/end").unwrap(),
        };
        let f = &form::forms(html)[0];
        let request = submission(&page, html, 0, f.fields_with(&[])).unwrap();
        assert_eq!(request.url.as_str(), "http://localhost:3000/session/end/confirm");
        assert_eq!(request.body.unwrap().1, Bytes::from("xsrf=s&logout=yes"));
    }
}
