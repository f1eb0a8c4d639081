//! The conformance suite (tests/conformance) against the WFP model, and proof that the
//! runner can fail: wrong expectations, permissive windows, stale and unknown entries,
//! unlisted unsupported cases, and typos in case files.

use std::path::Path;

use lockstep::conformance::{
    Backend, Case, CaseError, CaseOutcome, Observation, Op, UnsupportedList, WfpModel, load_cases, load_unsupported,
    parse_case, parse_unsupported, run_suite,
};

const CASES: &str = "tests/conformance/cases";
const MODEL_UNSUPPORTED: &str = "tests/conformance/wfp-model.unsupported.toml";

fn cases() -> Vec<Case> {
    load_cases(Path::new(CASES)).unwrap_or_else(|e| panic!("{e}"))
}

/// A case file's text with the first `from` replaced by `to` (which must change it).
fn mutated(file: &str, from: &str, to: &str) -> Case {
    let path = format!("{CASES}/{file}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    parse_case(&path, &text.replacen(from, to, 1)).unwrap_or_else(|e| panic!("{e}"))
}

fn list(text: &str) -> UnsupportedList {
    parse_unsupported("x.unsupported.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_case_passes_on_the_model() {
    let cases = cases();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 33);
    assert_eq!(
        (ids[0], ids[8], ids[9], ids[12], ids[15], ids[21], ids[29]),
        ("A1", "A9", "B10", "C13", "D16", "E22", "E30")
    );
    // Past the 30 checks of research §3.8: the agent's own lockdown.
    assert_eq!(&ids[30..], ["E31", "C32", "D33"]);
    assert!(cases[30..].iter().all(|c| c.agent.is_some() && c.filters.is_empty()));
    assert!(cases.iter().enumerate().all(|(i, c)| c.number as usize == i + 1), "one case per check, in order");
    let unsupported = load_unsupported(Path::new(MODEL_UNSUPPORTED)).unwrap_or_else(|e| panic!("{e}"));
    let report = run_suite(&mut WfpModel::new(), &cases, &unsupported);
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts(), (33, 0, 0, 0));
    assert!(report.to_string().ends_with("33 passed, 0 failed, 0 unsupported, 0 stale entries, 0 unknown entries: OK"));
}

#[test]
fn the_agents_own_lockdown_lets_ndp_and_dhcpv6_through() {
    // E31 runs the filters agent::wfp_backend compiles: before issue 16 the lockdown
    // blocked RS and NS out and RA, NA and Redirect in (LAN setting on or off).
    let e31: Vec<Case> = cases().into_iter().filter(|c| c.id == "E31").collect();
    let report = run_suite(&mut WfpModel::new(), &e31, &UnsupportedList::default());
    assert!(report.passed(), "{report}");
}

/// A case of the agent's lockdown, with `steps` as its script.
fn agent_case(steps: &str) -> Result<Case, lockstep::input::InputError> {
    let text = format!(
        r#"id = "E40"
title = "t"
source = "s"
description = "d"

[[process]]
name = "agent"
image = 'C:\Program Files\Lockstep\lockstep-agent.exe'
user = "S-1-5-18"

[[process]]
name = "browser"
image = 'C:\Program Files\Browser\browser.exe'
user = "S-1-5-21-1"

[agent]
process = "agent"
allow = [{{ process = "browser", to = ["203.0.113.20:443"] }}]

[script]
steps = [
{steps}
]
"#
    );
    parse_case("agent.toml", &text)
}

#[test]
fn agent_steps_install_the_filters_the_agent_compiles() {
    let case = agent_case(
        r#"  { do = "agent", state = "locked" },
  { do = "connect", class = "ndp_rs", expect = "permit", decided_by = "lockstep: permit NDP router solicitation" },
  { do = "connect", process = "browser", proto = "tcp", remote = "203.0.113.20:443", expect = "permit", decided_by = "lockstep: permit browser -> 203.0.113.20/32 port 443" },
  { do = "connect", process = "browser", proto = "tcp", remote = "203.0.113.20:80", expect = "block", decided_by = "lockstep: block all" },
  { do = "connect", process = "browser", proto = "udp", remote = "9.9.9.9:53", expect = "block", decided_by = "lockstep: block DNS" },
  { do = "agent", state = "connected" },
  { do = "connect", process = "browser", proto = "tcp", remote = "203.0.113.20:80", expect = "permit", decided_by = "lockstep: permit all (session live)" },
  { do = "kill", process = "agent" },
  { do = "connect", process = "browser", proto = "tcp", remote = "203.0.113.20:80", expect = "block", decided_by = "lockstep: block all" },"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = run_suite(&mut WfpModel::new(), &[case], &UnsupportedList::default());
    assert!(report.passed(), "{report}");
    // The same case expecting the lockdown to let plain HTTP through fails: the rules
    // are the agent's, not the case's.
    let wrong = agent_case(
        r#"  { do = "agent", state = "locked", allow_lan = true },
  { do = "connect", process = "browser", proto = "tcp", remote = "203.0.113.20:80", expect = "permit" },"#,
    )
    .unwrap();
    let report = run_suite(&mut WfpModel::new(), &[wrong], &UnsupportedList::default());
    let CaseOutcome::Fail(m) = &report.results[0].outcome else { panic!("{report}") };
    assert_eq!(m.op, "connect Tcp 10.0.0.2:49152 -> 203.0.113.20:80 by `browser`");
    assert_eq!(m.message, "expected Permit, got Block (decided by `lockstep: block all`)");
}

#[test]
fn agent_case_errors_are_located() {
    let err = |steps: &str| agent_case(steps).unwrap_err().to_string();
    assert!(
        err(r#"  { do = "agent", state = "asleep" },"#).contains("unknown agent state `asleep` (locked or connected)")
    );
    assert!(err(r#"  { do = "agent" },"#).contains("a `agent` step needs `state`"));
    assert!(err(r#"  { do = "agent", state = "locked", allow_wan = true },"#).contains("unknown field `allow_wan`"));
    assert!(err(r#"  { do = "agent", state = "locked", decided_by = "x" },"#).contains("`decided_by` does not apply"));
    // The [agent] table is checked too.
    let base = std::fs::read_to_string(format!("{CASES}/32-agent-lockdown-exceptions.toml")).unwrap();
    let bad = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        parse_case("c32.toml", &base.replacen(from, to, 1)).unwrap_err().to_string()
    };
    let agent_exception = r#"{ process = "agent", to = ["203.0.113.10:443"] }"#;
    let e = bad(agent_exception, r#"{ process = "agnet", to = ["203.0.113.10:443"] }"#);
    assert!(e.starts_with("c32.toml:") && e.contains("unknown process `agnet`"), "{e}");
    let e = bad(agent_exception, r#"{ process = "agent", to = ["gateway:443"] }"#);
    assert!(e.contains("`gateway:443` is not a destination"), "{e}");
    let e = bad("process = \"agent\"\nallow", "process = \"agent\"\nfilter_lifetime = \"forever\"\nallow");
    assert!(e.contains("unknown filter lifetime `forever`"), "{e}");
    let no_agent = "id = \"E40\"\ntitle = \"t\"\nsource = \"s\"\ndescription = \"d\"\n\n[script]\nsteps = [\n  { do = \"agent\", state = \"locked\" },\n]\n";
    let e = parse_case("n.toml", no_agent).unwrap_err().to_string();
    assert_eq!(e, "n.toml:8:10: an `agent` step needs the case's `[agent]` table");
}

#[test]
fn a_wrong_expectation_fails_with_the_step_and_why() {
    let case = mutated(
        "11-reauthorization-on-policy-change.toml",
        r#"expect = "torn_down", decided_by = "block-all" },"#,
        r#"expect = "pass" },"#,
    );
    let report = run_suite(&mut WfpModel::new(), &[case], &UnsupportedList::default());
    assert!(!report.passed());
    let CaseOutcome::Fail(m) = &report.results[0].outcome else { panic!("{report}") };
    assert_eq!((m.step, m.line), (12, 58));
    assert_eq!(m.op, "packet on `app-session`");
    assert_eq!(m.message, "expected Pass, got TornDown (decided by `block-all`)");
    let text = report.to_string();
    let at = "tests/conformance/cases/11-reauthorization-on-policy-change.toml:58: step 12 (packet on `app-session`): \
              expected Pass, got TornDown (decided by `block-all`)";
    assert!(text.contains(at), "{text}");
    assert!(text.ends_with("0 passed, 1 failed, 0 unsupported, 0 stale entries, 0 unknown entries: FAILED"), "{text}");

    // The deciding filter is checked too.
    let case = mutated(
        "30-foreign-vendor-hard-permit.toml",
        r#"decided_by = "vendor-hard-permit-https", note = "the bypass""#,
        r#"decided_by = "agent-block-all""#,
    );
    let report = run_suite(&mut WfpModel::new(), &[case], &UnsupportedList::default());
    let CaseOutcome::Fail(m) = &report.results[0].outcome else { panic!("{report}") };
    assert_eq!(
        m.message,
        "expected Permit decided by `agent-block-all`, got Permit (decided by `vendor-hard-permit-https`)"
    );
}

#[test]
fn a_permissive_window_fails_a_watch() {
    // The policy swap of D21 without its transaction: the watch sees the rogue get out
    // right after the block-all is deleted.
    let case = mutated(
        "21-no-permissive-transition.toml",
        r#"{ do = "begin", session = "agent", note = "policy swap: reset, then apply, in one transaction" },"#,
        "",
    );
    let report = run_suite(&mut WfpModel::new(), &[case], &UnsupportedList::default());
    let CaseOutcome::Fail(m) = &report.results[0].outcome else { panic!("{report}") };
    assert_eq!(m.watch.as_deref(), Some("rogue-stays-blocked"));
    assert_eq!(m.op, "delete_filter `block-all`");
    assert!(m.message.ends_with("expected Block, got Permit (no filter matched)"), "{}", m.message);
}

#[test]
fn a_stale_entry_fails_the_suite_and_a_listed_failure_does_not() {
    let cases = cases();
    let stale = list("[[unsupported]]\nid = \"A1\"\nreason = \"thought to need exact weights\"\n");
    let report = run_suite(&mut WfpModel::new(), &cases[..2], &stale);
    assert!(!report.passed());
    let a1 = report.result("A1").unwrap();
    assert_eq!(a1.outcome, CaseOutcome::Stale { reason: "thought to need exact weights".into() });
    let text = report.to_string();
    assert!(text.contains("STALE       A1"), "{text}");
    assert!(text.contains(
        "listed as unsupported (thought to need exact weights) but it passes: remove it from x.unsupported.toml"
    ));
    assert_eq!(report.counts(), (1, 0, 0, 1));

    // A listed case that fails is "unsupported" (the BoGo way) and the suite passes.
    let broken = mutated(
        "01-highest-weight-decides.toml",
        r#"expect = "permit", decided_by = "permit-https""#,
        r#"expect = "block""#,
    );
    let listed = list("[[unsupported]]\nid = \"A1\"\nreason = \"no weights\"\n");
    let report = run_suite(&mut WfpModel::new(), &[broken], &listed);
    assert!(report.passed(), "{report}");
    let CaseOutcome::Unsupported { reason, observed } = &report.results[0].outcome else { panic!("{report}") };
    assert_eq!(reason, "no weights");
    assert!(observed.starts_with("fails at line 45: step 6"), "{observed}");
}

#[test]
fn an_unknown_id_or_an_empty_reason_fails() {
    let cases = cases();
    let unknown = list("# comment\n\n[[unsupported]]\nid = \"F31\"\nreason = \"no such check\"\n");
    let report = run_suite(&mut WfpModel::new(), &cases[..1], &unknown);
    assert!(!report.passed());
    assert_eq!(report.unknown_entries.len(), 1);
    let text = report.to_string();
    assert!(text.contains("UNKNOWN     x.unsupported.toml:3: `F31` names no case"), "{text}");
    assert!(text.ends_with("1 unknown entries: FAILED"), "{text}");

    let empty = parse_unsupported("x.toml", "[[unsupported]]\nid = \"A1\"\nreason = \"  \"\n").unwrap_err();
    assert_eq!(empty.to_string(), "x.toml:3:10: `A1` needs a reason: say why the backend cannot run it");
    let missing = parse_unsupported("x.toml", "[[unsupported]]\nid = \"A1\"\n").unwrap_err();
    assert!(missing.to_string().starts_with("x.toml:1:1: missing field `reason`"), "{missing}");
    let twice = parse_unsupported(
        "x.toml",
        "[[unsupported]]\nid = \"A1\"\nreason = \"r\"\n[[unsupported]]\nid = \"A1\"\nreason = \"r\"\n",
    );
    assert_eq!(twice.unwrap_err().to_string(), "x.toml:5:6: `A1` is listed twice");
}

/// A backend without L2 layers: what an nftables backend without a forward chain would be.
struct NoL2(WfpModel);

impl Backend for NoL2 {
    fn name(&self) -> &str {
        "no-l2"
    }

    fn start(&mut self, case: &Case) -> Result<(), CaseError> {
        if case.steps.iter().any(|s| matches!(s.op, Op::VmFrame { .. })) {
            return Err(CaseError::Unsupported("no virtual-switch layers".into()));
        }
        self.0.start(case)
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        self.0.perform(case, op)
    }
}

#[test]
fn an_unlisted_unsupported_case_fails_and_a_listed_one_passes() {
    let cases = cases();
    let e26 = cases.iter().filter(|c| c.id == "E26" || c.id == "E25").cloned().collect::<Vec<_>>();
    let report = run_suite(&mut NoL2(WfpModel::new()), &e26, &UnsupportedList::default());
    assert!(!report.passed());
    assert_eq!(
        report.result("E26").unwrap().outcome,
        CaseOutcome::NotListed { reason: "no virtual-switch layers".into() }
    );
    assert!(report.to_string().contains("NOT LISTED  E26"), "{report}");
    let listed = list("[[unsupported]]\nid = \"E26\"\nreason = \"guest traffic needs a forward chain\"\n");
    let report = run_suite(&mut NoL2(WfpModel::new()), &e26, &listed);
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts(), (1, 0, 1, 0));
    assert!(report.to_string().contains("observed: unsupported: no virtual-switch layers"), "{report}");
}

#[test]
fn a_typo_in_a_case_file_is_located() {
    let path = format!("{CASES}/08-loopback.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let typo = text.replacen("decided_by = \"permit-loopback\" },", "decided_bye = \"permit-loopback\" },", 1);
    let err = parse_case(&path, &typo).unwrap_err().to_string();
    assert!(err.starts_with("tests/conformance/cases/08-loopback.toml:38:100: unknown field `decided_bye`"), "{err}");
    let typo = text.replacen("layers = [\"ale\"]", "layers = [\"all\"]", 1);
    let err = parse_case(&path, &typo).unwrap_err().to_string();
    assert!(err.starts_with("tests/conformance/cases/08-loopback.toml:18:11: unknown layer `all`"), "{err}");
}

#[test]
fn case_files_are_named_after_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let one = std::fs::read_to_string(format!("{CASES}/01-highest-weight-decides.toml")).unwrap();
    std::fs::write(dir.path().join("02-misnamed.toml"), &one).unwrap();
    let err = load_cases(dir.path()).unwrap_err().to_string();
    assert!(err.ends_with("02-misnamed.toml: name the file `01-<slug>.toml` after case `A1`"), "{err}");
    std::fs::remove_file(dir.path().join("02-misnamed.toml")).unwrap();
    std::fs::write(dir.path().join("01-a.toml"), &one).unwrap();
    std::fs::write(dir.path().join("01-b.toml"), &one).unwrap();
    let err = load_cases(dir.path()).unwrap_err().to_string();
    assert!(err.starts_with("case id `A1` is used by both"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(load_cases(empty.path()).unwrap_err().to_string().ends_with("no case files (*.toml)"));
}

#[test]
fn the_suite_is_pure_and_backend_neutral() {
    // The suite and its model backend use the pure WFP model and the agent's pure
    // rule compiler only (agent::wfp_backend and the Firewall trait): no runtime, no
    // network seam, no simulated device, not the agent's state machine
    // (ARCHITECTURE.md layering).
    let mut files: Vec<_> = std::fs::read_dir("src/conformance").unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for banned in [
            "tokio",
            "async fn",
            "std::time",
            "HashMap",
            "HashSet",
            "crate::net",
            "crate::http",
            "crate::device",
            "crate::world",
            "crate::scenario",
            "crate::oracle",
            "crate::trace",
        ] {
            assert!(!text.contains(banned), "{} contains `{banned}`", path.display());
        }
        for (i, _) in text.match_indices("crate::agent") {
            let rest = &text[i + "crate::agent".len()..];
            assert!(
                rest.starts_with("::firewall") || rest.starts_with("::wfp_backend"),
                "{} uses the agent beyond its Firewall trait and WFP backend",
                path.display()
            );
        }
    }
    // Only the model backend speaks WFP's API; the case schema and the runner do not.
    for file in ["src/conformance/case.rs", "src/conformance/runner.rs"] {
        let text = std::fs::read_to_string(file).unwrap();
        for api in ["Engine", "FlowTable", "FilterSpec", "ClassifyContext"] {
            assert!(!text.contains(api), "{file} uses the WFP model's `{api}`");
        }
    }
}
