//! The Gherkin specification (`features/*.feature`), run with cucumber.
//!
//! Steps never re-implement the lab: Given and When steps compose a
//! scenario document (the same TOML format as `scenarios/`, parsed by
//! `Scenario::parse`) or load a shipped one (`Scenario::load("embedded:NAME")`);
//! Then steps run it through `lockstep::world::run` and assert on the
//! `RunReport`: a step's outcome, the oracle's violations, the findings.
//!
//! A Then step runs the timeline written so far. The lab is deterministic,
//! so the run of a prefix is the prefix of the full run; a Then that follows
//! the last When sees the whole run, oracle included. Runs are cached until
//! the timeline changes.
//!
//! `LOCKSTEP_FEATURES_JUNIT=<path>` also writes cucumber's JUnit XML there.

use std::fmt;
use std::io;

use cucumber::{World as _, WriterExt as _, cli, gherkin, given, then, when, writer};
use lockstep::config::DEFAULT_LAB;
use lockstep::input::Source;
use lockstep::scenario::{EMBEDDED_PREFIX, Scenario};
use lockstep::world::{self, RunReport};
use toml::{Table, Value};

/// The default seed of a composed scenario (`Given the seed N` changes it).
const DEFAULT_SEED: u64 = 1;

/// One Gherkin scenario's lab: a scenario being composed, or a shipped one.
#[derive(cucumber::World, Default)]
pub struct Lab {
    /// The Gherkin scenario's title (the lab scenario's name).
    title: String,
    /// What the Then steps run.
    plan: Plan,
    /// The last run, and the number of timeline steps it played.
    run: Option<(usize, RunReport)>,
}

#[derive(Default)]
enum Plan {
    /// Nothing yet: a Given must say which lab.
    #[default]
    Nothing,
    /// A scenario composed step by step.
    Composed(Composed),
    /// A shipped scenario, as it is.
    Shipped(Box<Scenario>),
}

/// A scenario document under construction.
struct Composed {
    seed: u64,
    /// `[config]`: lab overrides.
    config: Table,
    /// `[[authenticator]]` and `[[totp_app]]`.
    authenticators: Vec<Value>,
    totp_apps: Vec<Value>,
    /// `[[step]]`, without expectations: Then steps judge the outcomes.
    steps: Vec<Value>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plan {
            Plan::Nothing => writeln!(f, "no lab")?,
            Plan::Composed(c) => writeln!(f, "{}", c.document(&self.title))?,
            Plan::Shipped(s) => writeln!(f, "shipped scenario {}", s.file)?,
        }
        if let Some((_, r)) = &self.run {
            writeln!(f, "{}", describe(r))?;
        }
        Ok(())
    }
}

impl Composed {
    fn new() -> Self {
        Composed {
            seed: DEFAULT_SEED,
            config: Table::new(),
            authenticators: Vec::new(),
            totp_apps: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// The scenario file, as TOML.
    fn document(&self, title: &str) -> String {
        let mut doc = Table::new();
        doc.insert("name".into(), Value::String(slug(title)));
        doc.insert("description".into(), Value::String(title.to_string()));
        doc.insert("lab".into(), Value::String("default".into()));
        doc.insert("seed".into(), Value::Integer(self.seed as i64));
        if !self.config.is_empty() {
            doc.insert("config".into(), Value::Table(self.config.clone()));
        }
        if !self.authenticators.is_empty() {
            doc.insert("authenticator".into(), Value::Array(self.authenticators.clone()));
        }
        if !self.totp_apps.is_empty() {
            doc.insert("totp_app".into(), Value::Array(self.totp_apps.clone()));
        }
        doc.insert("step".into(), Value::Array(self.steps.clone()));
        toml::to_string(&doc).expect("a TOML table serializes")
    }

    /// Sets `[config.<path>] key = value`.
    fn set(&mut self, path: &[&str], key: &str, value: impl Into<Value>) {
        let mut table = &mut self.config;
        for part in path {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("a config section is a table");
        }
        table.insert(key.to_string(), value.into());
    }

    /// The gateway's applications as the overrides leave them (the default
    /// lab's until a step changes one).
    fn apps_mut(&mut self) -> &mut Vec<Value> {
        if !self.config.get("gateway").and_then(|g| g.get("apps")).is_some_and(Value::is_array) {
            let lab: Table = DEFAULT_LAB.parse().expect("the default lab is TOML");
            let apps = lab["gateway"]["apps"].clone();
            self.set(&["gateway"], "apps", apps);
        }
        self.config["gateway"]["apps"].as_array_mut().expect("apps is an array")
    }

    fn app_mut(&mut self, name: &str) -> &mut Table {
        let apps = self.apps_mut();
        let known: Vec<String> = apps.iter().filter_map(|a| a.get("name")?.as_str().map(str::to_string)).collect();
        apps.iter_mut()
            .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
            .and_then(Value::as_table_mut)
            .unwrap_or_else(|| panic!("the default lab has no application `{name}` (it has {known:?})"))
    }

    fn step(&mut self, action: &str, fields: &[(&str, Value)]) {
        let mut step = Table::new();
        step.insert("do".into(), Value::String(action.into()));
        for (k, v) in fields {
            step.insert((*k).into(), v.clone());
        }
        self.steps.push(Value::Table(step));
    }
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "feature".into() } else { out }
}

/// A run in words, for failure messages.
fn describe(r: &RunReport) -> String {
    let mut out = format!("run of {} (seed {}):\n", r.scenario, r.seed);
    for st in &r.steps {
        out.push_str(&format!("  step {}: {} -> {}\n", st.index, st.action, st.outcome));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("  lab error: {e}\n"));
    }
    if r.violations.is_empty() {
        out.push_str("  no violation\n");
    }
    for v in &r.violations {
        out.push_str(&format!("  {v}\n"));
    }
    for f in &r.findings {
        out.push_str(&format!("  finding: {f}\n"));
    }
    out
}

impl Lab {
    fn composed(&mut self) -> &mut Composed {
        match &mut self.plan {
            Plan::Composed(c) => c,
            Plan::Nothing => panic!("no lab yet: start with `Given the default lab`"),
            Plan::Shipped(s) => panic!("{} is a shipped scenario: its steps cannot be changed", s.file),
        }
    }

    /// Runs the timeline written so far (once per timeline) and returns the report.
    async fn report(&mut self) -> &RunReport {
        let (scenario, len) = match &self.plan {
            Plan::Nothing => panic!("no lab to run: start with `Given the default lab`"),
            Plan::Composed(c) => {
                let text = c.document(&self.title);
                let source = Source::new(format!("{}.toml", slug(&self.title)), text.clone());
                let scenario =
                    Scenario::parse(&source, None).unwrap_or_else(|e| panic!("the composed scenario: {e}\n{text}"));
                (scenario, c.steps.len())
            }
            Plan::Shipped(s) => ((**s).clone(), s.steps.len()),
        };
        if self.run.as_ref().is_none_or(|(n, _)| *n != len) {
            // turmoil blocks and builds its own runtimes: never inside
            // cucumber's executor.
            let report = tokio::task::spawn_blocking(move || world::run(&scenario, scenario.seed))
                .await
                .unwrap_or_else(|e| panic!("the lab panicked: {e}"));
            if let Some(e) = &report.error {
                panic!("lab error: {e}\n{}", describe(&report));
            }
            self.run = Some((len, report));
        }
        &self.run.as_ref().expect("just run").1
    }

    /// The outcome of the last step of the timeline.
    async fn last_outcome(&mut self) -> (String, String) {
        let r = self.report().await;
        let last = r.steps.last().unwrap_or_else(|| panic!("the timeline has no step\n{}", describe(r)));
        (last.outcome.clone(), describe(r))
    }

    async fn assert_last(&mut self, accepted: &[&str]) {
        let (outcome, run) = self.last_outcome().await;
        assert!(
            accepted.contains(&outcome.as_str()),
            "expected the last step to end {}, it ended `{outcome}`\n{run}",
            accepted.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" or ")
        );
    }
}

// ---------------------------------------------------------------- Given

#[given("the default lab")]
fn default_lab(lab: &mut Lab) {
    lab.plan = Plan::Composed(Composed::new());
    lab.run = None;
}

#[given(expr = "the seed {int}")]
fn given_seed(lab: &mut Lab, seed: u64) {
    lab.composed().seed = seed;
}

#[given(expr = "the shipped scenario {string}")]
fn shipped(lab: &mut Lab, name: String) {
    let scenario = Scenario::load(&format!("{EMBEDDED_PREFIX}{name}")).unwrap_or_else(|e| panic!("{e}"));
    lab.plan = Plan::Shipped(Box::new(scenario));
    lab.run = None;
}

#[given(regex = r"^device sessions last (\d+) (second|minute|hour)s?$")]
fn session_duration(lab: &mut Lab, n: u64, unit: String) {
    let d = format!("{n}{}", &unit[..1]);
    lab.composed().set(&["gateway"], "session_duration", s(&d));
}

#[given("an agent that forgets to re-lock at expiry (a known-bad build)")]
fn danger_forget_relock(lab: &mut Lab) {
    lab.composed().set(&["agent"], "danger_forget_relock", true);
}

#[given("an agent that keeps its lockdown in a dynamic BFE session (a known-bad design)")]
fn dynamic_filters(lab: &mut Lab) {
    lab.composed().set(&["agent"], "filter_lifetime", s("dynamic"));
}

#[given("a gateway that forwards without the edge MFA check (a known-bad build)")]
fn danger_skip_mfa(lab: &mut Lab) {
    lab.composed().set(&["gateway"], "danger_skip_mfa", true);
}

#[given("an MFA service that accepts a TOTP code twice (a known-bad build)")]
fn danger_totp_reuse(lab: &mut Lab) {
    lab.composed().set(&["mfa"], "danger_allow_totp_reuse", true);
}

#[given("the identity provider is compromised and vouches for anyone")]
fn compromised_idp(lab: &mut Lab) {
    lab.composed().set(&["idp"], "danger_compromised", true);
}

/// `totp, security_key` -> a TOML array.
fn kinds(list: &str) -> Value {
    Value::Array(list.split(',').map(|k| s(k.trim())).collect())
}

#[given(
    regex = r"^the organization requires a second factor for every application \(allowed: ([a-z_, ]+); MFA session: (\w+)\)$"
)]
fn org_requires_mfa(lab: &mut Lab, allowed: String, session: String) {
    let c = lab.composed();
    c.set(&["mfa", "organization"], "mfa_required_for_all_apps", true);
    c.set(&["mfa", "organization"], "allowed_authenticators", kinds(&allowed));
    c.set(&["mfa", "organization"], "session_duration", s(&session));
}

#[given(
    regex = r#"^the "([\w-]+)" application requires a second factor \(allowed: ([a-z_, ]+); MFA session: (\w+)\)$"#
)]
fn app_requires_mfa(lab: &mut Lab, app: String, allowed: String, session: String) {
    let mut mfa = Table::new();
    mfa.insert("mode".into(), s("custom"));
    mfa.insert("allowed_authenticators".into(), kinds(&allowed));
    mfa.insert("session_duration".into(), s(&session));
    lab.composed().app_mut(&app).insert("mfa".into(), Value::Table(mfa));
}

#[given(regex = r#"^the "([\w-]+)" application does not ask for a second factor$"#)]
fn app_without_mfa(lab: &mut Lab, app: String) {
    let mut mfa = Table::new();
    mfa.insert("mode".into(), s("disabled"));
    lab.composed().app_mut(&app).insert("mfa".into(), Value::Table(mfa));
}

#[given(regex = r#"^(?:\w+) owns a security key "([\w-]+)"$"#)]
fn security_key(lab: &mut Lab, name: String) {
    add_authenticator(lab, &name, "security_key");
}

#[given(regex = r#"^(?:\w+)'s laptop has a platform authenticator with biometrics "([\w-]+)"$"#)]
fn platform_authenticator(lab: &mut Lab, name: String) {
    add_authenticator(lab, &name, "platform");
}

/// An `[[authenticator]]` of `kind` named `name`, with default knobs.
fn add_authenticator(lab: &mut Lab, name: &str, kind: &str) {
    let mut a = Table::new();
    a.insert("name".into(), s(name));
    a.insert("kind".into(), s(kind));
    lab.composed().authenticators.push(Value::Table(a));
}

#[given(regex = r#"^(?:\w+) has an authenticator app "([\w-]+)"$"#)]
fn totp_app(lab: &mut Lab, name: String) {
    let mut a = Table::new();
    a.insert("name".into(), s(&name));
    lab.composed().totp_apps.push(Value::Table(a));
}

#[given(regex = r"^(\w+) has signed in on the device$")]
fn signed_in(lab: &mut Lab, user: String) {
    let c = lab.composed();
    c.step("boot", &[]);
    c.step("sign_in", &[("user", s(&user))]);
}

// ----------------------------------------------------------------- When

#[when("the device boots")]
fn boot(lab: &mut Lab) {
    lab.composed().step("boot", &[]);
}

#[when(regex = r"^(alice|bob) signs in$")]
fn sign_in(lab: &mut Lab, user: String) {
    lab.composed().step("sign_in", &[("user", s(&user))]);
}

#[when(regex = r#"^the ([\w-]+) program fetches "([^"]+)"$"#)]
fn fetch(lab: &mut Lab, process: String, url: String) {
    lab.composed().step("request", &[("process", s(&process)), ("url", s(&url))]);
}

#[when(regex = r#"^a script in the browser fetches "([^"]+)"$"#)]
fn fetch_xhr(lab: &mut Lab, url: String) {
    lab.composed().step("request", &[("process", s("browser")), ("url", s(&url)), ("xhr", Value::Boolean(true))]);
}

#[when(regex = r#"^(\w+) opens "([^"]+)" in the browser(?:, answering MFA with "([\w-]+)")?$"#)]
fn open_in_browser(lab: &mut Lab, user: String, url: String, factor: String) {
    let mut fields = vec![("process", s("browser")), ("url", s(&url)), ("login_as", s(&user))];
    if !factor.is_empty() {
        fields.push(("factor", s(&factor)));
    }
    lab.composed().step("request", &fields);
}

#[when(
    regex = r#"^(\w+) enrols (?:the security key|the TOTP app|the platform authenticator) "([\w-]+)" as (security_key|totp|biometrics)$"#
)]
fn enroll(lab: &mut Lab, user: String, factor: String, kind: String) {
    lab.composed().step(
        "enroll",
        &[("process", s("browser")), ("kind", s(&kind)), ("factor", s(&factor)), ("login_as", s(&user))],
    );
}

#[when(regex = r#"^the user starts the program "([\w-]+)"$"#)]
fn start(lab: &mut Lab, process: String) {
    lab.composed().step("start", &[("process", s(&process))]);
}

#[when(regex = r#"^([\w-]+) opens a long-lived connection "([\w-]+)" to "([^"]+)"$"#)]
fn stream_open(lab: &mut Lab, process: String, stream: String, to: String) {
    lab.composed().step("stream_open", &[("process", s(&process)), ("to", s(&to)), ("stream", s(&stream))]);
}

#[when(regex = r#"^([\w-]+) sends a line on the connection "([\w-]+)"$"#)]
fn stream_send(lab: &mut Lab, process: String, stream: String) {
    lab.composed().step("stream_send", &[("process", s(&process)), ("stream", s(&stream))]);
}

#[when(regex = r"^(\d+) (second|minute)s? pass$")]
fn advance(lab: &mut Lab, n: u64, unit: String) {
    let by = format!("{n}{}", &unit[..1]);
    lab.composed().step("advance", &[("by", s(&by))]);
}

#[when(regex = r"^the administrator revokes (\w+)'s sessions$")]
fn revoke(lab: &mut Lab, user: String) {
    lab.composed().step("revoke", &[("user", s(&user))]);
}

#[when("the agent is asked for its state")]
fn check_agent(lab: &mut Lab) {
    lab.composed().step("check_agent", &[]);
}

#[when("the agent is killed")]
fn kill_agent(lab: &mut Lab) {
    lab.composed().step("kill", &[("process", s("lockstep-agent"))]);
}

#[when(regex = r"^BFE (stops|starts)$")]
fn bfe(lab: &mut Lab, what: String) {
    let action = if what == "stops" { "stop_bfe" } else { "start_bfe" };
    lab.composed().step(action, &[]);
}

#[when(regex = r"^the device's network changes$")]
fn network_change(lab: &mut Lab) {
    lab.composed().step("network_change", &[]);
}

#[when(regex = r"^the device (sleeps|resumes)$")]
fn sleep_or_resume(lab: &mut Lab, what: String) {
    let action = if what == "sleeps" { "sleep" } else { "resume" };
    lab.composed().step(action, &[]);
}

#[when("the agent is upgraded")]
fn upgrade(lab: &mut Lab) {
    lab.composed().step("upgrade_agent", &[]);
}

#[when(regex = r#"^the attacker replays the browser's cookies against "([^"]+)"$"#)]
fn replay_cookies(lab: &mut Lab, url: String) {
    lab.composed().step(
        "request",
        &[("from", s("attacker")), ("url", s(&url)), ("cookies_from", s("browser")), ("follow", Value::Boolean(true))],
    );
}

#[when(regex = r#"^the attacker opens "([^"]+)" signing in as (\w+) with the password "([^"]*)"$"#)]
fn attacker_login(lab: &mut Lab, url: String, user: String, password: String) {
    lab.composed().step(
        "request",
        &[("from", s("attacker")), ("url", s(&url)), ("login_as", s(&user)), ("password", s(&password))],
    );
}

#[when(regex = r#"^the attacker, with (\w+)'s phished password, opens "([^"]+)", answering MFA with "([\w-]+)"$"#)]
fn attacker_with_factor(lab: &mut Lab, user: String, url: String, factor: String) {
    lab.composed()
        .step("request", &[("from", s("attacker")), ("url", s(&url)), ("login_as", s(&user)), ("factor", s(&factor))]);
}

#[when(
    regex = r#"^the attacker, with (\w+)'s phished password, opens "([^"]+)" typing the code "([\w-]+)" showed last$"#
)]
fn attacker_replays_code(lab: &mut Lab, user: String, url: String, app: String) {
    lab.composed().step(
        "request",
        &[
            ("from", s("attacker")),
            ("url", s(&url)),
            ("login_as", s(&user)),
            ("factor", s(&app)),
            ("replay_last_code", Value::Boolean(true)),
        ],
    );
}

#[when(regex = r#"^the attacker clones "([\w-]+)" into "([\w-]+)"$"#)]
fn clone_key(lab: &mut Lab, from: String, to: String) {
    lab.composed().step("clone_authenticator", &[("authenticator", s(&from)), ("to", s(&to))]);
}

#[when("it is run")]
async fn it_is_run(lab: &mut Lab) {
    lab.report().await;
}

// ----------------------------------------------------------------- Then

#[then("the device firewall blocks it")]
async fn blocked(lab: &mut Lab) {
    lab.assert_last(&["blocked"]).await;
}

#[then("the connection is cut")]
async fn cut(lab: &mut Lab) {
    lab.assert_last(&["cut"]).await;
}

#[then("nothing gets through")]
async fn nothing_gets_through(lab: &mut Lab) {
    // A new connection is blocked; a kept-alive one is cut at its next packet.
    lab.assert_last(&["blocked", "cut"]).await;
}

#[then("it succeeds")]
async fn succeeds(lab: &mut Lab) {
    lab.assert_last(&["ok"]).await;
}

#[then(regex = r"^it gets HTTP (\d{3})$")]
async fn http_status(lab: &mut Lab, status: u16) {
    lab.assert_last(&[&format!("http {status}")]).await;
}

#[then(regex = r"^the agent is (locked|authenticating|connected)$")]
async fn agent_state(lab: &mut Lab, state: String) {
    lab.assert_last(&[&format!("agent {state}")]).await;
}

#[then(regex = r"^(\d+) sessions? (?:is|are) revoked$")]
async fn revoked(lab: &mut Lab, n: usize) {
    lab.assert_last(&[&format!("revoked {n}")]).await;
}

#[then("every step meets its expectation")]
async fn every_step_meets_its_expectation(lab: &mut Lab) {
    let r = lab.report().await;
    assert!(r.steps.iter().all(|st| st.expected.is_some()), "a step without an expectation\n{}", describe(r));
    let failed: Vec<_> = r.steps.iter().filter(|st| !st.ok).collect();
    assert!(failed.is_empty(), "{} step(s) missed their expectation\n{}", failed.len(), describe(r));
}

#[then("the oracle finds no violation")]
async fn no_violation(lab: &mut Lab) {
    let r = lab.report().await;
    assert!(r.violations.is_empty(), "the oracle found violations\n{}", describe(r));
}

#[then(regex = r#"^the oracle reports a violation of (E\d)(?: naming "([^"]+)")?$"#)]
async fn violation(lab: &mut Lab, invariant: String, naming: String) {
    let r = lab.report().await;
    let found = r.violations.iter().any(|v| v.invariant == invariant && v.message.contains(&naming));
    let what = if naming.is_empty() { String::new() } else { format!(" naming `{naming}`") };
    assert!(found, "no violation of {invariant}{what}\n{}", describe(r));
}

#[then(regex = r"^the oracle reports violations of exactly (E\d(?:(?:, | and )E\d)*)$")]
async fn exactly(lab: &mut Lab, list: String) {
    let mut want: Vec<String> = list.replace(" and ", ", ").split(", ").map(str::to_string).collect();
    want.sort();
    let r = lab.report().await;
    let mut got: Vec<String> = r.violations.iter().map(|v| v.invariant.clone()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, want, "\n{}", describe(r));
}

#[then(regex = r#"^a finding reports "([^"]+)"$"#)]
async fn finding(lab: &mut Lab, text: String) {
    let r = lab.report().await;
    assert!(r.findings.iter().any(|f| f.contains(&text)), "no finding mentions `{text}`\n{}", describe(r));
}

#[then("there is no finding")]
async fn no_finding(lab: &mut Lab) {
    let r = lab.report().await;
    assert!(r.findings.is_empty(), "findings were reported\n{}", describe(r));
}

#[then("the run passes as the scenario declares")]
async fn passes(lab: &mut Lab) {
    let r = lab.report().await;
    assert!(r.passed(), "{:#?}\n{}", r.failures(), describe(r));
}

// ----------------------------------------------------------------- main

/// What `cargo test` may pass to every test binary: a name filter (as
/// libtest: scenarios whose name contains it) and libtest flags, accepted
/// and ignored, so that `cargo test --release --workspace NAME` still runs.
#[derive(cli::Args)]
struct Libtest {
    /// Runs only the scenarios whose name contains this text.
    #[arg(value_name = "FILTER")]
    filter: Option<String>,
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    show_output: bool,
    #[arg(long, hide = true)]
    exact: bool,
    #[arg(long, hide = true, value_name = "N")]
    test_threads: Option<usize>,
}

/// The scenario filter of a libtest-style `FILTER` argument.
fn by_name(
    filter: Option<String>,
) -> impl Fn(&gherkin::Feature, Option<&gherkin::Rule>, &gherkin::Scenario) -> bool + 'static {
    move |_, _, scenario| filter.as_deref().is_none_or(|f| scenario.name.contains(f))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/features");
    // Two lab runs at a time (each on a blocking thread): the machines this
    // runs on have two cores.
    let cucumber = Lab::cucumber().max_concurrent_scenarios(2).before(|_, _, scenario, lab| {
        lab.title = scenario.name.clone();
        Box::pin(async {})
    });
    // A step no definition matches fails (it would otherwise be skipped).
    match std::env::var_os("LOCKSTEP_FEATURES_JUNIT") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            }
            let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let cucumber = cucumber
                .with_writer(
                    writer::Basic::raw(io::stdout(), writer::Coloring::Auto, 0)
                        .summarized()
                        .tee::<Lab, _>(writer::JUnit::for_tee(file, 0))
                        .normalized(),
                )
                .fail_on_skipped();
            let opts = cli::Opts::<_, _, _, Libtest>::parsed();
            let filter = by_name(opts.custom.filter.clone());
            cucumber.with_cli(opts).filter_run_and_exit(features, filter).await;
        }
        None => {
            let cucumber = cucumber.fail_on_skipped();
            let opts = cli::Opts::<_, _, _, Libtest>::parsed();
            let filter = by_name(opts.custom.filter.clone());
            cucumber.with_cli(opts).filter_run_and_exit(features, filter).await;
        }
    }
}
