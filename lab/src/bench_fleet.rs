//! `lab bench fleet`: N devices of the default lab booting at once against
//! one gateway, IdP and MFA service, then a simulated stretch (a day by
//! default) in which sessions expire and users sign in again: wall time,
//! peak memory and simulated-to-wall ratio, beside a bare turmoil run with
//! the same hosts, connections, exchanges and ticks measured right after.
//!
//! turmoil polls every host every tick, and its delivery of messages walks
//! every pair of hosts, so a tick costs more per host as the fleet grows.
//! Sizes too large to run are projected from the two largest measured ones
//! (cost per tick fitted as a·hosts + b·hosts²), and labelled as such.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lockstep::config::LabConfig;
use lockstep::net::sim::{BaselineLoad, DEFAULT_TCP_CAPACITY, SimParams, bare_baseline};
use lockstep::world::fleet::{FleetOptions, FleetRun, run_fleet};
use serde::Serialize;

use crate::bench_gateway::rss_kib;

#[derive(Args)]
pub struct FleetArgs {
    /// Fleet sizes to run (devices; each adds the gateway, IdP and MFA hosts).
    #[arg(long, value_delimiter = ',', default_value = "10,30")]
    devices: Vec<usize>,
    /// Simulated time each fleet runs.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// turmoil's tick for the fleet (scenarios use the lab's 1 ms).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// How often a user looks at the tray and signs in again if locked.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    notice: Duration,
    /// Fleet sizes to project a day's wall time for, from the measured ones.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    project: Vec<usize>,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "reports/bench-fleet.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct SizeFigures {
    run: FleetRun,
    wall_s: f64,
    sim_s_per_wall_s: f64,
    ns_per_host_tick: f64,
    peak_rss_mib: Option<f64>,
    baseline_wall_s: f64,
    lab_vs_baseline_slowdown: f64,
}

#[derive(Serialize)]
struct Projection {
    devices: usize,
    hosts: usize,
    day_wall_s: f64,
}

#[derive(Serialize)]
struct Figures {
    tick_ms: u64,
    duration_s: f64,
    sizes: Vec<SizeFigures>,
    projected_day: Vec<Projection>,
}

/// Resets the process's peak-RSS mark (Linux), so each size reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn bench_fleet(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    if args.tick.is_zero() {
        anyhow::bail!("--tick must be above zero");
    }
    let (lab, resolved) = LabConfig::parse(&LabConfig::default_source()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "lab bench fleet: {} simulated, {} tick, gateway sessions of {}, agent polls every {}, users look every {}",
        humantime::format_duration(args.duration),
        humantime::format_duration(args.tick),
        humantime::format_duration(lab.gateway.session_duration),
        humantime::format_duration(lab.agent.session_poll),
        humantime::format_duration(args.notice),
    );
    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>8} {:>9} {:>9}",
        "devices",
        "hosts",
        "wall s",
        "sim/wall",
        "RSS MiB",
        "ns/h-tick",
        "base s",
        "ratio",
        "sign-ins",
        "relocks",
        "failed"
    );
    let mut sizes = Vec::new();
    for &devices in &args.devices {
        let options =
            FleetOptions { devices, duration: args.duration, tick: args.tick, notice: args.notice, seed: args.seed };
        reset_peak_rss();
        let start = Instant::now();
        let run = run_fleet(&lab, &resolved, &options).with_context(|| format!("fleet of {devices}"))?;
        let wall = start.elapsed();
        let peak = rss_kib().1.map(|k| k as f64 / 1024.0);
        let params = SimParams {
            seed: args.seed,
            epoch: resolved.epoch,
            tick: args.tick,
            latency: lab.sim.latency,
            tcp_capacity: DEFAULT_TCP_CAPACITY + devices,
        };
        let load = BaselineLoad {
            hosts: run.hosts,
            connections: run.connections,
            exchanges: run.segments / 2,
            idle_until: Duration::from_millis(run.sim_ms),
        };
        let start = Instant::now();
        bare_baseline(&params, load).context("fleet baseline")?;
        let base = start.elapsed();
        let f = SizeFigures {
            wall_s: wall.as_secs_f64(),
            sim_s_per_wall_s: run.sim_ms as f64 / 1000.0 / wall.as_secs_f64(),
            ns_per_host_tick: wall.as_secs_f64() * 1e9 / (run.ticks.max(1) as f64 * run.hosts as f64),
            peak_rss_mib: peak,
            baseline_wall_s: base.as_secs_f64(),
            lab_vs_baseline_slowdown: wall.as_secs_f64() / base.as_secs_f64().max(1e-9),
            run,
        };
        println!(
            "{:>7} {:>6} {:>9.2} {:>9.0} {:>8} {:>9.0} {:>9.2} {:>6.2}x {:>8} {:>9} {:>9}",
            f.run.devices,
            f.run.hosts,
            f.wall_s,
            f.sim_s_per_wall_s,
            f.peak_rss_mib.map_or("?".into(), |m| format!("{m:.0}")),
            f.ns_per_host_tick,
            f.baseline_wall_s,
            f.lab_vs_baseline_slowdown,
            f.run.sign_ins,
            f.run.relocks_seen,
            f.run.failed_sign_ins,
        );
        sizes.push(f);
    }
    let projected_day = project(&sizes, &args.project, args.tick);
    for p in &projected_day {
        println!(
            "  projected: {} devices x 24 h at a {} tick would take {:.0} s ({:.1} h) of wall time",
            p.devices,
            humantime::format_duration(args.tick),
            p.day_wall_s,
            p.day_wall_s / 3600.0
        );
    }
    let figures = Figures {
        tick_ms: u64::try_from(args.tick.as_millis()).unwrap_or(u64::MAX),
        duration_s: args.duration.as_secs_f64(),
        sizes,
        projected_day,
    };
    crate::bench::write_figures(&args.json, &figures)?;
    Ok(ExitCode::SUCCESS)
}

/// A day's wall time for each of `devices`, from the cost per tick of the
/// two largest measured sizes fitted as `a·h + b·h²` (h = hosts).
fn project(sizes: &[SizeFigures], devices: &[usize], tick: Duration) -> Vec<Projection> {
    let mut measured: Vec<(f64, f64)> = sizes
        .iter()
        .map(|s| (s.run.hosts as f64, s.wall_s / s.run.ticks.max(1) as f64))
        .filter(|(h, _)| *h > 0.0)
        .collect();
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (a, b) = match measured.as_slice() {
        [.., (h1, t1), (h2, t2)] if h2 > h1 => {
            // t = a·h + b·h²  =>  t/h = a + b·h: a line through both points.
            let b = ((t2 / h2) - (t1 / h1)) / (h2 - h1);
            let a = t1 / h1 - b * h1;
            (a.max(0.0), b.max(0.0))
        }
        [(h, t)] => (t / h, 0.0),
        _ => return Vec::new(),
    };
    let day_ticks = 86_400.0 / tick.as_secs_f64();
    devices
        .iter()
        .map(|&d| {
            let h = (d + 3) as f64;
            Projection { devices: d, hosts: d + 3, day_wall_s: (a * h + b * h * h) * day_ticks }
        })
        .collect()
}
