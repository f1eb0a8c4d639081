//! `lab bench`: throughput of the lab against a bare turmoil baseline
//! measured in the same run, on the same machine.
//!
//! 1. Scenario runs per second of `boot-to-login`, beside a bare turmoil
//!    simulation with the same number of hosts, TCP connections and
//!    request/response exchanges, whose handlers are an echo.
//! 2. Simulated seconds per wall second of a lab that idles (signed in,
//!    nothing to do), beside the same bare simulation idling as long.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lockstep::input::Source;
use lockstep::net::sim::{BaselineLoad, DEFAULT_TCP_CAPACITY, SimParams, bare_baseline};
use lockstep::scenario::{EMBEDDED_PREFIX, Scenario};
use lockstep::world;
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
    /// Timed runs of each measurement.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Simulated time of the idle measurement.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Seeds of the exploration measurement (`lab explore`'s runs, one job).
    #[arg(long, default_value_t = 20)]
    explore_seeds: u64,
    /// Fleet sizes of the tick-cost measurement (bare turmoil hosts idling).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    fleet: Vec<usize>,
    /// Simulated time each fleet idles.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    fleet_idle: Duration,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "reports/bench.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Figures {
    runs: u32,
    hosts: usize,
    connections_per_run: u64,
    exchanges_per_run: u64,
    lab_runs_per_sec: f64,
    baseline_runs_per_sec: f64,
    lab_vs_baseline_slowdown: f64,
    idle_sim_seconds: f64,
    lab_idle_sim_s_per_wall_s: f64,
    baseline_idle_sim_s_per_wall_s: f64,
    idle_slowdown: f64,
    tick_ms: u64,
    explore: ExploreFigures,
    fleet: Vec<FleetFigures>,
}

#[derive(Serialize)]
struct ExploreFigures {
    seeds: u64,
    lab_seeds_per_sec: f64,
    baseline_seeds_per_sec: f64,
    lab_vs_baseline_slowdown: f64,
    mean_sim_s_per_seed: f64,
    mean_hosts: f64,
}

#[derive(Serialize)]
struct FleetFigures {
    hosts: usize,
    sim_s: f64,
    wall_s: f64,
    ns_per_host_tick: f64,
    peak_rss_mib: Option<f64>,
    projected_24h_wall_s: f64,
}

/// Writes a benchmark's figures as JSON to `path` (creating its folder) and says where.
pub(crate) fn write_figures(path: &std::path::Path, figures: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(figures)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("figures: {}", path.display());
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    // Wall time is what a benchmark measures; simulated code never sees it.
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let runs = args.runs.max(1);
    let scenario = Scenario::load(&format!("{EMBEDDED_PREFIX}boot-to-login")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hosts = scenario.lab.running_hosts();
    let params = SimParams {
        seed: scenario.seed,
        epoch: scenario.resolved.epoch,
        tick: scenario.lab.sim.tick,
        latency: scenario.lab.sim.latency,
        tcp_capacity: DEFAULT_TCP_CAPACITY,
    };

    // Warm up, and learn the run's traffic.
    let probe = world::run(&scenario, scenario.seed);
    anyhow::ensure!(probe.passed(), "boot-to-login does not pass: {:?}", probe.failures());
    // The same hosts, connections and exchanges over the same simulated time (the
    // boot's stages take simulated seconds, which turmoil ticks through).
    let load = BaselineLoad {
        hosts,
        connections: probe.connections,
        exchanges: probe.segments / 2,
        idle_until: Duration::from_millis(probe.sim_ms),
    };
    bare_baseline(&params, load).context("baseline warm-up")?;

    // Interleave lab and baseline runs so that machine noise hits both.
    let mut lab_time = Duration::ZERO;
    let mut base_time = Duration::ZERO;
    for _ in 0..runs {
        let (run, t) = timed(|| world::run(&scenario, scenario.seed));
        anyhow::ensure!(run.passed(), "boot-to-login failed during the benchmark");
        lab_time += t;
        let (r, t) = timed(|| bare_baseline(&params, load));
        r.context("baseline")?;
        base_time += t;
    }
    let lab_rps = f64::from(runs) / lab_time.as_secs_f64();
    let base_rps = f64::from(runs) / base_time.as_secs_f64();

    // Idle: signed in, then nothing but the agent's session checks.
    let idle = humantime::format_duration(args.idle).to_string();
    let text = format!(
        "name = \"idle\"\nseed = 1\n[config.gateway]\nsession_duration = \"{}\"\n\
         [[step]]\ndo = \"boot\"\n[[step]]\ndo = \"sign_in\"\nuser = \"alice\"\nexpect = \"agent connected\"\n\
         [[step]]\ndo = \"advance\"\nby = \"{idle}\"\n",
        humantime::format_duration(args.idle * 2)
    );
    let idle_scenario =
        Scenario::parse(&Source::new("<bench idle>", text), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (idle_run, idle_wall) = timed(|| world::run(&idle_scenario, 1));
    anyhow::ensure!(idle_run.passed(), "idle scenario failed: {:?}", idle_run.failures());
    let idle_sim = Duration::from_millis(idle_run.sim_ms);
    let idle_load = BaselineLoad { hosts, connections: 1, exchanges: 1, idle_until: idle_sim };
    let (r, base_idle_wall) = timed(|| bare_baseline(&params, idle_load));
    r.context("idle baseline")?;
    let lab_idle = idle_sim.as_secs_f64() / idle_wall.as_secs_f64();
    let base_idle = idle_sim.as_secs_f64() / base_idle_wall.as_secs_f64();

    let explore = explore_figures(args.explore_seeds.max(1), &params)?;
    let mut fleet = Vec::new();
    for &n in &args.fleet {
        fleet.push(fleet_figures(n.max(2), args.fleet_idle, &params)?);
    }

    let figures = Figures {
        runs,
        hosts,
        connections_per_run: load.connections,
        exchanges_per_run: load.exchanges,
        lab_runs_per_sec: lab_rps,
        baseline_runs_per_sec: base_rps,
        lab_vs_baseline_slowdown: base_rps / lab_rps,
        idle_sim_seconds: idle_sim.as_secs_f64(),
        lab_idle_sim_s_per_wall_s: lab_idle,
        baseline_idle_sim_s_per_wall_s: base_idle,
        idle_slowdown: base_idle / lab_idle,
        tick_ms: lockstep::net::millis(scenario.lab.sim.tick),
        explore,
        fleet,
    };
    println!("lab bench ({runs} runs each, {hosts} hosts, tick {} ms)", figures.tick_ms);
    println!(
        "  boot-to-login      {:>10.1} runs/s   ({} connections, {} exchanges per run)",
        lab_rps, load.connections, load.exchanges
    );
    println!(
        "  bare turmoil       {:>10.1} runs/s   (same hosts, connections, exchanges, simulated time; echo handlers)",
        base_rps
    );
    println!("  ratio              {:>10.2}x slower than the baseline", figures.lab_vs_baseline_slowdown);
    println!("  idle {:<12}  {:>10.0} simulated s per wall s", idle, lab_idle);
    println!("  bare turmoil idle  {:>10.0} simulated s per wall s", base_idle);
    println!("  ratio              {:>10.2}x the baseline's time per simulated second", figures.idle_slowdown);
    let e = &figures.explore;
    println!(
        "  explore            {:>10.2} seeds/s  ({} seeds, one job; {:.0} simulated s and {:.1} hosts per seed)",
        e.lab_seeds_per_sec, e.seeds, e.mean_sim_s_per_seed, e.mean_hosts
    );
    println!(
        "  bare turmoil       {:>10.2} seeds/s  (same hosts, connections, exchanges, simulated time)",
        e.baseline_seeds_per_sec
    );
    println!("  ratio              {:>10.2}x slower than the baseline", e.lab_vs_baseline_slowdown);
    for f in &figures.fleet {
        println!(
            "  fleet {:>6} hosts  {:>10.1} ns per host-tick ({:.1} simulated s in {:.2} s; peak RSS {}); 24 h would take {:.0} s",
            f.hosts,
            f.ns_per_host_tick,
            f.sim_s,
            f.wall_s,
            f.peak_rss_mib.map_or("?".to_string(), |m| format!("{m:.0} MiB")),
            f.projected_24h_wall_s
        );
    }
    write_figures(&args.json, &figures)?;
    Ok(ExitCode::SUCCESS)
}

/// `lab explore`'s runs, one after the other on one thread, beside bare
/// turmoil runs with the same hosts, connections, exchanges and simulated
/// time, interleaved.
fn explore_figures(seeds: u64, params: &SimParams) -> anyhow::Result<ExploreFigures> {
    use lockstep::explore;
    let mut lab_time = Duration::ZERO;
    let mut base_time = Duration::ZERO;
    let mut sim = Duration::ZERO;
    let mut hosts_total = 0usize;
    for seed in 1..=seeds {
        let derived = explore::derive(seed, explore::Bounds::default(), &[]);
        let scenario =
            explore::parse(&derived.scenario_toml(), "<bench explore>").map_err(|e| anyhow::anyhow!("{e}"))?;
        let (run, t) = timed(|| world::run(&scenario, seed));
        lab_time += t;
        let run_sim = Duration::from_millis(run.sim_ms);
        sim += run_sim;
        let hosts = scenario.lab.running_hosts();
        hosts_total += hosts;
        let load =
            BaselineLoad { hosts, connections: run.connections, exchanges: run.segments / 2, idle_until: run_sim };
        let p = SimParams { seed, latency: scenario.lab.sim.latency, ..params.clone() };
        let (r, t) = timed(|| bare_baseline(&p, load));
        r.context("explore baseline")?;
        base_time += t;
    }
    let n = seeds as f64;
    let lab = n / lab_time.as_secs_f64();
    let base = n / base_time.as_secs_f64();
    Ok(ExploreFigures {
        seeds,
        lab_seeds_per_sec: lab,
        baseline_seeds_per_sec: base,
        lab_vs_baseline_slowdown: base / lab,
        mean_sim_s_per_seed: sim.as_secs_f64() / n,
        mean_hosts: hosts_total as f64 / n,
    })
}

/// What a fleet costs in turmoil's fixed tick, before any lab component
/// runs: `hosts` bare hosts (echo servers) idling for `idle`, and the wall
/// time that projects to for 24 simulated hours.
fn fleet_figures(hosts: usize, idle: Duration, params: &SimParams) -> anyhow::Result<FleetFigures> {
    let load = BaselineLoad { hosts, connections: 1, exchanges: 1, idle_until: idle };
    let (r, wall) = timed(|| bare_baseline(params, load));
    let sim = r.context("fleet baseline")?;
    let ticks = sim.as_secs_f64() / params.tick.as_secs_f64();
    let ns = wall.as_secs_f64() * 1e9 / (ticks * hosts as f64);
    let day_ticks = 86_400.0 / params.tick.as_secs_f64();
    Ok(FleetFigures {
        hosts,
        sim_s: sim.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        ns_per_host_tick: ns,
        peak_rss_mib: peak_rss_mib(),
        projected_24h_wall_s: ns * 1e-9 * day_ticks * hosts as f64,
    })
}

/// The process's peak resident set so far (Linux), MiB.
fn peak_rss_mib() -> Option<f64> {
    crate::bench_gateway::rss_kib().1.map(|kib| kib as f64 / 1024.0)
}
