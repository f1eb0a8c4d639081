//! `lab conformance`: the firewall conformance suite from the command line, on the
//! WFP model and on real nftables through the shipped backend (`lockstep::nft`).

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

const CASES: &str = "tests/conformance/cases";

/// A case folder with one case: C32 (the agent's lockdown) with `from` replaced by `to`.
fn one_case(from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c32 = std::fs::read_to_string(repo().join(CASES).join("32-agent-lockdown-exceptions.toml")).unwrap();
    assert!(c32.contains(from), "{from}");
    std::fs::write(dir.path().join("32-mine.toml"), c32.replacen(from, to, 1)).unwrap();
    dir
}

#[test]
fn the_shipped_cases_pass_on_the_wfp_model() {
    let out = lab(&repo(), &["conformance"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("conformance suite on backend `wfp-model` (33 cases)"), "{stdout}");
    assert!(stdout.contains("pass        E31 "), "{stdout}");
    assert!(stdout.trim_end().ends_with("33 passed, 0 failed, 0 unsupported, 0 stale entries, 0 unknown entries: OK"));
    assert!(text(&out.stderr).contains("unsupported list tests/conformance/wfp-model.unsupported.toml"));
}

#[test]
fn a_users_folder_runs_and_a_failing_case_exits_1() {
    // A folder of one's own, no unsupported list: every case must pass.
    let dir = one_case("id = \"C32\"", "id = \"C32\"");
    let out = lab(&repo(), &["conformance", dir.path().to_str().unwrap(), "--backend", "wfp-model"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("no unsupported list: every case must pass"));

    // An expectation the agent's lockdown does not meet: exit 1, with the step and why.
    let dir =
        one_case(r#"remote = "203.0.113.20:80", expect = "block""#, r#"remote = "203.0.113.20:80", expect = "permit""#);
    let out = lab(&repo(), &["conformance", dir.path().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL        C32"), "{stdout}");
    assert!(stdout.contains("expected Permit, got Block (decided by `lockstep: block all`)"), "{stdout}");
    assert!(stdout.trim_end().ends_with(": FAILED"), "{stdout}");
}

#[test]
fn bad_input_exits_2_with_a_location() {
    let dir = one_case(r#"state = "connected""#, r#"state = "online""#);
    let out = lab(&repo(), &["conformance", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("32-mine.toml:") && stderr.contains("unknown agent state `online`"), "{stderr}");

    let out = lab(&repo(), &["conformance", "no/such/folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/folder is not a folder of case files"));

    let out = lab(&repo(), &["conformance", "--backend", "iptables"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown backend");

    let dir = one_case("id = \"C32\"", "id = \"C32\"");
    let out = lab(&repo(), &["conformance", dir.path().to_str().unwrap(), "--unsupported", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: no such file"));
}

/// Whether the nftables run may be skipped on this machine.
fn peers_required() -> bool {
    ["LOCKSTEP_REQUIRE_PEERS", "LOCKSTEP_REQUIRE_NFT"].iter().any(|v| std::env::var(v).is_ok_and(|v| v == "1"))
}

#[test]
fn the_shipped_nftables_backend_passes_the_suite_with_its_unsupported_list() {
    // Real nftables, through lockstep::nft (NftFirewall) only: the figure in the
    // README comes from this run.
    let out = lab(&repo(), &["conformance", "--backend", "nftables"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.code() == Some(2) && stderr.contains("the nftables backend cannot run here") {
        assert!(!peers_required(), "nftables is required (LOCKSTEP_REQUIRE_PEERS/NFT): {stderr}");
        eprintln!(
            "SKIPPED: nft missing or not root (install: apt-get install nftables iproute2; run as root): {stderr}"
        );
        return;
    }
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("conformance suite on backend `nftables` (33 cases)"), "{stdout}");
    // The agent's own lockdown (C32) passes on real nftables; D33 fails open there.
    assert!(stdout.contains("pass        C32 "), "{stdout}");
    assert!(stdout.contains("unsupported D33 "), "{stdout}");
    assert!(stdout.trim_end().ends_with("1 passed, 0 failed, 32 unsupported, 0 stale entries, 0 unknown entries: OK"));
}
