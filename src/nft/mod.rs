//! The real Linux firewall backend: nftables, behind the agent's
//! [`Firewall`](crate::agent::firewall::Firewall) trait. Real-mode code: it
//! runs `nft`, `ip` and `ss`, so it is never used inside the simulation.
//!
//! - [`compile`] is pure: a [`NftPolicy`] becomes one `nft -f` batch that
//!   replaces `table inet <name>` atomically (add, delete, add: it works
//!   whether or not the table exists, and nft commits a batch as one
//!   transaction). Lockdown: `output`, `input` and `forward` with policy
//!   drop, loopback, DHCP and NDP, each exception scoped by identity (socket
//!   owner uid and/or cgroup v2) AND address AND port AND protocol, its
//!   flows marked in conntrack so their replies pass on input, and a final
//!   `reject` (TCP reset, else ICMP admin-prohibited). Open: the same table
//!   with accepting chains.
//! - [`NftFirewall`] applies batches (optionally inside a named network
//!   namespace), verifies the loaded table against what was compiled, and
//!   maps the agent's [`LockdownPolicy`](crate::agent::firewall::LockdownPolicy)
//!   (Windows app ids) to Linux identities by process name.
//!
//! **Revocation.** Linux does not re-authorize established flows: with a
//! `ct state established accept` rule a revoked flow would live on. The
//! lockdown has no such rule, so every packet of every flow is judged by
//! the current rules, and a flow the lockdown does not allow meets the
//! final reject on its next packet (a TCP segment gets a reset, in both
//! directions) — the counterpart of WFP's reauthorization. In addition,
//! after engaging the lockdown the applier destroys idle established TCP
//! sockets with `ss -K` (best effort, see [`CutReport`]), which WFP does
//! not do.

mod apply;
pub mod compile;
mod policy;

pub use apply::{CutReport, NftConfig, NftFirewall};
pub use compile::{ChainSummary, Ruleset, compile_delete, compile_lockdown, compile_open};
pub use policy::{CgroupPath, DEFAULT_CT_MARK, Endpoint, L4, LinuxIdentity, NftException, NftPolicy, TableName};

/// What can go wrong in the nftables backend.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// A configuration or policy field is invalid.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidField {
        /// Which field (`table`, `exceptions[0].identity`, ...).
        field: String,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The lockdown excepts a process the backend has no Linux identity for.
    #[error("no Linux identity configured for process {process:?} (exception {index} of the lockdown)")]
    UnmappedProcess {
        /// Process name from the lockdown policy.
        process: String,
        /// Index of the exception.
        index: usize,
    },
    /// A lockdown setting or exception this backend cannot express yet.
    #[error("the nftables backend cannot express {what}")]
    Unsupported {
        /// What, naming the policy field.
        what: String,
    },
    /// A command could not be started or fed.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A command ran and failed (nft rejects a batch as a whole: nothing
    /// of it was applied).
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// The table loaded, but what the kernel holds is not what was compiled.
    #[error("table inet {table} after loading: {reason}")]
    Verify {
        /// The table.
        table: String,
        /// What differs.
        reason: String,
    },
}

impl From<NftError> for crate::agent::firewall::FirewallError {
    fn from(e: NftError) -> Self {
        crate::agent::firewall::FirewallError(format!("nftables: {e}"))
    }
}

#[cfg(test)]
mod tests;
