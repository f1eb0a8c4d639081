//! `lab explore`: run a swarm of generated scenarios (every parameter drawn
//! from the seed), report failures with their replay line, and shrink each
//! into a scenario file ready to commit as a regression.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lockstep::explore::{self, Bounds, Override, SeedResult, Verdict, shard_seeds, shrink};
use lockstep::text::{shell_line, visible};
use serde::Serialize;

#[derive(Args)]
pub struct ExploreArgs {
    /// How many seeds to run (before sharding).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Runs in parallel (default: the machine's cores; at least 1).
    #[arg(long, value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// Run only this machine's share of the seeds, I/N (I from 1): seed S
    /// belongs to shard (S - FROM) % N + 1.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(u64, u64)>,
    /// Take no new seed after this much wall time (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    time_limit: Option<Duration>,
    /// Override a lab setting in every run, SECTION.KEY=VALUE (repeatable),
    /// e.g. gateway.danger_skip_expiry_check=true to explore a broken gateway.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Most actions drawn per run (safety phase).
    #[arg(long, default_value_t = Bounds::default().max_actions)]
    max_actions: usize,
    /// Runs spent minimizing each failure.
    #[arg(long, default_value_t = 150)]
    shrink_budget: usize,
    /// Failures to minimize (the lowest seeds first).
    #[arg(long, default_value_t = 3)]
    max_shrinks: usize,
    /// Print every seed's drawn options.
    #[arg(long)]
    verbose: bool,
    /// Where the summary and the minimized scenarios go.
    #[arg(long, default_value = "reports/explore")]
    report_dir: PathBuf,
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 jobs would run nothing: give 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 2/8")?;
    let i: u64 = i.trim().parse().map_err(|_| format!("`{i}` is not a number"))?;
    let n: u64 = n.trim().parse().map_err(|_| format!("`{n}` is not a number"))?;
    if n == 0 || i == 0 || i > n {
        return Err(format!("{i}/{n}: need 1 <= I <= N"));
    }
    Ok((i, n))
}

#[derive(Serialize)]
struct Failure<'a> {
    seed: u64,
    options: String,
    #[serde(flatten)]
    verdict: &'a Verdict,
    replay: String,
    shrunk_file: Option<String>,
    shrunk_actions: Option<usize>,
    /// Why minimizing failed (the other failures and explore.json are
    /// still written).
    #[serde(skip_serializing_if = "Option::is_none")]
    shrink_error: Option<String>,
}

/// What one seed drew and what came of it, in `explore.json`.
#[derive(Serialize)]
struct SeedRecord<'a> {
    seed: u64,
    /// The drawn options, as printed.
    options: String,
    drawn: Drawn,
    /// `outcome` (pass, violation, liveness, lab_error) and its details.
    #[serde(flatten)]
    verdict: &'a Verdict,
    sim_ms: u64,
    events: usize,
    /// The trace's SHA-256: the same seed and build give the same digest.
    digest: &'a str,
}

/// The lab knobs and timeline a seed drew.
#[derive(Serialize)]
struct Drawn {
    session_duration: String,
    latency: String,
    session_poll: String,
    idp_profile: &'static str,
    jwks_max_age: String,
    /// The safety phase's actions, `do` then its fields (TOML values).
    actions: Vec<String>,
}

impl<'a> SeedRecord<'a> {
    fn of(r: &'a SeedResult) -> SeedRecord<'a> {
        let d = &r.derived;
        let time = |t| humantime::format_duration(t).to_string();
        SeedRecord {
            seed: d.seed,
            options: d.options_line(),
            drawn: Drawn {
                session_duration: time(d.session_duration),
                latency: time(d.latency),
                session_poll: time(d.session_poll),
                idp_profile: d.idp_profile,
                jwks_max_age: time(d.jwks_max_age),
                actions: d
                    .safety
                    .iter()
                    .map(|s| {
                        let mut a = s.action.to_string();
                        for (k, v) in &s.fields {
                            a.push_str(&format!(" {k}={v}"));
                        }
                        a
                    })
                    .collect(),
            },
            verdict: &r.verdict,
            sim_ms: r.sim_ms,
            events: r.events,
            digest: &r.digest,
        }
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    from: u64,
    seeds_requested: u64,
    shard: Option<String>,
    seeds_run: usize,
    stopped_by_time_limit: bool,
    wall_s: f64,
    seeds_per_s: f64,
    sim_s: f64,
    counts: Vec<(&'static str, usize)>,
    overrides: &'a [Override],
    failures: Vec<Failure<'a>>,
    /// Every seed run, in seed order.
    seeds: Vec<SeedRecord<'a>>,
}

pub fn explore(args: ExploreArgs) -> anyhow::Result<ExitCode> {
    let mut overrides = Vec::new();
    for given in &args.set {
        match Override::parse(given) {
            Ok(o) => overrides.push(o),
            Err(e) => {
                eprintln!("lab explore: {}", visible(&e.to_string()));
                return Ok(ExitCode::from(2));
            }
        }
    }
    let bounds = Bounds { max_actions: args.max_actions.max(1), ..Bounds::default() };
    // A bad override fails every run the same way: check one before the swarm.
    let probe = explore::derive(args.from, bounds, &overrides);
    if let Err(e) = explore::parse(&probe.scenario_toml(), "lab explore --set") {
        eprintln!("lab explore: {}", visible(&e.to_string()));
        return Ok(ExitCode::from(2));
    }
    // Nothing runs unless its summary can be written.
    if let Err(e) = lockstep::report::check_writable(&args.report_dir) {
        eprintln!("lab explore: the report folder is not writable: {}", visible(&e.to_string()));
        return Ok(ExitCode::from(2));
    }
    let (index, shards) = args.shard.unwrap_or((1, 1));
    let seeds: Vec<u64> = shard_seeds(args.from, args.seeds, index, shards).collect();
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);

    let shard_text = args.shard.map(|(i, n)| format!("{i}/{n}"));
    println!(
        "lab explore: {} seeds from {}{} on {jobs} jobs, up to {} actions each{}",
        seeds.len(),
        args.from,
        shard_text.as_ref().map(|s| format!(" (shard {s})")).unwrap_or_default(),
        bounds.max_actions,
        if overrides.is_empty() {
            String::new()
        } else {
            format!(
                ", with {}",
                visible(&overrides.iter().map(|o| format!("{}={}", o.path, o.value)).collect::<Vec<_>>().join(" "))
            )
        }
    );
    println!("first seed: {}", visible(&probe.options_line()));

    let bar = ProgressBar::with_draw_target(Some(seeds.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Wall time is what the time limit and the throughput measure; the
    // simulated runs never see it.
    let started = Instant::now();
    let deadline = args.time_limit.map(|d| started + d);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SeedResult>>> = Mutex::new(vec![None; seeds.len()]);
    let failures_seen = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let result = explore::run_seed(seed, bounds, &overrides);
                    // Printed whether or not output is a terminal (where
                    // the bar steps aside for them); only the bar is not.
                    if args.verbose {
                        let line = format!("{} -> {}", result.derived.options_line(), result.verdict.kind());
                        bar.suspend(|| println!("{}", visible(&line)));
                    }
                    if result.verdict != Verdict::Pass {
                        let n = failures_seen.fetch_add(1, Ordering::Relaxed) + 1;
                        bar.set_message(format!("{n} failing"));
                        let line = format!("FAIL seed {seed}: {}", describe(&result.verdict));
                        bar.suspend(|| println!("{}", visible(&line)));
                    }
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(result);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let wall = started.elapsed();
    let results: Vec<SeedResult> =
        results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect();
    let stopped = results.len() < seeds.len();

    let kinds = ["pass", "violation", "liveness", "lab-error"];
    let counts: Vec<(&'static str, usize)> =
        kinds.iter().map(|k| (*k, results.iter().filter(|r| r.verdict.kind() == *k).count())).collect();
    let sim_s = results.iter().map(|r| r.sim_ms as f64 / 1000.0).sum::<f64>();
    let rate = results.len() as f64 / wall.as_secs_f64().max(1e-9);

    let mut failures = Vec::new();
    let failing: Vec<&SeedResult> = results.iter().filter(|r| r.verdict != Verdict::Pass).collect();
    for (n, r) in failing.iter().enumerate() {
        let replay = replay_line(r.derived.seed, &args, &overrides);
        let mut failure = Failure {
            seed: r.derived.seed,
            options: r.derived.options_line(),
            verdict: &r.verdict,
            replay,
            shrunk_file: None,
            shrunk_actions: None,
            shrink_error: None,
        };
        if n < args.max_shrinks {
            match shrink_and_write(r, &args, &failure.replay) {
                Ok((file, actions)) => {
                    failure.shrunk_file = Some(file.display().to_string());
                    failure.shrunk_actions = Some(actions);
                }
                Err(e) => failure.shrink_error = Some(format!("{e:#}")),
            }
        }
        failures.push(failure);
    }

    println!();
    for f in &failures {
        println!("FAIL seed {} ({})", f.seed, visible(&f.options));
        println!("  {}", visible(&describe(f.verdict)));
        println!("  replay: {}", visible(&f.replay));
        if let Some(e) = &f.shrink_error {
            println!("  not minimized: {}", visible(e));
        }
        if let (Some(file), Some(actions)) = (&f.shrunk_file, f.shrunk_actions) {
            println!("  minimized to {actions} drawn actions: {}", visible(&shell_line(["lab", "run", file])));
        }
    }
    let summary = Summary {
        from: args.from,
        seeds_requested: args.seeds,
        shard: shard_text,
        seeds_run: results.len(),
        stopped_by_time_limit: stopped,
        wall_s: wall.as_secs_f64(),
        seeds_per_s: rate,
        sim_s,
        counts: counts.clone(),
        overrides: &overrides,
        failures,
        seeds: results.iter().map(SeedRecord::of).collect(),
    };
    let path = args.report_dir.join("explore.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} seeds in {:.1} s ({rate:.1} seeds/s, {sim_s:.0} simulated s){}: {}",
        results.len(),
        wall.as_secs_f64(),
        if stopped { ", stopped by the time limit" } else { "" },
        counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    );
    println!("wrote {}", path.display());
    Ok(if failing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Violation { invariants, first } => format!("{} violated: {first}", invariants.join(", ")),
        Verdict::Liveness { failure } => format!("liveness: {failure}"),
        Verdict::LabError { message } => format!("lab error: {message}"),
    }
}

/// The one-line command that runs exactly this seed again, quoted for a
/// POSIX shell (exact: [`visible`] before a person sees it).
fn replay_line(seed: u64, args: &ExploreArgs, overrides: &[Override]) -> String {
    let mut words =
        vec!["lab".to_string(), "explore".into(), "--from".into(), seed.to_string(), "--seeds".into(), "1".into()];
    if args.max_actions != Bounds::default().max_actions {
        words.extend(["--max-actions".to_string(), args.max_actions.to_string()]);
    }
    for o in overrides {
        words.extend(["--set".to_string(), format!("{}={}", o.path, o.value)]);
    }
    shell_line(words.iter().map(String::as_str))
}

/// Minimizes a failing seed, writes it as a scenario file, and checks the
/// file reproduces the failure on its own.
fn shrink_and_write(r: &SeedResult, args: &ExploreArgs, replay: &str) -> anyhow::Result<(PathBuf, usize)> {
    let shrunk = shrink::ddmin(&r.derived, &r.verdict, args.shrink_budget);
    let file = args.report_dir.join(format!("explore-{}.toml", r.derived.seed));
    let header = format!(
        "Minimized by `lab explore` ({} runs) from seed {}: {} of {} drawn actions kept.\n\
         Original failure: {}\nMinimized failure: {}\nFound by: {replay}\n\
         Commit it under scenarios/ as a regression: it fails until the cause is fixed.",
        shrunk.runs,
        r.derived.seed,
        shrunk.safety.len(),
        r.derived.safety.len(),
        describe(&r.verdict),
        describe(&shrunk.verdict),
    );
    // TOML comments cannot hold control characters: show them escaped.
    let header: Vec<String> = header.lines().map(|l| visible(l).into_owned()).collect();
    let text = r.derived.scenario_toml_with(&shrunk.safety, &header.join("\n"));
    std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
    check_reproduces(&file, r, r.derived.liveness_starts_after(&shrunk.safety))?;
    Ok((file, shrunk.safety.len()))
}

fn check_reproduces(file: &Path, r: &SeedResult, liveness_after: usize) -> anyhow::Result<()> {
    let scenario =
        lockstep::scenario::Scenario::load(&file.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = lockstep::world::run(&scenario, scenario.seed);
    let verdict = explore::judge(&run, liveness_after);
    anyhow::ensure!(
        r.verdict.same_failure(&verdict),
        "{} does not reproduce the failure (it gives: {})",
        file.display(),
        describe(&verdict)
    );
    Ok(())
}
