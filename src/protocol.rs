//! Wire contracts between the lab's components.
//!
//! Components never import each other; what one sends and another reads is
//! defined here: the app token the gateway forwards to origins, and the
//! device API the agent uses.

use serde::{Deserialize, Serialize};

use crate::net::UnixMillis;
use crate::policy::FactorKind;

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The edge MFA verification this request rides on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<AppTokenMfa>,
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

// ---- independent MFA ----

/// Path, on the gateway's domain, of the App Launcher's "add an MFA device"
/// page (`?kind=totp|security_key|biometrics`). The launcher needs a
/// session but is exempt from the MFA requirement, so users can enrol.
pub const LAUNCHER_ADD_FACTOR_PATH: &str = "/launcher/mfa/add";

/// Path, on the gateway's domain, where the MFA service returns the user
/// with its evidence (`?evidence=<token>`).
pub const MFA_RETURN_PATH: &str = "/auth/mfa";

/// Path, on the MFA service, where a verification starts
/// (`?request=<token signed by the gateway>`).
pub const MFA_VERIFY_PATH: &str = "/verify";

/// Path, on the MFA service, where an enrollment starts (`?request=...`).
pub const MFA_ENROLL_PATH: &str = "/enroll";

/// Path, on the MFA service, of the public keys that sign its evidence.
pub const MFA_CERTS_PATH: &str = "/.well-known/jwks.json";

/// Audience of the gateway's requests to the MFA service.
pub const MFA_AUDIENCE: &str = "lockstep-mfa";

/// What the gateway asks of the MFA service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum MfaPurpose {
    /// Verify one of these factor types for an application login.
    Verify {
        /// The application.
        app: String,
        /// Acceptable factor types.
        allowed: Vec<FactorKind>,
        /// An earlier verification counts if made at most this long ago;
        /// 0 = only a fresh one (every login).
        max_age_s: u64,
    },
    /// Enroll a factor of this type (from the App Launcher).
    Enroll {
        /// Factor type.
        kind: FactorKind,
    },
}

/// A request from the gateway to the MFA service, signed with the gateway's
/// app-token key (the MFA service verifies it at `CERTS_PATH`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRequestClaims {
    /// The gateway's auth URL.
    pub iss: String,
    /// [`MFA_AUDIENCE`].
    pub aud: String,
    /// User.
    pub sub: String,
    /// The gateway session it is for.
    pub sid: String,
    /// The device the user is on, as the gateway identifies it.
    pub device: Option<String>,
    /// What is asked.
    #[serde(flatten)]
    pub purpose: MfaPurpose,
    /// Where to send the user back (the gateway's [`MFA_RETURN_PATH`]).
    pub return_to: String,
    /// Request id, echoed in the evidence.
    pub jti: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expiry, seconds.
    pub exp: u64,
}

/// Evidence of a verified second factor, signed by the MFA service's own
/// key (published at [`MFA_CERTS_PATH`]), for the gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaEvidenceClaims {
    /// The MFA service's URL.
    pub iss: String,
    /// The gateway's auth URL.
    pub aud: String,
    /// User.
    pub sub: String,
    /// Gateway session it is bound to.
    pub sid: String,
    /// Device it is bound to.
    pub device: Option<String>,
    /// Factor type verified.
    pub factor: FactorKind,
    /// When the factor was checked (Unix ms).
    pub verified_at: UnixMillis,
    /// The request this answers.
    pub request: String,
    /// Evidence id.
    pub jti: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expiry, seconds.
    pub exp: u64,
}

/// MFA evidence carried in an app token, for origins that check it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppTokenMfa {
    /// Factor type.
    pub factor: FactorKind,
    /// When it was verified (Unix seconds).
    pub verified_at: u64,
    /// The device it is bound to.
    pub device: Option<String>,
    /// Who verified it: the MFA service's URL, or `idp-amr`.
    pub by: String,
}
