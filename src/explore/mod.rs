//! `lab explore`: a swarm of generated scenarios, VOPR style.
//!
//! Every parameter of a run is drawn from its seed ([`derive`]): the lab's
//! knobs (session lifetime, link latency, the agent's session poll, the
//! IdP's vendor profile and key cache lifetime) and a timeline of user,
//! administrator, attacker and fault actions (partitions, server crashes,
//! agent kills, reboots, BFE restarts, sleep, network and user changes, IdP
//! outages, delays and key rotations). The timeline is written out as an
//! ordinary scenario file ([`Derived::scenario_toml`]) and run by the same
//! engine as `lab run`, so a failure is a file a person can read, replay and
//! commit.
//!
//! Two phases: the **safety** phase is the drawn timeline, under every
//! invariant of the oracle on every event; the **liveness** phase then heals
//! every fault and requires the legitimate user to sign in and reach an
//! application, each step within the lab's step timeout (no lockout, no
//! re-authentication loop). [`shrink`] minimizes a failing timeline.

pub mod shrink;

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::input::{InputError, Source};
use crate::rng::SeededRng;
use crate::scenario::Scenario;
use crate::world::{self, RunReport};

/// A user-supplied lab override (`--set gateway.danger_skip_mfa=true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Override {
    /// Dotted path under the lab (`gateway.danger_skip_mfa`).
    pub path: String,
    /// The value, as TOML (`true`, `"5m"`, `3`).
    pub value: String,
}

/// Why an override is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--set `{given}`: {why}")]
pub struct OverrideError {
    /// What was given.
    pub given: String,
    /// Why it is unusable.
    pub why: String,
}

impl Override {
    /// Parses `section.key=value` (the value is TOML; a bare word that is
    /// not TOML is taken as a string).
    pub fn parse(given: &str) -> Result<Override, OverrideError> {
        let bad = |why: &str| OverrideError { given: given.to_string(), why: why.to_string() };
        let (path, value) = given.split_once('=').ok_or_else(|| bad("expected SECTION.KEY=VALUE"))?;
        let path = path.trim();
        if path.split('.').count() < 2
            || path.split('.').any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(bad("the key must be a dotted path of names, e.g. gateway.danger_skip_mfa"));
        }
        let value = value.trim();
        let parsed = format!("v = {value}").parse::<toml::Table>().is_ok();
        let value = if parsed { value.to_string() } else { toml::Value::String(value.to_string()).to_string() };
        Ok(Override { path: path.to_string(), value })
    }
}

/// One action of a generated timeline: the scenario step it becomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenStep {
    /// The scenario action (`do`).
    pub action: &'static str,
    /// Its fields, as TOML values, in order.
    pub fields: Vec<(&'static str, String)>,
    /// What the step must give (liveness steps only).
    pub expect: Option<String>,
    /// Why it is there, for people.
    pub note: Option<String>,
}

impl GenStep {
    fn new(action: &'static str) -> GenStep {
        GenStep { action, fields: Vec::new(), expect: None, note: None }
    }

    fn with(mut self, field: &'static str, value: impl Into<String>) -> GenStep {
        self.fields.push((field, toml::Value::String(value.into()).to_string()));
        self
    }

    fn expecting(mut self, outcome: &str) -> GenStep {
        self.expect = Some(outcome.to_string());
        self
    }

    fn noting(mut self, note: &str) -> GenStep {
        self.note = Some(note.to_string());
        self
    }
}

/// Everything a seed decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Derived {
    /// The seed.
    pub seed: u64,
    /// The gateway's session lifetime.
    #[serde(with = "humantime_serde")]
    pub session_duration: Duration,
    /// One-way link latency.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// The agent's session poll interval.
    #[serde(with = "humantime_serde")]
    pub session_poll: Duration,
    /// The IdP's vendor profile.
    pub idp_profile: &'static str,
    /// The IdP's JWKS `max-age`.
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Overrides given by the user, applied last.
    pub overrides: Vec<Override>,
    /// The set-up every run starts with (boot, sign-in).
    pub prologue: Vec<GenStep>,
    /// The safety phase: the drawn timeline.
    pub safety: Vec<GenStep>,
}

/// The liveness phase after `safety`: undo each kind of fault it holds
/// (and nothing else: healing what did not happen would itself be a
/// transition), wait past any outage, restart or upgrade gap, then alice
/// signs in and reaches chat.
pub fn liveness_for(safety: &[GenStep]) -> Vec<GenStep> {
    let had = |action: &str| safety.iter().any(|s| s.action == action);
    let mut steps = Vec::new();
    if had("partition") {
        steps.push(GenStep::new("heal").noting("liveness: every cut link is restored"));
    }
    if had("idp_delay") {
        steps.push(GenStep::new("idp_delay").with("by", "0s").noting("liveness: the IdP answers promptly"));
    }
    if had("sleep") {
        steps.push(GenStep::new("resume").noting("liveness: the device wakes (fails harmlessly when awake)"));
    }
    if had("stop_bfe") {
        steps.push(GenStep::new("start_bfe").noting("liveness: BFE runs (fails harmlessly when it does)"));
    }
    if had("switch_user") {
        steps.push(GenStep::new("switch_user").with("user", "alice").noting("liveness: alice is at the console"));
    }
    steps.push(
        GenStep::new("advance")
            .with("by", secs(MAX_OUTAGE_S + 1))
            .noting("liveness: past any outage, agent restart or upgrade gap"),
    );
    steps.push(
        GenStep::new("sign_in").with("user", "alice").expecting("agent connected").noting("liveness: alice signs in"),
    );
    steps.push(
        GenStep::new("request")
            .with("process", "browser")
            .with("url", "https://chat.lab.test/")
            .with("login_as", "alice")
            .expecting("http 200")
            .noting("liveness: alice reaches chat"),
    );
    steps
}

/// Bounds of the drawn timelines.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Most actions in the safety phase.
    pub max_actions: usize,
    /// Longest single `advance`.
    pub max_advance: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { max_actions: 8, max_advance: Duration::from_secs(90) }
    }
}

/// The longest IdP outage drawn; the liveness phase waits it out.
const MAX_OUTAGE_S: u64 = 20;

fn pick<T: Copy>(rng: &SeededRng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn below(rng: &SeededRng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn secs(s: u64) -> String {
    format!("{s}s")
}

/// Draws every parameter of the run of `seed`.
pub fn derive(seed: u64, bounds: Bounds, overrides: &[Override]) -> Derived {
    let rng = SeededRng::from_seed(seed).child("explore");
    let session_duration = Duration::from_secs(pick(&rng, &[60, 120, 300, 3600]));
    let latency = Duration::from_millis(pick(&rng, &[1, 2, 5, 20]));
    let session_poll = Duration::from_secs(pick(&rng, &[5, 10]));
    // Google-like tokens carry no groups, which the default lab's apps need:
    // that profile is a configuration error here, not a finding.
    let idp_profile = pick(&rng, &["standard", "okta", "entra"]);
    let jwks_max_age = Duration::from_secs(pick(&rng, &[30, 300]));

    let prologue = vec![
        GenStep::new("boot"),
        GenStep::new("sign_in").with("user", "alice"),
        GenStep::new("request")
            .with("process", "browser")
            .with("url", "https://chat.lab.test/")
            .with("login_as", "alice"),
    ];

    let count = 1 + below(&rng, bounds.max_actions as u64) as usize;
    let mut safety = Vec::new();
    let mut streams = 0u32;
    let max_advance = bounds.max_advance.as_secs().max(1);
    for _ in 0..count {
        let step = match below(&rng, 24) {
            0 | 1 => GenStep::new("advance").with("by", secs(1 + below(&rng, max_advance))),
            2 => GenStep::new("request").with("process", "teams").with("url", "https://www.example.com/"),
            3 => GenStep::new("request")
                .with("process", "browser")
                .with("url", pick(&rng, &["https://chat.lab.test/", "https://code.lab.test/"])),
            4 => GenStep::new("request")
                .with("from", "attacker")
                .with("url", "https://chat.lab.test/")
                .with("cookies_from", "browser"),
            5 => {
                streams += 1;
                GenStep::new("stream_open")
                    .with("process", "teams")
                    .with("to", "www.example.com:7000")
                    .with("stream", format!("s{streams}"))
            }
            6 if streams > 0 => GenStep::new("stream_send")
                .with("process", "teams")
                .with("stream", format!("s{}", 1 + below(&rng, streams as u64))),
            6 | 7 => GenStep::new("revoke").with("user", "alice"),
            8 => GenStep::new("kill").with("process", "lockstep-agent"),
            9 => GenStep::new("reboot"),
            10 => GenStep::new(pick(&rng, &["stop_bfe", "start_bfe"])),
            11 => GenStep::new("upgrade_agent"),
            12 => GenStep::new(pick(&rng, &["sleep", "resume"])),
            13 => GenStep::new("network_change"),
            14 => GenStep::new("switch_user").with("user", pick(&rng, &["bob", "alice"])),
            15 | 16 => {
                let (host, peer) =
                    pick(&rng, &[("device", "gateway"), ("gateway", "idp"), ("gateway", "chat"), ("device", "idp")]);
                GenStep::new("partition").with("host", host).with("peer", peer)
            }
            17 => GenStep::new("heal"),
            18 => GenStep::new("restart_host").with("host", pick(&rng, &["gateway", "idp", "mfa", "chat"])),
            19 => GenStep::new("idp_outage").with("duration", secs(5 + below(&rng, MAX_OUTAGE_S - 4))),
            20 => GenStep::new("idp_delay").with("by", format!("{}ms", below(&rng, 3000))),
            21 => GenStep::new(pick(&rng, &["idp_rotate_keys", "idp_remove_key"])),
            22 => GenStep::new("sign_in").with("user", "alice"),
            _ => GenStep::new("check_agent"),
        };
        safety.push(step);
    }

    Derived {
        seed,
        session_duration,
        latency,
        session_poll,
        idp_profile,
        jwks_max_age,
        overrides: overrides.to_vec(),
        prologue,
        safety,
    }
}

impl Derived {
    /// The options, one line, printed before the run.
    pub fn options_line(&self) -> String {
        let mut s = format!(
            "seed {} session {} latency {} poll {} idp {} jwks-max-age {} actions {}",
            self.seed,
            humantime::format_duration(self.session_duration),
            humantime::format_duration(self.latency),
            humantime::format_duration(self.session_poll),
            self.idp_profile,
            humantime::format_duration(self.jwks_max_age),
            self.safety.len(),
        );
        for o in &self.overrides {
            let _ = write!(s, " {}={}", o.path, o.value);
        }
        s
    }

    /// The run as a scenario file (TOML), with `safety` in place of the
    /// drawn timeline (a shrunk one, say).
    pub fn scenario_toml_with(&self, safety: &[GenStep], header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "name = \"explore-{}\"", self.seed);
        let _ = writeln!(
            out,
            "description = \"Generated by `lab explore` from seed {}: {} drawn actions, then the liveness phase.\"",
            self.seed,
            safety.len()
        );
        let _ = writeln!(out, "lab = \"default\"\nseed = {}\n", self.seed);
        // The lab's knobs, as drawn, then the user's overrides, per section.
        let mut sections: Vec<(String, Vec<(String, String)>)> = vec![
            ("sim".into(), vec![("latency".into(), format!("\"{}\"", humantime::format_duration(self.latency)))]),
            ("gateway".into(), {
                let mut keys = vec![(
                    "session_duration".to_string(),
                    format!("\"{}\"", humantime::format_duration(self.session_duration)),
                )];
                if self.idp_profile == "entra" {
                    // An Entra-like IdP puts groups in `roles`.
                    keys.push(("groups_claim".into(), "\"roles\"".into()));
                }
                keys
            }),
            (
                "agent".into(),
                vec![("session_poll".into(), format!("\"{}\"", humantime::format_duration(self.session_poll)))],
            ),
            (
                "idp".into(),
                vec![
                    ("profile".into(), format!("\"{}\"", self.idp_profile)),
                    ("jwks_max_age".into(), format!("\"{}\"", humantime::format_duration(self.jwks_max_age))),
                ],
            ),
        ];
        for o in &self.overrides {
            let (section, key) = o.path.rsplit_once('.').unwrap_or(("", &o.path));
            match sections.iter_mut().find(|(s, _)| s == section) {
                Some((_, keys)) => {
                    keys.retain(|(k, _)| k != key);
                    keys.push((key.to_string(), o.value.clone()));
                }
                None => sections.push((section.to_string(), vec![(key.to_string(), o.value.clone())])),
            }
        }
        for (section, keys) in &sections {
            let _ = writeln!(out, "[config.{section}]");
            for (k, v) in keys {
                let _ = writeln!(out, "{k} = {v}");
            }
            out.push('\n');
        }
        let liveness = liveness_for(safety);
        let phases: [(&str, &[GenStep]); 3] =
            [("set-up", &self.prologue), ("safety phase", safety), ("liveness phase", &liveness)];
        for (phase, steps) in phases {
            let _ = writeln!(out, "# --- {phase} ---");
            for s in steps {
                out.push_str("[[step]]\n");
                let _ = writeln!(out, "do = \"{}\"", s.action);
                for (k, v) in &s.fields {
                    let _ = writeln!(out, "{k} = {v}");
                }
                if let Some(e) = &s.expect {
                    let _ = writeln!(out, "expect = \"{e}\"");
                }
                if let Some(n) = &s.note {
                    let _ = writeln!(out, "note = {}", toml::Value::String(n.clone()));
                }
                out.push('\n');
            }
        }
        out
    }

    /// The run as a scenario file.
    pub fn scenario_toml(&self) -> String {
        self.scenario_toml_with(&self.safety, "")
    }

    /// The number of steps before the liveness phase with `safety` as the
    /// drawn timeline.
    pub fn liveness_starts_after(&self, safety: &[GenStep]) -> usize {
        self.prologue.len() + safety.len()
    }
}

/// What came of one seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Verdict {
    /// Every invariant held and the user got back in.
    Pass,
    /// The oracle reported these invariants broken (safety).
    Violation {
        /// The invariants, in order of first appearance.
        invariants: Vec<String>,
        /// The first violation's explanation.
        first: String,
    },
    /// The faults were healed but the user could not get back in.
    Liveness {
        /// The liveness step that failed and how.
        failure: String,
    },
    /// The lab itself failed (a panic in a host, a bad generated file).
    LabError {
        /// What happened.
        message: String,
    },
}

impl Verdict {
    /// A short name, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Violation { .. } => "violation",
            Verdict::Liveness { .. } => "liveness",
            Verdict::LabError { .. } => "lab-error",
        }
    }

    /// Whether `other` is the same failure, for shrinking: the same kind,
    /// and for violations the same first invariant.
    pub fn same_failure(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Violation { invariants: a, .. }, Verdict::Violation { invariants: b, .. }) => {
                a.first().is_some_and(|first| b.contains(first))
            }
            (Verdict::Liveness { .. }, Verdict::Liveness { .. }) => true,
            (Verdict::LabError { .. }, Verdict::LabError { .. }) => true,
            _ => false,
        }
    }
}

/// Parses a generated scenario.
pub fn parse(text: &str, name: &str) -> Result<Scenario, InputError> {
    Scenario::parse(&Source::new(name, text), None)
}

/// Judges a run of a generated scenario whose liveness phase starts after
/// `liveness_after` steps.
pub fn judge(run: &RunReport, liveness_after: usize) -> Verdict {
    if let Some(e) = &run.error {
        return Verdict::LabError { message: e.clone() };
    }
    if !run.violations.is_empty() {
        let mut invariants: Vec<String> = Vec::new();
        for v in &run.violations {
            if !invariants.contains(&v.invariant) {
                invariants.push(v.invariant.clone());
            }
        }
        return Verdict::Violation { invariants, first: run.violations[0].to_string() };
    }
    if let Some(s) = run.steps.iter().find(|s| s.index > liveness_after && !s.ok) {
        return Verdict::Liveness {
            failure: format!(
                "step {} ({}): expected `{}`, got `{}`",
                s.index,
                s.action,
                s.expected.as_deref().unwrap_or(""),
                s.outcome
            ),
        };
    }
    Verdict::Pass
}

/// The result of one seed.
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    /// What the seed drew.
    pub derived: Derived,
    /// What came of it.
    pub verdict: Verdict,
    /// Simulated time, milliseconds.
    pub sim_ms: u64,
    /// Trace events.
    pub events: usize,
    /// The trace's digest.
    pub digest: String,
}

/// Draws and runs one seed.
pub fn run_seed(seed: u64, bounds: Bounds, overrides: &[Override]) -> SeedResult {
    let derived = derive(seed, bounds, overrides);
    let (verdict, sim_ms, events, digest) = run_timeline(&derived, &derived.safety);
    SeedResult { derived, verdict, sim_ms, events, digest }
}

/// Runs `derived` with `safety` as its drawn timeline.
pub fn run_timeline(derived: &Derived, safety: &[GenStep]) -> (Verdict, u64, usize, String) {
    let text = derived.scenario_toml_with(safety, "");
    let scenario = match parse(&text, &format!("explore-{}.toml", derived.seed)) {
        Ok(s) => s,
        Err(e) => return (Verdict::LabError { message: format!("generated scenario: {e}") }, 0, 0, String::new()),
    };
    let run = world::run(&scenario, derived.seed);
    let verdict = judge(&run, derived.liveness_starts_after(safety));
    (verdict, run.sim_ms, run.trace.events.len(), run.trace.digest())
}

/// Seeds `from..from+count` that belong to shard `index` of `shards`
/// (`index` counts from 1): seed `s` belongs to shard `(s - from) % shards + 1`.
pub fn shard_seeds(from: u64, count: u64, index: u64, shards: u64) -> impl Iterator<Item = u64> {
    let shards = shards.max(1);
    (0..count).filter(move |i| i % shards == (index.max(1) - 1) % shards).map(move |i| from.wrapping_add(i))
}

#[cfg(test)]
mod tests;
