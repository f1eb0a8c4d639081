//! Vendor profiles of the mock IdP: one table per profile, the quirks a
//! gateway meets in the field (the values are "-like": modelled on what
//! these vendors are documented or observed to emit, not copied from them).
//!
//! | | `standard` | `okta` | `entra` | `google` |
//! |---|---|---|---|---|
//! | `amr` | as configured (RFC 8176) | RFC values, `mfa` added for 2+ methods, biometrics as the non-RFC `pop` | `pwd`, `otp`; keys and biometrics as `ngcmfa`; push (`mca`) as `rsa`; `mfa` added for 2+ methods | omitted |
//! | extra claims | none | `preferred_username` | `preferred_username`, `oid`, `tid` | `email_verified`, `hd` |
//! | groups in | `groups` | `groups` | `roles` | (none) |
//! | ID token lifetime | `id_token_ttl` | 1 h | 1 h | 1 h |
//! | next key published ahead | no | yes | yes | yes |
//! | old key kept after a rotation | 1 h | 24 h | 24 h | 24 h |
//! | JWKS `Cache-Control: max-age` | none | 1 h | 24 h | 6 h |
//!
//! `[idp] jwks_max_age` overrides the profile's `max-age`. The `standard`
//! profile is the provider as it always was: existing labs keep their
//! tokens and traces.

use std::time::Duration;

pub use crate::config::IdpProfile;

/// Where a profile puts the user's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupsClaim {
    /// `groups`.
    Groups,
    /// `roles` (app roles).
    Roles,
    /// Not emitted.
    Omitted,
}

/// An extra claim a profile emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// `preferred_username`: the login name.
    PreferredUsername,
    /// `oid`: a stable object id derived from the user name.
    ObjectId,
    /// `tid`: the tenant id.
    TenantId,
    /// `email_verified`: true.
    EmailVerified,
    /// `hd`: the email's domain.
    HostedDomain,
}

/// How a profile renders `amr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmrStyle {
    /// Each RFC 8176 value the user's login used, and what the vendor emits
    /// for it; values not listed pass through unchanged.
    pub rename: &'static [(&'static str, &'static str)],
    /// Add `mfa` when the login used two or more distinct methods.
    pub add_mfa: bool,
    /// Omit the claim altogether.
    pub omit: bool,
}

/// One profile's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileTable {
    /// How `amr` is written.
    pub amr: AmrStyle,
    /// Where groups go.
    pub groups: GroupsClaim,
    /// Extra claims.
    pub extras: &'static [Extra],
    /// ID (and access) token lifetime; `None`: the lab's `id_token_ttl`.
    pub token_ttl: Option<Duration>,
    /// Whether the next signing key is in the JWKS before it signs.
    pub publish_ahead: bool,
    /// How long a rotated-out key stays published.
    pub overlap: Duration,
    /// `Cache-Control: max-age` on the JWKS, if any.
    pub jwks_max_age: Option<Duration>,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The tenant id an Entra-like provider puts in `tid`.
pub const ENTRA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

const STANDARD: ProfileTable = ProfileTable {
    amr: AmrStyle { rename: &[], add_mfa: false, omit: false },
    groups: GroupsClaim::Groups,
    extras: &[],
    token_ttl: None,
    publish_ahead: false,
    overlap: HOUR,
    jwks_max_age: None,
};

const OKTA: ProfileTable = ProfileTable {
    amr: AmrStyle { rename: &[("face", "pop"), ("fpt", "pop")], add_mfa: true, omit: false },
    groups: GroupsClaim::Groups,
    extras: &[Extra::PreferredUsername],
    token_ttl: Some(HOUR),
    publish_ahead: true,
    overlap: DAY,
    jwks_max_age: Some(HOUR),
};

const ENTRA: ProfileTable = ProfileTable {
    amr: AmrStyle {
        rename: &[("hwk", "ngcmfa"), ("swk", "ngcmfa"), ("face", "ngcmfa"), ("fpt", "ngcmfa"), ("mca", "rsa")],
        add_mfa: true,
        omit: false,
    },
    groups: GroupsClaim::Roles,
    extras: &[Extra::PreferredUsername, Extra::ObjectId, Extra::TenantId],
    token_ttl: Some(HOUR),
    publish_ahead: true,
    overlap: DAY,
    jwks_max_age: Some(DAY),
};

const GOOGLE: ProfileTable = ProfileTable {
    amr: AmrStyle { rename: &[], add_mfa: false, omit: true },
    groups: GroupsClaim::Omitted,
    extras: &[Extra::EmailVerified, Extra::HostedDomain],
    token_ttl: Some(HOUR),
    publish_ahead: true,
    overlap: DAY,
    jwks_max_age: Some(Duration::from_secs(6 * 3600)),
};

impl IdpProfile {
    /// The profile's table.
    pub fn table(self) -> &'static ProfileTable {
        match self {
            IdpProfile::Standard => &STANDARD,
            IdpProfile::Okta => &OKTA,
            IdpProfile::Entra => &ENTRA,
            IdpProfile::Google => &GOOGLE,
        }
    }

    /// The profile's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            IdpProfile::Standard => "standard",
            IdpProfile::Okta => "okta",
            IdpProfile::Entra => "entra",
            IdpProfile::Google => "google",
        }
    }
}

impl ProfileTable {
    /// The `amr` claim for a login that used `methods` (RFC 8176 values),
    /// or `None` when the profile omits it. Order is kept, duplicates
    /// dropped.
    pub fn amr(&self, methods: &[String]) -> Option<Vec<String>> {
        if self.amr.omit {
            return None;
        }
        if self.amr.rename.is_empty() && !self.amr.add_mfa {
            // RFC-clean: exactly what was configured.
            return Some(methods.to_vec());
        }
        let mut out: Vec<String> = Vec::new();
        for m in methods {
            let v = self.amr.rename.iter().find(|(from, _)| from == m).map_or(m.as_str(), |(_, to)| to);
            if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
        let distinct = methods.iter().collect::<std::collections::BTreeSet<_>>().len();
        if self.amr.add_mfa && distinct >= 2 && !out.iter().any(|o| o == "mfa") {
            out.push("mfa".into());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{FactorKind, Level, MfaRequirement, amr_factor, amr_satisfies};

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn standard_is_the_configured_amr_unchanged() {
        let t = IdpProfile::Standard.table();
        assert_eq!(t.amr(&v(&["pwd", "hwk"])), Some(v(&["pwd", "hwk"])));
        assert_eq!(t.token_ttl, None);
        assert!(!t.publish_ahead);
        assert_eq!(t.jwks_max_age, None);
        assert_eq!(t.groups, GroupsClaim::Groups);
    }

    #[test]
    fn each_vendor_writes_amr_its_own_way() {
        assert_eq!(IdpProfile::Okta.table().amr(&v(&["pwd", "otp"])), Some(v(&["pwd", "otp", "mfa"])));
        assert_eq!(IdpProfile::Okta.table().amr(&v(&["pwd", "fpt"])), Some(v(&["pwd", "pop", "mfa"])));
        assert_eq!(IdpProfile::Okta.table().amr(&v(&["pwd"])), Some(v(&["pwd"])));
        assert_eq!(IdpProfile::Entra.table().amr(&v(&["pwd", "hwk"])), Some(v(&["pwd", "ngcmfa", "mfa"])));
        assert_eq!(IdpProfile::Entra.table().amr(&v(&["pwd", "mca"])), Some(v(&["pwd", "rsa", "mfa"])));
        assert_eq!(IdpProfile::Entra.table().amr(&v(&["wia"])), Some(v(&["wia"])));
        assert_eq!(IdpProfile::Google.table().amr(&v(&["pwd", "hwk"])), None);
    }

    /// The gateway maps only RFC 8176 values it knows: what a vendor writes
    /// in its own dialect never satisfies the edge MFA by accident.
    #[test]
    fn non_standard_amr_values_never_satisfy_edge_mfa() {
        for value in ["mfa", "ngcmfa", "rsa", "wia", "pop", "fido", "wiaormfa"] {
            assert_eq!(amr_factor(value), None, "{value}");
        }
        let keys_only = MfaRequirement {
            allowed: [FactorKind::SecurityKey, FactorKind::Biometrics, FactorKind::Totp].into(),
            session_duration: Duration::from_secs(3600),
            level: Level::Application,
        };
        // A user who really used a key: RFC-clean profiles keep `hwk`, which maps;
        // Entra's `ngcmfa` and Okta's `pop` do not, and Google says nothing.
        let used = v(&["pwd", "hwk"]);
        let satisfied = |p: IdpProfile, m: &[String]| p.table().amr(m).and_then(|a| amr_satisfies(&a, &keys_only));
        assert_eq!(satisfied(IdpProfile::Standard, &used), Some(FactorKind::SecurityKey));
        assert_eq!(satisfied(IdpProfile::Okta, &used), Some(FactorKind::SecurityKey));
        assert_eq!(satisfied(IdpProfile::Entra, &used), None);
        assert_eq!(satisfied(IdpProfile::Google, &used), None);
        assert_eq!(satisfied(IdpProfile::Okta, &v(&["pwd", "face"])), None, "Okta's `pop` is not biometrics");
        assert_eq!(satisfied(IdpProfile::Entra, &v(&["pwd", "fpt"])), None);
    }

    #[test]
    fn profiles_parse_from_their_names() {
        for p in [IdpProfile::Standard, IdpProfile::Okta, IdpProfile::Entra, IdpProfile::Google] {
            let parsed: IdpProfile = serde_json::from_value(serde_json::json!(p.as_str())).unwrap();
            assert_eq!(parsed, p);
        }
        assert!(serde_json::from_value::<IdpProfile>(serde_json::json!("auth0")).is_err());
    }
}
