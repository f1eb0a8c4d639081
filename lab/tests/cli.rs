//! The `lab` command line contract: exit codes, report files, located
//! input errors, replay lines, replay determinism.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn lab(cwd: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("lab").unwrap().current_dir(cwd).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_passing_run_exits_0_and_writes_junit_results_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("out");
    let out = lab(&repo(), &["run", "scenarios/boot-to-login.toml", "--report-dir", reports.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("boot-to-login") && stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");

    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("<testcase name=\"boot-to-login\""), "{junit}");
    assert!(junit.contains("tests=\"1\"") && junit.contains("failures=\"0\""), "{junit}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["passed"], 1);
    assert_eq!(results["scenarios"][0]["status"], "pass");
    let trace = std::fs::read_to_string(reports.join("traces/boot-to-login.jsonl")).unwrap();
    assert_eq!(trace.lines().count() as u64, results["scenarios"][0]["events"].as_u64().unwrap());
    assert!(trace.lines().next().unwrap().contains("\"event\":\"run_started\""));
    // The HTML report and the Markdown summary, beside them, their paths printed.
    let report = reports.join("report.html");
    let summary = reports.join("summary.md");
    assert!(stdout.contains(&format!("report: {}", report.display())), "{stdout}");
    assert!(stdout.contains(&format!("summary: {}", summary.display())), "{stdout}");
    let page = std::fs::read_to_string(report).unwrap();
    assert!(page.contains("<a href=\"#s0\">boot-to-login</a>"), "the summary table names the scenario");
    let md = std::fs::read_to_string(summary).unwrap();
    assert!(md.contains("| boot-to-login | 1 | 11/11 | 0 |"), "{md}");
}

#[test]
fn a_malformed_scenario_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "name = \"bad\"\nseed = 1\n\n[[step]]\ndo = \"boot\"\nexpect = \"agent asleep\"\n").unwrap();
    let out = lab(dir.path(), &["run", "bad.toml", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("bad.toml:6:10: unknown expectation `agent asleep`"), "{stderr}");
    assert!(!dir.path().join("r").exists(), "nothing runs when the input is bad");

    // TOML syntax errors, too.
    std::fs::write(&file, "name = \"bad\"\nseed = \n").unwrap();
    let out = lab(dir.path(), &["run", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("bad.toml:2:"), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_and_missing_paths_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(lab(dir.path(), &["run", "nowhere.toml"]).status.code(), Some(2));
    assert_eq!(lab(dir.path(), &["run", "--seed", "x"]).status.code(), Some(2));
    assert_eq!(lab(dir.path(), &["frobnicate"]).status.code(), Some(2));
    assert_eq!(lab(dir.path(), &["serve", "--ip", "192.0.2.1"]).status.code(), Some(2));
}

#[test]
fn a_wrong_expectation_exits_1_and_prints_the_replay_line() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo().join("scenarios/boot-to-login.toml")).unwrap();
    // The updater is blocked before sign-in; claim it is not.
    let wrong = original.replacen("expect = \"blocked\"", "expect = \"http 200\"", 1);
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap();
    let out = lab(dir.path(), &["run", "wrong.toml", "--seed", "42", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("expected `http 200`, got `blocked`"), "{stdout}");
    assert!(stdout.contains("replay: lab replay wrong.toml --seed 42"), "{stdout}");
    let junit = std::fs::read_to_string(dir.path().join("r/junit.xml")).unwrap();
    assert!(junit.contains("<failure") && junit.contains("lab replay wrong.toml --seed 42"), "{junit}");
    let md = std::fs::read_to_string(dir.path().join("r/summary.md")).unwrap();
    assert!(md.contains("expected \\`http 200\\`, got \\`blocked\\`"), "{md}");
    assert!(md.contains("```sh\nlab replay wrong.toml --seed 42\n```"), "{md}");
}

#[test]
fn replay_prints_the_same_trace_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = lab(dir.path(), &["replay", "embedded:boot-to-login", "--seed", "9"]);
    let b = lab(dir.path(), &["replay", "embedded:boot-to-login", "--seed", "9"]);
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
    for line in text(&a.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["event"].is_string() && v["t"].is_u64());
    }
    assert!(text(&a.stderr).contains("digest"), "{}", text(&a.stderr));
}

#[test]
fn without_a_scenarios_folder_run_uses_the_embedded_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let out = lab(dir.path(), &["run", "embedded:boot-to-login", "embedded:revoked-session"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(dir.path().join("reports/traces/revoked-session.jsonl").exists());
}

#[test]
fn explore_exits_0_when_clean_and_1_with_a_replay_line_and_a_minimized_file_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = lab(dir.path(), &["explore", "--seeds", "2", "--from", "1", "--jobs", "2", "--report-dir", "r"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("first seed: seed 1 session"), "the derived options come first: {stdout}");
    assert!(stdout.contains("2 pass, 0 violation, 0 liveness, 0 lab-error"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/explore.json")).unwrap()).unwrap();
    assert_eq!(summary["seeds_run"], 2);

    let knob = "gateway.danger_skip_revocation_check=true";
    let out = lab(dir.path(), &["explore", "--seeds", "1", "--from", "4", "--set", knob, "--report-dir", "r"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(&format!("replay: lab explore --from 4 --seeds 1 --set {knob}")), "{stdout}");
    assert!(stdout.contains("minimized to 1 drawn actions: lab run r/explore-4.toml"), "{stdout}");
    // The minimized file is an ordinary scenario: `lab run` fails on it.
    let out = lab(dir.path(), &["run", "r/explore-4.toml", "--report-dir", "r2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("E4"), "{}", text(&out.stdout));

    let out = lab(dir.path(), &["explore", "--set", "gateway"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--set `gateway`: expected SECTION.KEY=VALUE"), "{}", text(&out.stderr));
}

#[test]
fn certify_container_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = lab(dir.path(), &["certify", "idp", "--container", "keycloak"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    // Built without the feature (the default), it names the feature; built
    // with it on a machine without an engine, it says there is no engine.
    assert!(stderr.contains("without the `containers` feature") || stderr.contains("no Docker engine at"), "{stderr}");
    let out = lab(dir.path(), &["certify", "idp", "--container", "okta"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown provider; known: keycloak"), "{}", text(&out.stderr));
    let out = lab(dir.path(), &["certify", "idp", "--container", "keycloak", "--issuer", "http://x"]);
    assert_eq!(out.status.code(), Some(2), "--container and --issuer conflict");
}

#[test]
fn bench_gateway_serves_every_request_through_the_gateway_and_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("gw.json");
    let out = lab(
        dir.path(),
        &["bench", "gateway", "--duration", "300ms", "--connections", "2", "--json", json.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(figures["errors"], 0, "{figures}");
    for side in ["gateway", "baseline"] {
        assert!(figures[side]["requests_per_sec"].as_f64().unwrap() > 0.0, "{figures}");
        assert_eq!(figures[side]["errors"], 0, "{figures}");
    }
    assert!(figures["events_recorded"].as_u64().unwrap() > 0, "{figures}");
    // The scenario benchmark's flags still parse, and do not mix with `gateway`.
    let out = lab(dir.path(), &["bench", "--runs", "1", "gateway"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
