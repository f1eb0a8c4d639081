//! The agent's Windows Filtering Platform backend: compiles the lockdown
//! into WFP filters in the agent's own provider and sublayer, and applies
//! every change in one transaction.
//!
//! Rule set (all in sublayer `lockstep`, weight from the agent's settings;
//! "all four" = connect and recv-accept, IPv4 and IPv6):
//!
//! | weight | filter | layers | conditions | action |
//! |---|---|---|---|---|
//! | 15 | permit all: session live (while connected only, in a dynamic session) | all four | none | permit |
//! | 14 | block DNS | connect v4 + v6 | remote port 53 (TCP or UDP) | block |
//! | 13 | permit loopback (if allowed) | all four | loopback flag | permit |
//! | 12 | permit *process* -> *endpoint* | connect, family of the endpoint | app id, service SID (if scoped), remote address, remote port, TCP | permit |
//! | 10 | permit LAN (if allowed) | all four | private / link-local prefixes | permit |
//! | 10 | permit DHCP (if allowed) | connect + recv-accept v4, v6 | DHCPv4 / DHCPv6 client tuples | permit |
//! | 0 | block all | all four | none | block |
//!
//! Lifetimes: with `persistent` the lockdown outlives the agent, BFE restarts and
//! reboots, and a boot-time copy (block all, loopback, DHCP) acts from TCP/IP start
//! until BFE has loaded the persistent ones. Lifting the lockdown never removes it:
//! it adds the weight-15 permit from a second, dynamic session, so the permit
//! vanishes with the agent's process and a crash or a reboot fails closed.

use std::net::IpAddr;

use super::firewall::{Firewall, FirewallError, LockdownPolicy};
use crate::config::FilterLifetime;
use crate::wfp::{
    Action, Condition, EngineError, FilterId, FilterSpec, IpPrefix, Layer, Lifetime, Protocol, SessionId, Weight,
};

/// Key of the agent's WFP provider.
pub const PROVIDER: &str = "lockstep";
/// Key of the agent's WFP sublayer.
pub const SUBLAYER: &str = "lockstep";

/// The Base Filtering Engine's management API as a process sees it
/// (the `Fwpm*` calls), bound to the calling process.
pub trait Bfe: Send + Sync {
    /// `FwpmEngineOpen0`: opens a session owned by the calling process.
    fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError>;
    /// `FwpmTransactionBegin0`.
    fn begin(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmTransactionCommit0`.
    fn commit(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmTransactionAbort0`.
    fn abort(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmProviderAdd0`.
    fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError>;
    /// `FwpmSubLayerAdd0`.
    fn add_sublayer(
        &mut self,
        session: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError>;
    /// `FwpmFilterAdd0`.
    fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError>;
    /// `FwpmFilterDeleteById0`.
    fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError>;
    /// `FwpmFilterEnum0` restricted to one provider.
    fn filters_of_provider(&self, provider: &str) -> Vec<FilterId>;
    /// Whether a provider exists (`FwpmProviderGetByKey0`).
    fn provider_exists(&self, key: &str) -> bool;
    /// Whether a sublayer exists (`FwpmSubLayerGetByKey0`).
    fn sublayer_exists(&self, key: &str) -> bool;
}

/// The WFP backend of the agent.
pub struct WfpFirewall<B: Bfe> {
    bfe: B,
    session: SessionId,
    unlock_session: SessionId,
    lifetime: Lifetime,
    boot_time: bool,
}

fn fw_err(context: &str, e: EngineError) -> FirewallError {
    FirewallError(format!("{context}: {e}"))
}

/// The private and link-local prefixes of the LAN setting.
pub const LAN_PREFIXES: [&str; 6] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10"];

const CONNECT: [Layer; 2] = [Layer::AleAuthConnectV4, Layer::AleAuthConnectV6];

impl<B: Bfe> WfpFirewall<B> {
    /// Opens the agent's BFE sessions and makes sure its provider and
    /// sublayer exist (they persist across reboots when filters do).
    /// `boot_time` adds a boot-time copy of the lockdown (persistent only).
    pub fn open(
        mut bfe: B,
        lifetime: FilterLifetime,
        sublayer_weight: u16,
        boot_time: bool,
    ) -> Result<Self, FirewallError> {
        let dynamic = lifetime == FilterLifetime::Dynamic;
        let session = bfe.open_session("Lockstep agent", dynamic).map_err(|e| fw_err("open session", e))?;
        let unlock_session =
            bfe.open_session("Lockstep agent (unlock)", true).map_err(|e| fw_err("open session", e))?;
        let lifetime = match lifetime {
            FilterLifetime::Dynamic => Lifetime::Dynamic,
            FilterLifetime::Static => Lifetime::Static,
            FilterLifetime::Persistent => Lifetime::Persistent,
        };
        let persistent = lifetime == Lifetime::Persistent;
        let boot_time = boot_time && persistent;
        let mut fw = WfpFirewall { bfe, session, unlock_session, lifetime, boot_time };
        fw.transaction(session, |bfe, s| {
            if !bfe.provider_exists(PROVIDER) {
                bfe.add_provider(s, PROVIDER, persistent).map_err(|e| fw_err("add provider", e))?;
            }
            if !bfe.sublayer_exists(SUBLAYER) {
                bfe.add_sublayer(s, SUBLAYER, Some(PROVIDER), sublayer_weight, persistent)
                    .map_err(|e| fw_err("add sublayer", e))?;
            }
            Ok(())
        })?;
        Ok(fw)
    }

    fn transaction(
        &mut self,
        s: SessionId,
        body: impl FnOnce(&mut B, SessionId) -> Result<(), FirewallError>,
    ) -> Result<(), FirewallError> {
        self.bfe.begin(s).map_err(|e| fw_err("begin transaction", e))?;
        match body(&mut self.bfe, s) {
            Ok(()) => self.bfe.commit(s).map_err(|e| fw_err("commit", e)),
            Err(e) => {
                let _ = self.bfe.abort(s);
                Err(e)
            }
        }
    }

    /// Gives the BFE handle back (the agent's sessions stay open on it).
    pub fn into_bfe(self) -> B {
        self.bfe
    }

    /// The filters of the lockdown, with the boot-time copy when configured.
    pub fn lockdown_filters(&self, policy: &LockdownPolicy) -> Vec<FilterSpec> {
        let mut specs = lockdown_set(policy, self.lifetime);
        if self.boot_time {
            let early = LockdownPolicy { exceptions: Vec::new(), allow_lan: false, ..policy.clone() };
            for mut spec in lockdown_set(&early, Lifetime::BootTime) {
                spec.name = format!("{} (boot-time)", spec.name);
                specs.push(spec);
            }
        }
        specs
    }
}

fn layers(policy: &LockdownPolicy, of: &[Layer]) -> Vec<Layer> {
    of.iter().copied().filter(|l| !(policy.danger_ipv4_only && l.is_ipv6())).collect()
}

fn filter(
    name: String,
    layer: Layer,
    weight: u8,
    action: Action,
    lifetime: Lifetime,
    conditions: Vec<Condition>,
) -> FilterSpec {
    FilterSpec {
        name,
        layer,
        sublayer: SUBLAYER.to_string(),
        provider: Some(PROVIDER.to_string()),
        weight: Weight::Range(weight),
        action,
        clear_action_right: false,
        lifetime,
        conditions,
    }
}

/// The lockdown rule set at one lifetime (see the module docs).
fn lockdown_set(policy: &LockdownPolicy, lifetime: Lifetime) -> Vec<FilterSpec> {
    let f = |name: &str, layer, weight, action, conditions| {
        filter(format!("lockstep: {name}"), layer, weight, action, lifetime, conditions)
    };
    let mut specs = Vec::new();
    for layer in layers(policy, &CONNECT) {
        let conditions = vec![Condition::RemotePort(53)];
        specs.push(f("block DNS", layer, 14, Action::Block, conditions));
    }
    if policy.allow_loopback {
        for layer in layers(policy, &Layer::ALL) {
            specs.push(f("permit loopback", layer, 13, Action::Permit, vec![Condition::Loopback]));
        }
    }
    for ex in &policy.exceptions {
        for remote in &ex.remote {
            let layer = if remote.is_ipv6() { Layer::AleAuthConnectV6 } else { Layer::AleAuthConnectV4 };
            if policy.danger_ipv4_only && layer.is_ipv6() {
                continue;
            }
            let mut conditions = vec![Condition::AppId(ex.app_id.clone())];
            if let Some(sid) = &ex.service_sid {
                conditions.push(Condition::UserSid(sid.clone()));
            }
            conditions.push(Condition::RemoteAddr(remote.prefix));
            if let Some(port) = remote.port {
                conditions.push(Condition::RemotePort(port));
            }
            conditions.push(Condition::Protocol(Protocol::Tcp));
            specs.push(f(&format!("permit {} -> {remote}", ex.process), layer, 12, Action::Permit, conditions));
        }
    }
    if policy.allow_lan {
        for layer in layers(policy, &Layer::ALL) {
            let conditions = LAN_PREFIXES
                .iter()
                .filter_map(|p| p.parse::<IpPrefix>().ok())
                .filter(|p| p.is_ipv6() == layer.is_ipv6())
                .map(Condition::RemoteAddr)
                .collect();
            specs.push(f("permit LAN", layer, 10, Action::Permit, conditions));
        }
    }
    if policy.allow_dhcp {
        for (layer, conditions) in dhcp_conditions() {
            if policy.danger_ipv4_only && layer.is_ipv6() {
                continue;
            }
            specs.push(f("permit DHCP", layer, 10, Action::Permit, conditions));
        }
    }
    for layer in layers(policy, &Layer::ALL) {
        specs.push(f("block all", layer, 0, Action::Block, vec![]));
    }
    specs
}

/// The DHCP client's tuples (as WireGuard's and Mullvad's rule sets have them).
fn dhcp_conditions() -> Vec<(Layer, Vec<Condition>)> {
    let pfx = |s: &str| Condition::RemoteAddr(s.parse().unwrap_or_else(|_| IpPrefix::host(IpAddr::from([0, 0, 0, 0]))));
    let lpfx = |s: &str| Condition::LocalAddr(s.parse().unwrap_or_else(|_| IpPrefix::host(IpAddr::from([0, 0, 0, 0]))));
    let udp = Condition::Protocol(Protocol::Udp);
    vec![
        (
            Layer::AleAuthConnectV4,
            vec![udp.clone(), Condition::LocalPort(68), Condition::RemotePort(67), pfx("255.255.255.255")],
        ),
        (Layer::AleAuthRecvAcceptV4, vec![udp.clone(), Condition::LocalPort(68), Condition::RemotePort(67)]),
        (
            Layer::AleAuthConnectV6,
            vec![
                udp.clone(),
                Condition::LocalPort(546),
                Condition::RemotePort(547),
                pfx("ff02::1:2"),
                pfx("ff05::1:3"),
                lpfx("fe80::/10"),
            ],
        ),
        (
            Layer::AleAuthRecvAcceptV6,
            vec![udp, Condition::LocalPort(546), Condition::RemotePort(547), pfx("fe80::/10"), lpfx("fe80::/10")],
        ),
    ]
}

impl<B: Bfe> Firewall for WfpFirewall<B> {
    fn engage_lockdown(&mut self, policy: &LockdownPolicy) -> Result<(), FirewallError> {
        let specs = self.lockdown_filters(policy);
        // One transaction: the previous lockdown, boot-time copy and session permit
        // go, the new lockdown comes, and nobody sees anything in between.
        self.transaction(self.session, |bfe, s| {
            for id in bfe.filters_of_provider(PROVIDER) {
                bfe.delete_filter(s, id).map_err(|e| fw_err("delete filter", e))?;
            }
            for spec in specs {
                bfe.add_filter(s, spec).map_err(|e| fw_err("add filter", e))?;
            }
            Ok(())
        })
    }

    fn lift_lockdown(&mut self) -> Result<(), FirewallError> {
        let all = LockdownPolicy {
            exceptions: Vec::new(),
            allow_loopback: false,
            allow_lan: false,
            allow_dhcp: false,
            danger_ipv4_only: false,
        };
        let permits: Vec<FilterSpec> = layers(&all, &Layer::ALL)
            .into_iter()
            .map(|layer| {
                let name = "lockstep: permit all (session live)".to_string();
                filter(name, layer, 15, Action::Permit, Lifetime::Dynamic, vec![])
            })
            .collect();
        self.transaction(self.unlock_session, |bfe, s| {
            for spec in permits {
                bfe.add_filter(s, spec).map_err(|e| fw_err("add filter", e))?;
            }
            Ok(())
        })
    }
}
