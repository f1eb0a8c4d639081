//! `lab doctor`: which real peers the test suite runs against are on this
//! machine, their versions, and the one command that installs the missing
//! ones (the same Debian packages `.ci/run` installs). Informational: it
//! exits 0 whether or not they are there (the suite skips a test whose
//! peer is missing, unless `LOCKSTEP_REQUIRE_PEERS` is set).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

#[derive(Args)]
pub struct DoctorArgs {}

/// One program a peer test runs.
struct Program {
    /// What is run.
    program: &'static str,
    /// The argument that prints its version.
    version_arg: &'static str,
    /// The Debian package that installs it (as in `.ci/run`).
    package: &'static str,
    /// The tests that need it.
    used_by: &'static str,
}

/// Every program of a peer test, in `.ci/run`'s order.
const PROGRAMS: &[Program] = &[
    Program {
        program: "oathtool",
        version_arg: "--version",
        package: "oathtool",
        used_by: "TOTP codes checked against it (tests/it/totp_oathtool.rs)",
    },
    Program {
        program: "nft",
        version_arg: "--version",
        package: "nftables",
        used_by: "the nftables backend, as root (tests/it/nftables.rs, nft_conformance.rs)",
    },
    Program {
        program: "ip",
        version_arg: "-V",
        package: "iproute2",
        used_by: "network namespaces of the nftables tests",
    },
    Program {
        program: "node",
        version_arg: "--version",
        package: "nodejs",
        used_by: "panva's oidc-provider (tests/it/peers.rs: certify, login drivers)",
    },
    Program {
        program: "npm",
        version_arg: "--version",
        package: "npm",
        used_by: "installs oidc-provider from its lock file (npm ci, into target/peers/)",
    },
    Program {
        program: "glewlwyd",
        version_arg: "--version",
        package: "glewlwyd",
        used_by: "Glewlwyd, an OpenID provider (tests/it/peers.rs)",
    },
    Program { program: "sqlite3", version_arg: "--version", package: "sqlite3", used_by: "Glewlwyd's database" },
    Program { program: "openssl", version_arg: "version", package: "openssl", used_by: "Glewlwyd's signing key" },
    Program {
        program: "curl",
        version_arg: "--version",
        package: "curl",
        used_by: "our --login-command script (tests/peers/oidc-provider/login.sh)",
    },
    Program {
        program: "chromium",
        version_arg: "--version",
        package: "chromium",
        used_by: "renders report.html (tests/it/report_html.rs)",
    },
];

/// The most of a version line shown.
const VERSION_CHARS: usize = 48;

/// How long a program may take to print its version.
const VERSION_WITHIN: Duration = Duration::from_secs(20);

/// `program` on `PATH`, or in `/usr/sbin` and `/sbin` (where Debian puts
/// `nft` and `ip`, off an ordinary user's `PATH`; `.ci/run` adds them).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The first line the program prints for its version (stdout, else
/// stderr), or why there is none.
fn version(path: &Path, arg: &str) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("does not start: {e}"))?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    // Versions are a line or two: reading one pipe after the other cannot
    // fill the other. A reader left behind by a program that hangs is dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let pipes = [stdout.as_mut().map(|p| p as &mut dyn Read), stderr.as_mut().map(|p| p as &mut dyn Read)];
        for pipe in pipes.into_iter().flatten() {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            text.push_str(&s);
            text.push('\n');
        }
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + VERSION_WITHIN;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer to `{arg}` within {VERSION_WITHIN:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let text = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    // Some (curl) list every library they link with: the start is the version.
    let line = match line.char_indices().nth(VERSION_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    };
    if !status.success() {
        return Err(format!(
            "`{arg}` failed ({status}){}",
            if line.is_empty() { String::new() } else { format!(": {line}") }
        ));
    }
    Ok(line)
}

/// Whether this process runs as root (from `/proc/self/status`; `None`
/// where there is no such file).
fn is_root() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    Some(uid.split_whitespace().nth(1)? == "0")
}

pub fn doctor(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec!["program", "package", "status", "version", "used by"]);
    let mut missing = Vec::new();
    for p in PROGRAMS {
        let (status, version) = match find(p.program) {
            None => {
                missing.push(p.package);
                (Cell::new("missing").fg(Color::Red), String::new())
            }
            Some(path) => match version(&path, p.version_arg) {
                Ok(v) => (Cell::new("present").fg(Color::Green), v),
                Err(why) => {
                    missing.push(p.package);
                    (Cell::new("broken").fg(Color::Red), why)
                }
            },
        };
        table.add_row(vec![
            Cell::new(p.program),
            Cell::new(p.package),
            status,
            Cell::new(lockstep::text::visible(&version)),
            Cell::new(p.used_by),
        ]);
    }
    println!("{table}");
    let root = is_root();
    if root == Some(false) {
        println!("not root: the nftables tests need root (network namespaces) and are SKIPPED without it");
    }
    if missing.is_empty() {
        println!("every real peer is here: no peer test will be SKIPPED for a missing program");
    } else {
        println!("missing: {} (their tests are SKIPPED; LOCKSTEP_REQUIRE_PEERS=1 makes them fail)", missing.join(", "));
        let sudo = if root == Some(true) { "" } else { "sudo " };
        println!("install them (Debian packages, as .ci/run does; the tests then `npm ci` oidc-provider themselves):");
        println!("  {sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {}", missing.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
