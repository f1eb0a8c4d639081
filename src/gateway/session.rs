//! Gateway sessions: the registry (the authority on expiry and revocation)
//! and the signed tokens that carry a session id to browsers, the agent and
//! origins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::net::UnixMillis;
use crate::policy::FactorKind;

/// Audience of device-registration tokens.
pub const DEVICE_AUDIENCE: &str = "lockstep-device";
/// Audience of the global (auth-domain) session cookie.
pub const GLOBAL_AUDIENCE: &str = "lockstep-global";

/// Cookie carrying an app session on an application's domain.
pub const APP_COOKIE: &str = "LS_Authorization";
/// Cookie carrying the global session on the gateway's own domain.
pub const GLOBAL_COOKIE: &str = "LS_Global";
/// One session, as the registry knows it.
#[derive(Clone, Debug)]
pub struct Session {
    /// Session id.
    pub sid: String,
    /// User (the IdP's `sub`).
    pub user: String,
    /// Email.
    pub email: String,
    /// Groups from the ID token.
    pub groups: Vec<String>,
    /// Device the session is bound to, for device registrations.
    pub device: Option<String>,
    /// When it was created.
    pub issued: UnixMillis,
    /// When it ends.
    pub expires: UnixMillis,
    /// When it was revoked, if it was.
    pub revoked: Option<UnixMillis>,
    /// `amr` of the ID token that opened it.
    pub amr: Vec<String>,
    /// When the user authenticated at the IdP, if it said.
    pub auth_time: Option<UnixMillis>,
    /// Edge MFA verifications made in this session.
    pub mfa: Vec<MfaVerification>,
}

/// A second factor verified for a session.
#[derive(Clone, Debug)]
pub struct MfaVerification {
    /// Evidence id.
    pub id: String,
    /// Factor type.
    pub factor: FactorKind,
    /// When the factor was checked.
    pub verified_at: UnixMillis,
    /// Device it is bound to.
    pub device: Option<String>,
    /// Who verified it: the MFA service's URL, or `idp-amr`.
    pub by: String,
}

/// Why a session is not live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProblem {
    /// No such session.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked by an administrator.
    Revoked,
}

impl SessionProblem {
    /// A short description.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionProblem::Unknown => "unknown session",
            SessionProblem::Expired => "session expired",
            SessionProblem::Revoked => "session revoked",
        }
    }
}

/// Which checks the registry applies (the `danger_` switches turn some off).
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// Check expiry.
    pub expiry: bool,
    /// Check revocation.
    pub revocation: bool,
}

/// All sessions, by id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: BTreeMap<String, Session>,
}

impl Registry {
    /// Adds a session.
    pub fn insert(&mut self, session: Session) {
        self.sessions.insert(session.sid.clone(), session);
    }

    /// The session `sid` if it is live at `now` under `checks`.
    pub fn live(&self, sid: &str, now: UnixMillis, checks: Checks) -> Result<&Session, SessionProblem> {
        let s = self.sessions.get(sid).ok_or(SessionProblem::Unknown)?;
        if checks.revocation && s.revoked.is_some_and(|r| r <= now) {
            return Err(SessionProblem::Revoked);
        }
        if checks.expiry && now >= s.expires {
            return Err(SessionProblem::Expired);
        }
        Ok(s)
    }

    /// Records an MFA verification on session `sid`.
    pub fn add_verification(&mut self, sid: &str, verification: MfaVerification) {
        if let Some(s) = self.sessions.get_mut(sid) {
            s.mfa.push(verification);
        }
    }

    /// Revokes every live session of `user` at `now`; returns their ids.
    pub fn revoke_user(&mut self, user: &str, now: UnixMillis) -> Vec<String> {
        self.sessions
            .values_mut()
            .filter(|s| s.user == user && s.revoked.is_none() && now < s.expires)
            .map(|s| {
                s.revoked = Some(now);
                s.sid.clone()
            })
            .collect()
    }
}

/// Claims of the gateway's session tokens (cookies, device tokens and the
/// short-lived hand-off from the auth domain to an app domain).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The gateway's auth URL.
    pub iss: String,
    /// App name, [`DEVICE_AUDIENCE`] or [`GLOBAL_AUDIENCE`].
    pub aud: String,
    /// User.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expiry, seconds.
    pub exp: u64,
    /// Hand-off only: the path to return to on the app's domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Device registrations only: the device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// App cookies and hand-offs: the MFA verification the app login used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sid: &str, user: &str, expires: u64) -> Session {
        Session {
            sid: sid.into(),
            user: user.into(),
            email: String::new(),
            groups: vec![],
            device: None,
            issued: UnixMillis(0),
            expires: UnixMillis(expires),
            revoked: None,
            amr: vec![],
            auth_time: None,
            mfa: vec![],
        }
    }

    const ALL: Checks = Checks { expiry: true, revocation: true };

    #[test]
    fn expiry_is_exclusive_and_revocation_is_per_user() {
        let mut r = Registry::default();
        r.insert(session("a", "alice", 1000));
        r.insert(session("b", "bob", 1000));
        assert!(r.live("a", UnixMillis(999), ALL).is_ok());
        assert_eq!(r.live("a", UnixMillis(1000), ALL).err(), Some(SessionProblem::Expired));
        assert_eq!(r.live("zz", UnixMillis(0), ALL).err(), Some(SessionProblem::Unknown));
        assert_eq!(r.revoke_user("alice", UnixMillis(500)), vec!["a".to_string()]);
        assert_eq!(r.live("a", UnixMillis(500), ALL).err(), Some(SessionProblem::Revoked));
        assert!(r.live("b", UnixMillis(500), ALL).is_ok());
        let lax = Checks { expiry: false, revocation: false };
        assert!(r.live("a", UnixMillis(5000), lax).is_ok());
    }
}
