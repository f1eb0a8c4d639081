//! The HTML report as a browser renders it: real runs (a passing scenario,
//! one whose violations are expected, and a broken component whose name
//! is hostile markup) written by `report::write_all`, loaded from
//! `file://` in headless Chromium, and the rendered DOM checked. Without
//! Chromium the test prints `SKIPPED: chromium missing (...)` and passes,
//! unless `LOCKSTEP_REQUIRE_PEERS` is set (by `.ci/run`): [`crate::peer`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::input::Source;
use lockstep::report;
use lockstep::scenario::Scenario;
use lockstep::world::{self, RunReport};

use crate::peer;

/// How long Chromium may take to load and dump the page.
const RENDER_WITHIN: Duration = Duration::from_secs(120);

/// A scenario named with markup, whose agent never re-locks (E1).
const BROKEN: &str = r#"
name = "relock <forgotten> & \"broken\""
description = "The agent keeps the device open after expiry: <b>bold</b> is text."
seed = 3
[config.gateway]
session_duration = "1m"
[config.agent]
danger_forget_relock = true

[[step]]
do = "boot"
[[step]]
do = "sign_in"
user = "alice"
expect = "agent connected"
[[step]]
do = "advance"
by = "61s"
[[step]]
do = "request"
process = "updater"
url = "https://updates.example.com/"
"#;

fn runs() -> Vec<RunReport> {
    let mut out = Vec::new();
    for name in ["embedded:boot-to-login", "embedded:dynamic-session-fail-open"] {
        let s = Scenario::load(name).unwrap_or_else(|e| panic!("{e}"));
        out.push(world::run(&s, s.seed));
    }
    let s = Scenario::parse(&Source::new("broken relock.toml", BROKEN), None).unwrap_or_else(|e| panic!("{e}"));
    out.push(world::run(&s, s.seed));
    out
}

/// Text as Chromium serializes it in a text node.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\u{a0}', "&nbsp;")
}

fn chromium() -> Option<PathBuf> {
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// Loads `page` in headless Chromium (a fresh profile, no network
/// services) and returns its DOM after load.
fn dump_dom(chromium: &Path, page: &Path, scratch: &Path) -> String {
    let profile = scratch.join("profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let out_path = scratch.join("dom.html");
    let err_path = scratch.join("chromium.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("dom file"))
        .stderr(File::create(&err_path).expect("log file"))
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + RENDER_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium runs") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not render the page within {RENDER_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {log}");
    std::fs::read_to_string(&out_path).expect("dumped DOM")
}

#[test]
fn chromium_renders_the_timeline_report() {
    let Some(chromium) = chromium().or_else(|| peer::missing("chromium", "apt-get install chromium")) else {
        return;
    };
    peer::found("chromium");
    let runs = runs();
    let [pass, expected, broken] = &runs[..] else { unreachable!("three runs") };
    assert!(pass.passed() && pass.violations.is_empty(), "{:?}", pass.failures());
    assert!(expected.passed() && !expected.violations.is_empty(), "{:?}", expected.failures());
    assert!(!broken.passed(), "the broken agent must fail the run");
    let e1 = broken.violations.iter().position(|v| v.invariant == "E1").expect("an E1 violation");

    let dir = tempfile::tempdir().expect("temp dir");
    let reports = dir.path().join("reports");
    report::write_all(&reports, &runs).expect("reports written");
    let page = reports.join(report::HTML_REPORT);
    let written = std::fs::read_to_string(&page).expect("report.html");

    // Determinism: the same scenarios run again give the same bytes.
    let names = report::trace_names(&runs);
    assert_eq!(report::html::html(&self::runs(), &names), written, "same runs, same page");

    let dom = dump_dom(&chromium, &page, dir.path());
    assert!(dom.contains("<meta http-equiv=\"Content-Security-Policy\""), "the CSP is in the rendered head");
    assert!(dom.contains("<title>Lockstep run: 2 passed, 1 failed</title>"), "{}", &dom[..dom.len().min(800)]);

    // Every scenario, by name, in the summary and as a section; the hostile
    // name stays text.
    for (i, r) in runs.iter().enumerate() {
        assert!(
            dom.contains(&format!("<a href=\"#s{i}\">{}</a>", dom_text(&r.scenario))),
            "{} in the summary",
            r.scenario
        );
        assert!(dom.contains(&format!("<section class=\"scenario {}\" id=\"s{i}\">", report::status(r))));
        let replay = dom_text(&report::replay_command(&r.file, r.seed));
        assert!(dom.contains(&format!("<pre class=\"replay\">{replay}</pre>")), "replay line of {}", r.scenario);
    }
    assert!(!dom.contains("<forgotten"), "a scenario name never becomes an element");
    assert!(!dom.contains("<b>bold</b>"), "a description never becomes markup");
    assert!(dom.contains("relock &lt;forgotten&gt; &amp; \"broken\""));
    assert!(dom.contains("lab replay 'broken relock.toml' --seed 3"));

    // The failing row is marked, and links to the violation in place.
    assert!(dom.contains("<tr class=\"fail\"><td><a href=\"#s2\">"), "the failing row is marked");
    assert!(dom.contains(&format!("href=\"#s2-v{e1}\"")), "the summary links to the violation");
    let v = &broken.violations[e1];
    let at = dom.find(&format!("<tr class=\"vrow\" id=\"s2-v{e1}\">")).expect("the violation's row");
    let vrow = &dom[at..at + dom[at..].find("</tr>").expect("row end")];
    assert!(vrow.contains(&dom_text(&v.message)), "the oracle's explanation in place: {vrow}");
    assert!(dom.contains(&format!("<tr id=\"s2-e{}\" class=\"viol\">", v.seq)), "the event's row is red");
    // Expected violations are shown as such.
    assert!(dom.contains("(expected by the scenario)"));

    // One lane per host the trace names.
    for host in ["device", "gateway", "idp"] {
        assert!(dom.contains(&format!("<th class=\"lane\">{host}</th>")), "lane {host}");
    }
    // Steps with their verdicts.
    assert!(dom.contains("expected <code>agent connected</code>, got <code>agent connected</code> ✓"));
}
