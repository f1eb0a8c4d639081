//! Independent-MFA policy: which second factor an application asks of a
//! user, resolved exactly as the modelled product documents it.
//!
//! Three levels each say *respect global*, *custom* (own authenticators and
//! session duration) or *disable*: the access policy that admitted the user,
//! then the application, then the organization. The most specific level that
//! does not defer wins (policy > application > organization). The
//! organization only requires MFA where `mfa_required_for_all_apps` is set
//! and it allows at least one authenticator.
//!
//! Identity-provider MFA ("AMR matching") may stand in for the edge prompt
//! when the ID token's `amr` holds an RFC 8176 value that maps to an allowed
//! authenticator type; other values (`pwd`, `sms`, `mca`, ...) never count.
//!
//! Pure: no I/O, no clock. The gateway resolves requirements with it and the
//! oracle re-resolves them from the run header to judge the gateway.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A second-factor type, as the policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// Authenticator app (RFC 6238 TOTP).
    Totp,
    /// Platform authenticator with user verification (Touch ID, Windows Hello).
    Biometrics,
    /// Roaming WebAuthn/FIDO2 security key.
    SecurityKey,
}

impl FactorKind {
    /// Its policy name.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::Totp => "totp",
            FactorKind::Biometrics => "biometrics",
            FactorKind::SecurityKey => "security_key",
        }
    }

    /// Whether the factor is bound to the origin the user sees (WebAuthn),
    /// so that a relaying proxy cannot use it.
    pub fn phishing_resistant(self) -> bool {
        !matches!(self, FactorKind::Totp)
    }
}

impl fmt::Display for FactorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

fn day() -> Duration {
    DAY
}

/// Organization-wide MFA settings (the documented `mfa_config` plus
/// `mfa_required_for_all_apps`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgMfa {
    /// Authenticator types users may use; empty turns MFA off.
    #[serde(default)]
    pub allowed_authenticators: Vec<FactorKind>,
    /// How long a verification satisfies a new login (`0s` = every login).
    #[serde(default = "day", with = "humantime_serde")]
    pub session_duration: Duration,
    /// Require MFA on every application that respects the global setting.
    #[serde(default)]
    pub mfa_required_for_all_apps: bool,
    /// AAGUIDs (32 hex digits) a security key must have to enrol; empty =
    /// any. Checked at enrollment only, as documented.
    #[serde(default)]
    pub required_aaguids: Vec<String>,
    /// Accept the identity provider's `amr` in place of the edge prompt.
    #[serde(default)]
    pub amr_matching: bool,
    /// How long after the IdP authentication its `amr` counts.
    #[serde(default = "day", with = "humantime_serde")]
    pub amr_session_duration: Duration,
}

impl Default for OrgMfa {
    fn default() -> Self {
        OrgMfa {
            allowed_authenticators: Vec::new(),
            session_duration: DAY,
            mfa_required_for_all_apps: false,
            required_aaguids: Vec::new(),
            amr_matching: false,
            amr_session_duration: DAY,
        }
    }
}

/// An application's or an access policy's MFA setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum MfaSetting {
    /// Defer to the next, less specific level.
    #[default]
    RespectGlobal,
    /// Its own authenticators and session duration.
    Custom {
        /// Authenticator types allowed (at least one).
        allowed_authenticators: Vec<FactorKind>,
        /// How long a verification satisfies a new login (`0s` = every login).
        #[serde(with = "humantime_serde")]
        session_duration: Duration,
    },
    /// No MFA.
    Disabled,
}

/// One access policy of an application: who it admits, and its MFA setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Name, for traces and reports.
    pub name: String,
    /// Groups it admits (any of them).
    pub groups: Vec<String>,
    /// Its MFA setting.
    #[serde(default)]
    pub mfa: MfaSetting,
}

/// What an application's access rules are, as far as MFA is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAccess {
    /// The application-level MFA setting.
    pub mfa: MfaSetting,
    /// Access policies in evaluation order; the first that admits the user
    /// decides.
    pub policies: Vec<AccessPolicy>,
}

/// The level a requirement came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// An access policy.
    Policy,
    /// The application.
    Application,
    /// The organization.
    Organization,
}

/// A second factor that must be shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaRequirement {
    /// Acceptable factor types.
    pub allowed: BTreeSet<FactorKind>,
    /// How long a verification satisfies a new login; zero = every login.
    #[serde(with = "humantime_serde")]
    pub session_duration: Duration,
    /// Where it came from.
    pub level: Level,
}

impl MfaRequirement {
    /// Whether every login needs a fresh verification.
    pub fn every_login(&self) -> bool {
        self.session_duration.is_zero()
    }

    /// Whether a verification of `factor` made `age` ago satisfies a new login.
    pub fn satisfied_by(&self, factor: FactorKind, age: Duration) -> bool {
        self.allowed.contains(&factor) && !self.every_login() && age <= self.session_duration
    }
}

/// The outcome of resolving an application's rules for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No access policy admits the user.
    Denied,
    /// Admitted by `policy`; `mfa` is what must be shown first, if anything.
    Admitted {
        /// The policy that admitted the user.
        policy: String,
        /// The MFA requirement, if any.
        mfa: Option<MfaRequirement>,
    },
}

fn custom(allowed: &[FactorKind], session_duration: Duration, level: Level) -> Option<MfaRequirement> {
    Some(MfaRequirement { allowed: allowed.iter().copied().collect(), session_duration, level })
}

/// Resolves one user's MFA requirement from the three levels.
pub fn resolve(org: &OrgMfa, app: &MfaSetting, policy: &MfaSetting) -> Option<MfaRequirement> {
    for (setting, level) in [(policy, Level::Policy), (app, Level::Application)] {
        match setting {
            MfaSetting::Disabled => return None,
            MfaSetting::Custom { allowed_authenticators, session_duration } => {
                return custom(allowed_authenticators, *session_duration, level);
            }
            MfaSetting::RespectGlobal => {}
        }
    }
    if org.mfa_required_for_all_apps && !org.allowed_authenticators.is_empty() {
        custom(&org.allowed_authenticators, org.session_duration, Level::Organization)
    } else {
        None
    }
}

impl AppAccess {
    /// Decides for a user in `groups`.
    pub fn decide(&self, org: &OrgMfa, groups: &[String]) -> Decision {
        match self.policies.iter().find(|p| p.groups.iter().any(|g| groups.contains(g))) {
            None => Decision::Denied,
            Some(p) => Decision::Admitted { policy: p.name.clone(), mfa: resolve(org, &self.mfa, &p.mfa) },
        }
    }
}

/// The factor type an RFC 8176 `amr` value stands for, per the documented
/// mapping; `None` for values that never satisfy edge MFA.
pub fn amr_factor(value: &str) -> Option<FactorKind> {
    match value {
        "hwk" | "swk" => Some(FactorKind::SecurityKey),
        "otp" => Some(FactorKind::Totp),
        "face" | "fpt" | "iris" | "retina" | "vbm" => Some(FactorKind::Biometrics),
        _ => None,
    }
}

/// The strongest allowed factor type among `amr`'s mappable values.
pub fn amr_satisfies(amr: &[String], requirement: &MfaRequirement) -> Option<FactorKind> {
    amr.iter().filter_map(|v| amr_factor(v)).filter(|f| requirement.allowed.contains(f)).max()
}

/// Why a policy is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A custom setting allows no authenticator.
    #[error("{0}: custom MFA must allow at least one authenticator")]
    EmptyCustom(String),
    /// An AAGUID is not 32 hex digits.
    #[error("required_aaguids: `{0}` is not 32 hexadecimal digits")]
    BadAaguid(String),
}

/// Checks a custom setting at `path` (for error messages).
pub fn validate_setting(path: &str, setting: &MfaSetting) -> Result<(), PolicyError> {
    match setting {
        MfaSetting::Custom { allowed_authenticators, .. } if allowed_authenticators.is_empty() => {
            Err(PolicyError::EmptyCustom(path.to_string()))
        }
        _ => Ok(()),
    }
}

/// Parses an AAGUID written as 32 hex digits (dashes tolerated).
pub fn parse_aaguid(text: &str) -> Result<[u8; 16], PolicyError> {
    let clean: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(&clean, &mut out).map_err(|_| PolicyError::BadAaguid(text.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked precedence example of the product documentation, as data.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Vector {
        organization: OrgMfa,
        apps: Vec<VectorApp>,
        case: Vec<VectorCase>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VectorApp {
        name: String,
        #[serde(default)]
        mfa: MfaSetting,
        policies: Vec<AccessPolicy>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VectorCase {
        app: String,
        groups: Vec<String>,
        expect_policy: Option<String>,
        /// Absent: no MFA. Present: these factor types.
        expect_allowed: Option<Vec<FactorKind>>,
        #[serde(default, with = "humantime_serde")]
        expect_session: Option<Duration>,
        expect_level: Option<Level>,
        note: String,
    }

    #[test]
    fn documented_precedence_example() {
        let text = include_str!("../fixtures/mfa/precedence.toml");
        let v: Vector = toml::from_str(text).expect("fixture parses");
        assert!(v.case.len() >= 6);
        for c in &v.case {
            let app = v.apps.iter().find(|a| a.name == c.app).expect("case names a known app");
            let access = AppAccess { mfa: app.mfa.clone(), policies: app.policies.clone() };
            let decision = access.decide(&v.organization, &c.groups);
            match (&decision, &c.expect_policy) {
                (Decision::Denied, None) => continue,
                (Decision::Admitted { policy, mfa }, Some(expected)) => {
                    assert_eq!(policy, expected, "{}", c.note);
                    match (mfa, &c.expect_allowed) {
                        (None, None) => {}
                        (Some(req), Some(allowed)) => {
                            let allowed: BTreeSet<FactorKind> = allowed.iter().copied().collect();
                            assert_eq!(req.allowed, allowed, "{}", c.note);
                            assert_eq!(Some(req.session_duration), c.expect_session, "{}", c.note);
                            assert_eq!(Some(req.level), c.expect_level, "{}", c.note);
                        }
                        (got, want) => panic!("{}: got {got:?}, expected {want:?}", c.note),
                    }
                }
                (got, want) => panic!("{}: got {got:?}, expected policy {want:?}", c.note),
            }
        }
    }

    #[test]
    fn org_requires_only_when_required_for_all_apps_and_not_empty() {
        let mut org = OrgMfa {
            allowed_authenticators: vec![FactorKind::Totp],
            mfa_required_for_all_apps: false,
            ..OrgMfa::default()
        };
        let global = MfaSetting::RespectGlobal;
        assert_eq!(resolve(&org, &global, &global), None);
        org.mfa_required_for_all_apps = true;
        assert_eq!(resolve(&org, &global, &global).map(|r| r.level), Some(Level::Organization));
        org.allowed_authenticators.clear();
        assert_eq!(resolve(&org, &global, &global), None, "empty list turns MFA off");
    }

    #[test]
    fn amr_mapping_follows_rfc_8176_table() {
        for (v, f) in [("hwk", Some(FactorKind::SecurityKey)), ("swk", Some(FactorKind::SecurityKey))] {
            assert_eq!(amr_factor(v), f);
        }
        assert_eq!(amr_factor("otp"), Some(FactorKind::Totp));
        for v in ["face", "fpt", "iris", "retina", "vbm"] {
            assert_eq!(amr_factor(v), Some(FactorKind::Biometrics), "{v}");
        }
        for v in ["pwd", "sms", "tel", "geo", "kba", "sc", "pin", "user", "mca", "rba", "wia", "pop", "mfa", ""] {
            assert_eq!(amr_factor(v), None, "{v} must never satisfy edge MFA");
        }
        let keys_only = MfaRequirement {
            allowed: [FactorKind::SecurityKey].into(),
            session_duration: Duration::from_secs(3600),
            level: Level::Application,
        };
        let amr = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(amr_satisfies(&amr(&["pwd", "mca"]), &keys_only), None);
        assert_eq!(amr_satisfies(&amr(&["pwd", "otp"]), &keys_only), None, "otp does not satisfy keys-only");
        assert_eq!(amr_satisfies(&amr(&["pwd", "hwk"]), &keys_only), Some(FactorKind::SecurityKey));
    }

    #[test]
    fn every_login_is_never_satisfied_by_an_earlier_verification() {
        let req = MfaRequirement {
            allowed: [FactorKind::Totp].into(),
            session_duration: Duration::ZERO,
            level: Level::Policy,
        };
        assert!(req.every_login());
        assert!(!req.satisfied_by(FactorKind::Totp, Duration::ZERO));
        let hourly = MfaRequirement { session_duration: Duration::from_secs(3600), ..req };
        assert!(hourly.satisfied_by(FactorKind::Totp, Duration::from_secs(3600)));
        assert!(!hourly.satisfied_by(FactorKind::Totp, Duration::from_secs(3601)));
        assert!(!hourly.satisfied_by(FactorKind::SecurityKey, Duration::ZERO));
    }

    #[test]
    fn aaguids_and_custom_settings_are_validated() {
        assert_eq!(parse_aaguid("cb69481e8ff7403993ec0a2729a154a8").map(|a| a[0]), Ok(0xcb));
        assert_eq!(parse_aaguid("cb69481e-8ff7-4039-93ec-0a2729a154a8").map(|a| a[15]), Ok(0xa8));
        assert!(parse_aaguid("xyz").is_err());
        let empty = MfaSetting::Custom { allowed_authenticators: vec![], session_duration: DAY };
        assert!(validate_setting("gateway.apps[0].mfa", &empty).is_err());
    }
}
