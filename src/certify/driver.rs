//! Login drivers: how the certifier's user agent gets from an authorization
//! request to the provider's redirect back to the client.
//!
//! Built-in drivers speak the login flows of the providers the lab is
//! tested against; `--login-command` hands the authorization URL to any
//! program that prints the final redirect URL.

use async_trait::async_trait;
use url::Url;

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
