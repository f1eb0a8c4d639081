//! Wire contracts between the lab's components.
//!
//! Components never import each other; what one sends and another reads is
//! defined here: the app token the gateway forwards to origins, and the
//! device API the agent uses.

use serde::{Deserialize, Serialize};

use crate::net::UnixMillis;

/// Header carrying the app token from the gateway to origins.
pub const APP_TOKEN_HEADER: &str = "lockstep-jwt-assertion";

/// Path, on the gateway's domain, of the public keys that sign app tokens.
pub const CERTS_PATH: &str = "/.lockstep/certs";

/// Path, on the gateway's domain, where a sign-in starts
/// (`?target=URL` for a browser, `?device=ID` for a device registration).
pub const LOGIN_PATH: &str = "/auth/login";

/// Path, on the gateway's domain, of the device session API
/// (`Authorization: Bearer <device token>`).
pub const DEVICE_SESSION_PATH: &str = "/device/session";

/// Where the gateway hands a device registration to the agent: the sign-in
/// window stops at this URL and passes its `token` parameter on.
pub const DEVICE_HANDOFF_URL: &str = "lockstep://registered";

/// Claims of the app token that origins verify.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppTokenClaims {
    /// The gateway's auth URL.
    pub iss: String,
    /// The app's name.
    pub aud: String,
    /// User.
    pub sub: String,
    /// Email.
    pub email: String,
    /// Session id.
    pub sid: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expiry, seconds.
    pub exp: u64,
}

/// The device session API's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceSessionInfo {
    /// Session id.
    pub sid: String,
    /// User.
    pub user: String,
    /// Device id.
    pub device: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: UnixMillis,
}
