//! The one rule of every test against a real peer (a program nobody here
//! wrote: oathtool, nftables, node and panva's oidc-provider, Glewlwyd,
//! Chromium...):
//!
//! - the peer is there: the test runs against it ([`found`]);
//! - it is not: the test prints `SKIPPED: <peer> missing (install: <command>)`
//!   ([`missing`]) or `SKIPPED: <peer> cannot run here: <reason>`
//!   ([`unusable`], e.g. not root) and passes, unless
//!   `LOCKSTEP_REQUIRE_PEERS` is set (`.ci/run` sets it; the older
//!   `LOCKSTEP_REQUIRE_NFT` is an alias), which makes it fail instead.
//!
//! The SKIPPED line goes straight to the process's standard error, past
//! libtest's capture (which would hide the output of a passing test).
//!
//! The count: every peer test of this binary reports here, and the first
//! report registers an `atexit` handler that prints, once libtest has run
//! every test and printed its result, how many peer tests ran against
//! their peer and how many were SKIPPED, by peer. `it` is the last test
//! binary `cargo test --workspace` runs (the library's unit tests, then
//! `features`, then `it`; the `lab` package's tests come first), so the
//! count closes the run. An `atexit` handler rather than a test ordered
//! last, because libtest runs tests in parallel in no set order: only the
//! end of the process comes after all of them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};

/// The environment variables that turn a missing peer into a failure.
pub const REQUIRE_VARS: [&str; 2] = ["LOCKSTEP_REQUIRE_PEERS", "LOCKSTEP_REQUIRE_NFT"];

/// What became of a test with a peer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// It found its peer and ran against it.
    Ran,
    /// Its peer was missing or unusable: it passed without running.
    Skipped,
    /// Its peer was missing and peers are required: it failed.
    Failed,
}

/// Per test (libtest names each test's thread after it) and peer, what
/// became of it (the worst, when a test reports twice).
static SEEN: Mutex<BTreeMap<(String, String), Fate>> = Mutex::new(BTreeMap::new());
static SUMMARY: Once = Once::new();

/// Whether missing peers fail (a variable of [`REQUIRE_VARS`] set to
/// anything but empty or `0`).
pub fn required() -> bool {
    REQUIRE_VARS.iter().any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0"))
}

fn test_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

fn note(peer: &str, fate: Fate) {
    SUMMARY.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()`; atexit has no other precondition.
        unsafe {
            libc::atexit(print_summary);
        }
    });
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let entry = seen.entry((test_name(), peer.to_string())).or_insert(fate);
    *entry = (*entry).max(fate);
}

/// Writes past libtest's output capture.
fn say(line: &str) {
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

/// This test found its peer and runs against it.
pub fn found(peer: &str) {
    note(peer, Fate::Ran);
}

/// The peer is not installed: prints the SKIPPED line with the command that
/// installs it and returns `None` (the test then passes), or fails the
/// test when [`required`].
pub fn missing<T>(peer: &str, install: &str) -> Option<T> {
    skip(peer, format!("{peer} missing (install: {install})"))
}

/// The peer is installed but cannot run here (not root, no network
/// namespaces...): like [`missing`], with the reason.
pub fn unusable<T>(peer: &str, reason: &str) -> Option<T> {
    skip(peer, format!("{peer} cannot run here: {reason}"))
}

fn skip<T>(peer: &str, what: String) -> Option<T> {
    let test = test_name();
    if required() {
        note(peer, Fate::Failed);
        panic!("{what}; a variable of {REQUIRE_VARS:?} is set, so a missing peer fails {test}");
    }
    note(peer, Fate::Skipped);
    say(&format!("SKIPPED: {what} [{test}]"));
    None
}

/// Whether `program arg` runs and succeeds (its output discarded).
pub fn works(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

extern "C" fn print_summary() {
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    // A test fares as its worst peer.
    let mut tests: BTreeMap<&str, Fate> = BTreeMap::new();
    let mut missing: BTreeMap<&str, usize> = BTreeMap::new();
    for ((test, peer), fate) in seen.iter() {
        let entry = tests.entry(test.as_str()).or_insert(*fate);
        *entry = (*entry).max(*fate);
        if *fate != Fate::Ran {
            *missing.entry(peer.as_str()).or_default() += 1;
        }
    }
    let count = |f: Fate| tests.values().filter(|t| **t == f).count();
    let (ran, skipped, failed) = (count(Fate::Ran), count(Fate::Skipped), count(Fate::Failed));
    let by_peer: Vec<String> = missing.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    let mut line = format!("\npeer tests: {ran} ran against their real peer, {skipped} SKIPPED");
    if failed > 0 {
        line.push_str(&format!(", {failed} FAILED for a missing peer (peers are required)"));
    }
    if !by_peer.is_empty() {
        line.push_str(&format!(" (missing or unusable, by peer: {})", by_peer.join(", ")));
    }
    if skipped > 0 {
        line.push_str("; `lab doctor` says how to install them; with LOCKSTEP_REQUIRE_PEERS=1 they fail instead");
    }
    say(&line);
}

/// The rule itself, on a peer made missing: this binary runs the oathtool
/// test again with a `PATH` where nothing is found.
#[test]
fn a_missing_peer_is_skipped_visibly_or_fails_when_required() {
    let run = |require: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
        cmd.args(["--exact", "totp_oathtool::our_codes_match_oathtool", "--test-threads", "1"])
            .env("PATH", "/nonexistent")
            .env_remove("LOCKSTEP_REQUIRE_PEERS")
            .env_remove("LOCKSTEP_REQUIRE_NFT");
        if let Some(var) = require {
            cmd.env(var, "1");
        }
        let out = cmd.output().expect("the test binary runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "SKIPPED: oathtool missing (install: apt-get install oathtool) [totp_oathtool::our_codes_match_oathtool]"
        ),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("peer tests: 0 ran against their real peer, 1 SKIPPED (missing or unusable, by peer: oathtool: 1); `lab doctor` says how to install them; with LOCKSTEP_REQUIRE_PEERS=1 they fail instead"), "{stderr}");
    for var in REQUIRE_VARS {
        let (code, stderr) = run(Some(var));
        assert_eq!(code, Some(101), "{var}: {stderr}");
        assert!(stderr.contains("1 FAILED for a missing peer"), "{var}: {stderr}");
    }
}
