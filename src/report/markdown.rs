//! `summary.md`: the run as GitHub-flavoured Markdown, for
//! `$GITHUB_STEP_SUMMARY`: the table, then per failing scenario its
//! reasons and replay line, then the findings.
//!
//! Scenario names, files and reasons are user input: Markdown and HTML
//! punctuation in them is backslash-escaped, so they render as text.

use std::fmt::Write;

use crate::trace::format_offset;
use crate::world::RunReport;

use super::{replay_command, status};
use crate::text::visible;

/// Text made inert for Markdown (and the HTML GitHub allows in it), on one
/// line: control and bidi characters shown escaped ([`visible`]), then
/// Markdown's punctuation backslash-escaped.
pub fn text(s: &str) -> String {
    let s = visible(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block that its content cannot close, on one line
/// (control and bidi characters shown escaped).
fn fenced(lang: &str, content: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in content.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}{lang}\n{}\n{fence}\n", visible(content))
}

/// The Markdown summary of `runs`.
pub fn summary(runs: &[RunReport]) -> String {
    let passed = runs.iter().filter(|r| r.passed()).count();
    let failed = runs.len() - passed;
    let mut out = String::new();
    let _ = writeln!(out, "## Lockstep: {} {passed} passed, {failed} failed\n", if failed == 0 { "✅" } else { "❌" });
    out.push_str("| scenario | seed | steps | violations | sim time | events | result |\n");
    out.push_str("|---|---:|---:|---:|---|---:|---|\n");
    for r in runs {
        let steps_ok = r.steps.iter().filter(|s| s.ok).count();
        let st = status(r);
        let violations = if r.violations.is_empty() || r.expected_violations.is_empty() {
            r.violations.len().to_string()
        } else {
            format!("{} (expected: {})", r.violations.len(), text(&r.expected_violations.join(", ")))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {steps_ok}/{} | {violations} | {} | {} | {} |",
            text(&r.scenario),
            r.seed,
            r.steps.len(),
            format_offset(r.sim_ms).trim_start_matches('+'),
            r.trace.events.len(),
            match st {
                "pass" => "✅ pass",
                "error" => "❌ **error**",
                _ => "❌ **fail**",
            }
        );
    }
    for r in runs.iter().filter(|r| !r.passed()) {
        let _ = writeln!(out, "\n### ❌ {} ({})\n", text(&r.scenario), text(&r.file));
        for f in r.failures() {
            let _ = writeln!(out, "- {}", text(&f));
        }
        out.push('\n');
        out.push_str(&fenced("sh", &replay_command(&r.file, r.seed)));
    }
    let with_findings: Vec<&RunReport> = runs.iter().filter(|r| !r.findings.is_empty()).collect();
    if !with_findings.is_empty() {
        out.push_str("\n### Findings\n\n");
        for r in with_findings {
            for f in &r.findings {
                let _ = writeln!(out, "- **{}**: {}", text(&r.scenario), text(f));
            }
        }
    }
    out.push_str("\nThe timeline of every scenario is in `report.html` beside this summary.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::tests::sample;

    #[test]
    fn a_row_per_scenario_then_the_reasons_and_replay_line_of_each_failure() {
        let mut ok = sample("quiet");
        ok.violations.clear();
        ok.steps[1].ok = true;
        ok.findings.clear();
        let bad = sample("loud");
        let md = summary(&[ok, bad]);
        assert!(md.starts_with("## Lockstep: ❌ 1 passed, 1 failed\n"), "{md}");
        assert!(md.contains("| quiet | 7 | 2/2 | 0 | 00:10:00.020 | 13 | ✅ pass |\n"), "{md}");
        assert!(md.contains("| loud | 7 | 1/2 | 1 | 00:10:00.020 | 13 | ❌ **fail** |\n"), "{md}");
        assert!(!md.contains("### ❌ quiet"));
        assert!(md.contains("### ❌ loud (scenarios/loud.toml)\n"), "{md}");
        assert!(md.contains("- step 2 (line 9: teams sends): expected \\`cut\\`, got \\`ok\\`\n"), "{md}");
        assert!(md.contains("- E1 at +00:10:00.012 (event \\#8, device): 5 bytes sent"), "{md}");
        assert!(md.contains("```sh\nlab replay scenarios/loud.toml --seed 7\n```\n"), "{md}");
        assert!(md.contains("- **loud**: a finding"));
    }

    #[test]
    fn user_text_cannot_break_the_table_or_inject_html() {
        let mut run = sample("a|b <script>alert(1)</script>\n| x |");
        run.file = "evil ```\nrm -rf /.toml".into();
        let md = summary(&[run]);
        let row = md.lines().find(|l| l.starts_with("| a")).expect("row");
        assert_eq!(row.matches(" | ").count(), 6, "seven cells: {row}");
        assert!(!md.contains("<script"));
        // The replay line stays inside its fence.
        assert!(md.contains("````sh\nlab replay 'evil ```\\u{a}rm -rf /.toml' --seed 7\n````\n"), "{md}");
    }

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        let mut run = sample("a\u{1b}]0;owned\u{7}b\rc\u{202e}d");
        run.file = "x/\u{2066}'$(touch PWNED)'.toml".into();
        run.findings = vec!["f\u{1b}[31m".into()];
        let md = summary(&[run]);
        for raw in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{2066}'] {
            assert!(!md.contains(raw), "{raw:?} in {md}");
        }
        assert!(md.contains(r"| a\\u{1b}\]0;owned\\u{7}b\\u{d}c\\u{202e}d |"), "{md}");
        // The replay line in its fence: quoted for the shell, then shown escaped.
        let replay = replay_command("x/\u{2066}'$(touch PWNED)'.toml", 7);
        assert_eq!(shlex::split(&replay).unwrap()[2], "x/\u{2066}'$(touch PWNED)'.toml");
        assert!(md.contains(&format!("```sh\n{}\n```", visible(&replay))), "{md}");
    }

    #[test]
    fn the_same_runs_give_the_same_bytes() {
        let runs = [sample("a"), sample("b")];
        assert_eq!(summary(&runs), summary(&runs.clone()));
    }
}
