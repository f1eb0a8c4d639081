//! Backends, the step executor, the unsupported lists and the suite runner.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::case::{Case, ErrorKind, Expect, Op, PacketOutcome, Traffic, Verdict};
use super::parse::load_case;
use crate::input::{InputError, Source, line_col};

/// What a backend observed for one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Observation {
    /// A management operation succeeded.
    Done,
    /// A management operation failed.
    Failed {
        /// Its kind, in the suite's vocabulary.
        kind: ErrorKind,
        /// The backend's own message.
        message: String,
        /// For [`ErrorKind::TransactionLocked`]: the caller's lock wait.
        waited_ms: Option<u32>,
    },
    /// New traffic was classified.
    Verdict {
        /// The verdict.
        verdict: Verdict,
        /// The filter that decided; `None`: no filter matched (or the stack dropped it).
        decided_by: Option<String>,
    },
    /// A packet on a flow.
    Packet {
        /// Its fate.
        outcome: PacketOutcome,
        /// The filter that decided a reauthorization.
        decided_by: Option<String>,
    },
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = |d: &Option<String>| match d {
            Some(name) => format!("decided by `{name}`"),
            None => "no filter matched".to_string(),
        };
        match self {
            Observation::Done => f.write_str("success"),
            Observation::Failed { kind, message, .. } => write!(f, "error {} ({message})", kind.as_str()),
            Observation::Verdict { verdict: Verdict::Dropped, .. } => f.write_str("dropped by the stack"),
            Observation::Verdict { verdict, decided_by } => write!(f, "{verdict:?} ({})", by(decided_by)),
            Observation::Packet { outcome: o @ (PacketOutcome::Pass | PacketOutcome::Closed), .. } => {
                write!(f, "{o:?}")
            }
            Observation::Packet { outcome, decided_by } => write!(f, "{outcome:?} ({})", by(decided_by)),
        }
    }
}

/// Why a backend could not run a case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// The backend cannot express something the case needs.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The backend failed in a way that is not an observation.
    #[error("backend failure: {0}")]
    Backend(String),
}

/// The first step whose observation differs from the case's expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// 1-based step index.
    pub step: usize,
    /// Line of the step in the case file.
    pub line: usize,
    /// The step, rendered.
    pub op: String,
    /// The watch that failed, if a watch probe (run after the step) failed.
    pub watch: Option<String>,
    /// Expected versus observed.
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({}): ", self.step, self.op)?;
        if let Some(w) = &self.watch {
            write!(f, "watch `{w}` after it: ")?;
        }
        f.write_str(&self.message)
    }
}

/// How one case ran on one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    /// Steps performed.
    pub steps: usize,
    /// Watch probes performed.
    pub probes: usize,
    /// The first mismatch; `None`: the case passed.
    pub mismatch: Option<Mismatch>,
}

impl CaseReport {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// A firewall implementation the suite can run against.
///
/// A backend implements [`Backend::start`] and [`Backend::perform`]; the provided
/// [`Backend::run`] drives the steps, runs the watch probes and compares every observation
/// with the case's expectations ([`execute`]), so every backend is judged the same way.
pub trait Backend {
    /// Short name (used in reports and for the unsupported-list file name).
    fn name(&self) -> &str;

    /// Starts a fresh device for `case`: no policy, no sessions, no flows. Returns
    /// [`CaseError::Unsupported`] if the backend cannot express the case at all.
    fn start(&mut self, case: &Case) -> Result<(), CaseError>;

    /// Performs one operation and reports what happened. A watch probe arrives as an
    /// [`Op::NewFlow`] without a flow name: classify, keep nothing.
    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError>;

    /// Runs the whole case.
    fn run(&mut self, case: &Case) -> Result<CaseReport, CaseError> {
        execute(self, case)
    }
}

/// Runs `case` on `backend`: each step, then every active watch; stops at the first
/// mismatch.
pub fn execute<B: Backend + ?Sized>(backend: &mut B, case: &Case) -> Result<CaseReport, CaseError> {
    backend.start(case)?;
    let mut report = CaseReport::default();
    let mut watches: Vec<(String, Traffic, Verdict)> = Vec::new();
    for step in &case.steps {
        let mismatch = |watch: Option<&str>, message: String| Mismatch {
            step: step.index,
            line: step.line,
            op: step.op.to_string(),
            watch: watch.map(str::to_string),
            message,
        };
        match &step.op {
            Op::Watch { name, traffic, verdict } => watches.push((name.clone(), traffic.clone(), *verdict)),
            Op::Unwatch { name } => watches.retain(|w| &w.0 != name),
            op => {
                let observed = backend.perform(case, op)?;
                report.steps += 1;
                if let Err(message) = check(&step.expect, &observed) {
                    report.mismatch = Some(mismatch(None, message));
                    return Ok(report);
                }
            }
        }
        for (name, traffic, verdict) in &watches {
            let probe = Op::NewFlow { flow: None, traffic: traffic.clone() };
            let observed = backend.perform(case, &probe)?;
            report.probes += 1;
            let expect = Expect::Verdict { verdict: *verdict, decided_by: None, no_match: false };
            if let Err(message) = check(&expect, &observed) {
                report.mismatch = Some(mismatch(Some(name), format!("{traffic}: {message}")));
                return Ok(report);
            }
        }
    }
    Ok(report)
}

/// Compares one observation with one expectation; `Err` says how they differ.
pub fn check(expect: &Expect, observed: &Observation) -> Result<(), String> {
    let differ = |what: String| Err(format!("expected {what}, got {observed}"));
    match (expect, observed) {
        (Expect::Nothing, _) | (Expect::Success, Observation::Done) => Ok(()),
        (Expect::Success, _) => differ("success".into()),
        (Expect::Error { kind, waited_ms }, Observation::Failed { kind: k, waited_ms: w, .. }) => {
            if kind != k {
                return differ(format!("error {}", kind.as_str()));
            }
            match (waited_ms, w) {
                (Some(want), got) if Some(*want) != *got => {
                    Err(format!("expected a lock wait of {want} ms, the caller had {got:?} ms"))
                }
                _ => Ok(()),
            }
        }
        (Expect::Error { kind, .. }, _) => differ(format!("error {}", kind.as_str())),
        (Expect::Verdict { verdict, decided_by, no_match }, Observation::Verdict { verdict: v, decided_by: d }) => {
            if verdict != v {
                return differ(format!("{verdict:?}"));
            }
            if *no_match && d.is_some() {
                return differ("the default permit (no filter matching)".into());
            }
            match decided_by {
                Some(want) if d.as_deref() != Some(want.as_str()) => differ(format!("{verdict:?} decided by `{want}`")),
                _ => Ok(()),
            }
        }
        (Expect::Verdict { verdict, .. }, _) => differ(format!("a verdict ({verdict:?})")),
        (Expect::Packet { outcome, decided_by }, Observation::Packet { outcome: o, decided_by: d }) => {
            if outcome != o {
                return differ(format!("{outcome:?}"));
            }
            match decided_by {
                Some(want) if d.as_deref() != Some(want.as_str()) => differ(format!("{outcome:?} decided by `{want}`")),
                _ => Ok(()),
            }
        }
        (Expect::Packet { outcome, .. }, _) => differ(format!("a packet outcome ({outcome:?})")),
    }
}

/// One entry of a backend's unsupported list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnsupportedEntry {
    /// Case id.
    pub id: String,
    /// Why the backend cannot run it.
    pub reason: String,
    /// Line of the entry.
    pub line: usize,
}

/// The cases a backend declares it cannot run, each with a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnsupportedList {
    /// The file it was read from.
    pub file: String,
    /// Entries in file order.
    pub entries: Vec<UnsupportedEntry>,
}

impl UnsupportedList {
    /// The entry for `id`.
    pub fn get(&self, id: &str) -> Option<&UnsupportedEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    #[serde(default)]
    unsupported: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: Spanned<String>,
    reason: Spanned<String>,
}

/// Parses an unsupported list (`[[unsupported]] id = "...", reason = "..."`). Every entry
/// needs a non-empty reason; an id may be listed once.
pub fn parse_unsupported(file: &str, text: &str) -> Result<UnsupportedList, InputError> {
    let source = Source::new(file, text);
    let raw: RawList = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    let mut list = UnsupportedList { file: file.to_string(), entries: Vec::new() };
    for e in raw.unsupported {
        let line = line_col(text, e.span().start).0;
        let e = e.into_inner();
        if e.reason.get_ref().trim().is_empty() {
            let msg = format!("`{}` needs a reason: say why the backend cannot run it", e.id.get_ref());
            return Err(source.error(Some(e.reason.span()), msg));
        }
        if list.get(e.id.get_ref()).is_some() {
            return Err(source.error(Some(e.id.span()), format!("`{}` is listed twice", e.id.get_ref())));
        }
        list.entries.push(UnsupportedEntry { id: e.id.into_inner(), reason: e.reason.into_inner(), line });
    }
    Ok(list)
}

/// Reads an unsupported list; errors name the path as given.
pub fn load_unsupported(path: &Path) -> Result<UnsupportedList, InputError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Source::new(name.clone(), "").error(None, e.to_string()))?;
    parse_unsupported(&name, &text)
}

/// Errors loading the case folder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SuiteError {
    /// A case file does not parse or check.
    #[error("{0}")]
    Input(#[from] InputError),
    /// The folder cannot be read, or holds no case.
    #[error("{dir}: {message}")]
    Folder {
        /// The folder.
        dir: String,
        /// What is wrong.
        message: String,
    },
    /// A case file is not named `NN-slug.toml` with `NN` the case's number.
    #[error("{file}: {message}")]
    FileName {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Two files use one id.
    #[error("case id `{id}` is used by both {first} and {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
}

/// Loads every `*.toml` case in `dir`, in file-name order.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, SuiteError> {
    let folder = |message: String| SuiteError::Folder { dir: dir.display().to_string(), message };
    let entries = std::fs::read_dir(dir).map_err(|e| folder(e.to_string()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| folder(e.to_string()))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(folder("no case files (*.toml)".into()));
    }
    let mut cases: Vec<Case> = Vec::new();
    for path in paths {
        let case = load_case(&path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let prefix: String = stem.chars().take_while(char::is_ascii_digit).collect();
        if prefix.parse::<u32>().ok() != Some(case.number) || !stem[prefix.len()..].starts_with('-') {
            let message = format!("name the file `{:02}-<slug>.toml` after case `{}`", case.number, case.id);
            return Err(SuiteError::FileName { file: case.file, message });
        }
        if let Some(first) = cases.iter().find(|c| c.id == case.id) {
            return Err(SuiteError::DuplicateId { id: case.id, first: first.file.clone(), second: case.file });
        }
        cases.push(case);
    }
    Ok(cases)
}

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CaseOutcome {
    /// Not listed, ran, every expectation held.
    Pass,
    /// Not listed, and a step's observation differed.
    Fail(Mismatch),
    /// Not listed, but the backend said it cannot run it.
    NotListed {
        /// The backend's reason.
        reason: String,
    },
    /// Not listed, and the backend failed.
    Error(String),
    /// Listed, and it indeed did not run or did not pass.
    Unsupported {
        /// The list's reason.
        reason: String,
        /// What happened when it was run anyway.
        observed: String,
    },
    /// Listed, but it ran and passed: the entry is stale.
    Stale {
        /// The list's reason.
        reason: String,
    },
}

impl CaseOutcome {
    /// Whether this outcome fails the suite.
    pub fn is_failure(&self) -> bool {
        !matches!(self, CaseOutcome::Pass | CaseOutcome::Unsupported { .. })
    }

    fn label(&self) -> &'static str {
        match self {
            CaseOutcome::Pass => "pass",
            CaseOutcome::Fail(_) => "FAIL",
            CaseOutcome::NotListed { .. } => "NOT LISTED",
            CaseOutcome::Error(_) => "ERROR",
            CaseOutcome::Unsupported { .. } => "unsupported",
            CaseOutcome::Stale { .. } => "STALE",
        }
    }
}

/// One case's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Case title.
    pub title: String,
    /// Case file.
    pub file: String,
    /// The verdict.
    pub outcome: CaseOutcome,
}

/// The whole suite on one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SuiteReport {
    /// Backend name.
    pub backend: String,
    /// The unsupported list's file.
    pub unsupported_file: String,
    /// One result per case, in case order.
    pub results: Vec<CaseResult>,
    /// Unsupported-list entries naming no case.
    pub unknown_entries: Vec<UnsupportedEntry>,
}

impl SuiteReport {
    /// Whether the suite passed: no failing case, no stale or unknown entry.
    pub fn passed(&self) -> bool {
        self.unknown_entries.is_empty() && !self.results.iter().any(|r| r.outcome.is_failure())
    }

    /// Results with this label count: `(passed, failed, unsupported, stale)`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |f: &dyn Fn(&CaseOutcome) -> bool| self.results.iter().filter(|r| f(&r.outcome)).count();
        (
            count(&|o| matches!(o, CaseOutcome::Pass)),
            count(&|o| matches!(o, CaseOutcome::Fail(_) | CaseOutcome::NotListed { .. } | CaseOutcome::Error(_))),
            count(&|o| matches!(o, CaseOutcome::Unsupported { .. })),
            count(&|o| matches!(o, CaseOutcome::Stale { .. })),
        )
    }

    /// The result for a case id.
    pub fn result(&self, id: &str) -> Option<&CaseResult> {
        self.results.iter().find(|r| r.id == id)
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance suite on backend `{}` ({} cases)", self.backend, self.results.len())?;
        for r in &self.results {
            write!(f, "  {:<11} {:<4} {}", r.outcome.label(), r.id, r.title)?;
            match &r.outcome {
                CaseOutcome::Pass => {}
                CaseOutcome::Fail(m) => write!(f, "\n              {}:{}: {m}", r.file, m.line)?,
                CaseOutcome::NotListed { reason } => write!(
                    f,
                    "\n              the backend cannot run it ({reason}) but {} does not list it",
                    self.unsupported_file
                )?,
                CaseOutcome::Error(e) => write!(f, "\n              {e}")?,
                CaseOutcome::Unsupported { reason, observed } => {
                    write!(f, "\n              listed: {reason}\n              observed: {observed}")?
                }
                CaseOutcome::Stale { reason } => write!(
                    f,
                    "\n              listed as unsupported ({reason}) but it passes: remove it from {}",
                    self.unsupported_file
                )?,
            }
            writeln!(f)?;
        }
        for e in &self.unknown_entries {
            writeln!(f, "  UNKNOWN     {}:{}: `{}` names no case", self.unsupported_file, e.line, e.id)?;
        }
        let (pass, fail, unsupported, stale) = self.counts();
        let verdict = if self.passed() { "OK" } else { "FAILED" };
        write!(
            f,
            "{pass} passed, {fail} failed, {unsupported} unsupported, {stale} stale entries, {} unknown entries: {verdict}",
            self.unknown_entries.len()
        )
    }
}

/// Runs every case on `backend`, judged against its unsupported list.
///
/// A case not listed must pass. A listed case is still run: if it passes, the entry is
/// stale and fails the suite. A listed id naming no case fails the suite too.
pub fn run_suite(backend: &mut dyn Backend, cases: &[Case], unsupported: &UnsupportedList) -> SuiteReport {
    let mut results = Vec::new();
    for case in cases {
        let listed = unsupported.get(&case.id);
        let run = backend.run(case);
        let outcome = match (listed, run) {
            (None, Ok(r)) => match r.mismatch {
                None => CaseOutcome::Pass,
                Some(m) => CaseOutcome::Fail(m),
            },
            (None, Err(CaseError::Unsupported(reason))) => CaseOutcome::NotListed { reason },
            (None, Err(e @ CaseError::Backend(_))) => CaseOutcome::Error(e.to_string()),
            (Some(entry), Ok(r)) => match r.mismatch {
                None => CaseOutcome::Stale { reason: entry.reason.clone() },
                Some(m) => CaseOutcome::Unsupported {
                    reason: entry.reason.clone(),
                    observed: format!("fails at line {}: {m}", m.line),
                },
            },
            (Some(entry), Err(e)) => CaseOutcome::Unsupported { reason: entry.reason.clone(), observed: e.to_string() },
        };
        results.push(CaseResult { id: case.id.clone(), title: case.title.clone(), file: case.file.clone(), outcome });
    }
    let unknown_entries = unsupported.entries.iter().filter(|e| !cases.iter().any(|c| c.id == e.id)).cloned().collect();
    SuiteReport {
        backend: backend.name().to_string(),
        unsupported_file: unsupported.file.clone(),
        results,
        unknown_entries,
    }
}
