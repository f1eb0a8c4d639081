//! A cookie jar (RFC 6265, the parts a browser in the lab needs).

use std::collections::BTreeMap;

use url::Url;

use crate::net::UnixMillis;

/// One stored cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Domain it belongs to.
    pub domain: String,
    /// Only sent to exactly `domain` (no Domain attribute was given).
    pub host_only: bool,
    /// Path prefix.
    pub path: String,
    /// When it expires; `None` for a session cookie.
    pub expires: Option<UnixMillis>,
    /// Only sent over https.
    pub secure: bool,
}

/// A browser profile's cookies, in a deterministic order.
#[derive(Clone, Debug, Default)]
pub struct CookieJar {
    cookies: BTreeMap<(String, String, String), StoredCookie>,
}

impl CookieJar {
    /// Stores the cookie of a `Set-Cookie` header received from `url` at
    /// `now`. Malformed or foreign-domain cookies are ignored, as browsers do.
    pub fn store(&mut self, url: &Url, set_cookie: &str, now: UnixMillis) {
        let Ok(c) = cookie::Cookie::parse(set_cookie.to_string()) else {
            return;
        };
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return;
        };
        let (domain, host_only) = match c.domain() {
            Some(d) => {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                if !domain_matches(&host, &d) {
                    return;
                }
                (d, false)
            }
            None => (host, true),
        };
        let path = match c.path() {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => default_path(url),
        };
        let expires = if let Some(max_age) = c.max_age() {
            let secs = max_age.whole_seconds();
            if secs <= 0 { Some(now) } else { Some(UnixMillis::from_secs(now.as_secs() + secs as u64)) }
        } else {
            c.expires_datetime().map(|t| UnixMillis::from_secs(t.unix_timestamp().max(0) as u64))
        };
        let key = (domain.clone(), path.clone(), c.name().to_string());
        if expires.is_some_and(|e| e <= now) {
            self.cookies.remove(&key);
            return;
        }
        self.cookies.insert(
            key,
            StoredCookie {
                name: c.name().to_string(),
                value: c.value().to_string(),
                domain,
                host_only,
                path,
                expires,
                secure: c.secure().unwrap_or(false),
            },
        );
    }

    /// The `Cookie` header value for a request to `url` at `now`, if any
    /// cookie applies.
    pub fn header_for(&self, url: &Url, now: UnixMillis) -> Option<String> {
        let pairs: Vec<String> = self
            .matching(url)
            .filter(|c| c.expires.is_none_or(|e| e > now))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// A copy of every cookie with its expiry dropped: what an attacker who
    /// copied the profile replays (a thief does not honour Max-Age).
    pub fn stolen_copy(&self) -> CookieJar {
        let mut jar = self.clone();
        for c in jar.cookies.values_mut() {
            c.expires = None;
        }
        jar
    }

    /// Number of stored cookies.
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Whether the jar is empty.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    fn matching<'a>(&'a self, url: &'a Url) -> impl Iterator<Item = &'a StoredCookie> + 'a {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let path = url.path().to_string();
        let https = url.scheme() == "https";
        self.cookies.values().filter(move |c| {
            let host_ok = if c.host_only { host == c.domain } else { domain_matches(&host, &c.domain) };
            host_ok && path_matches(&path, &c.path) && (!c.secure || https)
        })
    }
}

fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain || (host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.'))
}

fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

fn default_path(url: &Url) -> String {
    let p = url.path();
    match p.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => p[..i].to_string(),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn host_only_cookie_is_sent_back_to_its_host_until_it_expires() {
        let mut jar = CookieJar::default();
        let now = UnixMillis::from_secs(1_000);
        jar.store(&url("https://chat.lab.test/x"), "S=1; Path=/; Max-Age=60; Secure; HttpOnly", now);
        assert_eq!(jar.header_for(&url("https://chat.lab.test/a"), now).as_deref(), Some("S=1"));
        assert_eq!(jar.header_for(&url("https://code.lab.test/a"), now), None);
        assert_eq!(jar.header_for(&url("http://chat.lab.test/a"), now), None, "secure");
        let later = UnixMillis::from_secs(1_060);
        assert_eq!(jar.header_for(&url("https://chat.lab.test/a"), later), None);
        let stolen = jar.stolen_copy();
        assert_eq!(
            stolen.header_for(&url("https://chat.lab.test/a"), later).as_deref(),
            Some("S=1"),
            "a thief ignores Max-Age"
        );
    }

    #[test]
    fn domain_cookie_covers_subdomains_and_foreign_domains_are_refused() {
        let mut jar = CookieJar::default();
        let now = UnixMillis::from_secs(0);
        jar.store(&url("https://idp.lab.test/"), "a=1; Domain=lab.test", now);
        jar.store(&url("https://idp.lab.test/"), "b=2; Domain=example.com", now);
        assert_eq!(jar.header_for(&url("https://chat.lab.test/"), now).as_deref(), Some("a=1"));
        assert_eq!(jar.len(), 1);
    }

    #[test]
    fn max_age_zero_deletes() {
        let mut jar = CookieJar::default();
        let now = UnixMillis::from_secs(5);
        jar.store(&url("https://a.test/"), "k=v", now);
        jar.store(&url("https://a.test/"), "k=; Max-Age=0", now);
        assert!(jar.is_empty());
    }
}
