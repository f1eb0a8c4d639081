//! The oracle on hand-built traces: each invariant fires exactly when it should.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::net::UnixMillis;
use crate::trace::{AllowRule, Direction, FactorFacts};

const AUTH: &str = r"\device\harddiskvolume3\program files\lockstep\lockstep-auth.exe";
const BROWSER: &str = r"\device\harddiskvolume3\program files\browser\browser.exe";

fn idp() -> SocketAddr {
    "203.0.113.20:443".parse().unwrap()
}
fn web() -> SocketAddr {
    "198.51.100.80:443".parse().unwrap()
}

struct Builder {
    events: Vec<Event>,
}

impl Builder {
    fn new(expiry_grace_ms: u64, revocation_grace_ms: u64) -> Self {
        let mut b = Builder { events: Vec::new() };
        b.push(
            0,
            "lab",
            EventBody::RunStarted {
                scenario: "t".into(),
                seed: 1,
                epoch: UnixMillis(0),
                lab: "default".into(),
                spec: Box::new(EnforcementSpec {
                    device_host: "device".into(),
                    device_id: "dev-1".into(),
                    allow: vec![AllowRule {
                        process: "lockstep-auth".into(),
                        app_id: AUTH.into(),
                        remote: vec![idp()],
                        service: None,
                    }],
                    allow_loopback: true,
                    interactive_user: "alice".into(),
                    expiry_grace_ms,
                    revocation_grace_ms,
                    ..Default::default()
                }),
            },
        );
        b
    }

    fn push(&mut self, t: u64, host: &str, body: EventBody) -> &mut Self {
        let seq = self.events.len() as u64;
        self.events.push(Event { seq, t, host: host.into(), body });
        self
    }

    fn session(&mut self, t: u64, sid: &str, device: Option<&str>, expires_t: u64) -> &mut Self {
        self.push(
            t,
            "gateway",
            EventBody::SessionIssued {
                sid: sid.into(),
                user: "alice".into(),
                device: device.map(str::to_string),
                expires_t,
                groups: vec![],
            },
        )
    }

    fn flow(&mut self, t: u64, flow: u64, app_id: &str, remote: SocketAddr) -> &mut Self {
        let process = match app_id {
            AUTH => "lockstep-auth",
            BROWSER => "browser",
            _ => "p",
        };
        self.flow_of(t, flow, process, app_id, remote)
    }

    fn flow_of(&mut self, t: u64, flow: u64, process: &str, app_id: &str, remote: SocketAddr) -> &mut Self {
        self.push(
            t,
            "device",
            EventBody::FlowDecision {
                flow: Some(flow),
                layer: "FWPM_LAYER_ALE_AUTH_CONNECT_V4".into(),
                pid: 4,
                process: process.into(),
                app_id: app_id.into(),
                user: "alice".into(),
                protocol: "tcp".into(),
                local: "192.168.1.20:50000".parse().unwrap(),
                remote,
                verdict: Verdict::Permit,
                filter: None,
                reauth: false,
            },
        )
    }

    fn data(&mut self, t: u64, flow: u64) -> &mut Self {
        self.push(t, "device", EventBody::FlowData { flow, direction: Direction::Out, bytes: 10 })
    }

    fn forward(&mut self, t: u64, sid: Option<&str>) -> &mut Self {
        self.push(
            t,
            "gateway",
            EventBody::GatewayDecision {
                app: Some("chat".into()),
                method: "GET".into(),
                path: "/".into(),
                peer: IpAddr::from([1, 2, 3, 4]),
                verdict: GatewayVerdict::Forward,
                status: 0,
                sid: sid.map(str::to_string),
                user: None,
                reason: String::new(),
                device: None,
                mfa: None,
            },
        )
    }

    fn check(&self) -> Vec<Violation> {
        check(&Trace { events: self.events.clone() })
    }
}

fn ids(v: &[Violation]) -> Vec<(String, u64)> {
    v.iter().map(|v| (v.invariant.clone(), v.seq)).collect()
}

#[test]
fn allow_listed_flows_pass_while_locked_and_others_violate_e1() {
    let mut b = Builder::new(0, 0);
    b.flow(10, 1, AUTH, idp()); // allowed exception
    b.flow(20, 2, BROWSER, web()); // not allowed, not authenticated
    b.flow(30, 3, AUTH, web()); // right process, wrong destination
    b.flow(40, 4, BROWSER, "127.0.0.1:8080".parse().unwrap()); // loopback allowed
    let v = b.check();
    assert_eq!(ids(&v), vec![("E1".into(), 2), ("E1".into(), 3)], "{v:#?}");
    assert!(v[0].message.contains("no device session was ever issued"));
}

#[test]
fn e1_follows_the_device_session_and_its_expiry() {
    let mut b = Builder::new(0, 0);
    b.session(100, "s1", Some("dev-1"), 1000);
    b.session(100, "b1", None, 5000); // a browser session does not authenticate the device
    b.flow(500, 1, BROWSER, web()); // fine: authenticated
    b.data(999, 1); // fine: last ms of the session
    b.data(1000, 1); // expired: violation
    b.data(1001, 1); // same flow: reported once
    let v = b.check();
    assert_eq!(ids(&v), vec![("E1".into(), 5)], "{v:#?}");
    assert!(v[0].message.contains("expired at +00:00:01.000"), "{}", v[0]);
}

#[test]
fn grace_periods_tolerate_the_end_of_a_session_but_no_longer() {
    let mut b = Builder::new(50, 200);
    b.session(0, "s1", Some("dev-1"), 1000);
    b.flow(1049, 1, BROWSER, web());
    b.flow(1050, 2, BROWSER, web());
    let v = b.check();
    assert_eq!(ids(&v), vec![("E1".into(), 3)]);

    let mut b = Builder::new(0, 200);
    b.session(0, "s1", Some("dev-1"), 10_000);
    b.push(300, "gateway", EventBody::SessionRevoked { sid: "s1".into(), reason: "admin".into() });
    b.flow(499, 1, BROWSER, web());
    b.flow(500, 2, BROWSER, web());
    let v = b.check();
    assert_eq!(ids(&v), vec![("E1".into(), 4)]);
    assert!(v[0].message.contains("revoked"));
}

#[test]
fn e4_requires_a_live_session_for_every_forward_and_every_served_request() {
    let mut b = Builder::new(0, 0);
    b.session(0, "s1", None, 1000);
    b.forward(10, Some("s1")); // fine
    b.forward(1000, Some("s1")); // expired
    b.forward(20, None); // no session at all
    b.forward(30, Some("forged")); // never issued
    b.push(40, "gateway", EventBody::SessionRevoked { sid: "s1".into(), reason: "admin".into() });
    b.push(
        41,
        "chat",
        EventBody::OriginRequest {
            app: "chat".into(),
            peer: IpAddr::from([203, 0, 113, 10]),
            status: 200,
            sid: Some("s1".into()),
            user: Some("alice".into()),
            reason: String::new(),
            mfa: None,
        },
    );
    b.push(
        42,
        "chat",
        EventBody::OriginRequest {
            app: "chat".into(),
            peer: IpAddr::from([203, 0, 113, 10]),
            status: 403,
            sid: None,
            user: None,
            reason: "no app token".into(),
            mfa: None,
        },
    );
    let v = b.check();
    assert_eq!(ids(&v), vec![("E4".into(), 3), ("E4".into(), 4), ("E4".into(), 5), ("E4".into(), 7)], "{v:#?}");
    assert!(v[3].message.contains("revoked"));
}

#[test]
fn a_trace_without_header_cannot_pass() {
    let v = check(&Trace::default());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].invariant, "T0");
}

fn mfa_builder() -> Builder {
    let mut b = Builder::new(0, 0);
    if let EventBody::RunStarted { spec, .. } = &mut b.events[0].body {
        spec.mfa = crate::trace::MfaSpec {
            host: "mfa".into(),
            origin: "https://mfa.lab.test".into(),
            organization: Default::default(),
            apps: Default::default(),
        };
    }
    b
}

fn assertion(t: u64, facts: FactorFacts) -> (u64, EventBody) {
    (
        t,
        EventBody::MfaVerified {
            id: format!("v{t}"),
            user: "bob".into(),
            sid: "s1".into(),
            device: Some("dev-1".into()),
            factor: crate::policy::FactorKind::SecurityKey,
            method: "webauthn".into(),
            verified_t: t,
            peer: IpAddr::from([192, 168, 1, 20]),
            facts: Some(facts),
        },
    )
}

fn key_facts(origin: &str, counter: u32, user_verified: bool, uv_required: bool, backup_eligible: bool) -> FactorFacts {
    FactorFacts {
        credential: "cred-1".into(),
        totp_step: None,
        origin: Some(origin.into()),
        counter: Some(counter),
        user_verified: Some(user_verified),
        uv_required,
        backup_eligible: Some(backup_eligible),
    }
}

#[test]
fn e7_fires_on_foreign_origin_missing_uv_and_counter_regression_only() {
    let mut b = mfa_builder();
    let events = [
        assertion(10, key_facts("https://mfa.lab.test", 1, true, true, false)),
        assertion(20, key_facts("https://mfa.lab-test.example", 2, true, true, false)),
        assertion(30, key_facts("https://mfa.lab.test", 3, false, true, false)),
        assertion(40, key_facts("https://mfa.lab.test", 4, false, false, false)),
        assertion(50, key_facts("https://mfa.lab.test", 2, true, false, false)),
    ];
    for (t, e) in events {
        b.push(t, "mfa", e);
    }
    let v = b.check();
    assert_eq!(ids(&v), vec![("E7".into(), 2), ("E7".into(), 3), ("E7".into(), 5)], "{v:#?}");
    assert!(v[0].message.contains("lab-test.example"));
    assert!(v[1].message.contains("user verification"));
    assert!(v[2].message.contains("went backwards"));
}

#[test]
fn e7_spares_backup_eligible_credentials_and_zero_counters_but_not_reused_totp() {
    let mut b = mfa_builder();
    // A synced passkey whose counter moves around, and a key that never counts.
    b.push(10, "mfa", assertion(10, key_facts("https://mfa.lab.test", 5, true, false, true)).1);
    b.push(20, "mfa", assertion(20, key_facts("https://mfa.lab.test", 3, true, false, true)).1);
    let zero = |t| {
        let mut f = key_facts("https://mfa.lab.test", 0, true, false, false);
        f.credential = "cred-zero".into();
        assertion(t, f).1
    };
    b.push(30, "mfa", zero(30));
    b.push(40, "mfa", zero(40));
    // The same TOTP step accepted twice.
    let totp = |t| EventBody::MfaVerified {
        id: format!("t{t}"),
        user: "bob".into(),
        sid: "s1".into(),
        device: None,
        factor: crate::policy::FactorKind::Totp,
        method: "totp".into(),
        verified_t: t,
        peer: IpAddr::from([198, 51, 100, 66]),
        facts: Some(FactorFacts {
            credential: "totp-1".into(),
            totp_step: Some(7),
            origin: None,
            counter: None,
            user_verified: None,
            uv_required: false,
            backup_eligible: None,
        }),
    };
    b.push(50, "mfa", totp(50));
    b.push(60, "mfa", totp(60));
    // Facts recorded by another host are not the MFA service's.
    b.push(70, "gateway", totp(70));
    let v = b.check();
    assert_eq!(ids(&v), vec![("E7".into(), 6)], "{v:#?}");
    assert!(v[0].message.contains("accepted twice"));
}

fn transition(b: &mut Builder, t: u64, kind: &str, user: Option<&str>) {
    b.push(
        t,
        "device",
        EventBody::TransitionBegan { kind: kind.into(), detail: String::new(), user: user.map(str::to_string) },
    );
}

fn agent_state(b: &mut Builder, t: u64, reason: &str) {
    b.push(t, "device", EventBody::AgentState { from: "locked".into(), to: "locked".into(), reason: reason.into() });
}

#[test]
fn e3_covers_faults_until_the_agent_reports_again() {
    let mut b = Builder::new(0, 0);
    transition(&mut b, 0, "boot", None);
    b.flow(1, 1, BROWSER, web()); // seq 2: during boot -> E1 and E3
    agent_state(&mut b, 5, "lockdown NOT applied: engine busy"); // does not close the window
    b.flow(6, 2, BROWSER, web()); // seq 4: still inside
    agent_state(&mut b, 7, "service started"); // closes it
    b.flow(8, 3, BROWSER, web()); // seq 6: E1 only
    b.flow(9, 4, AUTH, idp()); // allowed: nothing
    let v = b.check();
    let want: Vec<(String, u64)> =
        [("E1", 2), ("E3", 2), ("E1", 4), ("E3", 4), ("E1", 6)].iter().map(|(i, s)| (i.to_string(), *s)).collect();
    assert_eq!(ids(&v), want, "{v:#?}");
    assert!(v[1].message.contains("during boot (since +00:00:00.000)"), "{}", v[1].message);
}

#[test]
fn e3_follows_the_user_at_the_console() {
    let mut b = Builder::new(0, 0);
    b.session(0, "s1", Some("dev-1"), 1_000_000); // alice's device session, live
    b.flow(10, 1, BROWSER, web()); // alice's session covers it
    transition(&mut b, 20, "user_switch", Some("bob"));
    b.flow(21, 2, BROWSER, web()); // seq 4: bob at the console, no session of his -> E3 (not E1)
    b.data(22, 2); // same flow: reported once
    agent_state(&mut b, 23, "Windows user switched to bob");
    b.flow(24, 3, BROWSER, web()); // window closed; alice's session still live -> nothing
    let v = b.check();
    assert_eq!(ids(&v), vec![("E3".into(), 4)], "{v:#?}");
    assert!(v[0].message.contains("while bob holds no live session"), "{}", v[0].message);
}

#[test]
fn the_allow_list_is_checked_by_process_identity_not_image_alone() {
    let mut b = Builder::new(0, 0);
    b.flow_of(10, 1, "auth-lookalike", AUTH, idp()); // same image and destination, another program
    b.flow_of(11, 2, "lockstep-auth", AUTH, idp());
    let v = b.check();
    assert_eq!(ids(&v), vec![("E1".into(), 1)], "{v:#?}");
}

#[test]
fn levers_count_only_within_their_configured_bound() {
    let mut b = Builder::new(0, 0);
    if let EventBody::RunStarted { spec, .. } = &mut b.events[0].body {
        spec.captive_portal_ms = 1_000;
        spec.captive_portal_process = "browser".into();
    }
    let lever = |lever: &str, until_t: u64| EventBody::LeverOpened { lever: lever.into(), scope: vec![], until_t };
    b.push(100, "device", lever("captive_portal", 5_100)); // seq 1: asks 5 s, bound 1 s -> E3
    b.flow(200, 1, BROWSER, web()); // inside the bound: allowed
    b.flow_of(300, 2, "p", BROWSER, web()); // another program: E1
    b.flow(1_200, 3, BROWSER, web()); // seq 4: past the bound (clipped): E1
    b.push(1_300, "device", lever("admin_override", 2_000)); // seq 5: off in the configuration -> E3
    b.flow(1_400, 4, BROWSER, web()); // seq 6: an override that is off allows nothing -> E1
    let v = b.check();
    let want: Vec<(String, u64)> =
        [("E3", 1), ("E1", 3), ("E1", 4), ("E3", 5), ("E1", 6)].iter().map(|(i, s)| (i.to_string(), *s)).collect();
    assert_eq!(ids(&v), want, "{v:#?}");
    assert!(v[0].message.contains("beyond its configured bound"), "{}", v[0].message);
    assert!(v[3].message.contains("has it off"), "{}", v[3].message);
}

#[test]
fn e2_accepts_only_keys_the_idp_published_within_the_ttl() {
    let mut b = Builder::new(0, 0);
    if let EventBody::RunStarted { spec, .. } = &mut b.events[0].body {
        spec.jwks_max_ttl_ms = 60_000;
    }
    let published = |kids: &[&str]| EventBody::IdpKeysPublished {
        kids: kids.iter().map(|k| k.to_string()).collect(),
        signing: kids[0].to_string(),
        why: "t".into(),
    };
    let accepted = |kid: Option<&str>| EventBody::TokenAccepted {
        keys: "https://idp/jwks".into(),
        kid: kid.map(str::to_string),
        alg: "ES256".into(),
    };
    b.push(0, "idp", published(&["k1"])); // seq 1
    b.push(1_000, "gateway", accepted(Some("k1"))); // seq 2: published: fine
    b.push(2_000, "gateway", accepted(Some("k2"))); // seq 3: k2 not published (yet): E2
    b.push(10_000, "idp", published(&["k2"])); // seq 4: k1 withdrawn at 10 s
    b.push(69_999, "gateway", accepted(Some("k1"))); // seq 5: within the TTL after withdrawal: fine
    b.push(70_000, "gateway", accepted(Some("k1"))); // seq 6: at the bound: E2
    b.push(70_001, "gateway", accepted(Some("rogue"))); // seq 7: never published: E2
    b.push(70_002, "gateway", accepted(None)); // seq 8: no kid: E2
    b.push(70_003, "gateway", accepted(Some("k2"))); // seq 9: fine
    let v = b.check();
    let want: Vec<(String, u64)> =
        [("E2", 3), ("E2", 6), ("E2", 7), ("E2", 8)].iter().map(|(i, s)| (i.to_string(), *s)).collect();
    assert_eq!(ids(&v), want, "{v:#?}");
    assert!(v[0].message.contains("never published"), "{}", v[0].message);
    assert!(v[1].message.contains("withdrawn at"), "{}", v[1].message);
    assert!(v[2].message.contains("never published"), "{}", v[2].message);
}
