//! The independent-MFA invariants.
//!
//! * **E5 (no MFA-protected forwarding without edge MFA)**: every request
//!   the gateway forwards to an application whose policy, re-resolved here
//!   from the run header for the session's groups, requires MFA rides on a
//!   verification the MFA service recorded (or, only where AMR matching is
//!   on, an IdP token whose `amr` maps to an allowed type): same user, same
//!   session, same device as the request, an allowed factor type, and made
//!   within the requirement's session duration (for "every login", after
//!   the session began). Origins check the same at their end: a request
//!   served for such an app carried MFA evidence of an allowed type in its
//!   app token.
//! * **E7 (factor integrity)**: no TOTP code (secret and time step) is
//!   accepted twice; no WebAuthn assertion is accepted with an origin other
//!   than the MFA service's, without user verification where it was
//!   required, or with a sign counter that did not grow on a credential
//!   that is not backup-eligible (a clone).

use std::collections::{BTreeMap, BTreeSet};

use super::Oracle;
use crate::policy::{Decision, FactorKind, MfaRequirement, amr_satisfies};
use crate::trace::{Event, EventBody, FactorFacts};

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the MFA service recorded about one verification.
#[derive(Clone, Debug)]
pub(super) struct VerificationRecord {
    user: String,
    sid: String,
    device: Option<String>,
    factor: FactorKind,
    verified_t: u64,
}

/// The MFA part of the oracle's memory.
#[derive(Debug, Default)]
pub(super) struct MfaMemory {
    verifications: BTreeMap<String, VerificationRecord>,
    /// (user, trace time, amr) of every ID token the IdP issued.
    idp_tokens: Vec<(String, u64, Vec<String>)>,
    totp_used: BTreeSet<(String, u64)>,
    counters: BTreeMap<String, u32>,
}

impl Oracle {
    pub(super) fn observe_mfa(&mut self, e: &Event) {
        match &e.body {
            EventBody::IdpTokenIssued { sub, amr, .. } => {
                self.mfa.idp_tokens.push((sub.clone(), e.t, amr.clone()));
            }
            EventBody::MfaVerified { id, user, sid, device, factor, verified_t, facts, method, .. }
                if e.host == self.spec.mfa.host =>
            {
                if let Some(facts) = facts {
                    self.check_e7(e, user, method, facts);
                }
                self.mfa.verifications.insert(
                    id.clone(),
                    VerificationRecord {
                        user: user.clone(),
                        sid: sid.clone(),
                        device: device.clone(),
                        factor: *factor,
                        verified_t: *verified_t,
                    },
                );
            }
            _ => {}
        }
    }

    fn requirement(&self, app: &str, sid: &str) -> Option<MfaRequirement> {
        let access = self.spec.mfa.apps.get(app)?;
        let groups = &self.sessions.get(sid)?.groups;
        match access.decide(&self.spec.mfa.organization, groups) {
            Decision::Admitted { mfa, .. } => mfa,
            Decision::Denied => None,
        }
    }

    /// E5, for a request the gateway forwarded.
    pub(super) fn check_e5(
        &mut self,
        e: &Event,
        app: &str,
        sid: &str,
        user: &str,
        device: Option<&str>,
        mfa: Option<&str>,
    ) {
        let Some(req) = self.requirement(app, sid) else { return };
        let allowed: Vec<&str> = req.allowed.iter().map(|f| f.as_str()).collect();
        let what =
            format!("gateway forwarded {user}'s request to {app}, which requires MFA ({})", allowed.join(" or "));
        let problem = match mfa {
            None => Some("without any edge MFA verification".to_string()),
            Some(id) if id.starts_with("amr-") => self.amr_problem(user, e.t, &req),
            Some(id) => match self.mfa.verifications.get(id) {
                None => Some(format!("on verification {id}, which the MFA service never recorded")),
                Some(v) if v.user != user || v.sid != sid => {
                    Some(format!("on verification {id}, made for {} in session {}", v.user, v.sid))
                }
                Some(v) if v.device.as_deref() != device => Some(format!(
                    "on verification {id}, bound to device {:?} while the request came from {:?}",
                    v.device, device
                )),
                Some(v) if !req.allowed.contains(&v.factor) => {
                    Some(format!("on verification {id} of a {}, a type the app does not allow", v.factor))
                }
                Some(v) => {
                    let issued = self.sessions.get(sid).map(|s| s.issued).unwrap_or(0);
                    if req.every_login() && v.verified_t < issued {
                        Some(format!("on verification {id}, made before this login (the app asks at every login)"))
                    } else if !req.every_login() && e.t.saturating_sub(v.verified_t) > millis(req.session_duration) {
                        Some(format!(
                            "on verification {id}, older than the app's MFA session of {}",
                            humantime::format_duration(req.session_duration)
                        ))
                    } else {
                        None
                    }
                }
            },
        };
        if let Some(p) = problem {
            self.violation("E5", e, format!("{what} {p}"));
        }
    }

    /// E5 at the origin: a request served for an app that requires MFA
    /// carried evidence of an allowed factor in its app token.
    pub(super) fn check_e5_origin(&mut self, e: &Event, app: &str, sid: &str, mfa: Option<FactorKind>) {
        let Some(req) = self.requirement(app, sid) else { return };
        let problem = match mfa {
            None => "an app token without MFA evidence".to_string(),
            Some(f) if !req.allowed.contains(&f) => format!("MFA evidence of a {f}, a type the app does not allow"),
            Some(_) => return,
        };
        self.violation("E5", e, format!("origin {app}, which requires MFA, served a request on {problem}"));
    }

    fn amr_problem(&self, user: &str, t: u64, req: &MfaRequirement) -> Option<String> {
        let org = &self.spec.mfa.organization;
        if !org.amr_matching {
            return Some("on the identity provider's amr, which the organization does not accept".into());
        }
        let window = millis(org.amr_session_duration);
        let ok = self.mfa.idp_tokens.iter().any(|(sub, issued, amr)| {
            sub == user && *issued <= t && t - issued <= window && amr_satisfies(amr, req).is_some()
        });
        (!ok).then(|| "on an amr the identity provider never issued with an allowed method".to_string())
    }

    fn check_e7(&mut self, e: &Event, user: &str, method: &str, facts: &FactorFacts) {
        if let Some(step) = facts.totp_step
            && !self.mfa.totp_used.insert((facts.credential.clone(), step))
        {
            self.violation(
                "E7",
                e,
                format!("{user}'s TOTP code of step {step} ({}) was accepted twice", facts.credential),
            );
        }
        if method != "webauthn" {
            return;
        }
        if let Some(origin) = &facts.origin
            && origin != &self.spec.mfa.origin
        {
            let message = format!(
                "a WebAuthn assertion for {user} made on {origin} was accepted (only {} is the MFA service)",
                self.spec.mfa.origin
            );
            self.violation("E7", e, message);
        }
        if facts.uv_required && facts.user_verified == Some(false) {
            self.violation("E7", e, format!("{user}'s assertion lacked user verification, which was required"));
        }
        if let Some(counter) = facts.counter {
            let last = self.mfa.counters.get(&facts.credential).copied();
            if let Some(last) = last
                && facts.backup_eligible != Some(true)
                && (counter != 0 || last != 0)
                && counter <= last
            {
                let message = format!(
                    "credential {} of {user} presented sign counter {counter} after {last}: a device-bound key \
                     went backwards (a clone) and was accepted",
                    facts.credential
                );
                self.violation("E7", e, message);
            }
            self.mfa.counters.insert(facts.credential.clone(), last.map_or(counter, |l| l.max(counter)));
        }
    }
}
