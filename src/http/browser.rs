//! A scripted browser: cookies, redirects, and a user who types credentials
//! into the identity provider's login form.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;

use url::Url;

use super::client::{Fetch, FetchError, HttpClient, HttpResponse};
use super::cookies::CookieJar;
use super::form::{self, HtmlForm};
use crate::net::SharedClock;

/// A user's credentials, typed into a login form when one shows up.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// How a navigation should go.
#[derive(Clone, Debug, Default)]
pub struct Navigation {
    /// Send `X-Requested-With: XMLHttpRequest` (a script's fetch, not a page load).
    pub xhr: bool,
    /// Follow redirects.
    pub follow: bool,
    /// Sign in with these when a login form appears (implies `follow`).
    pub login: Option<Credentials>,
    /// A stolen cookie jar that replaces the profile's before loading.
    pub stolen_jar: Option<CookieJar>,
    /// Start from a fresh profile (no cookies, no connections).
    pub fresh_profile: bool,
    /// The user's second factors, for the MFA service's forms.
    pub factor: Option<FactorHandle>,
}

/// Someone who answers second-factor forms: a user with a security key, a
/// platform authenticator or an authenticator app at hand.
pub trait FactorResponder: Send + Sync {
    /// The fields to post for `form` (its hidden `mfa` field names what it
    /// asks for), on a page whose origin the browser shows as `page_origin`;
    /// `None` when the user cannot answer it.
    fn answer<'a>(&'a self, form: &'a HtmlForm, page_origin: &'a str) -> BoxFuture<'a, Option<Vec<(String, String)>>>;
}

/// A shared [`FactorResponder`].
#[derive(Clone)]
pub struct FactorHandle(pub Arc<dyn FactorResponder>);

impl fmt::Debug for FactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FactorHandle")
    }
}

/// Second-factor forms answered in one navigation at most.
const MAX_FACTOR_FORMS: usize = 4;

/// Where a navigation ended.
#[derive(Clone, Debug)]
pub enum Landing {
    /// A response that is not followed further.
    Page(HttpResponse),
    /// A redirect to a URL scheme the browser hands to an application
    /// (e.g. `lockstep://`), as a sign-in window does.
    Handoff(Url),
}

const MAX_HOPS: usize = 12;

/// A browser profile: an HTTP client and a cookie jar.
#[derive(Clone)]
pub struct Browser {
    client: HttpClient,
    jar: Arc<Mutex<CookieJar>>,
    clock: SharedClock,
}

impl Browser {
    /// A fresh profile.
    pub fn new(client: HttpClient, clock: SharedClock) -> Self {
        Browser { client, jar: Arc::new(Mutex::new(CookieJar::default())), clock }
    }

    /// Sends one request with the profile's cookies and keeps what it sets.
    pub async fn fetch(&self, mut fetch: Fetch) -> Result<HttpResponse, FetchError> {
        let now = self.clock.now();
        let cookie = self.jar().header_for(&fetch.url, now);
        if let Some(c) = cookie {
            fetch = fetch.header("cookie", c);
        }
        let response = self.client.send(fetch).await?;
        let now = self.clock.now();
        let mut jar = self.jar();
        for value in response.headers.get_all("set-cookie") {
            if let Ok(v) = value.to_str() {
                jar.store(&response.url, v, now);
            }
        }
        Ok(response)
    }

    /// Loads `url`, following redirects and signing in as asked.
    pub async fn navigate(&self, url: Url, nav: &Navigation) -> Result<Landing, FetchError> {
        let follow = nav.follow || nav.login.is_some();
        if nav.fresh_profile {
            self.reset();
        }
        if let Some(jar) = &nav.stolen_jar {
            *self.jar() = jar.clone();
        }
        let mut next = Fetch::get(url);
        let mut logged_in = false;
        let mut factor_forms = 0;
        for _ in 0..MAX_HOPS {
            if !matches!(next.url.scheme(), "http" | "https") {
                return Ok(Landing::Handoff(next.url));
            }
            if nav.xhr {
                next = next.header("x-requested-with", "XMLHttpRequest");
            }
            let response = self.fetch(next).await?;
            if follow && response.is_redirect() {
                match response.location() {
                    Some(loc) => {
                        next = Fetch::get(loc);
                        continue;
                    }
                    None => return Ok(Landing::Page(response)),
                }
            }
            if let (Some(creds), false, 200) = (&nav.login, logged_in, response.status) {
                let page = response.text();
                if let Some(login) =
                    form::forms(&page).into_iter().find(|f| f.has_input("username") && f.has_input("password"))
                {
                    let action = response.url.join(&login.action).map_err(|e| FetchError::BadUrl(e.to_string()))?;
                    let fields = login.fields_with(&[("username", &creds.username), ("password", &creds.password)]);
                    next = Fetch::post_form(action, &fields);
                    logged_in = true;
                    continue;
                }
            }
            if let (Some(factor), 200 | 401, true) = (&nav.factor, response.status, factor_forms < MAX_FACTOR_FORMS) {
                let page = response.text();
                let origin = response.url.origin().ascii_serialization();
                let mut answer = None;
                for f in form::forms(&page).into_iter().filter(|f| f.has_input("mfa")) {
                    if let Some(fields) = factor.0.answer(&f, &origin).await {
                        answer = Some((f, fields));
                        break;
                    }
                }
                if let Some((f, fields)) = answer {
                    let action = response.url.join(&f.action).map_err(|e| FetchError::BadUrl(e.to_string()))?;
                    next = Fetch::post_form(action, &fields);
                    factor_forms += 1;
                    continue;
                }
            }
            return Ok(Landing::Page(response));
        }
        Err(FetchError::TooManyRedirects)
    }

    /// The cookies an attacker who copied this profile replays (expired
    /// ones included: a thief does not honour Max-Age).
    pub fn export_cookies(&self) -> CookieJar {
        self.jar().stolen_copy()
    }

    /// Forgets every cookie and connection (a fresh profile).
    pub fn reset(&self) {
        *self.jar() = CookieJar::default();
        self.client.close_all();
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, CookieJar> {
        self.jar.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
