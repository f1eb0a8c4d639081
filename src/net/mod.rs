//! The network seam: the only way components touch sockets and wall time.
//!
//! Components (identity provider, gateway, origins, the device agent and the
//! processes of the simulated device) are written once against [`Network`]
//! and [`Clock`]. Two implementations exist:
//!
//! * [`sim`]: turmoil's simulated TCP and a clock derived from simulated time.
//!   This is the only module of the crate that imports turmoil.
//! * [`real`]: tokio sockets and the system clock, for real peers and users.
//!
//! Streams and listeners are boxed trait objects so that wrappers (the device's
//! firewall hook, for one) compose without generic plumbing.

pub mod real;
pub mod sim;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: a TCP connection, simulated or real, possibly wrapped.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Pin<Box<dyn Stream>>;

/// A boxed future, as returned by the seam's traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Accepts connections: a bound TCP listener, simulated or real.
pub trait Listener: Send + 'static {
    /// Waits for the next connection and returns it with the peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
    /// The address this listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A boxed [`Listener`].
pub type BoxListener = Box<dyn Listener>;

/// Opens connections and binds listeners on one host.
pub trait Network: Send + Sync + 'static {
    /// Opens a TCP connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>>;
    /// Binds a TCP listener on `addr`.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxListener>>;
}

/// A shared handle on a [`Network`].
pub type Net = Arc<dyn Network>;

/// A point in (simulated or real) wall-clock time: milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Whole seconds since the Unix epoch, as used by JWT `iat`/`exp`.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// From whole seconds since the Unix epoch.
    pub fn from_secs(secs: u64) -> Self {
        UnixMillis(secs.saturating_mul(1000))
    }

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        UnixMillis(self.0.saturating_add(millis(d)))
    }

    /// This instant minus `d` (saturating at the epoch).
    pub fn minus(self, d: Duration) -> Self {
        UnixMillis(self.0.saturating_sub(millis(d)))
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 rendering (UTC, millisecond precision).
    pub fn rfc3339(self) -> String {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// Parses an RFC 3339 timestamp such as `2026-03-04T09:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let t = humantime::parse_rfc3339(s).map_err(|e| format!("invalid RFC 3339 time `{s}`: {e}"))?;
        let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("time `{s}` is before 1970"))?;
        Ok(UnixMillis(millis(d)))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock time as a component sees it.
///
/// In the simulation this is the scenario's epoch plus simulated elapsed time
/// (plus the host's skew, if any); in real mode the system clock.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> UnixMillis;
}

/// A shared handle on a [`Clock`].
pub type SharedClock = Arc<dyn Clock>;

/// Errors of the seam's higher-level helpers.
#[derive(Debug, thiserror::Error)]
pub enum SeamError {
    /// A host name that the lab's directory does not know.
    #[error("unknown host name `{0}`")]
    UnknownHost(String),
}

/// The lab's name service: DNS names to addresses.
///
/// The simulation resolves names in-process (DNS traffic is not modelled in
/// this version); real mode maps every lab name to a loopback address.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    names: indexmap::IndexMap<String, std::net::IpAddr>,
}

impl Directory {
    /// Adds or replaces a name.
    pub fn insert(&mut self, name: &str, ip: std::net::IpAddr) {
        self.names.insert(name.to_ascii_lowercase(), ip);
    }

    /// Resolves a name, or parses a literal address.
    pub fn resolve(&self, name: &str) -> Option<std::net::IpAddr> {
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse() {
            return Some(ip);
        }
        self.names.get(&name.to_ascii_lowercase()).copied()
    }

    /// Every name and its address, in insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, std::net::IpAddr)> {
        self.names.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Where a URL's requests go: its host resolved, its port or the
    /// scheme's default.
    pub fn socket_addr_of(&self, url: &str) -> Result<SocketAddr, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        self.socket_addr_of_url(&parsed)
    }

    /// As [`Directory::socket_addr_of`], for a parsed URL.
    pub fn socket_addr_of_url(&self, url: &url::Url) -> Result<SocketAddr, String> {
        let host = url.host_str().ok_or_else(|| format!("URL `{url}` has no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| format!("URL `{url}` has no port and no default port"))?;
        let ip = self.resolve(host).ok_or_else(|| format!("`{host}` is not a known host name"))?;
        Ok(SocketAddr::new(ip, port))
    }

    /// Resolves `name:port`.
    pub fn socket_addr_of_endpoint(&self, endpoint: &str) -> Result<SocketAddr, String> {
        let (name, port) =
            endpoint.rsplit_once(':').ok_or_else(|| format!("`{endpoint}` is not of the form name:port"))?;
        let port: u16 = port.parse().map_err(|_| format!("`{port}` in `{endpoint}` is not a port number"))?;
        let ip = self.resolve(name).ok_or_else(|| format!("`{name}` is not a known host name"))?;
        Ok(SocketAddr::new(ip, port))
    }
}
