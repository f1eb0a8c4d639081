//! Reports of a `lab run`: one JSONL trace per scenario, `results.json`,
//! `junit.xml`, the HTML timeline report (`report.html`, [`html`]) and the
//! Markdown summary for CI (`summary.md`, [`markdown`]).

pub mod html;
pub mod markdown;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::oracle::Violation;
use crate::world::{RunReport, StepReport};

/// A report file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct ReportError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// The HTML report's file name in the report folder.
pub const HTML_REPORT: &str = "report.html";
/// The Markdown summary's file name in the report folder.
pub const MARKDOWN_SUMMARY: &str = "summary.md";

/// The one-line command that replays a run.
pub fn replay_command(file: &str, seed: u64) -> String {
    let file = if file.contains(char::is_whitespace) { format!("'{file}'") } else { file.to_string() };
    format!("lab replay {file} --seed {seed}")
}

#[derive(Serialize)]
struct ScenarioResult<'a> {
    name: &'a str,
    file: &'a str,
    seed: u64,
    status: &'static str,
    sim_ms: u64,
    events: usize,
    trace: String,
    trace_digest: String,
    steps: &'a [StepReport],
    violations: &'a [Violation],
    expected_violations: &'a [String],
    findings: &'a [String],
    failures: Vec<String>,
    replay: String,
}

#[derive(Serialize)]
struct Results<'a> {
    tool: &'static str,
    version: &'static str,
    passed: usize,
    failed: usize,
    scenarios: Vec<ScenarioResult<'a>>,
}

/// Status of a run, as reported.
pub fn status(run: &RunReport) -> &'static str {
    if run.error.is_some() {
        "error"
    } else if run.passed() {
        "pass"
    } else {
        "fail"
    }
}

fn write(path: &Path, contents: &str) -> Result<(), ReportError> {
    fs::write(path, contents).map_err(|e| ReportError { path: path.to_path_buf(), message: e.to_string() })
}

/// File names (without extension) for the runs' traces: the scenario name
/// made file-safe, de-duplicated.
pub fn trace_names(runs: &[RunReport]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    runs.iter()
        .map(|r| {
            let base: String = r
                .scenario
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// Writes every report under `dir`: traces first, so that a failure to
/// write a summary never loses a trace.
pub fn write_all(dir: &Path, runs: &[RunReport]) -> Result<(), ReportError> {
    let traces = dir.join("traces");
    fs::create_dir_all(&traces).map_err(|e| ReportError { path: traces.clone(), message: e.to_string() })?;
    let names = trace_names(runs);
    for (run, name) in runs.iter().zip(&names) {
        write(&traces.join(format!("{name}.jsonl")), &run.trace.to_jsonl())?;
    }
    write(&dir.join("results.json"), &results_json(runs, &names))?;
    write(&dir.join("junit.xml"), &junit_xml(runs)?)?;
    write(&dir.join(HTML_REPORT), &html::html(runs, &names))?;
    write(&dir.join(MARKDOWN_SUMMARY), &markdown::summary(runs))?;
    Ok(())
}

/// The `results.json` document.
pub fn results_json(runs: &[RunReport], trace_names: &[String]) -> String {
    let scenarios: Vec<ScenarioResult<'_>> = runs
        .iter()
        .zip(trace_names)
        .map(|(r, name)| ScenarioResult {
            name: &r.scenario,
            file: &r.file,
            seed: r.seed,
            status: status(r),
            sim_ms: r.sim_ms,
            events: r.trace.events.len(),
            trace: format!("traces/{name}.jsonl"),
            trace_digest: r.trace.digest(),
            steps: &r.steps,
            violations: &r.violations,
            expected_violations: &r.expected_violations,
            findings: &r.findings,
            failures: r.failures(),
            replay: replay_command(&r.file, r.seed),
        })
        .collect();
    let passed = runs.iter().filter(|r| r.passed()).count();
    let results = Results {
        tool: "lockstep",
        version: env!("CARGO_PKG_VERSION"),
        passed,
        failed: runs.len() - passed,
        scenarios,
    };
    serde_json::to_string_pretty(&results).unwrap_or_default()
}

/// The JUnit XML document: one test case per scenario.
pub fn junit_xml(runs: &[RunReport]) -> Result<String, ReportError> {
    let mut suite = TestSuite::new("lab run");
    for r in runs {
        let status = if r.passed() {
            TestCaseStatus::success()
        } else {
            let kind = if r.error.is_some() { NonSuccessKind::Error } else { NonSuccessKind::Failure };
            let mut s = TestCaseStatus::non_success(kind);
            let failures = r.failures();
            s.set_message(failures.first().cloned().unwrap_or_default());
            s.set_description(format!("{}\nreplay: {}", failures.join("\n"), replay_command(&r.file, r.seed)));
            s
        };
        let mut case = TestCase::new(r.scenario.clone(), status);
        case.set_classname(r.file.clone());
        // Simulated time: deterministic, unlike wall time.
        case.set_time(Duration::from_millis(r.sim_ms));
        let mut out = format!(
            "seed {}; {} steps; {} events; trace digest {}",
            r.seed,
            r.steps.len(),
            r.trace.events.len(),
            r.trace.digest()
        );
        for f in &r.findings {
            out.push_str(&format!("\nfinding: {f}"));
        }
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let mut report = Report::new("lockstep");
    report.add_test_suite(suite);
    report.to_string().map_err(|e| ReportError { path: PathBuf::from("junit.xml"), message: e.to_string() })
}
