//! What the agent asks of a firewall, independent of the platform: engage
//! or lift the lockdown, each as one atomic change.

use std::net::IpAddr;

use crate::wfp::{AppId, IpPrefix};

/// A destination of an exception: an address prefix and, optionally, one TCP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Addresses.
    pub prefix: IpPrefix,
    /// TCP port (`None`: any).
    pub port: Option<u16>,
}

impl Endpoint {
    /// One host and port.
    pub fn host(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint { prefix: IpPrefix::host(ip), port: Some(port) }
    }

    /// Whether the endpoint is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.prefix.is_ipv6()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{} port {p}", self.prefix),
            None => write!(f, "{}", self.prefix),
        }
    }
}

/// One process-specific exception: this program (by image path, and by service
/// identity when `service_sid` is set) may reach these endpoints over TCP while
/// the device is locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Lab name of the process.
    pub process: String,
    /// Its app id (normalized image path).
    pub app_id: AppId,
    /// The service SID its token must also hold (so another process started
    /// from the same image does not match).
    pub service_sid: Option<String>,
    /// Destinations.
    pub remote: Vec<Endpoint>,
}

/// The lockdown the agent enforces until the device is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockdownPolicy {
    /// Process-specific exceptions.
    pub exceptions: Vec<Exception>,
    /// Whether loopback traffic stays allowed.
    pub allow_loopback: bool,
    /// Whether private and link-local destinations stay reachable (never their DNS).
    pub allow_lan: bool,
    /// Whether DHCP (v4 and v6) stays allowed.
    pub allow_dhcp: bool,
    /// Deliberately broken: block IPv4 only.
    pub danger_ipv4_only: bool,
}

/// A firewall backend failed.
#[derive(Debug, thiserror::Error)]
#[error("firewall: {0}")]
pub struct FirewallError(pub String);

/// A firewall the agent drives. Each call is one atomic change: no
/// observer ever sees a state between the old policy and the new one.
pub trait Firewall: Send + Sync {
    /// Blocks everything but the policy's exceptions (replacing whatever
    /// the agent installed before, including a previous run's filters).
    fn engage_lockdown(&mut self, policy: &LockdownPolicy) -> Result<(), FirewallError>;
    /// Removes the lockdown.
    fn lift_lockdown(&mut self) -> Result<(), FirewallError>;
}
