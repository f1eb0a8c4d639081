//! `lab bench gateway`: the access gateway in real mode under load, beside a
//! plain reverse proxy measured in the same run, by the same client code.
//!
//! The lab starts in real mode (every component on loopback, the recorder
//! keeping every trace event in memory as in a simulation); alice signs in
//! with the scripted browser, and its chat cookie is replayed by
//! `--connections` closed-loop clients, each on its own kept-alive
//! connection, sending `GET /inbox` for `--duration`. The gateway checks the
//! session and policy, mints an app token and forwards to the chat origin,
//! which verifies the token.
//!
//! The baseline is a reverse proxy without checks: the lab's own HTTP server
//! and client (the same ones the gateway uses) forwarding every request to a
//! backend that answers like the origin. Rounds are interleaved (baseline,
//! gateway, baseline, gateway, ...) so machine noise hits both; the better
//! round of each (more requests per second) is reported.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::{Args, Subcommand};
use lockstep::config::LabConfig;
use lockstep::http::{Browser, Credentials, Fetch, HttpClient, Landing, Navigation};
use lockstep::net::real::{SystemClock, TokioListener, TokioNet};
use lockstep::net::{Clock, Directory};
use lockstep::realmode::{RealLab, RealOptions};
use lockstep::trace::Recorder;
use serde::Serialize;
use url::Url;

use crate::bench::{self, BenchArgs};

/// `lab bench`: the scenario benchmark, or `lab bench gateway`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCmd {
    #[command(subcommand)]
    target: Option<BenchTarget>,
    #[command(flatten)]
    scenario: BenchArgs,
}

#[derive(Subcommand)]
enum BenchTarget {
    /// The gateway in real mode under load, beside a plain reverse proxy
    /// measured in the same run.
    Gateway(GatewayArgs),
    /// A fleet of devices booting at once against one gateway, IdP and MFA
    /// service, then a simulated day of session expiries.
    Fleet(crate::bench_fleet::FleetArgs),
}

/// Runs what `lab bench` was asked for.
pub fn dispatch(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd.target {
        Some(BenchTarget::Gateway(args)) => bench_gateway(&args),
        Some(BenchTarget::Fleet(args)) => crate::bench_fleet::bench_fleet(&args),
        None => bench::bench(cmd.scenario),
    }
}

#[derive(Args)]
pub struct GatewayArgs {
    /// How long each timed round sends requests.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent clients, each with its own kept-alive connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Timed rounds of each (interleaved: baseline, gateway, baseline, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "reports/bench-gateway.json")]
    json: PathBuf,
}

/// What the chat origin answers alice (and what the baseline backend
/// answers too).
const EXPECTED_BODY: &str = "chat: hello alice (GET /inbox)\n";
/// Targets quoted in the report (not asserted).
const TARGET_RPS: f64 = 20_000.0;
const TARGET_P99_RATIO: f64 = 2.0;
/// The longest round `--duration` accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// A few distinct failures are kept for the report.
const KEPT_ERRORS: usize = 5;

#[derive(Serialize, Clone, Debug)]
struct RoundFigures {
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Figures {
    duration_ms: u64,
    connections: u32,
    rounds: u32,
    /// The better round of each (more requests per second).
    gateway: RoundFigures,
    baseline: RoundFigures,
    gateway_rounds: Vec<RoundFigures>,
    baseline_rounds: Vec<RoundFigures>,
    gateway_vs_baseline_rps: f64,
    gateway_vs_baseline_p99: f64,
    /// Failed or wrong responses over every round, warm-up included.
    errors: u64,
    error_samples: Vec<String>,
    /// Trace events the gateway rounds recorded (kept in memory).
    events_recorded: u64,
    events_per_request: f64,
    rss_at_start_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    target_rps: f64,
    target_p99_ratio: f64,
    meets_rps_target: bool,
    meets_p99_target: bool,
}

/// One round's raw outcome.
#[derive(Default)]
struct Outcome {
    latencies_ns: Vec<u64>,
    errors: u64,
    error_samples: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    fn figures(&mut self) -> RoundFigures {
        self.latencies_ns.sort_unstable();
        let requests = self.latencies_ns.len() as u64;
        let seconds = self.elapsed.as_secs_f64();
        RoundFigures {
            requests,
            errors: self.errors,
            seconds,
            requests_per_sec: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
            p50_ms: percentile_ms(&self.latencies_ns, 0.50),
            p99_ms: percentile_ms(&self.latencies_ns, 0.99),
            max_ms: self.latencies_ns.last().map_or(0.0, |&ns| ns as f64 / 1e6),
        }
    }

    fn absorb(&mut self, mut other: Outcome) {
        self.latencies_ns.append(&mut other.latencies_ns);
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < KEPT_ERRORS && !self.error_samples.contains(&e) {
                self.error_samples.push(e);
            }
        }
    }
}

/// The `p` quantile (nearest rank) of sorted samples, in milliseconds.
fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted_ns.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1e6
}

/// Closed loop: `connections` clients, each with its own client (so its own
/// kept-alive connection), sending `fetch` until `duration` has passed.
async fn load(directory: &Directory, fetch: &Fetch, connections: u32, duration: Duration) -> Outcome {
    // Wall time is what a benchmark measures; simulated code never sees it.
    let start = Instant::now();
    let deadline = start.checked_add(duration.min(MAX_DURATION)).unwrap_or(start);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = HttpClient::new(TokioNet::shared(), directory.clone());
        let fetch = fetch.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = client.send(fetch.clone()).await;
                let took = sent.elapsed();
                let problem = match result {
                    Ok(r) if r.status == 200 && r.body.as_ref() == EXPECTED_BODY.as_bytes() => None,
                    Ok(r) => Some(format!("status {}: {}", r.status, r.text().chars().take(120).collect::<String>())),
                    Err(e) => Some(e.to_string()),
                };
                match problem {
                    None => out.latencies_ns.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)),
                    Some(p) => {
                        out.errors += 1;
                        if out.error_samples.len() < KEPT_ERRORS && !out.error_samples.contains(&p) {
                            out.error_samples.push(p);
                        }
                    }
                }
            }
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => total.absorb(o),
            Err(e) => {
                total.errors += 1;
                total.error_samples.push(format!("client task: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// The baseline reverse proxy: forwards every request to `backend` and
/// returns the answer, with no checks.
struct Proxy {
    http: HttpClient,
    backend: String,
}

async fn proxy(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(url) = Url::parse(&format!("{}{path}", p.backend)) else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let fetch = Fetch::forwarded(parts.method, url, &parts.headers, body, &[]);
    match p.http.send(fetch).await {
        Ok(r) => lockstep::http::relay(r),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// The baseline backend answers like the chat origin (without checking an
/// app token).
async fn backend(req: Request) -> String {
    format!("chat: hello alice ({} {})\n", req.method(), req.uri().path())
}

/// Binds loopback and serves `router` with the lab's own HTTP server.
async fn spawn_server(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .await
        .context("binding a baseline port")?;
    let addr = listener.local_addr().context("baseline port")?;
    tokio::spawn(lockstep::http::serve(Box::new(TokioListener(listener)), router));
    Ok(addr)
}

/// (resident, peak resident) set size of this process in KiB, where the OS
/// tells (Linux).
pub(crate) fn rss_kib() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn bench_gateway(args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        eprintln!("lab bench gateway: --duration must be more than 0 and at most 1 day");
        return Ok(ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let figures = runtime.block_on(measure(args))?;

    let (g, b) = (&figures.gateway, &figures.baseline);
    println!(
        "lab bench gateway ({} connections, {} rounds of {} each, interleaved; the better round shown)",
        args.connections,
        args.rounds,
        humantime::format_duration(args.duration)
    );
    println!("  {:<22} {:>10} {:>9} {:>9} {:>9} {:>7}", "", "req/s", "p50 ms", "p99 ms", "max ms", "errors");
    for (name, f) in [("gateway (real mode)", g), ("plain reverse proxy", b)] {
        println!(
            "  {:<22} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            name, f.requests_per_sec, f.p50_ms, f.p99_ms, f.max_ms, f.errors
        );
    }
    println!(
        "  ratio                  {:>9.2}x of the baseline's req/s; p99 {:.2}x the baseline's",
        figures.gateway_vs_baseline_rps, figures.gateway_vs_baseline_p99
    );
    println!(
        "  targets                {} req/s >= {:.0}; {} p99 within {:.0}x",
        if figures.meets_rps_target { "met:" } else { "missed:" },
        TARGET_RPS,
        if figures.meets_p99_target { "met:" } else { "missed:" },
        TARGET_P99_RATIO
    );
    println!(
        "  trace                  {} events kept in memory ({:.1} per gateway request); RSS {} at start, peak {}",
        figures.events_recorded,
        figures.events_per_request,
        kib(figures.rss_at_start_kib),
        kib(figures.peak_rss_kib)
    );
    crate::bench::write_figures(&args.json, &figures)?;
    if figures.errors > 0 {
        eprintln!("lab bench gateway: {} requests failed or got a wrong answer:", figures.errors);
        for e in &figures.error_samples {
            eprintln!("  {e}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

async fn measure(args: &GatewayArgs) -> anyhow::Result<Figures> {
    // The lab in real mode, keeping every trace event in memory.
    let (lab, _) = LabConfig::parse(&LabConfig::default_source()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let recorder = Recorder::new(SystemClock.now(), Arc::new(SystemClock));
    let options = RealOptions { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), base_port: None, seed: Some(1) };
    let real = RealLab::start(&lab, &options, recorder.clone()).await.context("starting real mode")?;
    let gateway_port = real.endpoints.get("gateway").map(SocketAddr::port).context("no gateway endpoint")?;

    // alice signs in; her chat cookie is what every client sends.
    let browser = Browser::new(HttpClient::new(TokioNet::shared(), real.directory.clone()), Arc::new(SystemClock));
    let chat = Url::parse(&format!("http://chat.lab.test:{gateway_port}/inbox"))?;
    let alice = Credentials { username: "alice".into(), password: "correct-horse-battery".into() };
    let login = Navigation { login: Some(alice), ..Navigation::default() };
    match browser.navigate(chat.clone(), &login).await.context("signing alice in")? {
        Landing::Page(p) if p.status == 200 && p.text() == EXPECTED_BODY => {}
        Landing::Page(p) => anyhow::bail!("signing alice in ended at {} with {}: {}", p.url, p.status, p.text()),
        Landing::Handoff(url) => anyhow::bail!("signing alice in ended in a hand-off to {url}"),
    }
    let cookie =
        browser.export_cookies().header_for(&chat, SystemClock.now()).context("the gateway set no cookie for chat")?;

    // The baseline: a plain reverse proxy in front of a backend that answers
    // like the origin, on the lab's server and client code.
    let backend_addr = spawn_server(Router::new().fallback(backend)).await?;
    let mut proxy_directory = Directory::default();
    proxy_directory.insert("backend.bench.test", backend_addr.ip());
    let state = Arc::new(Proxy {
        http: HttpClient::new(TokioNet::shared(), proxy_directory),
        backend: format!("http://backend.bench.test:{}", backend_addr.port()),
    });
    let proxy_addr = spawn_server(Router::new().fallback(proxy).with_state(state)).await?;
    // Same host name, path and cookie as the gateway's requests.
    let baseline_url = Url::parse(&format!("http://chat.lab.test:{}/inbox", proxy_addr.port()))?;

    let gateway_fetch = Fetch::get(chat).header("cookie", cookie.clone());
    let baseline_fetch = Fetch::get(baseline_url).header("cookie", cookie);
    let directory = &real.directory;
    let (rss_at_start_kib, _) = rss_kib();

    // Warm up both (connections, allocator, caches): not reported, but their
    // errors count.
    let warm = (args.duration / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut errors = Outcome::default();
    for fetch in [&baseline_fetch, &gateway_fetch] {
        let mut o = load(directory, fetch, args.connections, warm).await;
        o.latencies_ns.clear();
        errors.absorb(o);
    }

    let mut baseline_rounds = Vec::new();
    let mut gateway_rounds = Vec::new();
    let mut events_recorded = 0;
    for _ in 0..args.rounds {
        let mut b = load(directory, &baseline_fetch, args.connections, args.duration).await;
        baseline_rounds.push(b.figures());
        let before = recorder.recorded();
        let mut g = load(directory, &gateway_fetch, args.connections, args.duration).await;
        events_recorded += recorder.recorded().saturating_sub(before);
        gateway_rounds.push(g.figures());
        for mut o in [b, g] {
            o.latencies_ns.clear();
            errors.absorb(o);
        }
    }
    let (_, peak_rss_kib) = rss_kib();

    let best = |rounds: &[RoundFigures]| {
        rounds.iter().max_by(|x, y| x.requests_per_sec.total_cmp(&y.requests_per_sec)).cloned().unwrap_or(
            RoundFigures {
                requests: 0,
                errors: 0,
                seconds: 0.0,
                requests_per_sec: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            },
        )
    };
    let gateway = best(&gateway_rounds);
    let baseline = best(&baseline_rounds);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let gateway_requests: u64 = gateway_rounds.iter().map(|r| r.requests).sum();
    let gateway_vs_baseline_rps = ratio(gateway.requests_per_sec, baseline.requests_per_sec);
    let gateway_vs_baseline_p99 = ratio(gateway.p99_ms, baseline.p99_ms);
    Ok(Figures {
        duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
        connections: args.connections,
        rounds: args.rounds,
        meets_rps_target: gateway.requests_per_sec >= TARGET_RPS,
        meets_p99_target: gateway.requests > 0 && gateway_vs_baseline_p99 <= TARGET_P99_RATIO,
        gateway,
        baseline,
        gateway_rounds,
        baseline_rounds,
        gateway_vs_baseline_rps,
        gateway_vs_baseline_p99,
        errors: errors.errors,
        error_samples: errors.error_samples,
        events_recorded,
        events_per_request: ratio(events_recorded as f64, gateway_requests as f64),
        rss_at_start_kib,
        peak_rss_kib,
        target_rps: TARGET_RPS,
        target_p99_ratio: TARGET_P99_RATIO,
    })
}
