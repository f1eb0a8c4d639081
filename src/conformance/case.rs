//! A conformance case, parsed and checked: what a backend runs.
//!
//! Everything is described in firewall terms (sublayers, filters with conditions,
//! processes with identities, traffic tuples), not in terms of one backend's API. Names
//! written in the case file (sessions, filters, flows, interfaces) are kept as names; a
//! backend maps them to its own handles.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use crate::agent::firewall::{Endpoint, Exception, LockdownPolicy};
use crate::config::FilterLifetime;
use crate::wfp::{AppId, Direction, HostModel, IpPrefix, Protocol};

/// One conformance case (one file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Case {
    /// `A1` .. `E30`: the section letter and the check's number in research §3.8.
    pub id: String,
    /// The check's number (the digits of `id`; also the file name's prefix).
    pub number: u32,
    /// One line: the behaviour pinned down.
    pub title: String,
    /// Where the behaviour is documented (MS Learn page, client source file).
    pub source: String,
    /// What the case shows and why it matters.
    pub description: String,
    /// The file the case was read from.
    pub file: String,
    /// Network interfaces of the device, by name.
    pub interfaces: Vec<String>,
    /// Processes that own sessions or traffic.
    pub processes: Vec<ProcessDef>,
    /// Sublayers the steps may add.
    pub sublayers: Vec<SublayerDef>,
    /// Filters the steps may add.
    pub filters: Vec<FilterDef>,
    /// The Lockstep agent's own lockdown, which `agent` steps install as the agent
    /// compiles it (instead of filters declared in the case).
    pub agent: Option<AgentDef>,
    /// What happens, in order, with what is expected of each step.
    pub steps: Vec<Step>,
}

impl Case {
    /// A declared process.
    pub fn process(&self, name: &str) -> Option<&ProcessDef> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// A declared sublayer.
    pub fn sublayer(&self, key: &str) -> Option<&SublayerDef> {
        self.sublayers.iter().find(|s| s.key == key)
    }

    /// A declared filter.
    pub fn filter(&self, name: &str) -> Option<&FilterDef> {
        self.filters.iter().find(|f| f.name == name)
    }
}

/// The Lockstep agent of a case: which process runs it, how it installs its
/// objects (the lab's `[agent]` settings) and the lockdown it enforces (the lab's
/// `[lockdown]`). A backend compiles it with its own agent code: the WFP model with
/// `agent::wfp_backend`, nftables with `nft`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentDef {
    /// The declared process that runs the agent: its sessions, and what they own
    /// dynamically, end with it.
    pub process: String,
    /// Lifetime of the lockdown's filters (the lab's `agent.filter_lifetime`).
    pub filter_lifetime: FilterLifetime,
    /// Whether a boot-time copy of the lockdown is installed (persistent only).
    pub boot_time_filters: bool,
    /// Weight of the agent's sublayer.
    pub sublayer_weight: u16,
    /// The lockdown's settings unless a step overrides them.
    pub settings: AgentSettings,
    /// Process exceptions of the lockdown.
    pub allow: Vec<AgentException>,
}

/// The lockdown's switches (the lab's `[lockdown]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AgentSettings {
    /// Loopback stays allowed.
    pub allow_loopback: bool,
    /// Private and link-local destinations stay reachable (never their DNS).
    pub allow_lan: bool,
    /// The DHCP client's tuples stay allowed.
    pub allow_dhcp: bool,
}

impl Default for AgentSettings {
    /// The default lab's.
    fn default() -> Self {
        AgentSettings { allow_loopback: true, allow_lan: false, allow_dhcp: true }
    }
}

impl fmt::Display for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(f, "loopback {}, LAN {}, DHCP {}", on(self.allow_loopback), on(self.allow_lan), on(self.allow_dhcp))
    }
}

/// One exception of the agent's lockdown: this process may reach these endpoints (TCP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentException {
    /// A declared process (its image is the exception's app id).
    pub process: String,
    /// A SID the process token must also hold (the agent's service SID), if any.
    pub service_sid: Option<String>,
    /// Destinations: an address prefix and, optionally, a port.
    pub to: Vec<AgentEndpoint>,
}

/// A destination of an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AgentEndpoint {
    /// Addresses.
    pub prefix: IpPrefix,
    /// TCP port (`None`: any).
    pub port: Option<u16>,
}

/// The state an `agent` step brings the agent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AgentState {
    /// The lockdown is engaged (one transaction, replacing whatever the agent had).
    Locked,
    /// Signed in: the lockdown stays and the agent adds its "session live" permit.
    Connected,
}

impl AgentState {
    /// The name used in case files.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Locked => "locked",
            AgentState::Connected => "connected",
        }
    }
}

impl AgentDef {
    /// The lockdown policy the agent enforces with `settings`, its exceptions
    /// resolved against the case's processes (image path to app id).
    pub fn lockdown(&self, case: &Case, settings: &AgentSettings) -> Result<LockdownPolicy, String> {
        let mut exceptions = Vec::new();
        for ex in &self.allow {
            let p = case.process(&ex.process).ok_or_else(|| format!("process `{}` is not declared", ex.process))?;
            let app_id = AppId::from_image_path(&p.image).map_err(|e| format!("process `{}`: {e}", p.name))?;
            exceptions.push(Exception {
                process: ex.process.clone(),
                app_id,
                service_sid: ex.service_sid.clone(),
                remote: ex.to.iter().map(|t| Endpoint { prefix: t.prefix, port: t.port }).collect(),
            });
        }
        Ok(LockdownPolicy {
            exceptions,
            allow_loopback: settings.allow_loopback,
            allow_lan: settings.allow_lan,
            allow_dhcp: settings.allow_dhcp,
            danger_ipv4_only: false,
        })
    }
}

/// A process: its identity is what filters match on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessDef {
    /// Name used by steps.
    pub name: String,
    /// Full image path, e.g. `C:\Program Files\Lockstep\agent.exe`.
    pub image: String,
    /// The user's SID.
    pub user: String,
    /// The service SID in the token (`S-1-5-80-...`), for service processes.
    pub service_sid: Option<String>,
    /// Interface its traffic uses unless a step names another.
    pub interface: Option<String>,
    /// The process that started it (identity is per image on Windows: nothing is inherited).
    pub parent: Option<String>,
}

/// A sublayer: a priority band of filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SublayerDef {
    /// Key.
    pub key: String,
    /// u16 weight; higher is evaluated first.
    pub weight: u16,
    /// Survives reboot (needed by persistent and boot-time filters in it).
    pub persistent: bool,
}

/// Where a filter applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum LayerName {
    /// Outbound IPv4 flow authorization (`ALE_AUTH_CONNECT_V4`).
    ConnectV4,
    /// Outbound IPv6 flow authorization.
    ConnectV6,
    /// Inbound IPv4 flow authorization (`ALE_AUTH_RECV_ACCEPT_V4`).
    RecvAcceptV4,
    /// Inbound IPv6 flow authorization.
    RecvAcceptV6,
    /// Frames entering at L2 / the virtual switch (`INBOUND_MAC_FRAME_NATIVE`).
    MacFrameIn,
    /// Frames leaving at L2 / the virtual switch.
    MacFrameOut,
}

impl LayerName {
    /// The name used in case files.
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerName::ConnectV4 => "connect_v4",
            LayerName::ConnectV6 => "connect_v6",
            LayerName::RecvAcceptV4 => "recv_accept_v4",
            LayerName::RecvAcceptV6 => "recv_accept_v6",
            LayerName::MacFrameIn => "mac_frame_in",
            LayerName::MacFrameOut => "mac_frame_out",
        }
    }

    /// Whether this is a flow-authorization (ALE) layer.
    pub fn is_flow_layer(&self) -> bool {
        !matches!(self, LayerName::MacFrameIn | LayerName::MacFrameOut)
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A filter's weight inside its sublayer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WeightSpec {
    /// Weight range 0..=15 (the high-order bits; WFP `FWP_UINT8`).
    Range(u8),
    /// An exact 64-bit weight (WFP `FWP_UINT64`).
    Exact(u64),
    /// Assigned by the engine (WFP `FWP_EMPTY`): the lowest range.
    Auto,
}

/// What a filter does when it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FilterAction {
    /// Let the traffic through (overridable by a block elsewhere unless `hard`).
    Permit,
    /// Drop it; final.
    Block,
    /// A callout veto: blocks even a hard permit from another sublayer.
    Veto,
}

/// A filter as declared; adding it installs one filter per layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilterDef {
    /// Name (also what `decided_by` expectations name).
    pub name: String,
    /// Layers it is installed at, in order.
    pub layers: Vec<LayerName>,
    /// Sublayer key.
    pub sublayer: String,
    /// Weight inside the sublayer.
    pub weight: WeightSpec,
    /// Action.
    pub action: FilterAction,
    /// A permit that a block in another sublayer cannot override (WFP
    /// `FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`).
    pub hard: bool,
    /// Survives reboot and BFE restart (`FWPM_FILTER_FLAG_PERSISTENT`).
    pub persistent: bool,
    /// Active from network-stack start until the filtering service initializes
    /// (`FWPM_FILTER_FLAG_BOOTTIME`).
    pub boot_time: bool,
    /// Conditions: values of one field are OR'ed, fields are AND'ed, none match all.
    pub conditions: Conditions,
}

/// A filter's conditions. Every list is "any of"; an empty list does not constrain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Conditions {
    /// Image paths of the sending/receiving process (exact, normalized).
    pub app: Vec<String>,
    /// SIDs the process token must hold (user or service SID).
    pub user: Vec<String>,
    /// Remote address prefixes.
    pub remote_addr: Vec<IpPrefix>,
    /// Local address prefixes.
    pub local_addr: Vec<IpPrefix>,
    /// Remote ports.
    pub remote_port: Vec<u16>,
    /// Local ports.
    pub local_port: Vec<u16>,
    /// ICMP types (in WFP the same field as the local port).
    pub icmp_type: Vec<u16>,
    /// ICMP codes (in WFP the same field as the remote port).
    pub icmp_code: Vec<u16>,
    /// IP protocols.
    pub protocol: Vec<Protocol>,
    /// Only loopback traffic.
    pub loopback: bool,
    /// Interfaces by name (bound to the interface instance present when the filter is added).
    pub interface: Vec<String>,
    /// Only frames between two virtual machines on the host's virtual switch.
    pub vm2vm: bool,
}

/// One packet tuple as the host's stack sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Outbound (connect / first send) or inbound (accept / first receive).
    pub direction: Direction,
    /// The local process, if any.
    pub process: Option<String>,
    /// IP protocol.
    pub protocol: Protocol,
    /// Local address and port (ICMP: the type in the port).
    pub local: SocketAddr,
    /// Remote address and port (ICMP: the code in the port).
    pub remote: SocketAddr,
    /// Loopback traffic.
    pub loopback: bool,
    /// The interface it uses.
    pub interface: Option<String>,
    /// IPv4 TTL / IPv6 hop limit.
    pub hop_limit: u8,
    /// The traffic class it was built from (`ndp_ra`, `dns_udp`, ...), if any.
    pub class: Option<String>,
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::Outbound => "->",
            Direction::Inbound => "<-",
        };
        write!(f, "{:?} {} {dir} {}", self.protocol, self.local, self.remote)?;
        if let Some(p) = &self.process {
            write!(f, " by `{p}`")?;
        }
        if let Some(c) = &self.class {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// One step of a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based position in the expanded step list.
    pub index: usize,
    /// Line of the step in the case file.
    pub line: usize,
    /// What to do.
    pub op: Op,
    /// What must be observed.
    pub expect: Expect,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    /// A process opens a management session; a dynamic session's objects die with it.
    OpenSession {
        /// Session name.
        session: String,
        /// Owning process.
        process: String,
        /// Objects vanish when the session ends.
        dynamic: bool,
        /// How long the session's calls wait for another session's transaction.
        txn_wait_ms: Option<u32>,
    },
    /// The session is closed by its owner.
    CloseSession {
        /// Session name.
        session: String,
    },
    /// Adds a declared sublayer.
    AddSublayer {
        /// Session name.
        session: String,
        /// Sublayer key.
        sublayer: String,
    },
    /// Adds a declared filter at each of its layers.
    AddFilter {
        /// Session name.
        session: String,
        /// Filter name.
        filter: String,
    },
    /// Deletes every instance of a filter.
    DeleteFilter {
        /// Session name.
        session: String,
        /// Filter name.
        filter: String,
    },
    /// Begins a transaction.
    Begin {
        /// Session name.
        session: String,
    },
    /// Commits the session's transaction.
    Commit {
        /// Session name.
        session: String,
    },
    /// Aborts the session's transaction.
    Abort {
        /// Session name.
        session: String,
    },
    /// The process dies (kill -9): its sessions end, its sockets close.
    Kill {
        /// Process name.
        process: String,
    },
    /// The filtering service stops (all sessions end).
    BfeStop,
    /// The filtering service starts (after a stop, or completing a boot).
    BfeStart,
    /// Stop, then start.
    BfeRestart,
    /// Shutdown and a full boot: network stack, filtering service; no process restarts.
    Reboot,
    /// Shutdown and power-on up to the network stack only: the filtering service has
    /// not started yet (`bfe_start` finishes the boot).
    PowerOn,
    /// Sleep and resume.
    SleepResume,
    /// The interface disappears and comes back as a new instance (new LUID / ifindex).
    RecreateInterface {
        /// Interface name.
        interface: String,
    },
    /// New traffic: classified; if `flow` is named and it is permitted, a flow is kept.
    NewFlow {
        /// Name to refer to the flow later.
        flow: Option<String>,
        /// The packet.
        traffic: Traffic,
    },
    /// A packet on an existing flow.
    Packet {
        /// Flow name.
        flow: String,
        /// Its direction (flows carry both).
        direction: Direction,
        /// The interface it arrives on, if not the flow's own.
        via: Option<String>,
        /// The host's receive model.
        host_model: HostModel,
    },
    /// The flow's socket is closed.
    CloseFlow {
        /// Flow name.
        flow: String,
    },
    /// A frame from or to a Hyper-V guest crossing the host's virtual switch.
    VmFrame {
        /// Into the guest (inbound) or out of it (outbound).
        direction: Direction,
        /// The host interface (virtual switch port) it crosses.
        interface: Option<String>,
        /// Between two guests on the same switch.
        vm2vm: bool,
    },
    /// From now on, after every single operation, this traffic must get this verdict.
    Watch {
        /// Name for `unwatch` and messages.
        name: String,
        /// The probe.
        traffic: Traffic,
        /// Required verdict.
        verdict: Verdict,
    },
    /// Stops a watch.
    Unwatch {
        /// Watch name.
        name: String,
    },
    /// The case's agent (started on its first such step) brings its lockdown to
    /// `state` with `settings`, through the backend's own agent code.
    Agent {
        /// Locked or connected.
        state: AgentState,
        /// The lockdown's settings for this step.
        settings: AgentSettings,
    },
}

impl Op {
    /// The step's action word as written in case files.
    pub fn action(&self) -> &'static str {
        match self {
            Op::OpenSession { .. } => "open_session",
            Op::CloseSession { .. } => "close_session",
            Op::AddSublayer { .. } => "add_sublayer",
            Op::AddFilter { .. } => "add_filter",
            Op::DeleteFilter { .. } => "delete_filter",
            Op::Begin { .. } => "begin",
            Op::Commit { .. } => "commit",
            Op::Abort { .. } => "abort",
            Op::Kill { .. } => "kill",
            Op::BfeStop => "bfe_stop",
            Op::BfeStart => "bfe_start",
            Op::BfeRestart => "bfe_restart",
            Op::Reboot => "reboot",
            Op::PowerOn => "power_on",
            Op::SleepResume => "sleep_resume",
            Op::RecreateInterface { .. } => "recreate_interface",
            Op::NewFlow { traffic, .. } if traffic.direction == Direction::Inbound => "accept",
            Op::NewFlow { .. } => "connect",
            Op::Packet { .. } => "packet",
            Op::CloseFlow { .. } => "close_flow",
            Op::VmFrame { .. } => "vm_frame",
            Op::Watch { .. } => "watch",
            Op::Unwatch { .. } => "unwatch",
            Op::Agent { .. } => "agent",
        }
    }

    /// Whether the op manages policy or the device (expectations: success or an error).
    pub fn is_management(&self) -> bool {
        !matches!(
            self,
            Op::NewFlow { .. } | Op::Packet { .. } | Op::VmFrame { .. } | Op::Watch { .. } | Op::Unwatch { .. }
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action())?;
        match self {
            Op::OpenSession { session, process, .. } => write!(f, " `{session}` by `{process}`"),
            Op::CloseSession { session } | Op::Begin { session } | Op::Commit { session } | Op::Abort { session } => {
                write!(f, " `{session}`")
            }
            Op::AddSublayer { sublayer, .. } => write!(f, " `{sublayer}`"),
            Op::AddFilter { filter, .. } | Op::DeleteFilter { filter, .. } => write!(f, " `{filter}`"),
            Op::Kill { process } => write!(f, " `{process}`"),
            Op::RecreateInterface { interface } => write!(f, " `{interface}`"),
            Op::NewFlow { flow, traffic } => match flow {
                Some(name) => write!(f, " `{name}`: {traffic}"),
                None => write!(f, " {traffic}"),
            },
            Op::Packet { flow, via, host_model, .. } => {
                write!(f, " on `{flow}`")?;
                match via {
                    Some(v) => write!(f, " via `{v}` ({host_model:?} host)"),
                    None => Ok(()),
                }
            }
            Op::CloseFlow { flow } => write!(f, " `{flow}`"),
            Op::VmFrame { direction, vm2vm, .. } => write!(f, " {direction:?} vm2vm={vm2vm}"),
            Op::Watch { name, .. } | Op::Unwatch { name } => write!(f, " `{name}`"),
            Op::Agent { state, settings } => write!(f, " {} ({settings})", state.as_str()),
            _ => Ok(()),
        }
    }
}

/// The fate of new traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Let through.
    Permit,
    /// Blocked by a filter.
    Block,
    /// Discarded by the network stack before any filter saw it.
    Dropped,
}

/// The fate of a packet on an existing flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PacketOutcome {
    /// Passed without evaluation.
    Pass,
    /// Evaluated again (policy changed or it arrived elsewhere) and permitted.
    Reauthorized,
    /// Evaluated again and blocked: the flow is gone.
    TornDown,
    /// The flow no longer exists.
    Closed,
}

/// Errors a management step may be expected to fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ErrorKind {
    /// Another session holds the transaction lock.
    TransactionLocked,
    /// The filtering service is not running.
    BfeNotRunning,
    /// The session does not exist (closed, or ended by a process exit or service stop).
    UnknownSession,
    /// The filter does not exist.
    UnknownFilter,
    /// The sublayer (or provider) it names does not exist.
    UnknownSublayer,
    /// An object with that key already exists.
    AlreadyExists,
    /// Commit or abort without a transaction.
    NoTransaction,
    /// Flags that cannot be combined (persistent and boot-time).
    InvalidFlags,
    /// A condition the layer does not have, or a malformed value.
    InvalidCondition,
    /// Anything else the backend refused.
    Rejected,
}

impl ErrorKind {
    /// Every kind, in order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::TransactionLocked,
        ErrorKind::BfeNotRunning,
        ErrorKind::UnknownSession,
        ErrorKind::UnknownFilter,
        ErrorKind::UnknownSublayer,
        ErrorKind::AlreadyExists,
        ErrorKind::NoTransaction,
        ErrorKind::InvalidFlags,
        ErrorKind::InvalidCondition,
        ErrorKind::Rejected,
    ];

    /// The name used in case files.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::TransactionLocked => "transaction_locked",
            ErrorKind::BfeNotRunning => "bfe_not_running",
            ErrorKind::UnknownSession => "unknown_session",
            ErrorKind::UnknownFilter => "unknown_filter",
            ErrorKind::UnknownSublayer => "unknown_sublayer",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NoTransaction => "no_transaction",
            ErrorKind::InvalidFlags => "invalid_flags",
            ErrorKind::InvalidCondition => "invalid_condition",
            ErrorKind::Rejected => "rejected",
        }
    }
}

/// What a step expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Expect {
    /// Nothing observable (watch, unwatch).
    Nothing,
    /// The management step succeeds.
    Success,
    /// The management step fails this way.
    Error {
        /// The kind of failure.
        kind: ErrorKind,
        /// For `transaction_locked`: the lock wait the caller had.
        waited_ms: Option<u32>,
    },
    /// New traffic gets this verdict.
    Verdict {
        /// Required verdict.
        verdict: Verdict,
        /// The filter that must have decided.
        decided_by: Option<String>,
        /// No filter may have matched (the default permit).
        no_match: bool,
    },
    /// A packet on a flow has this fate.
    Packet {
        /// Required outcome.
        outcome: PacketOutcome,
        /// The filter that must have decided a reauthorization.
        decided_by: Option<String>,
    },
}
