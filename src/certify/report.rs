//! A certification's reports: `certification.json` (everything, evidence
//! included), `junit.xml` (a suite per profile, a case per check),
//! `certification.md` (for CI step summaries) and `certification.html`
//! (one self-contained page: no script, no fetch).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::check::{CheckResult, Verdict};
use super::plan::Certification;
use crate::http::form::escape;

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CertReportError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Writes the four reports into `dir` (created if needed); returns their paths.
pub fn write_all(dir: &Path, cert: &Certification) -> Result<Vec<PathBuf>, CertReportError> {
    std::fs::create_dir_all(dir).map_err(|e| CertReportError { path: dir.to_path_buf(), message: e.to_string() })?;
    let json = serde_json::to_string_pretty(cert)
        .map_err(|e| CertReportError { path: dir.join("certification.json"), message: e.to_string() })?;
    let files = [
        ("certification.json", json),
        ("junit.xml", junit_xml(cert)?),
        ("certification.md", markdown(cert)),
        ("certification.html", html(cert)),
    ];
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| CertReportError { path: path.clone(), message: e.to_string() })?;
        written.push(path);
    }
    Ok(written)
}

fn symbol(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✅ pass",
        Verdict::Warning => "⚠️ warning",
        Verdict::Skipped => "➖ skipped",
        Verdict::NotRun => "⏸ not run",
        Verdict::Fail => "❌ fail",
    }
}

/// The JUnit document: one suite per profile, one case per check.
/// Failures of required checks are failures; skipped and not-run checks are
/// skipped; warnings pass with their detail on stdout.
pub fn junit_xml(cert: &Certification) -> Result<String, CertReportError> {
    let mut report = Report::new("lab certify idp");
    for summary in &cert.profiles {
        let mut suite = TestSuite::new(format!("certify {}", summary.profile.as_str()));
        for c in cert.checks.iter().filter(|c| c.profile == summary.profile) {
            let status = match c.verdict {
                Verdict::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.detail.clone());
                    s.set_description(format!("{}\nrequirement: {}\nwhy: {}", c.detail, c.requirement, c.rationale));
                    s
                }
                Verdict::Skipped | Verdict::NotRun => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.detail.clone());
                    s
                }
                Verdict::Pass | Verdict::Warning => TestCaseStatus::success(),
            };
            let mut case = TestCase::new(c.id.clone(), status);
            case.set_classname(format!("{}.{}", cert.issuer, summary.profile.as_str()));
            case.set_time(Duration::ZERO);
            case.set_system_out(format!("{}: {}", c.verdict.as_str(), c.detail));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| CertReportError { path: PathBuf::from("junit.xml"), message: e.to_string() })
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown summary: verdict per profile, then every check.
pub fn markdown(cert: &Certification) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# OpenID provider certification: {}\n", cert.issuer);
    let overall = if cert.passed() { "**CERTIFIED** for every selected profile" } else { "**NOT CERTIFIED**" };
    let _ = writeln!(
        out,
        "{overall}. Client `{}`, login driver `{}`, started {}, took {:.1} s.\n",
        cert.client_id,
        cert.driver,
        cert.started,
        cert.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(out, "| profile | verdict | pass | warning | fail | skipped/not run |\n|---|---|---|---|---|---|");
    for p in &cert.profiles {
        let _ = writeln!(
            out,
            "| {} | **{}** | {} | {} | {} | {} |",
            p.profile.title(),
            p.verdict.as_str(),
            p.passed,
            p.warnings,
            p.failed,
            p.skipped
        );
    }
    let findings: Vec<&CheckResult> =
        cert.checks.iter().filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Warning)).collect();
    if !findings.is_empty() {
        let _ = writeln!(out, "\n## Findings\n");
        for c in findings {
            let _ = writeln!(
                out,
                "- **{}** `{}` ({}): {}. *Why it matters:* {} *Requirement:* {}",
                c.verdict.as_str(),
                c.id,
                c.title,
                c.detail,
                c.rationale,
                c.requirement
            );
        }
    }
    let _ = writeln!(out, "\n## Checks\n\n| check | profile | required | verdict | detail |\n|---|---|---|---|---|");
    for c in &cert.checks {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            c.id,
            c.profile.title(),
            if c.required { "yes" } else { "advisory" },
            symbol(c.verdict),
            md_cell(&c.detail)
        );
    }
    out
}

/// The HTML report: one page, no script, no external resource.
pub fn html(cert: &Certification) -> String {
    let mut out = String::new();
    let title = format!("OpenID provider certification: {}", cert.issuer);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}\
         table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}}\
         .pass{{background:#e6f4ea}}.fail{{background:#fce8e6}}.warning{{background:#fef7e0}}.skipped,.not-run,.incomplete{{background:#f1f3f4}}\
         details pre{{white-space:pre-wrap;font-size:.8rem;background:#f8f8f8;padding:.5rem}}</style></head><body>",
        escape(&title)
    );
    let _ = write!(out, "<h1>{}</h1>", escape(&title));
    let overall = if cert.passed() { "CERTIFIED for every selected profile" } else { "NOT CERTIFIED" };
    let _ = write!(
        out,
        "<p id=\"overall\" class=\"{}\"><strong>{overall}</strong>. Client <code>{}</code>, login driver <code>{}</code>, \
         started {}, took {:.1} s.</p>",
        if cert.passed() { "pass" } else { "fail" },
        escape(&cert.client_id),
        escape(&cert.driver),
        escape(&cert.started),
        cert.duration_ms as f64 / 1000.0
    );
    out.push_str("<table id=\"profiles\"><tr><th>profile</th><th>verdict</th><th>pass</th><th>warning</th><th>fail</th><th>skipped / not run</th></tr>");
    for p in &cert.profiles {
        let _ = write!(
            out,
            "<tr class=\"{v}\"><td>{}</td><td>{v}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.profile.title(),
            p.passed,
            p.warnings,
            p.failed,
            p.skipped,
            v = p.verdict.as_str()
        );
    }
    out.push_str("</table><h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th>profile</th><th>required</th><th>verdict</th><th>detail and evidence</th></tr>");
    for c in &cert.checks {
        let _ = write!(
            out,
            "<tr class=\"{v}\" id=\"{id}\"><td><code>{id}</code><br>{}</td><td>{}</td><td>{}</td><td>{v}</td><td>{}<br><small>Requirement: {}. Why: {}</small>",
            escape(&c.title),
            c.profile.title(),
            if c.required { "yes" } else { "advisory" },
            escape(&c.detail),
            escape(&c.requirement),
            escape(&c.rationale),
            v = c.verdict.as_str(),
            id = escape(&c.id)
        );
        if !c.evidence.is_empty() {
            let _ = write!(out, "<details><summary>evidence ({} exchanges)</summary>", c.evidence.len());
            for e in &c.evidence {
                let status = e.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                let mut text = format!("{}: {} {} → {status}", e.purpose, e.method, e.url);
                for (k, v) in &e.request_headers {
                    let _ = write!(text, "\n> {k}: {v}");
                }
                if let Some(b) = &e.request_body {
                    let _ = write!(text, "\n> {b}");
                }
                for (k, v) in &e.response_headers {
                    let _ = write!(text, "\n< {k}: {v}");
                }
                if !e.response_body.is_empty() {
                    let _ = write!(text, "\n< {}", e.response_body);
                }
                let _ = write!(out, "<pre>{}</pre>", escape(&text));
            }
            out.push_str("</details>");
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certify::check::{Profile, ProfileVerdict, ids};
    use crate::certify::plan::ProfileSummary;

    fn sample() -> Certification {
        let checks = vec![
            CheckResult::new(&ids::DISCOVERY_FETCH, Verdict::Pass, "served", vec![]),
            CheckResult::new(&ids::ID_TOKEN_ISS, Verdict::Fail, "iss is `<script>`", vec![]),
            CheckResult::new(&ids::PKCE_MISSING, Verdict::Fail, "accepted", vec![]),
        ];
        Certification {
            issuer: "http://op.test".into(),
            client_id: "gw".into(),
            driver: "redirect".into(),
            started: "2026-11-23T00:00:00Z".into(),
            duration_ms: 1200,
            profiles: vec![ProfileSummary {
                profile: Profile::Basic,
                verdict: ProfileVerdict::Fail,
                passed: 1,
                warnings: 1,
                failed: 1,
                skipped: 0,
            }],
            checks,
        }
    }

    #[test]
    fn reports_name_every_failure_and_escape_what_the_provider_sent() {
        let cert = sample();
        let md = markdown(&cert);
        assert!(md.contains("NOT CERTIFIED") && md.contains("| Basic | **fail** |"));
        assert!(md.contains("**fail** `id-token.iss`") && md.contains("**warning** `pkce.required`"));
        let page = html(&cert);
        assert!(!page.contains("<script>"), "provider text is escaped");
        assert!(!page.contains("src=") && !page.contains("<link") && !page.contains("<script"), "self-contained");
        assert!(page.contains("id=\"id-token.iss\""));
        let junit = junit_xml(&cert).unwrap();
        assert!(junit.contains("certify basic") && junit.contains("<failure"));
        assert_eq!(junit.matches("<failure").count(), 1, "a warning is not a JUnit failure");
    }
}
