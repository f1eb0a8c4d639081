//! The architecture's invariants (ARCHITECTURE.md), checked on the source.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Source files under `dir`, without their `#[cfg(test)]` test modules
/// (test code may use what the product may not).
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(Path::new(dir), &mut files);
    files
        .into_iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            (p.display().to_string().replace('\\', "/"), text)
        })
        .collect()
}

fn module_of(path: &str) -> &str {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let first = rest.split('/').next().unwrap_or(rest);
    first.strip_suffix(".rs").unwrap_or(first)
}

#[test]
fn only_the_seam_knows_turmoil() {
    for dir in ["src", "lab/src"] {
        for (path, text) in sources(dir) {
            if path == "src/net/sim.rs" {
                continue;
            }
            assert!(!text.contains("turmoil::"), "{path} uses turmoil: only src/net/sim.rs may");
        }
    }
}

#[test]
fn modules_import_only_what_their_layer_allows() {
    // module -> crate modules it must never use
    let components = ["idp", "gateway", "mfa", "origin", "web", "agent", "device"];
    let harness = ["oracle", "scenario", "world", "report", "explore"];
    for (path, text) in sources("src") {
        let module = module_of(&path);
        let uses = |m: &str| {
            text.contains(&format!("crate::{m}::"))
                || text.contains(&format!("crate::{m}}}"))
                || text.contains(&format!("crate::{m};"))
        };
        let mut forbidden: Vec<&str> = Vec::new();
        if components.contains(&module)
            || [
                "http",
                "jose",
                "oauth",
                "protocol",
                "net",
                "rng",
                "trace",
                "wfp",
                "config",
                "input",
                "policy",
                "totp",
                "authenticator",
                // The real nftables backend: agent-side, never the harness.
                "nft",
            ]
            .contains(&module)
        {
            forbidden.extend(harness);
        }
        if components.contains(&module) {
            // Components never import each other; the device OS alone starts the agent.
            forbidden.extend(components.iter().filter(|c| **c != module && !(module == "device" && **c == "agent")));
        }
        match module {
            "oracle" => forbidden.extend(
                components
                    .iter()
                    .chain(harness.iter())
                    .filter(|m| **m != "oracle")
                    .chain(["net", "http", "wfp", "config"].iter()),
            ),
            "wfp" => forbidden.extend(["net", "http", "trace", "config", "agent", "device"]),
            _ => {}
        }
        for m in forbidden {
            assert!(!uses(m), "{path} (module `{module}`) must not use crate::{m}");
        }
    }
}

#[test]
fn the_oracle_reads_only_the_trace() {
    for (path, text) in sources("src/oracle") {
        for line in text.lines().filter(|l| l.trim_start().starts_with("use ")) {
            // The MFA policy is pure: the oracle re-resolves the administrator's rules with it.
            let ok = line.contains("crate::trace")
                || line.contains("crate::policy")
                || line.contains("std::")
                || line.contains("super::")
                || line.contains("serde");
            assert!(ok, "{path}: `{}`", line.trim());
        }
    }
}

#[test]
fn the_mfa_policy_is_pure() {
    for (path, text) in sources("src").into_iter().filter(|(p, _)| p == "src/policy.rs") {
        for banned in ["tokio", "async fn", "Instant", "SystemTime", "rand::", "HashMap", "HashSet", "crate::"] {
            assert!(!text.contains(banned), "{path} contains `{banned}`");
        }
    }
}

#[test]
fn only_the_real_firewall_backend_runs_commands() {
    // Spawning processes is real-mode only: the nftables backend runs
    // `nft`, `ip` and `ss`, and the certifier's `--login-command` hook runs
    // the user's command; nothing else in the library starts a process.
    for (path, text) in sources("src") {
        if path.starts_with("src/nft/") || path == "src/certify/driver.rs" {
            continue;
        }
        for banned in ["std::process::Command", "Command::new", "process::Stdio"] {
            assert!(
                !text.contains(banned),
                "{path} uses `{banned}`: only src/nft and the login-command driver may run commands"
            );
        }
    }
    // And the simulated world never reaches the real backend.
    for (path, text) in sources("src") {
        let module = module_of(&path);
        if ["world", "device", "scenario", "oracle", "agent", "wfp", "net"].contains(&module) {
            assert!(!text.contains("crate::nft"), "{path} uses the real nftables backend");
        }
    }
}

#[test]
fn the_firewall_model_is_pure() {
    for (path, text) in sources("src/wfp") {
        for banned in ["tokio", "async fn", "std::time", "rand::", "HashMap", "HashSet"] {
            assert!(!text.contains(banned), "{path} contains `{banned}`");
        }
    }
}

#[test]
fn simulated_code_has_no_wall_clock_os_randomness_or_hash_iteration() {
    // Real-mode only: the tokio side of the seam, and the explicitly
    // real-mode entropy constructor.
    let allowed_clock = ["src/net/real.rs"];
    for (path, text) in sources("src") {
        if !allowed_clock.contains(&path.as_str()) {
            for banned in ["SystemTime::now", "Instant::now", "thread_rng", "rand::rng()", "OsRng"] {
                assert!(!text.contains(banned), "{path} uses `{banned}`");
            }
        }
        if path != "src/rng.rs" {
            assert!(!text.contains("from_os_rng"), "{path}: OS entropy outside rng.rs");
        }
        for banned in ["HashMap", "HashSet"] {
            assert!(
                !text.contains(banned),
                "{path} uses {banned}: use BTreeMap/IndexMap (iteration order is observable)"
            );
        }
        assert!(!text.contains("std::thread::spawn") && !text.contains("spawn_blocking"), "{path} spawns a thread");
        // An unbiased select! draws from tokio's RNG.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("select! {") {
                let next = lines[i + 1..].iter().map(|l| l.trim()).find(|l| !l.is_empty());
                assert_eq!(next, Some("biased;"), "{path}:{}: select! must be biased", i + 1);
            }
        }
    }
}
