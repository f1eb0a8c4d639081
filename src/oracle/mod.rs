//! The oracle: invariant checkers over a run's trace.
//!
//! Architecture invariant: the oracle reads the trace and nothing else. It
//! takes the administrator's requirements from the run header
//! (`run_started.spec`) and the ground truth of authentication from the
//! gateway's session events, never from what the agent claims about itself.
//!
//! * **E1 (mandatory authentication)**: while the device holds no live
//!   session, no flow of the device is permitted, and no data passes on a
//!   flow, unless its process and destination are in the lockdown
//!   allow-list (or it is loopback and loopback is allowed). A session's
//!   end is tolerated for `expiry_grace` / `revocation_grace`.
//! * **E3 (no lapse during faults and transitions)**: from the moment the
//!   device reports a fault or transition (power-on, agent stopped, BFE
//!   stopped, upgrade, sleep, resume, network change, user switch,
//!   organization change) until the agent next reports its state, no flow
//!   outside the allow-list is permitted and no data passes on one unless
//!   the user now at the console holds a live device session (no grace).
//!   Levers (captive portal, administrator override) count as allowed only
//!   within the bound the configuration gives them; an opening beyond its
//!   bound, or of a lever that is off, is itself an E3 violation.
//! * **E4 (no forwarding without a session)**: every request the gateway
//!   forwards, and every request an origin serves, carries a session that
//!   is issued, unexpired and unrevoked at that instant (no grace).
//! * **E2 (ID tokens only under published keys)**: see the `keys` submodule.
//! * **E5** and **E7** (independent MFA): see the `mfa` submodule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::trace::{EnforcementSpec, Event, EventBody, GatewayVerdict, Trace, Verdict, format_offset};

/// A broken invariant, located in the trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// `E1`, `E4`, or `T0` for a trace the oracle cannot read.
    pub invariant: String,
    /// Sequence number of the offending event.
    pub seq: u64,
    /// Its simulated time (ms).
    pub t: u64,
    /// Its host.
    pub host: String,
    /// What happened and why it is a violation.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} (event #{}, {}): {}",
            self.invariant,
            format_offset(self.t),
            self.seq,
            self.host,
            self.message
        )
    }
}

mod keys;
mod mfa;

#[derive(Clone, Debug)]
struct SessionLife {
    user: String,
    device: Option<String>,
    groups: Vec<String>,
    issued: u64,
    expires: u64,
    revoked: Option<u64>,
}

impl SessionLife {
    /// Live at `t` with the given tolerances after its end.
    fn live_at(&self, t: u64, expiry_grace: u64, revocation_grace: u64) -> bool {
        self.issued <= t
            && t < self.expires.saturating_add(expiry_grace)
            && self.revoked.is_none_or(|r| t < r.saturating_add(revocation_grace))
    }

    fn why_not_live(&self, sid: &str, t: u64) -> String {
        match self.revoked {
            Some(r) if r <= t => format!("session {sid} of {} revoked at {}", self.user, format_offset(r)),
            _ if t >= self.expires => {
                format!("session {sid} of {} expired at {}", self.user, format_offset(self.expires))
            }
            _ => format!("session {sid} not yet issued"),
        }
    }
}

#[derive(Clone, Debug)]
struct FlowInfo {
    process: String,
    app_id: String,
    protocol: String,
    local: SocketAddr,
    remote: SocketAddr,
}

/// A fault or transition in progress (E3).
#[derive(Clone, Debug)]
struct Window {
    kind: String,
    began: u64,
}

/// A lever open on purpose, clipped to its configured bound.
#[derive(Clone, Debug)]
struct OpenLever {
    name: String,
    until: u64,
}

/// Checks every invariant over `trace`.
pub fn check(trace: &Trace) -> Vec<Violation> {
    let Some(spec) = trace.events.iter().find_map(|e| match &e.body {
        EventBody::RunStarted { spec, .. } => Some(spec.as_ref().clone()),
        _ => None,
    }) else {
        return vec![Violation {
            invariant: "T0".into(),
            seq: 0,
            t: 0,
            host: "lab".into(),
            message: "the trace has no run_started header: nothing can be checked".into(),
        }];
    };
    let mut oracle = Oracle {
        interactive_user: spec.interactive_user.clone(),
        spec,
        sessions: BTreeMap::new(),
        flows: BTreeMap::new(),
        reported_flows: BTreeSet::new(),
        reported_e3: BTreeSet::new(),
        windows: Vec::new(),
        levers: Vec::new(),
        violations: Vec::new(),
        mfa: mfa::MfaMemory::default(),
        keys: keys::KeyHistory::default(),
    };
    for event in &trace.events {
        oracle.observe(event);
    }
    oracle.violations
}

struct Oracle {
    spec: EnforcementSpec,
    sessions: BTreeMap<String, SessionLife>,
    flows: BTreeMap<u64, FlowInfo>,
    reported_flows: BTreeSet<u64>,
    /// (flow, window start) pairs already reported: each flow once per window.
    reported_e3: BTreeSet<(u64, u64)>,
    windows: Vec<Window>,
    levers: Vec<OpenLever>,
    interactive_user: String,
    violations: Vec<Violation>,
    mfa: mfa::MfaMemory,
    keys: keys::KeyHistory,
}

impl Oracle {
    fn violation(&mut self, invariant: &str, e: &Event, message: String) {
        self.violations.push(Violation {
            invariant: invariant.into(),
            seq: e.seq,
            t: e.t,
            host: e.host.clone(),
            message,
        });
    }

    fn observe(&mut self, e: &Event) {
        self.observe_mfa(e);
        self.observe_keys(e);
        match &e.body {
            EventBody::SessionIssued { sid, user, device, expires_t, groups } => {
                self.sessions.insert(
                    sid.clone(),
                    SessionLife {
                        user: user.clone(),
                        device: device.clone(),
                        groups: groups.clone(),
                        issued: e.t,
                        expires: *expires_t,
                        revoked: None,
                    },
                );
            }
            EventBody::SessionRevoked { sid, .. } => {
                if let Some(s) = self.sessions.get_mut(sid)
                    && s.revoked.is_none()
                {
                    s.revoked = Some(e.t);
                }
            }
            EventBody::FlowDecision {
                flow,
                process,
                app_id,
                protocol,
                local,
                remote,
                verdict: Verdict::Permit,
                reauth,
                ..
            } if e.host == self.spec.device_host => {
                let info = FlowInfo {
                    process: process.clone(),
                    app_id: app_id.clone(),
                    protocol: protocol.clone(),
                    local: *local,
                    remote: *remote,
                };
                if let Some(f) = flow {
                    self.flows.insert(*f, info.clone());
                }
                let what = if *reauth { "re-authorized" } else { "permitted" };
                let flow_text = flow.map(|f| format!("flow {f}")).unwrap_or_else(|| "a flow".into());
                self.check_e1(e, &info, &format!("{flow_text} {what}"), *flow);
                self.check_e3(e, &info, &format!("{flow_text} {what}"), *flow);
            }
            EventBody::TransitionBegan { kind, user, .. } if e.host == self.spec.device_host => {
                if let Some(u) = user {
                    self.interactive_user = u.clone();
                }
                self.windows.push(Window { kind: kind.clone(), began: e.t });
            }
            EventBody::AgentState { reason, .. }
                if e.host == self.spec.device_host && !reason.contains("NOT applied") =>
            {
                self.windows.clear();
            }
            EventBody::LeverOpened { lever, until_t, .. } if e.host == self.spec.device_host => {
                let bound = match lever.as_str() {
                    "captive_portal" => self.spec.captive_portal_ms,
                    "admin_override" => self.spec.admin_override_ms,
                    _ => 0,
                };
                let asked = until_t.saturating_sub(e.t);
                if bound == 0 {
                    self.violation("E3", e, format!("lever {lever} opened, but the configuration has it off"));
                } else if asked > bound {
                    self.violation(
                        "E3",
                        e,
                        format!(
                            "lever {lever} opened for {}, beyond its configured bound of {}",
                            format_offset(asked),
                            format_offset(bound)
                        ),
                    );
                }
                if bound > 0 {
                    self.levers.retain(|l| &l.name != lever);
                    self.levers.push(OpenLever { name: lever.clone(), until: e.t + asked.min(bound) });
                }
            }
            EventBody::LeverClosed { lever, .. } if e.host == self.spec.device_host => {
                self.levers.retain(|l| &l.name != lever);
            }
            EventBody::FlowData { flow, bytes, direction } if e.host == self.spec.device_host => {
                if let Some(info) = self.flows.get(flow).cloned() {
                    let what = format!(
                        "{bytes} bytes {} on flow {flow}",
                        match direction {
                            crate::trace::Direction::Out => "sent",
                            crate::trace::Direction::In => "received",
                        }
                    );
                    self.check_e1(e, &info, &what, Some(*flow));
                    self.check_e3(e, &info, &what, Some(*flow));
                }
            }
            EventBody::GatewayDecision { verdict: GatewayVerdict::Forward, app, sid, user, device, mfa, .. } => {
                let app = app.clone().unwrap_or_default();
                self.check_e4(e, sid.as_deref(), &format!("gateway forwarded a request to {app}"));
                if let (Some(sid), Some(user)) = (sid, user) {
                    self.check_e5(e, &app, sid, user, device.as_deref(), mfa.as_deref());
                }
            }
            EventBody::OriginRequest { app, status, sid, mfa, .. } if (200..300).contains(status) => {
                self.check_e4(e, sid.as_deref(), &format!("origin {app} served a request (status {status})"));
                if let Some(sid) = sid {
                    self.check_e5_origin(e, app, sid, *mfa);
                }
            }
            _ => {}
        }
    }

    /// Why the device is not authenticated at `t`, or `None` if it is.
    fn device_unauthenticated(&self, t: u64) -> Option<String> {
        let mine: Vec<(&String, &SessionLife)> =
            self.sessions.iter().filter(|(_, s)| s.device.as_deref() == Some(self.spec.device_id.as_str())).collect();
        if mine.iter().any(|(_, s)| s.live_at(t, self.spec.expiry_grace_ms, self.spec.revocation_grace_ms)) {
            return None;
        }
        match mine.iter().filter(|(_, s)| s.issued <= t).max_by_key(|(_, s)| s.issued) {
            Some((sid, s)) => Some(s.why_not_live(sid, t)),
            None => Some("no device session was ever issued".into()),
        }
    }

    /// Whether the lockdown lets this flow through at `t`: its allow-list (the
    /// process by its lab identity, image and destination), loopback, the LAN and
    /// DHCP settings, and levers open within their bounds.
    fn allowed(&self, info: &FlowInfo, t: u64) -> bool {
        let ip = info.remote.ip();
        let port = info.remote.port();
        let tcp = info.protocol == "tcp";
        let lan = match ip {
            IpAddr::V4(a) => a.is_private() || a.is_link_local(),
            IpAddr::V6(a) => a.is_unique_local() || a.is_unicast_link_local(),
        };
        let dhcp = info.protocol == "udp"
            && ((info.local.port() == 68 && port == 67) || (info.local.port() == 546 && port == 547));
        let lever = self.levers.iter().filter(|l| t < l.until).any(|l| match l.name.as_str() {
            "admin_override" => true,
            "captive_portal" => tcp && info.process == self.spec.captive_portal_process && matches!(port, 80 | 443),
            _ => false,
        });
        (self.spec.allow_loopback && ip.is_loopback())
            || self
                .spec
                .allow
                .iter()
                .any(|r| r.process == info.process && r.app_id == info.app_id && tcp && r.remote.contains(&info.remote))
            || (self.spec.allow_lan && lan && port != 53)
            || (self.spec.allow_dhcp && dhcp)
            || lever
    }

    /// Whether the Windows user at the console holds a live session of this device at `t`.
    fn console_user_live(&self, t: u64) -> bool {
        self.sessions.values().any(|s| {
            s.device.as_deref() == Some(self.spec.device_id.as_str())
                && s.user == self.interactive_user
                && s.live_at(t, 0, 0)
        })
    }

    fn check_e3(&mut self, e: &Event, info: &FlowInfo, what: &str, flow: Option<u64>) {
        let Some(window) = self.windows.first().cloned() else { return };
        if self.allowed(info, e.t) || self.console_user_live(e.t) {
            return;
        }
        if let Some(f) = flow
            && !self.reported_e3.insert((f, window.began))
        {
            return;
        }
        let message = format!(
            "{what}: {} ({}) -> {} during {} (since {}), while {} holds no live session of this device; \
             this process and destination are not in the lockdown allow-list",
            info.process,
            info.app_id,
            info.remote,
            window.kind.replace('_', " "),
            format_offset(window.began),
            self.interactive_user
        );
        self.violation("E3", e, message);
    }

    fn check_e1(&mut self, e: &Event, info: &FlowInfo, what: &str, flow: Option<u64>) {
        if self.allowed(info, e.t) {
            return;
        }
        let Some(why) = self.device_unauthenticated(e.t) else { return };
        if let Some(f) = flow
            && !self.reported_flows.insert(f)
        {
            return;
        }
        let message = format!(
            "{what}: {} ({}) -> {} while the device is not authenticated ({why}); \
             this process and destination are not in the lockdown allow-list",
            info.process, info.app_id, info.remote
        );
        self.violation("E1", e, message);
    }

    fn check_e4(&mut self, e: &Event, sid: Option<&str>, what: &str) {
        let problem = match sid {
            None => Some("without any session".to_string()),
            Some(sid) => match self.sessions.get(sid) {
                None => Some(format!("with session {sid}, which the gateway never issued")),
                Some(s) if !s.live_at(e.t, 0, 0) => Some(format!("with {}", s.why_not_live(sid, e.t))),
                Some(_) => None,
            },
        };
        if let Some(p) = problem {
            self.violation("E4", e, format!("{what} {p}"));
        }
    }
}

#[cfg(test)]
mod tests;
