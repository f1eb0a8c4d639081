//! The oracle on hand-built traces: each invariant fires exactly when it should.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::net::UnixMillis;
use crate::trace::{AllowRule, Direction};

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
                spec: EnforcementSpec {
                    device_host: "device".into(),
                    device_id: "dev-1".into(),
                    allow: vec![AllowRule {
                        process: "lockstep-auth".into(),
                        app_id: AUTH.into(),
                        remote: vec![idp()],
                    }],
                    allow_loopback: true,
                    expiry_grace_ms,
                    revocation_grace_ms,
                    mfa: Default::default(),
                },
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
        self.push(
            t,
            "device",
            EventBody::FlowDecision {
                flow: Some(flow),
                layer: "FWPM_LAYER_ALE_AUTH_CONNECT_V4".into(),
                pid: 4,
                process: "p".into(),
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
