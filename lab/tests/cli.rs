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
    // Per seed: what it drew, what came of it, its trace digest.
    let seeds = summary["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 2, "{summary}");
    for (i, s) in seeds.iter().enumerate() {
        assert_eq!(s["seed"], i as u64 + 1);
        assert_eq!(s["outcome"], "pass");
        assert_eq!(s["digest"].as_str().unwrap().len(), 64, "{s}");
        assert!(s["options"].as_str().unwrap().starts_with(&format!("seed {} session", i + 1)), "{s}");
        assert!(s["drawn"]["session_duration"].is_string() && s["drawn"]["idp_profile"].is_string(), "{s}");
        assert!(!s["drawn"]["actions"].as_array().unwrap().is_empty(), "{s}");
    }
    // Same seeds, same per-seed results: two runs compare.
    let again = lab(dir.path(), &["explore", "--seeds", "2", "--from", "1", "--jobs", "1", "--report-dir", "r3"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r3/explore.json")).unwrap()).unwrap();
    assert_eq!(again["seeds"], summary["seeds"]);

    // Output is not a terminal here: the progress bar is not drawn, but
    // --verbose's lines and each failure as it is found are printed.
    let knob = "gateway.danger_skip_revocation_check=true";
    let out =
        lab(dir.path(), &["explore", "--seeds", "1", "--from", "4", "--set", knob, "--report-dir", "r", "--verbose"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("FAIL seed 4: E1, E4 violated: "), "the failure as it is found: {stdout}");
    assert!(stdout.contains("seed 4 session ") && stdout.contains(" -> violation\n"), "--verbose: {stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/explore.json")).unwrap()).unwrap();
    assert_eq!(summary["seeds"][0]["outcome"], "violation", "{summary}");
    assert_eq!(summary["seeds"][0]["invariants"], serde_json::json!(["E1", "E4"]), "{summary}");
    assert!(stdout.contains(&format!("replay: lab explore --from 4 --seeds 1 --set '{knob}'")), "{stdout}");
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
fn explore_refuses_zero_jobs_and_an_unwritable_report_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = lab(dir.path(), &["explore", "--seeds", "1", "--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("--jobs"), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("file"), "").unwrap();
    let out = lab(dir.path(), &["explore", "--seeds", "1", "--report-dir", "file/explore"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("report folder is not writable"), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("seeds in"), "no seed ran: {}", text(&out.stdout));
}

/// Runs `line` (a command line the lab printed, starting with `lab`) with
/// `sh -c` in `cwd`, `lab` replaced by a printer of its arguments, and
/// returns the arguments the shell passed.
fn argv_through_sh(cwd: &Path, line: &str) -> Vec<String> {
    let rest = line.strip_prefix("lab ").unwrap_or_else(|| panic!("not a lab command: {line}"));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {rest}"))
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "sh failed on {line}: {}", text(&out.stderr));
    text(&out.stdout).split_terminator('\0').map(String::from).collect()
}

/// XML's five escapes.
fn xml_escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// A copy of boot-to-login that fails (a wrong expectation), with `head`
/// in place of its name line.
fn failing_scenario(name_line: &str) -> String {
    let original = std::fs::read_to_string(repo().join("scenarios/boot-to-login.toml")).unwrap();
    let name = original.lines().find(|l| l.starts_with("name = ")).unwrap();
    original.replacen(name, name_line, 1).replacen("expect = \"blocked\"", "expect = \"http 200\"", 1)
}

#[test]
fn replay_lines_survive_hostile_paths_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    let file = "x/a'$(touch PWNED)'b.toml";
    std::fs::write(dir.path().join(file), failing_scenario("name = \"hostile-path\"")).unwrap();
    let out = lab(dir.path(), &["run", file, "--seed", "42", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let argv = ["replay", file, "--seed", "42"];

    let stdout = text(&out.stdout);
    let printed = stdout.lines().find_map(|l| l.trim().strip_prefix("replay: ")).expect("a replay line");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/results.json")).unwrap()).unwrap();
    let in_json = results["scenarios"][0]["replay"].as_str().unwrap();
    let md = std::fs::read_to_string(dir.path().join("r/summary.md")).unwrap();
    let in_md = md.split("```sh\n").nth(1).and_then(|r| r.split('\n').next()).expect("a fenced replay line");
    for line in [printed, in_json, in_md] {
        assert_eq!(argv_through_sh(dir.path(), line), argv, "{line}");
        assert_eq!(line, printed, "one line everywhere");
    }
    let junit = std::fs::read_to_string(dir.path().join("r/junit.xml")).unwrap();
    assert!(junit.contains(&format!("replay: {}", xml_escaped(printed))), "{junit}");
    let html = std::fs::read_to_string(dir.path().join("r/report.html")).unwrap();
    assert!(html.contains(&printed.replace('&', "&amp;").replace('\'', "&#39;").replace('"', "&quot;")), "{html}");
    assert!(!dir.path().join("PWNED").exists(), "a printed line ran its payload");
    assert!(!dir.path().join("x/PWNED").exists());

    // `lab explore --set` values are quoted the same way. A groups claim no
    // token carries locks alice out of every app: a liveness failure.
    let set = "gateway.groups_claim=x'$(touch PWNED)'y";
    let out = lab(
        dir.path(),
        &["explore", "--seeds", "1", "--from", "1", "--max-shrinks", "0", "--set", set, "--report-dir", "e"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let line = stdout.lines().find_map(|l| l.trim().strip_prefix("replay: ")).expect("a replay line");
    let words = argv_through_sh(dir.path(), line);
    assert_eq!(words[..5], ["explore", "--from", "1", "--seeds", "1"], "{line}");
    // The value comes back as the TOML string the override stored, which
    // `--set` parses to the same override.
    assert_eq!(words[5..], ["--set", "gateway.groups_claim=\"x'$(touch PWNED)'y\""], "{line}");
    assert!(!dir.path().join("PWNED").exists(), "a printed line ran its payload");
}

#[test]
fn control_characters_in_names_are_shown_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    // ESC (clear screen), BEL, CR, a right-to-left override, an isolate.
    let name = r#"name = "ok\u001b[2J\u0007\rfake PASS \u202egnp.exe\u2066""#;
    std::fs::write(dir.path().join("c.toml"), failing_scenario(name)).unwrap();
    let out = lab(dir.path(), &["run", "c.toml", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!text(&out.stderr).contains('\u{1b}'), "{}", text(&out.stderr));
    let outputs = [
        ("stdout", text(&out.stdout)),
        ("summary.md", std::fs::read_to_string(dir.path().join("r/summary.md")).unwrap()),
        ("junit.xml", std::fs::read_to_string(dir.path().join("r/junit.xml")).unwrap()),
        ("report.html", std::fs::read_to_string(dir.path().join("r/report.html")).unwrap()),
    ];
    for (what, output) in &outputs {
        for raw in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{2066}'] {
            assert!(!output.contains(raw), "{raw:?} reaches {what}: {output}");
        }
        assert!(output.contains("u{1b}") && output.contains("u{202e}gnp.exe"), "{what}: {output}");
    }
    // results.json is data: the name exactly, JSON-escaped.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/results.json")).unwrap()).unwrap();
    assert_eq!(results["scenarios"][0]["name"], "ok\u{1b}[2J\u{7}\rfake PASS \u{202e}gnp.exe\u{2066}");
}

#[test]
fn a_long_name_still_gets_every_report_and_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(300);
    std::fs::write(dir.path().join("long.toml"), failing_scenario(&format!("name = \"{long}\""))).unwrap();
    let out = lab(dir.path(), &["run", "long.toml", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/results.json")).unwrap()).unwrap();
    assert_eq!(results["scenarios"][0]["name"], long.as_str());
    let trace = results["scenarios"][0]["trace"].as_str().unwrap();
    assert!(trace.len() < 100 && dir.path().join("r").join(trace).is_file(), "{trace}");
    for f in ["junit.xml", "report.html", "summary.md"] {
        assert!(dir.path().join("r").join(f).is_file(), "{f}");
    }

    std::fs::write(dir.path().join("empty.toml"), failing_scenario("name = \"\"")).unwrap();
    let out = lab(dir.path(), &["run", "empty.toml", "--report-dir", "r2"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("empty.toml:") && stderr.contains("`name` is empty"), "{stderr}");
    let line = stderr.split(':').nth(1).unwrap();
    assert!(line.parse::<usize>().is_ok(), "located: {stderr}");
    assert!(!dir.path().join("r2").exists(), "nothing ran");
}

#[test]
fn reports_are_checked_before_running_and_one_failed_file_loses_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("scenarios/boot-to-login.toml");
    let s = s.to_str().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let out = lab(dir.path(), &["run", s, "--report-dir", "file/reports"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the report folder is not writable"), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("boot-to-login"), "nothing ran: {}", text(&out.stdout));

    // junit.xml cannot be written (a folder holds its name): the rest is.
    std::fs::create_dir_all(dir.path().join("r/junit.xml")).unwrap();
    let out = lab(dir.path(), &["run", s, "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot write r/junit.xml") && stderr.contains("1 report file(s)"), "{stderr}");
    for f in ["results.json", "report.html", "summary.md", "traces/boot-to-login.jsonl"] {
        assert!(dir.path().join("r").join(f).is_file(), "{f} was written");
    }
}

#[test]
fn oversized_and_non_utf8_inputs_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("big.toml")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    let out = lab(dir.path(), &["run", "big.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("big.toml: the file is 52428800 bytes: scenario and lab files are limited to 1048576 bytes"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("latin1.toml"), b"name = \"caf\xe9\"\nseed = 1\n").unwrap();
    let out = lab(dir.path(), &["run", "latin1.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("latin1.toml:1:12: not UTF-8 text"), "{}", text(&out.stderr));

    // A lab file too, named by itself.
    std::fs::write(dir.path().join("lab.toml"), b"name = \"\xff\"\n").unwrap();
    std::fs::write(dir.path().join("s.toml"), "name = \"s\"\nseed = 1\nlab = \"lab.toml\"\n[[step]]\ndo = \"boot\"\n")
        .unwrap();
    let out = lab(dir.path(), &["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("lab.toml:1:9: not UTF-8 text"), "{}", text(&out.stderr));
}

#[test]
fn doctor_lists_the_peers_and_the_command_that_installs_the_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = lab(dir.path(), &["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // Every package .ci/run installs is listed.
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    for package in ci.lines().filter_map(|l| l.split("need+=(").nth(1)).map(|p| p.trim_end_matches(')')) {
        assert!(stdout.contains(package), "{package} is not listed: {stdout}");
    }

    // A PATH with only a fake oathtool: it is found with its version, and
    // the others are missing, with one command that installs them.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("oathtool");
    std::fs::write(&fake, "#!/bin/sh\necho 'oathtool (OATH Toolkit) 2.6.9'\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let out =
        Command::cargo_bin("lab").unwrap().current_dir(dir.path()).env("PATH", &bin).arg("doctor").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "exit 0 with peers missing: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("oathtool (OATH Toolkit) 2.6.9"), "{stdout}");
    let install = stdout.lines().find(|l| l.contains("apt-get install")).expect("an install command");
    assert!(install.contains("chromium") && install.contains("nodejs") && install.contains("glewlwyd"), "{install}");
    assert!(!install.contains("oathtool"), "oathtool is there: {install}");
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
