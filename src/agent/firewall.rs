//! What the agent asks of a firewall, independent of the platform: engage
//! or lift the lockdown, each as one atomic change.

use std::net::SocketAddr;

use crate::wfp::AppId;

/// One process-specific exception: this program may reach these endpoints
/// (TCP) while the device is locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Lab name of the process.
    pub process: String,
    /// Its app id.
    pub app_id: AppId,
    /// Destinations.
    pub remote: Vec<SocketAddr>,
}

/// The lockdown the agent enforces until the device is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockdownPolicy {
    /// Process-specific exceptions.
    pub exceptions: Vec<Exception>,
    /// Whether loopback traffic stays allowed.
    pub allow_loopback: bool,
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
