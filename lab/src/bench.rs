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
use lockstep::net::sim::{BaselineLoad, SimParams, bare_baseline};
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
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("figures: {}", args.json.display());
    Ok(ExitCode::SUCCESS)
}
