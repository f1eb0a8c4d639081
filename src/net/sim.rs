//! The simulated side of the seam: turmoil.
//!
//! Architecture invariant: this is the only module that imports `turmoil`.
//! Everything else sees [`Network`], [`Clock`] and the [`SimWorld`] driver
//! handle defined here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BoxFuture, BoxListener, BoxStream, Clock, Listener, Net, Network, UnixMillis, millis};

/// Error type of host software inside the simulation.
pub type HostError = Box<dyn std::error::Error>;

/// Traffic counters of a simulation, for benchmarks.
#[derive(Debug, Default)]
pub struct NetStats {
    connections: AtomicU64,
    segments: AtomicU64,
}

impl NetStats {
    /// TCP connections opened (client side).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Writes that moved bytes, on both sides of every connection.
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Relaxed)
    }
}

/// turmoil's TCP, as a [`Network`].
#[derive(Clone, Debug, Default)]
pub struct TurmoilNet {
    stats: Arc<NetStats>,
}

/// A turmoil stream that counts its writes.
struct CountedStream {
    inner: turmoil::net::TcpStream,
    stats: Arc<NetStats>,
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.stats.segments.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct TurmoilListener {
    inner: turmoil::net::TcpListener,
    stats: Arc<NetStats>,
}

impl Listener for TurmoilListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            Ok((Box::pin(CountedStream { inner: stream, stats: self.stats.clone() }) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Network for TurmoilNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            Ok(Box::pin(CountedStream { inner: stream, stats: self.stats.clone() }) as BoxStream)
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxListener>> {
        Box::pin(async move {
            // turmoil binds only unspecified or loopback addresses: a host's
            // own address becomes the unspecified address of its family.
            let addr = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
                addr
            } else if addr.is_ipv4() {
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()))
            } else {
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port()))
            };
            let inner = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TurmoilListener { inner, stats: self.stats.clone() }) as BoxListener)
        })
    }
}

/// Simulated wall-clock time: the scenario's epoch plus simulated elapsed
/// time, plus a per-host skew.
///
/// Inside host software the elapsed time is turmoil's; in the driver (outside
/// any host) it is the driver's mirror of the simulation's elapsed time.
#[derive(Clone, Debug)]
pub struct SimClock {
    epoch: UnixMillis,
    skew_ms: i64,
    driver_elapsed: Arc<AtomicU64>,
}

impl SimClock {
    /// The same clock with a skew added (positive: this host runs ahead).
    pub fn skewed(&self, skew_ms: i64) -> SimClock {
        SimClock { skew_ms, ..self.clone() }
    }

    /// Milliseconds of simulated time since the start of the run.
    pub fn elapsed_ms(&self) -> u64 {
        match turmoil::sim_elapsed() {
            Some(e) => millis(e),
            None => self.driver_elapsed.load(Ordering::Relaxed),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        let t = self.epoch.0 as i128 + self.elapsed_ms() as i128 + self.skew_ms as i128;
        UnixMillis(t.clamp(0, u64::MAX as i128) as u64)
    }
}

/// Parameters of one simulation.
#[derive(Clone, Debug)]
pub struct SimParams {
    /// Seed of turmoil's RNG (message latency draws, tokio's internal RNG).
    pub seed: u64,
    /// Simulated wall-clock time at the start of the run.
    pub epoch: UnixMillis,
    /// turmoil's fixed tick: every host is polled once per tick.
    pub tick: Duration,
    /// One-way latency of every link (fixed).
    pub latency: Duration,
    /// turmoil's per-socket capacity: connection attempts queued on a
    /// listener, segments queued on a connection. turmoil panics past it
    /// (a real stack would drop SYNs), so a fleet booting at once needs one
    /// slot per device.
    pub tcp_capacity: usize,
}

/// turmoil's own default [`SimParams::tcp_capacity`].
pub const DEFAULT_TCP_CAPACITY: usize = 64;

/// Why a simulation step failed.
#[derive(Debug, thiserror::Error)]
pub enum SimFailure {
    /// Host software returned an error or a task panicked.
    #[error("host software failed: {0}")]
    Host(String),
    /// A panic escaped the simulation (a bug in the lab).
    #[error("panic inside the simulation: {0}")]
    Panic(String),
}

/// The driver's handle on a turmoil simulation: hosts are added, then the
/// driver steps it tick by tick and may crash, restart or partition hosts
/// between ticks.
pub struct SimWorld<'a> {
    sim: turmoil::Sim<'a>,
    tick: Duration,
    driver_elapsed: Arc<AtomicU64>,
    epoch: UnixMillis,
    net: TurmoilNet,
}

impl<'a> SimWorld<'a> {
    /// Builds an empty simulation.
    pub fn new(params: &SimParams) -> Self {
        let epoch = std::time::UNIX_EPOCH + Duration::from_millis(params.epoch.0);
        let sim = turmoil::Builder::new()
            .rng_seed(params.seed)
            .epoch(epoch)
            .tick_duration(params.tick)
            // The driver decides when a run ends; turmoil's own limit only
            // applies to client hosts, of which the lab has none.
            .simulation_duration(Duration::from_secs(366 * 24 * 3600))
            .min_message_latency(params.latency)
            .max_message_latency(params.latency)
            .tcp_capacity(params.tcp_capacity.max(DEFAULT_TCP_CAPACITY))
            .build();
        SimWorld {
            sim,
            tick: params.tick,
            driver_elapsed: Arc::new(AtomicU64::new(0)),
            epoch: params.epoch,
            net: TurmoilNet::default(),
        }
    }

    /// Traffic counters of this simulation.
    pub fn stats(&self) -> Arc<NetStats> {
        self.net.stats.clone()
    }

    /// The simulation's clock (no skew).
    pub fn clock(&self) -> SimClock {
        SimClock { epoch: self.epoch, skew_ms: 0, driver_elapsed: self.driver_elapsed.clone() }
    }

    /// The simulated network, for host software.
    pub fn network(&self) -> Net {
        Arc::new(self.net.clone())
    }

    /// Adds a host at `ip` running `software`; turmoil calls the factory again
    /// when the host is restarted.
    pub fn host<F, Fut>(&mut self, ip: IpAddr, software: F)
    where
        F: Fn() -> Fut + 'a,
        Fut: Future<Output = Result<(), HostError>> + 'static,
    {
        self.sim.host(ip, software);
    }

    /// Advances the simulation by one tick.
    pub fn step(&mut self) -> Result<(), SimFailure> {
        let result = catch_unwind(AssertUnwindSafe(|| self.sim.step()));
        self.driver_elapsed.store(millis(self.sim.elapsed()), Ordering::Relaxed);
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SimFailure::Host(e.to_string())),
            Err(panic) => Err(SimFailure::Panic(panic_message(&panic))),
        }
    }

    /// Simulated time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// The fixed tick.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Stops a host's software at once, as a power cut would.
    pub fn crash(&mut self, ip: IpAddr) {
        self.sim.crash(ip);
    }

    /// Restarts a host's software from its factory.
    pub fn bounce(&mut self, ip: IpAddr) {
        self.sim.bounce(ip);
    }

    /// Cuts the link between two hosts in both directions.
    pub fn partition(&mut self, a: IpAddr, b: IpAddr) {
        self.sim.partition(a, b);
    }

    /// Restores the link between two hosts.
    pub fn repair(&mut self, a: IpAddr, b: IpAddr) {
        self.sim.repair(a, b);
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// What a bare baseline run should do.
#[derive(Clone, Copy, Debug)]
pub struct BaselineLoad {
    /// Hosts in the simulation (at least 2).
    pub hosts: usize,
    /// TCP connections the first host opens, round-robin to the others.
    pub connections: u64,
    /// Request/response exchanges, spread evenly over the connections.
    pub exchanges: u64,
    /// Keep stepping, idle, until this much simulated time has passed.
    pub idle_until: Duration,
}

/// The benchmark baseline: a bare turmoil simulation with the same number
/// of hosts, connections and exchanges as a lab run, whose handlers are
/// trivial (an echo). It is stepped by the same kind of driver loop as a lab
/// run, so the ratio between the two isolates what the lab's components
/// cost. Returns the simulated time it took.
pub fn bare_baseline(params: &SimParams, load: BaselineLoad) -> Result<Duration, SimFailure> {
    let hosts = load.hosts.max(2);
    let ips: Vec<IpAddr> = (0..hosts).map(|i| IpAddr::from([10, 99, (i / 250) as u8, (i % 250 + 1) as u8])).collect();
    let mut world = SimWorld::new(params);
    for ip in &ips[1..] {
        world.host(*ip, move || async move {
            let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
            loop {
                let (mut stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let done = Arc::new(AtomicU64::new(0));
    let targets: Vec<IpAddr> = ips[1..].to_vec();
    let counter = done.clone();
    let connections = load.connections.max(1);
    let per_connection = load.exchanges.div_ceil(connections);
    let total = load.exchanges;
    world.host(ips[0], move || {
        let targets = targets.clone();
        let counter = counter.clone();
        async move {
            let mut sent = 0;
            for c in 0..connections {
                let target = targets[(c as usize) % targets.len()];
                let mut stream = turmoil::net::TcpStream::connect((target, 443)).await?;
                for _ in 0..per_connection {
                    if sent == total {
                        break;
                    }
                    stream.write_all(b"ping").await?;
                    let mut buf = [0u8; 4];
                    stream.read_exact(&mut buf).await?;
                    sent += 1;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    while done.load(Ordering::Relaxed) < total || world.elapsed() < load.idle_until {
        world.step()?;
    }
    Ok(world.elapsed())
}
