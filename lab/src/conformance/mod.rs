//! `lab conformance`: the firewall conformance suite on a folder of case files
//! (default `tests/conformance/cases`), against the pure WFP model or real nftables.
//!
//! Exit codes as the rest of the CLI: 0 every case passed (or is listed as
//! unsupported and still fails), 1 a case failed or an unsupported-list entry is
//! stale or unknown, 2 a usage or input error (a case file that does not parse,
//! with its `file:line:col`; a missing folder; a backend this machine cannot run).

mod nftables;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use lockstep::conformance::{Backend, UnsupportedList, WfpModel, load_cases, load_unsupported, run_suite};

/// The shipped case folder, relative to the repository root.
const SHIPPED_CASES: &str = "tests/conformance/cases";

#[derive(Args)]
pub struct ConformanceArgs {
    /// A folder of case files (`NN-slug.toml`; default: tests/conformance/cases).
    dir: Option<PathBuf>,
    /// The firewall to run them on: `wfp-model` (the pure WFP model, with the
    /// agent's own WFP backend for `agent` steps) or `nftables` (real nftables
    /// in network namespaces, through the shipped backend; needs root, nft and ip).
    #[arg(long, value_enum, default_value_t = BackendName::WfpModel)]
    backend: BackendName,
    /// The backend's list of cases it cannot run, each with a reason (default:
    /// `<backend>.unsupported.toml` next to the case folder, if there is one;
    /// otherwise every case must pass).
    #[arg(long)]
    unsupported: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendName {
    /// The pure model of the Windows Filtering Platform (src/wfp).
    WfpModel,
    /// Real nftables through src/nft (NftFirewall), in network namespaces.
    Nftables,
}

impl BackendName {
    fn as_str(self) -> &'static str {
        match self {
            BackendName::WfpModel => "wfp-model",
            BackendName::Nftables => "nftables",
        }
    }
}

/// Runs the suite; prints the report.
pub fn conformance(args: ConformanceArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(SHIPPED_CASES));
    if !dir.is_dir() {
        eprintln!("lab conformance: {} is not a folder of case files", dir.display());
        return Ok(ExitCode::from(2));
    }
    let cases = match load_cases(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let list_path = args.unsupported.clone().or_else(|| default_list(&dir, args.backend));
    let unsupported = match &list_path {
        None => UnsupportedList::default(),
        Some(p) if args.unsupported.is_some() && !p.is_file() => {
            eprintln!("lab conformance: {}: no such file", p.display());
            return Ok(ExitCode::from(2));
        }
        Some(p) => match load_unsupported(p) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let mut backend: Box<dyn Backend> = match args.backend {
        BackendName::WfpModel => Box::new(WfpModel::new()),
        BackendName::Nftables => match nftables::NftBackend::new() {
            Ok(b) => Box::new(b),
            Err(reason) => {
                eprintln!("lab conformance: the nftables backend cannot run here: {reason}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let list_note = match &list_path {
        Some(p) => format!("unsupported list {}", p.display()),
        None => "no unsupported list: every case must pass".to_string(),
    };
    eprintln!(
        "lab conformance: {} cases from {} on {} ({list_note})",
        cases.len(),
        dir.display(),
        args.backend.as_str()
    );
    let report = run_suite(backend.as_mut(), &cases, &unsupported);
    drop(backend);
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `<dir>/../<backend>.unsupported.toml`, if it exists.
fn default_list(dir: &Path, backend: BackendName) -> Option<PathBuf> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = parent.join(format!("{}.unsupported.toml", backend.as_str()));
    path.is_file().then_some(path)
}
