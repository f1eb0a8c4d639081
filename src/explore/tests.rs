use super::shrink::ddmin_with;
use super::*;

#[test]
fn a_seed_draws_the_same_run_every_time_and_seeds_differ() {
    let bounds = Bounds::default();
    assert_eq!(derive(42, bounds, &[]), derive(42, bounds, &[]));
    assert_eq!(derive(42, bounds, &[]).scenario_toml(), derive(42, bounds, &[]).scenario_toml());
    let distinct: std::collections::BTreeSet<String> =
        (0..20).map(|s| derive(s, bounds, &[]).scenario_toml()).collect();
    assert!(distinct.len() >= 19, "only {} distinct runs from 20 seeds", distinct.len());
}

/// The generator never writes a file the scenario parser refuses, and
/// every action of the library is drawn somewhere in a few hundred seeds.
#[test]
fn generated_scenarios_parse_and_cover_the_action_library() {
    let mut actions = std::collections::BTreeSet::new();
    for seed in 0..300 {
        let d = derive(seed, Bounds::default(), &[]);
        let text = d.scenario_toml();
        if let Err(e) = parse(&text, "gen.toml") {
            panic!("seed {seed}: {e}\n{text}");
        }
        actions.extend(d.safety.iter().map(|s| s.action));
        assert!(d.safety.len() <= Bounds::default().max_actions);
    }
    for a in [
        "advance",
        "request",
        "stream_open",
        "stream_send",
        "revoke",
        "kill",
        "reboot",
        "stop_bfe",
        "upgrade_agent",
        "sleep",
        "network_change",
        "switch_user",
        "partition",
        "heal",
        "restart_host",
        "idp_outage",
        "idp_delay",
        "idp_rotate_keys",
        "idp_remove_key",
        "sign_in",
        "check_agent",
    ] {
        assert!(actions.contains(a), "`{a}` is never drawn");
    }
}

#[test]
fn overrides_land_in_the_lab_and_replace_drawn_values() {
    let o = vec![
        Override::parse("gateway.danger_skip_expiry_check=true").unwrap(),
        Override::parse("gateway.session_duration=90s").unwrap(),
    ];
    assert_eq!(o[1].value, "\"90s\"", "a bare word becomes a TOML string");
    let d = derive(7, Bounds::default(), &o);
    let s = parse(&d.scenario_toml(), "gen.toml").unwrap();
    assert!(s.lab.gateway.danger_skip_expiry_check);
    assert_eq!(s.lab.gateway.session_duration, Duration::from_secs(90));
    assert!(d.options_line().contains("gateway.danger_skip_expiry_check=true"));
}

#[test]
fn bad_overrides_are_named() {
    for bad in ["gateway", "=1", "gateway.=1", "gate way.x=1", ".x=1"] {
        let e = Override::parse(bad).unwrap_err();
        assert!(e.to_string().starts_with(&format!("--set `{bad}`:")), "{e}");
    }
    // An override the lab does not have is refused by the lab's own validation, located.
    let d = derive(1, Bounds::default(), &[Override::parse("gateway.no_such_knob=1").unwrap()]);
    let e = parse(&d.scenario_toml(), "gen.toml").unwrap_err().to_string();
    assert!(e.contains("gen.toml:") && e.contains("no_such_knob"), "{e}");
}

#[test]
fn shards_split_the_seed_space_without_overlap() {
    let all: Vec<u64> = shard_seeds(100, 50, 1, 1).collect();
    assert_eq!(all, (100..150).collect::<Vec<_>>());
    let mut union: Vec<u64> = (1..=4).flat_map(|i| shard_seeds(100, 50, i, 4)).collect();
    union.sort_unstable();
    assert_eq!(union, all);
    assert_eq!(shard_seeds(100, 50, 2, 4).take(3).collect::<Vec<_>>(), [101, 105, 109]);
}

/// ddmin finds the two actions that together cause a (synthetic) failure,
/// and the result is 1-minimal.
#[test]
fn ddmin_keeps_exactly_the_actions_the_failure_needs() {
    let mut d = derive(3, Bounds { max_actions: 8, ..Bounds::default() }, &[]);
    d.safety = (0..12)
        .map(|i| match i {
            4 => GenStep::new("reboot"),
            9 => GenStep::new("revoke").with("user", "alice"),
            _ => GenStep::new("advance").with("by", format!("{i}s")),
        })
        .collect();
    let fails = |t: &[GenStep]| {
        let has = |a: &str| t.iter().any(|s| s.action == a);
        if has("reboot") && has("revoke") {
            Verdict::Violation { invariants: vec!["E1".into()], first: "x".into() }
        } else {
            Verdict::Pass
        }
    };
    let original = fails(&d.safety);
    let shrunk = ddmin_with(&d, &original, 200, fails);
    let kept: Vec<&str> = shrunk.safety.iter().map(|s| s.action).collect();
    assert_eq!(kept, ["reboot", "revoke"]);
    assert!(shrunk.runs < 60, "{} runs", shrunk.runs);
    // Another failure kind is not "the same failure".
    assert!(!original.same_failure(&Verdict::Liveness { failure: String::new() }));
    assert!(!original.same_failure(&Verdict::Violation { invariants: vec!["E4".into()], first: String::new() }));
}
