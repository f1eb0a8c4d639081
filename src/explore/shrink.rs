//! Delta debugging (Zeller's ddmin) over a failing timeline: the smallest
//! subsequence of the drawn actions that still fails the same way.

use super::{Derived, GenStep, Verdict, run_timeline};

/// A shrunk failure.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The minimized timeline (safety phase).
    pub safety: Vec<GenStep>,
    /// Its verdict (the same failure as the original's).
    pub verdict: Verdict,
    /// Runs spent shrinking.
    pub runs: usize,
}

/// Minimizes `derived`'s safety phase while `test` gives the same failure
/// as `original`, spending at most `budget` runs of `test`. The result is
/// 1-minimal (no single action can be removed) unless the budget ran out.
pub fn ddmin_with(
    derived: &Derived,
    original: &Verdict,
    budget: usize,
    mut test: impl FnMut(&[GenStep]) -> Verdict,
) -> Shrunk {
    let mut current: Vec<GenStep> = derived.safety.clone();
    let mut verdict = original.clone();
    let mut runs = 0;
    let mut n = 2usize;
    while current.len() >= 2 && runs < budget {
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        // Try each complement (the timeline without one chunk).
        let mut start = 0;
        while start < current.len() && runs < budget {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<GenStep> = current[..start].iter().chain(&current[end..]).cloned().collect();
            runs += 1;
            let v = test(&candidate);
            if original.same_failure(&v) {
                current = candidate;
                verdict = v;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start = end;
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    // A single remaining action may itself be unnecessary.
    if current.len() == 1 && runs < budget {
        runs += 1;
        let v = test(&[]);
        if original.same_failure(&v) {
            current.clear();
            verdict = v;
        }
    }
    Shrunk { safety: current, verdict, runs }
}

/// Minimizes a failing seed by running the candidates in the simulator.
pub fn ddmin(derived: &Derived, original: &Verdict, budget: usize) -> Shrunk {
    ddmin_with(derived, original, budget, |safety| run_timeline(derived, safety).0)
}
