//! The compiler against golden text, validation, and the agent mapping.
//! (Loading into a real kernel is tested in tests/it/nftables.rs.)

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::agent::firewall::{Exception, LockdownPolicy};
use crate::wfp::AppId;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The sample of the golden files: an auth window recognized by uid AND
/// cgroup reaching the IdP over IPv4 and IPv6, an MFA helper by uid alone
/// reaching one TCP and one UDP endpoint (a v4-mapped address).
fn sample() -> NftPolicy {
    let mut p = NftPolicy::new(TableName::new("lockstep").unwrap());
    p.exceptions = vec![
        NftException {
            process: "auth-window".into(),
            identity: LinuxIdentity {
                uid: Some(4242),
                cgroup: Some(CgroupPath::new("cgroup", "lockstep/auth").unwrap()),
            },
            remote: vec![Endpoint::tcp(sa("127.0.100.2:443")), Endpoint::tcp(sa("[fd00:100::2]:443"))],
        },
        NftException {
            process: "mfa-helper \"x\"".into(),
            identity: LinuxIdentity::uid(4243),
            remote: vec![
                Endpoint::tcp(sa("127.0.100.2:443")),
                Endpoint { addr: sa("[::ffff:127.0.100.3]:3478"), protocol: L4::Udp },
            ],
        },
    ];
    p
}

/// Compares with a golden file; `LOCKSTEP_BLESS=1` rewrites the file
/// instead (then review the diff).
fn golden(name: &str, expected: &str, actual: &str) {
    if std::env::var_os("LOCKSTEP_BLESS").is_some() {
        let path = format!("{}/fixtures/nft/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(&path, actual).unwrap();
        return;
    }
    if expected != actual {
        panic!(
            "{name} differs from fixtures/nft/{name} (LOCKSTEP_BLESS=1 rewrites it); the compiled text is:\n{actual}"
        );
    }
}

#[test]
fn lockdown_matches_the_golden_text() {
    let r = compile_lockdown(&sample()).unwrap();
    golden("lockdown.nft", include_str!("../../fixtures/nft/lockdown.nft"), &r.text);
    assert!(r.uses_cgroup);
    let summary: Vec<(&str, &str, usize)> = r.chains.iter().map(|c| (c.name, c.policy, c.rules)).collect();
    assert_eq!(summary, [("output", "drop", 14), ("input", "drop", 14), ("forward", "drop", 0)]);
}

#[test]
fn open_state_matches_the_golden_text() {
    let auth = LinuxIdentity { uid: None, cgroup: Some(CgroupPath::new("cgroup", "/lockstep/auth").unwrap()) };
    let mfa = LinuxIdentity::uid(4243);
    let r = compile_open(&TableName::new("lockstep").unwrap(), &[("auth-window", &auth), ("mfa", &mfa)], 0x10).unwrap();
    golden("open.nft", include_str!("../../fixtures/nft/open.nft"), &r.text);
    assert!(r.uses_cgroup);
    assert!(r.chains.iter().all(|c| c.policy == "accept"));
}

#[test]
fn lockdown_has_no_blanket_established_accept() {
    let r = compile_lockdown(&sample()).unwrap();
    for line in r.text.lines().filter(|l| l.contains("ct state established")) {
        assert!(line.contains("ct mark 0x6c6b0001") && line.contains("saddr"), "unscoped established accept: {line}");
    }
    // Every exception rule names identity, address, port and protocol.
    for line in r.text.lines().filter(|l| l.contains("ct mark set")) {
        assert!(line.contains("meta skuid"), "{line}");
        assert!(line.contains("daddr") && line.contains("dport"), "{line}");
    }
    // The chains end in reject (TCP reset first).
    for chain in ["output", "input"] {
        let body: Vec<&str> = r
            .text
            .split(&format!("chain {chain} {{"))
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| l.trim() != "}")
            .map(str::trim)
            .collect();
        let n = body.len();
        assert!(body[n - 2].starts_with("meta l4proto tcp counter reject with tcp reset"), "{chain}");
        assert!(body[n - 1].starts_with("counter reject with icmpx type admin-prohibited"), "{chain}");
    }
}

#[test]
fn switches_remove_their_rules() {
    let mut p = sample();
    p.allow_loopback = false;
    p.allow_dhcp = false;
    p.allow_ndp = false;
    let r = compile_lockdown(&p).unwrap();
    for absent in ["\"lo\"", "sport 68", "sport 546", "sport 67", "sport 547", "nd-"] {
        assert!(!r.text.contains(absent), "{absent} still in:\n{}", r.text);
    }
    p.exceptions.clear();
    let r = compile_lockdown(&p).unwrap();
    assert!(!r.text.contains("ct mark"), "{}", r.text);
    assert!(!r.uses_cgroup);
    let summary: Vec<usize> = r.chains.iter().map(|c| c.rules).collect();
    assert_eq!(summary, [5, 5, 0]);
}

#[test]
fn bad_input_is_an_error_naming_the_field() {
    let field = |e: NftError| match e {
        NftError::InvalidField { field, .. } => field,
        other => panic!("{other}"),
    };
    for name in ["", "1abc", "a b", "a-b", "a;b", "x\"", &"a".repeat(65)] {
        assert_eq!(field(TableName::new(name).unwrap_err()), "table", "{name:?}");
    }
    for path in ["", "/", "a//b", "a/../b", "./a", "a b", "a\"b", "a\\b", "a\nb", &"a/".repeat(256)] {
        assert_eq!(field(CgroupPath::new("auth.cgroup", path).unwrap_err()), "auth.cgroup", "{path:?}");
    }
    assert_eq!(CgroupPath::new("c", "/x/y/z").unwrap().level(), 3);
    let mut p = sample();
    p.exceptions[1].identity = LinuxIdentity::default();
    assert_eq!(field(compile_lockdown(&p).unwrap_err()), "exceptions[1].identity");
    let mut p = sample();
    p.ct_mark = 0;
    assert_eq!(field(compile_lockdown(&p).unwrap_err()), "ct_mark");
    let t = TableName::new("t").unwrap();
    assert_eq!(field(compile_open(&t, &[], 0).unwrap_err()), "ct_mark");
    assert_eq!(field(compile_open(&t, &[("p", &LinuxIdentity::default())], 1).unwrap_err()), "exceptions[0].identity");
}

#[test]
fn comments_survive_any_process_name() {
    let mut p = sample();
    p.exceptions[0].process = "a\"b\\c\nd\u{e9}".repeat(40);
    let r = compile_lockdown(&p).unwrap();
    for line in r.text.lines().filter(|l| l.contains("comment")) {
        let c = line.split("comment \"").nth(1).unwrap();
        assert!(c.ends_with('"') && c.len() <= 121, "{line}");
        assert!(!c[..c.len() - 1].contains(['"', '\\']), "{line}");
    }
}

fn backend(identities: &[(&str, LinuxIdentity)]) -> NftFirewall {
    let mut config = NftConfig::new(TableName::new("lockstep").unwrap());
    config.identities = identities.iter().map(|(p, i)| (p.to_string(), i.clone())).collect::<BTreeMap<_, _>>();
    NftFirewall::new(config).unwrap()
}

fn ep(s: &str) -> crate::agent::firewall::Endpoint {
    let a = sa(s);
    crate::agent::firewall::Endpoint::host(a.ip(), a.port())
}

#[test]
fn the_agents_lockdown_maps_to_linux_identities_by_process_name() {
    let fw = backend(&[("auth-window", LinuxIdentity::uid(4242))]);
    let lockdown = LockdownPolicy {
        exceptions: vec![Exception {
            process: "auth-window".into(),
            app_id: AppId::from_image_path(r"C:\Program Files\Lockstep\auth.exe").unwrap(),
            service_sid: None,
            remote: vec![ep("127.0.100.2:443"), ep("[fd00::2]:8443")],
        }],
        allow_loopback: false,
        allow_lan: false,
        allow_dhcp: true,
        danger_ipv4_only: false,
    };
    let p = fw.policy_for(&lockdown).unwrap();
    assert_eq!(p.table.as_str(), "lockstep");
    assert!(!p.allow_loopback);
    assert_eq!(p.exceptions.len(), 1);
    assert_eq!(p.exceptions[0].identity, LinuxIdentity::uid(4242));
    assert_eq!(p.exceptions[0].remote, [Endpoint::tcp(sa("127.0.100.2:443")), Endpoint::tcp(sa("[fd00::2]:8443"))]);

    let mut unknown = lockdown.clone();
    unknown.exceptions[0].process = "updater".into();
    match fw.policy_for(&unknown) {
        Err(NftError::UnmappedProcess { process, index: 0 }) => assert_eq!(process, "updater"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_backend_configuration_is_an_error_naming_the_field() {
    for ns in ["", "a/b", "..", "a\0b"] {
        let mut config = NftConfig::new(TableName::new("t").unwrap());
        config.netns = Some(ns.into());
        match NftFirewall::new(config) {
            Err(NftError::InvalidField { field, .. }) => assert_eq!(field, "netns"),
            other => panic!("{ns:?}: {other:?}"),
        }
    }
    let mut config = NftConfig::new(TableName::new("t").unwrap());
    config.identities.insert("p".into(), LinuxIdentity::default());
    assert!(
        matches!(NftFirewall::new(config), Err(NftError::InvalidField { field, .. }) if field == "identities[\"p\"]")
    );
}
