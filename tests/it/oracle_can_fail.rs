//! The oracle can fail: deliberately broken components (`danger_` options)
//! must produce invariant violations, and the run must fail.

use lockstep::input::Source;
use lockstep::scenario::Scenario;
use lockstep::world::{self, RunReport};

/// A short session-expiry scenario; `danger` is a `[config...]` fragment.
fn run_with(danger: &str) -> RunReport {
    let text = format!(
        r#"
name = "danger"
seed = 3
[config.gateway]
session_duration = "1m"
{danger}

[[step]]
do = "boot"
[[step]]
do = "sign_in"
user = "alice"
expect = "agent connected"
[[step]]
do = "request"
process = "browser"
url = "https://chat.lab.test/"
login_as = "alice"
expect = "http 200"
[[step]]
do = "stream_open"
process = "teams"
to = "www.example.com:7000"
stream = "s"
expect = "ok"
[[step]]
do = "advance"
by = "61s"
[[step]]
do = "stream_send"
process = "teams"
stream = "s"
[[step]]
do = "request"
process = "updater"
url = "https://updates.example.com/"
[[step]]
do = "request"
from = "attacker"
cookies_from = "browser"
url = "https://chat.lab.test/"
"#
    );
    let scenario = Scenario::parse(&Source::new("danger.toml", text), None).unwrap_or_else(|e| panic!("{e}"));
    world::run(&scenario, scenario.seed)
}

/// The invariants a run broke, each once, sorted.
fn invariants(r: &RunReport) -> Vec<&str> {
    let mut v: Vec<&str> = r.violations.iter().map(|v| v.invariant.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn the_reference_components_pass() {
    let r = run_with("");
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert!(r.passed(), "{:#?}", r.failures());
}

#[test]
fn an_agent_that_forgets_to_relock_violates_e1() {
    let r = run_with("[config.agent]\ndanger_forget_relock = true");
    assert_eq!(invariants(&r), ["E1"], "{:#?}", r.violations);
    // The stream, the updater's new flow: both named, both after expiry.
    let text: Vec<String> = r.violations.iter().map(|v| v.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("teams") && t.contains("expired")), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("updater") && t.contains("permitted")), "{text:#?}");
    assert!(!r.passed());
}

#[test]
fn a_firewall_that_skips_reauthorization_violates_e1_on_the_old_flow_only() {
    let r = run_with("[config.firewall]\ndanger_skip_reauthorization = true");
    assert_eq!(invariants(&r), ["E1"], "{:#?}", r.violations);
    // New flows are still blocked by the re-engaged lockdown; only the
    // established stream leaks.
    assert!(r.violations.iter().all(|v| v.message.contains("teams") || v.message.contains("browser")));
    assert!(!r.violations.iter().any(|v| v.message.contains("updater")));
}

#[test]
fn a_gateway_that_skips_the_expiry_check_violates_e4() {
    let r = run_with("danger_skip_expiry_check = true");
    assert_eq!(invariants(&r), ["E4"], "{:#?}", r.violations);
    let v = &r.violations[0];
    assert!(v.message.contains("forwarded") && v.message.contains("expired"), "{v}");
    // The app token ends with the session, so the origin refuses what the
    // broken gateway forwards: only the gateway is flagged.
    assert!(r.violations.iter().all(|v| v.host == "gateway"), "{:#?}", r.violations);
    let refused = r.trace.events.iter().any(|e| {
        matches!(&e.body, lockstep::trace::EventBody::OriginRequest { status: 403, reason, .. } if reason.contains("expired"))
    });
    assert!(refused, "the origin refused the expired app token");
    // With app tokens that outlive the session as well, the origin serves it
    // and is flagged too.
    let r = run_with("danger_skip_expiry_check = true\ndanger_app_token_outlives_session = true");
    assert_eq!(invariants(&r), ["E4"], "{:#?}", r.violations);
    assert!(r.violations.iter().any(|v| v.host == "gateway"));
    assert!(r.violations.iter().any(|v| v.host == "chat" && v.message.contains("origin chat served")));
}

#[test]
fn a_scenario_can_expect_a_violation_and_pass() {
    let text = std::fs::read_to_string("scenarios/expired-session.toml").unwrap();
    let text =
        text.replace("session_duration = \"10m\"", "session_duration = \"10m\"\ndanger_skip_expiry_check = true");
    let text = format!("expect_violations = [\"E4\"]\n{text}");
    // Steps that expect the correct behaviour still fail: only the oracle
    // part is declared.
    let s = Scenario::parse(&Source::new("x.toml", text), None).unwrap();
    let r = world::run(&s, s.seed);
    let failures = r.failures();
    assert!(failures.iter().all(|f| f.starts_with("step ")), "{failures:#?}");
    assert!(!failures.is_empty());
}

/// Sequence number at which step `n` (1-based) started.
fn step_start_seq(r: &RunReport, n: usize) -> u64 {
    r.trace
        .events
        .iter()
        .find(|e| matches!(&e.body, lockstep::trace::EventBody::StepStarted { step, .. } if *step == n))
        .map(|e| e.seq)
        .unwrap_or(u64::MAX)
}

fn crash_agent_then_update(lifetime: &str) -> RunReport {
    let text = format!(
        r#"
name = "crash"
seed = 4
[config.agent]
filter_lifetime = "{lifetime}"
[[step]]
do = "boot"
expect = "agent locked"
[[step]]
do = "kill"
process = "lockstep-agent"
expect = "ok"
[[step]]
do = "request"
process = "updater"
url = "https://updates.example.com/"
"#
    );
    let s = Scenario::parse(&Source::new("crash.toml", text), None).unwrap_or_else(|e| panic!("{e}"));
    world::run(&s, s.seed)
}

#[test]
fn an_agent_whose_filters_die_with_it_fails_open_on_a_crash() {
    // Persistent or static filters live in the OS, not in the agent: the
    // device stays locked when the agent is killed.
    for lifetime in ["persistent", "static"] {
        let r = crash_agent_then_update(lifetime);
        // Static filters: the updater's connection from the boot window is cut instead.
        assert!(["blocked", "cut"].contains(&r.steps[2].outcome.as_str()), "{lifetime}: {}", r.steps[2].outcome);
        let kill = step_start_seq(&r, 2);
        let after: Vec<_> = r.violations.iter().filter(|v| v.seq > kill).collect();
        assert!(after.is_empty(), "{lifetime}: {after:#?}");
    }
    // Persistent filters with a boot-time copy also cover the boot itself; static
    // ones leave the early updater a window before the agent has started.
    assert!(crash_agent_then_update("persistent").violations.is_empty());
    let r = crash_agent_then_update("static");
    assert_eq!(invariants(&r), ["E1", "E3"]);
    assert!(r.violations.iter().all(|v| v.seq < step_start_seq(&r, 2)), "{:#?}", r.violations);
    // A dynamic session's filters vanish with its process: the lab reports the leak.
    let r = crash_agent_then_update("dynamic");
    assert_eq!(r.steps[2].outcome, "http 200");
    assert_eq!(invariants(&r), ["E1", "E3"]);
    assert!(r.violations[0].message.contains("no device session was ever issued"), "{}", r.violations[0]);
    assert!(r.violations.iter().any(|v| v.message.contains("during agent stopped")), "{:#?}", r.violations);
}

/// One of the shipped MFA scenarios with a `[config...]` fragment added.
fn shipped_with(file: &str, danger: &str) -> RunReport {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // The fragment goes before the first array of tables, where top-level tables may still open.
    let at = text.find("\n[").unwrap_or(text.len());
    let text = format!("{}\n{danger}\n{}", &text[..at], &text[at..]);
    let scenario = Scenario::parse(&Source::new(file, text), None).unwrap_or_else(|e| panic!("{e}"));
    world::run(&scenario, scenario.seed)
}

#[test]
fn mfa_scenarios_pass_unbroken() {
    for file in ["hijacked-sso-session.toml", "totp-replay.toml", "cloned-security-key.toml"] {
        let r = shipped_with(file, "");
        assert!(r.passed(), "{file}: {:?}", r.failures());
    }
}

#[test]
fn a_gateway_that_skips_mfa_breaks_e5() {
    let r = shipped_with("hijacked-sso-session.toml", "[config.gateway]\ndanger_skip_mfa = true");
    assert!(invariants(&r).contains(&"E5"), "{:?}", r.violations);
    let e5 = r.violations.iter().find(|v| v.invariant == "E5").map(|v| v.message.clone()).unwrap_or_default();
    assert!(e5.contains("requires MFA") && e5.contains("without any edge MFA verification"), "{e5}");
    assert!(!r.passed());
}

#[test]
fn an_mfa_service_that_accepts_a_replayed_totp_code_breaks_e7() {
    let r = shipped_with("totp-replay.toml", "[config.mfa]\ndanger_allow_totp_reuse = true");
    let e7: Vec<&str> = r.violations.iter().filter(|v| v.invariant == "E7").map(|v| v.message.as_str()).collect();
    assert!(e7.iter().any(|m| m.contains("accepted twice")), "{:?}", r.violations);
    assert!(!r.passed());
}

#[test]
fn an_mfa_service_that_forgets_counters_lets_a_clone_in_and_breaks_e7() {
    let r = shipped_with("cloned-security-key.toml", "[config.mfa]\ndanger_skip_counter_update = true");
    let e7: Vec<&str> = r.violations.iter().filter(|v| v.invariant == "E7").map(|v| v.message.as_str()).collect();
    assert!(e7.iter().any(|m| m.contains("went backwards")), "{:?}", r.violations);
    // The clone got in: the step that expected a refusal fails too.
    assert!(r.steps.iter().any(|s| !s.ok && s.outcome == "http 200"), "{:?}", r.steps);
}

#[test]
fn an_exception_scoped_by_image_alone_lets_a_lookalike_through() {
    // The shipped lockdown requires the agent's service SID as well as the image path.
    // Without it, a program the user runs from the same path rides the exception.
    let text = r#"
name = "lookalike"
seed = 5
[config.lockdown]
allow = [
  { process = "lockstep-auth", to = ["idp.lab.test:443", "gateway.lab.test:443"] },
  { process = "lockstep-agent", to = ["gateway.lab.test:443"] },
]
[[step]]
do = "boot"
expect = "agent locked"
[[step]]
do = "start"
process = "auth-lookalike"
expect = "ok"
[[step]]
do = "request"
process = "auth-lookalike"
url = "https://idp.lab.test/.well-known/openid-configuration"
"#;
    let s = Scenario::parse(&Source::new("lookalike.toml", text), None).unwrap_or_else(|e| panic!("{e}"));
    let r = world::run(&s, s.seed);
    assert_eq!(r.steps[2].outcome, "http 200");
    assert_eq!(invariants(&r), ["E1"]);
    assert!(r.violations[0].message.contains("auth-lookalike"), "{}", r.violations[0]);
    // The shipped scenario, with the service condition, passes.
    let shipped = shipped_with("co-resident-app-leak.toml", "");
    assert!(shipped.passed(), "{:?}", shipped.failures());
}

#[test]
fn static_filters_fail_open_while_bfe_is_down() {
    // The same BFE restart as the shipped scenario, with static filters: BFE drops them.
    let r = shipped_with("bfe-restart.toml", "[config.agent]\nfilter_lifetime = \"static\"\nboot_time_filters = false");
    assert_eq!(r.steps[2].outcome, "http 200", "{:#?}", r.steps);
    assert!(invariants(&r).contains(&"E3"), "{:#?}", r.violations);
    assert!(r.violations.iter().any(|v| v.message.contains("during bfe stopped")), "{:#?}", r.violations);
}

#[test]
fn without_reauthorization_the_existing_dns_socket_leaks() {
    let r = shipped_with("dns-leak-existing-socket.toml", "[config.firewall]\ndanger_skip_reauthorization = true");
    // Step 9: the query on the socket opened before the revocation.
    assert_eq!(r.steps[8].outcome, "ok", "{:#?}", r.steps);
    assert_eq!(invariants(&r), ["E1"]);
    assert!(r.violations.iter().all(|v| v.message.contains("9.9.9.9:53")), "{:#?}", r.violations);
}

/// The IdP withdraws its key (stolen) and the thief's tokens arrive 40 s
/// later, past the gateway's 30-second JWKS bound.
fn stolen_key_after_the_ttl(gateway: &str) -> RunReport {
    let text = format!(
        r#"
name = "stolen-key"
seed = 5
[config.gateway]
jwks_max_ttl = "30s"
{gateway}
[[step]]
do = "boot"
[[step]]
do = "sign_in"
user = "alice"
expect = "agent connected"
[[step]]
do = "idp_remove_key"
expect = "ok"
[[step]]
do = "idp_forge"
forge = "removed_key"
expect = "ok"
[[step]]
do = "advance"
by = "40s"
[[step]]
do = "request"
from = "attacker"
url = "https://chat.lab.test/"
login_as = "bob"
"#
    );
    let scenario = Scenario::parse(&Source::new("stolen.toml", text), None).unwrap_or_else(|e| panic!("{e}"));
    world::run(&scenario, scenario.seed)
}

#[test]
fn a_gateway_whose_jwks_never_expires_violates_e2() {
    let good = stolen_key_after_the_ttl("");
    assert!(good.violations.is_empty(), "{:#?}", good.violations);
    assert_eq!(good.steps.last().map(|s| s.outcome.as_str()), Some("http 401"));

    let broken = stolen_key_after_the_ttl("danger_jwks_no_ttl = true");
    assert_eq!(invariants(&broken), ["E2"], "{:#?}", broken.violations);
    assert_eq!(broken.steps.last().map(|s| s.outcome.as_str()), Some("http 200"));
    assert!(broken.violations[0].message.contains("withdrawn at"), "{}", broken.violations[0].message);
    assert!(!broken.passed());
}
