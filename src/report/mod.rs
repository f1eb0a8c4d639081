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

use sha2::{Digest, Sha256};

use crate::oracle::Violation;
use crate::text::{self, visible};
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

/// The one-line command that replays a run, quoted for a POSIX shell
/// ([`text::shell_line`]): exact, so pass it through [`text::visible`]
/// before a person sees it.
pub fn replay_command(file: &str, seed: u64) -> String {
    text::shell_line(["lab", "replay", file, "--seed", &seed.to_string()])
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

/// The longest part of a trace file's name taken from its scenario's name
/// (in bytes; the whole name stays under 90, far below the 255 of common
/// file systems).
pub const MAX_TRACE_SLUG: usize = 64;

/// File names (without extension) for the runs' traces, unique within
/// `runs`: the scenario name as it is when it is a safe file name (ASCII
/// letters, digits, `-`, `_`, at most [`MAX_TRACE_SLUG`] bytes); otherwise
/// its safe characters, capped, then `-` and 8 hex digits of the SHA-256
/// of the whole name (`scenario-<hash>` for a name with none), so that
/// names differing only in what was replaced or cut still differ. The same
/// name twice in one run gets `-2`, `-3`...
pub fn trace_names(runs: &[RunReport]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    runs.iter()
        .map(|r| {
            let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            let slug: String = r.scenario.chars().map(|c| if safe(c) { c } else { '_' }).take(MAX_TRACE_SLUG).collect();
            let base = if slug == r.scenario && !slug.is_empty() {
                slug
            } else {
                let hash = hex::encode(&Sha256::digest(r.scenario.as_bytes())[..4]);
                let slug = slug.trim_matches('_');
                if slug.is_empty() { format!("scenario-{hash}") } else { format!("{slug}-{hash}") }
            };
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

/// Checks that files can be created in `dir` (creating it if need be), by
/// creating and removing a probe file: `lab run` and `lab explore` call it
/// before running anything.
pub fn check_writable(dir: &Path) -> Result<(), ReportError> {
    let fail = |path: &Path, e: std::io::Error| ReportError { path: path.to_path_buf(), message: e.to_string() };
    fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let probe = dir.join(format!(".lab-write-check-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| fail(dir, e))?;
    fs::remove_file(&probe).map_err(|e| fail(&probe, e))
}

/// Writes every report under `dir`: each trace, `results.json`,
/// `junit.xml`, `report.html` and `summary.md`. A file that cannot be
/// written does not stop the others: every failure is returned.
pub fn write_all(dir: &Path, runs: &[RunReport]) -> Result<(), Vec<ReportError>> {
    let mut errors = Vec::new();
    let traces = dir.join("traces");
    let names = trace_names(runs);
    match fs::create_dir_all(&traces) {
        Ok(()) => {
            for (run, name) in runs.iter().zip(&names) {
                errors.extend(write(&traces.join(format!("{name}.jsonl")), &run.trace.to_jsonl()).err());
            }
        }
        Err(e) => errors.push(ReportError { path: traces.clone(), message: e.to_string() }),
    }
    errors.extend(write(&dir.join("results.json"), &results_json(runs, &names)).err());
    match junit_xml(runs) {
        Ok(xml) => errors.extend(write(&dir.join("junit.xml"), &xml).err()),
        Err(e) => errors.push(ReportError { path: dir.join("junit.xml"), message: e.message }),
    }
    errors.extend(write(&dir.join(HTML_REPORT), &html::html(runs, &names)).err());
    errors.extend(write(&dir.join(MARKDOWN_SUMMARY), &markdown::summary(runs)).err());
    if errors.is_empty() { Ok(()) } else { Err(errors) }
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

/// The JUnit XML document: one test case per scenario. Every user string
/// passes through [`visible`]: XML 1.0 cannot carry most control
/// characters at all.
pub fn junit_xml(runs: &[RunReport]) -> Result<String, ReportError> {
    let mut suite = TestSuite::new("lab run");
    for r in runs {
        let status = if r.passed() {
            TestCaseStatus::success()
        } else {
            let kind = if r.error.is_some() { NonSuccessKind::Error } else { NonSuccessKind::Failure };
            let mut s = TestCaseStatus::non_success(kind);
            let failures: Vec<String> = r.failures().iter().map(|f| visible(f).into_owned()).collect();
            s.set_message(failures.first().cloned().unwrap_or_default());
            s.set_description(format!(
                "{}\nreplay: {}",
                failures.join("\n"),
                visible(&replay_command(&r.file, r.seed))
            ));
            s
        };
        let mut case = TestCase::new(visible(&r.scenario).into_owned(), status);
        case.set_classname(visible(&r.file).into_owned());
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
            out.push_str(&format!("\nfinding: {}", visible(f)));
        }
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let mut report = Report::new("lockstep");
    report.add_test_suite(suite);
    report.to_string().map_err(|e| ReportError { path: PathBuf::from("junit.xml"), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::tests::sample;

    /// Control and bidi characters, and a quote that would end shell
    /// quoting (no NUL: no file name can hold one).
    const NASTY: &str = "evil\u{1b}[2J\u{7}\r\u{202e}lmth.exe'$(touch PWNED)'";

    #[test]
    fn trace_names_are_short_safe_and_unique() {
        let long = "x".repeat(300);
        let names = ["boot-to-login", "", "   ", &long, &long, "a b", "a_b", "../../etc/passwd", NASTY, "日本語"];
        let runs: Vec<RunReport> = names.iter().map(|n| sample(n)).collect();
        let files = trace_names(&runs);
        // A safe name is kept as it is, so traces/boot-to-login.jsonl stays put.
        assert_eq!(files[0], "boot-to-login");
        let unique: BTreeSet<&String> = files.iter().collect();
        assert_eq!(unique.len(), files.len(), "{files:?}");
        for f in &files {
            assert!(!f.is_empty() && f.len() <= MAX_TRACE_SLUG + 16, "{f}");
            assert!(f.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{f}");
        }
        assert!(files[1].starts_with("scenario-") && files[2].starts_with("scenario-"), "{files:?}");
        assert!(files[3].starts_with(&"x".repeat(MAX_TRACE_SLUG)), "{files:?}");
        assert_eq!(files[4], format!("{}-2", files[3]), "the same name twice");
        assert_ne!(files[5], files[6], "`a b` and `a_b` differ");
        // The same name gives the same file whatever else runs with it.
        assert_eq!(trace_names(&runs[7..8]), files[7..8]);
    }

    #[test]
    fn a_file_that_cannot_be_written_does_not_lose_the_others() {
        let dir = tempfile::tempdir().unwrap();
        // junit.xml cannot be written: a folder has its name.
        std::fs::create_dir_all(dir.path().join("junit.xml")).unwrap();
        let runs = [sample("a"), sample(&"y".repeat(300))];
        let errors = write_all(dir.path(), &runs).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].path.ends_with("junit.xml"), "{errors:?}");
        for f in ["results.json", HTML_REPORT, MARKDOWN_SUMMARY, "traces/a.jsonl"] {
            assert!(dir.path().join(f).is_file(), "{f} written");
        }
        assert_eq!(std::fs::read_dir(dir.path().join("traces")).unwrap().count(), 2);
    }

    #[test]
    fn an_unwritable_folder_is_found_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = check_writable(&file.join("reports")).unwrap_err();
        assert!(err.to_string().contains("a-file"), "{err}");
        check_writable(&dir.path().join("new/reports")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("new/reports")).unwrap().count(), 0, "the probe is removed");
    }

    #[test]
    fn junit_shows_control_characters_escaped_and_the_replay_line_quoted() {
        let mut run = sample(NASTY);
        run.file = format!("x/{NASTY}.toml");
        run.findings = vec![NASTY.into()];
        let xml = junit_xml(&[run]).unwrap();
        for raw in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
            assert!(!xml.contains(raw), "{raw:?} in {xml}");
        }
        assert!(xml.contains(r"evil\u{1b}[2J\u{7}\u{d}\u{202e}lmth.exe"), "{xml}");
        // The replay line, XML-escaped: the quote in the name is quoted.
        let replay = visible(&replay_command(&format!("x/{NASTY}.toml"), 7))
            .replace('&', "&amp;")
            .replace('\'', "&apos;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(xml.contains(&format!("replay: {replay}")), "{replay} in {xml}");
    }

    #[test]
    fn results_json_keeps_names_exact_and_the_replay_line_runnable() {
        let mut run = sample(NASTY);
        run.file = format!("x/{NASTY}.toml");
        let json: serde_json::Value = serde_json::from_str(&results_json(&[run], &["t".into()])).unwrap();
        assert_eq!(json["scenarios"][0]["name"], NASTY);
        let replay = json["scenarios"][0]["replay"].as_str().unwrap();
        let words = shlex::split(replay).unwrap();
        assert_eq!(words, ["lab", "replay", &format!("x/{NASTY}.toml"), "--seed", "7"]);
    }
}
