//! `lab run` and `lab replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use lockstep::input::InputError;
use lockstep::report::{self, replay_command};
use lockstep::scenario::{EMBEDDED, EMBEDDED_PREFIX, Scenario};
use lockstep::text::visible;
use lockstep::trace::format_offset;
use lockstep::world::{self, RunReport};

#[derive(Args)]
pub struct RunArgs {
    /// Scenario files, folders of them, or `embedded:NAME`.
    paths: Vec<String>,
    /// Run every scenario with this seed instead of its own.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write junit.xml, results.json, report.html, summary.md and traces/.
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The scenario file (or `embedded:NAME`).
    file: String,
    /// The seed to replay (default: the scenario's own).
    #[arg(long)]
    seed: Option<u64>,
}

/// Expands the command line's paths into scenario files, in a stable order.
fn scenario_paths(paths: &[String]) -> Result<Vec<String>, InputError> {
    let defaults: Vec<String> = if paths.is_empty() {
        if Path::new("scenarios").is_dir() {
            vec!["scenarios".into()]
        } else {
            EMBEDDED.iter().map(|(n, _)| format!("{EMBEDDED_PREFIX}{n}")).collect()
        }
    } else {
        paths.to_vec()
    };
    let mut out = Vec::new();
    for p in defaults {
        if p.starts_with(EMBEDDED_PREFIX) {
            out.push(p);
            continue;
        }
        let path = Path::new(&p);
        if path.is_dir() {
            let mut found = Vec::new();
            collect_toml(path, &mut found).map_err(|e| InputError {
                file: p.clone(),
                position: None,
                message: format!("cannot read folder: {e}"),
            })?;
            if found.is_empty() {
                return Err(InputError {
                    file: p.clone(),
                    position: None,
                    message: "no .toml scenario files in this folder".into(),
                });
            }
            out.extend(found);
        } else if path.is_file() {
            out.push(p);
        } else {
            return Err(InputError { file: p.clone(), position: None, message: "no such file or folder".into() });
        }
    }
    Ok(out)
}

fn collect_toml(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_toml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path.display().to_string());
        }
    }
    Ok(())
}

/// Loads every scenario; on any input error prints them all and returns None.
fn load_all(paths: &[String]) -> Option<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match Scenario::load(p) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Some(scenarios)
    } else {
        for e in errors {
            eprintln!("{}", visible(&e.to_string()));
        }
        None
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let paths = match scenario_paths(&args.paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", visible(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    let Some(scenarios) = load_all(&paths) else {
        return Ok(ExitCode::from(2));
    };
    // Nothing runs unless its reports can be written.
    for dir in [args.report_dir.clone(), args.report_dir.join("traces")] {
        if let Err(e) = report::check_writable(&dir) {
            eprintln!("lab run: the report folder is not writable: {}", visible(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    }
    let mut runs = Vec::new();
    for s in &scenarios {
        let seed = args.seed.unwrap_or(s.seed);
        runs.push(world::run(s, seed));
    }
    print_summary(&runs);
    let written = report::write_all(&args.report_dir, &runs);
    let dir = visible(&args.report_dir.display().to_string()).into_owned();
    println!("reports: {dir}");
    println!("report: {}", visible(&args.report_dir.join(report::HTML_REPORT).display().to_string()));
    println!("summary: {}", visible(&args.report_dir.join(report::MARKDOWN_SUMMARY).display().to_string()));
    let passed = runs.iter().filter(|r| r.passed()).count();
    println!("{passed} passed, {} failed", runs.len() - passed);
    if let Err(errors) = written {
        // Every other file was written; say which were not.
        for e in &errors {
            eprintln!("lab run: {}", visible(&e.to_string()));
        }
        eprintln!("lab run: {} report file(s) could not be written", errors.len());
        return Ok(ExitCode::from(2));
    }
    Ok(if passed == runs.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_summary(runs: &[RunReport]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(vec![
        "scenario",
        "seed",
        "steps",
        "violations",
        "sim time",
        "events",
        "result",
    ]);
    for r in runs {
        let steps_ok = r.steps.iter().filter(|s| s.ok).count();
        let status = report::status(r);
        let color = if status == "pass" { Color::Green } else { Color::Red };
        table.add_row(vec![
            Cell::new(visible(&r.scenario)),
            Cell::new(r.seed),
            Cell::new(format!("{steps_ok}/{}", r.steps.len())),
            Cell::new(r.violations.len()),
            Cell::new(format_offset(r.sim_ms).trim_start_matches('+')),
            Cell::new(r.trace.events.len()),
            Cell::new(status.to_uppercase()).fg(color),
        ]);
    }
    println!("{table}");
    for r in runs.iter().filter(|r| !r.findings.is_empty()) {
        println!();
        println!("FINDINGS {} ({})", visible(&r.scenario), visible(&r.file));
        for f in &r.findings {
            println!("  {}", visible(f));
        }
    }
    for r in runs.iter().filter(|r| !r.passed()) {
        println!();
        println!("FAIL {} ({})", visible(&r.scenario), visible(&r.file));
        for f in r.failures() {
            println!("  {}", visible(&f));
        }
        println!("  replay: {}", visible(&replay_command(&r.file, r.seed)));
    }
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let scenario = match Scenario::load(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", visible(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    let run = world::run(&scenario, seed);
    let mut out = std::io::stdout().lock();
    // A closed pipe (e.g. `| head`) is not an error worth reporting.
    let _ = out.write_all(run.trace.to_jsonl().as_bytes());
    let _ = out.flush();
    let failures = run.failures();
    eprintln!(
        "{}: seed {seed}, {} events, digest {}",
        visible(&run.scenario),
        run.trace.events.len(),
        run.trace.digest()
    );
    for f in &failures {
        eprintln!("  {}", visible(f));
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
