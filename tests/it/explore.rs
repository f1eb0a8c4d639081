//! `lab explore` on the reference components and on a broken one: the
//! swarm passes clean, finds the broken gateway, and the minimized scenario
//! file reproduces the failure on its own.

use lockstep::explore::{self, Bounds, Override, Verdict, shrink};
use lockstep::scenario::Scenario;

#[test]
fn the_reference_components_pass_a_small_swarm_and_runs_are_deterministic() {
    for seed in 1..=8 {
        let r = explore::run_seed(seed, Bounds::default(), &[]);
        assert_eq!(r.verdict, Verdict::Pass, "seed {seed} ({})", r.derived.options_line());
        assert!(r.sim_ms > 6_000 && r.events > 50, "seed {seed} did not really run: {r:?}");
    }
    let a = explore::run_seed(5, Bounds::default(), &[]);
    let b = explore::run_seed(5, Bounds::default(), &[]);
    assert_eq!(a.digest, b.digest, "the same seed gave two traces");
    assert_ne!(a.digest, explore::run_seed(6, Bounds::default(), &[]).digest);
}

/// A gateway that ignores revocations (`danger_skip_revocation_check`):
/// seed 4 draws a revocation among six actions; the device stays open (E1)
/// and the liveness phase's request rides the revoked session (E4). Shrinking keeps only the revocation,
/// and the written file fails the same way when run like any scenario.
#[test]
fn a_broken_gateway_is_found_minimized_and_the_file_reproduces_it() {
    let broken = [Override::parse("gateway.danger_skip_revocation_check=true").unwrap()];
    let found = explore::run_seed(4, Bounds::default(), &broken);
    let Verdict::Violation { invariants, first } = &found.verdict else {
        panic!("seed 4 with a broken gateway: {:?}", found.verdict);
    };
    // The gateway ignores the revocation in its device API too, so the
    // agent never re-locks (E1) and the browser's requests are forwarded
    // (E4).
    assert_eq!(invariants, &["E1", "E4"]);
    assert!(first.contains("revoked"), "{first}");
    assert_eq!(explore::run_seed(4, Bounds::default(), &[]).verdict, Verdict::Pass, "the same seed, fixed gateway");

    let shrunk = shrink::ddmin(&found.derived, &found.verdict, 100);
    let kept: Vec<&str> = shrunk.safety.iter().map(|s| s.action).collect();
    assert_eq!(kept, ["revoke"], "from {} actions", found.derived.safety.len());
    assert!(found.verdict.same_failure(&shrunk.verdict));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("explore-4.toml");
    std::fs::write(&file, found.derived.scenario_toml_with(&shrunk.safety, "minimized")).unwrap();
    let scenario = Scenario::load(file.to_str().unwrap()).unwrap();
    let run = lockstep::world::run(&scenario, scenario.seed);
    assert!(!run.passed(), "the minimized file must fail under `lab run`");
    let broken: Vec<&str> = run.violations.iter().map(|v| v.invariant.as_str()).collect();
    assert!(broken.contains(&"E1") && broken.contains(&"E4"), "{broken:?}");
}

/// A regression seed: it still draws `actions` (so it still exercises the
/// fault it found), and the reference components pass it.
fn passes_having_drawn(seed: u64, actions: &[&str]) {
    let r = explore::run_seed(seed, Bounds::default(), &[]);
    let drawn: Vec<&str> = r.derived.safety.iter().map(|s| s.action).collect();
    for action in actions {
        assert!(drawn.contains(action), "seed {seed} no longer draws {action}: {}", r.derived.options_line());
    }
    assert_eq!(r.verdict, Verdict::Pass, "seed {seed}: {}", r.derived.options_line());
}

/// A fault the swarm found once: an IdP restart left the gateway with a
/// kept-alive connection the new IdP had reset, and the next sign-in failed
/// (401) on it. The HTTP client now retries such a connection once.
#[test]
fn a_restarted_idp_does_not_lock_the_user_out() {
    passes_having_drawn(25, &["restart_host"]);
}

/// Found by the swarm: a partition between device and gateway while the
/// agent's session check was in flight left that request unanswered for
/// ever; the agent, stuck on it, never accepted the next sign-in. Session
/// checks are now bounded by the poll interval.
#[test]
fn a_partition_during_a_session_check_does_not_stall_the_agent() {
    passes_having_drawn(81, &["partition"]);
}

/// The liveness phase undoes only the faults the run drew: an awake device
/// is not "resumed" (that would open a transition window of its own).
#[test]
fn the_liveness_phase_heals_only_what_happened() {
    let d = explore::derive(81, Bounds::default(), &[]);
    let heal: Vec<&str> = explore::liveness_for(&d.safety).iter().map(|s| s.action).collect();
    assert!(heal.contains(&"heal"));
    assert!(!heal.contains(&"resume") || d.safety.iter().any(|s| s.action == "sleep"));
    let bare: Vec<&str> = explore::liveness_for(&[]).iter().map(|s| s.action).collect();
    assert_eq!(bare, ["advance", "sign_in", "request"]);
}

/// Found by the swarm: a browser request black-holed by a partition held
/// the browser for ever, so alice's next request after the heal timed out.
/// Every HTTP request is now bounded (30 s), as in a real browser.
#[test]
fn a_request_lost_in_a_partition_does_not_hold_the_browser() {
    passes_having_drawn(100, &["partition"]);
}

/// Found by the swarm: a session revoked just before the device slept (or
/// its network changed) kept the device open through the transition, where
/// no revocation grace applies (E3): the agent learnt of the revocation only
/// at its next poll. It now locks at the suspend notice and on every
/// transition while connected, and lifts only once the gateway confirms.
#[test]
fn a_revocation_just_before_sleep_does_not_leak_through_the_transition() {
    passes_having_drawn(679, &["sleep", "revoke"]);
}

/// Found by the swarm: with the device cut off from the gateway, a revoked
/// session stayed open until it expired (E1), because the agent kept a
/// session the gateway could not confirm. The agent now locks once the
/// gateway has not confirmed the session for `confirm_within`.
#[test]
fn a_revocation_behind_a_partition_is_not_outlived() {
    passes_having_drawn(1335, &["partition", "revoke"]);
    let open = [Override::parse("agent.confirm_within=0s").unwrap()];
    let Verdict::Violation { invariants, .. } = explore::run_seed(1335, Bounds::default(), &open).verdict else {
        panic!("seed 1335 with the confirmation check off must break E1");
    };
    assert_eq!(invariants, ["E1"]);
}

/// Found by the swarm (a liveness failure): a browser whose global session
/// had under a second left got an app cookie with `Max-Age=0`, which deleted
/// it, and looped through the gateway until "too many redirects". A global
/// session about to end no longer skips the IdP, and cookie lifetimes round up.
#[test]
fn a_global_session_about_to_end_does_not_loop_the_browser() {
    passes_having_drawn(1649, &[]);
}
