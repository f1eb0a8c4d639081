//! A scripted browser: cookies, redirects, and a user who types credentials
//! into the identity provider's login form.

use std::sync::{Arc, Mutex, PoisonError};

use url::Url;

use super::client::{Fetch, FetchError, HttpClient, HttpResponse};
use super::cookies::CookieJar;
use super::form;
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
    /// A raw `Cookie` header to send instead of the jar's (a replayed, stolen cookie).
    pub cookie_override: Option<String>,
}

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
    pub async fn fetch(&self, mut fetch: Fetch, cookie_override: Option<&str>) -> Result<HttpResponse, FetchError> {
        let now = self.clock.now();
        let cookie = match cookie_override {
            Some(c) => Some(c.to_string()),
            None => self.jar().header_for(&fetch.url, now),
        };
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
        let mut next = Fetch::get(url);
        let mut logged_in = false;
        for _ in 0..MAX_HOPS {
            if !matches!(next.url.scheme(), "http" | "https") {
                return Ok(Landing::Handoff(next.url));
            }
            if nav.xhr {
                next = next.header("x-requested-with", "XMLHttpRequest");
            }
            let response = self.fetch(next, nav.cookie_override.as_deref()).await?;
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
            return Ok(Landing::Page(response));
        }
        Err(FetchError::TooManyRedirects)
    }

    /// The cookies an attacker who copied this profile could replay to `url`
    /// (expired ones included: a thief does not honour Max-Age).
    pub fn export_cookies(&self, url: &Url) -> Option<String> {
        self.jar().export_for(url)
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
