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
//! | 11 | permit NDP (always) | connect v6, recv-accept v6 | ICMPv6 types 133-137, code 0, per message (below) | permit |
//! | 0 | block all | all four | none | block |
//!
//! IPv6 neighbour discovery (RFC 4861) is what an IPv6 link needs before any
//! other packet, the sign-in flow's included, so it passes whatever the
//! settings, as in WireGuard's kill switch (research §3.6.1). ICMPv6 type and
//! code travel in WFP's local and remote port fields:
//!
//! | message | layer | remote address |
//! |---|---|---|
//! | 133 Router Solicitation | connect v6 | `ff02::2` (all routers) only |
//! | 134 Router Advertisement | recv-accept v6 | `fe80::/10` only (a router's link-local address) |
//! | 135 Neighbor Solicitation, 136 Neighbor Advertisement | connect v6 and recv-accept v6 | any: solicited-node multicast, unicast (link-local or global on-link) and the unspecified source of duplicate address detection |
//! | 137 Redirect | recv-accept v6 | `fe80::/10` only |
//!
//! WFP has no hop-limit condition: the 255 that keeps NDP on the link is
//! checked by the stack, which discards a received NDP message with any other
//! hop limit before classification ([`crate::wfp::Packet::stack_check`]).
//!
//! Lifetimes: with `persistent` the lockdown outlives the agent, BFE restarts and
//! reboots, and a boot-time copy (block all, loopback, DHCP, NDP) acts from TCP/IP
//! start until BFE has loaded the persistent ones. Lifting the lockdown never removes
//! it: it adds the weight-15 permit from a second, dynamic session, so the permit
//! vanishes with the agent's process and a crash or a reboot fails closed.

use std::net::IpAddr;

use super::firewall::{Firewall, FirewallError, LockdownPolicy};
use crate::config::FilterLifetime;
use crate::wfp::{
    ALL_ROUTERS, Action, Condition, EngineError, FilterId, FilterSpec, IpPrefix, Layer, Lifetime, NdpMessage, Protocol,
    SessionId, Weight,
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
    if !policy.danger_ipv4_only {
        for (name, layer, conditions) in ndp_conditions() {
            specs.push(f(name, layer, 11, Action::Permit, conditions));
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

/// The NDP permits (RFC 4861; the tuples of WireGuard's `permitNdp`): each
/// message type at the layer of its direction, with its code 0, and the
/// source or destination RFC 4861 requires of it (see the module docs).
fn ndp_conditions() -> Vec<(&'static str, Layer, Vec<Condition>)> {
    let icmp = |t: NdpMessage| {
        vec![Condition::Protocol(Protocol::IcmpV6), Condition::LocalPort(t.icmp_type()), Condition::RemotePort(0)]
    };
    let remote = |p: IpPrefix| Condition::RemoteAddr(p);
    let all_routers = IpPrefix::host(IpAddr::V6(ALL_ROUTERS));
    let link_local = IpPrefix::new(IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10)
        .unwrap_or_else(|_| IpPrefix::host(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)));
    let with = |mut c: Vec<Condition>, extra: Condition| {
        c.push(extra);
        c
    };
    vec![
        (
            "permit NDP router solicitation",
            Layer::AleAuthConnectV6,
            with(icmp(NdpMessage::RouterSolicitation), remote(all_routers)),
        ),
        (
            "permit NDP router advertisement",
            Layer::AleAuthRecvAcceptV6,
            with(icmp(NdpMessage::RouterAdvertisement), remote(link_local)),
        ),
        ("permit NDP neighbor solicitation", Layer::AleAuthConnectV6, icmp(NdpMessage::NeighborSolicitation)),
        ("permit NDP neighbor solicitation", Layer::AleAuthRecvAcceptV6, icmp(NdpMessage::NeighborSolicitation)),
        ("permit NDP neighbor advertisement", Layer::AleAuthConnectV6, icmp(NdpMessage::NeighborAdvertisement)),
        ("permit NDP neighbor advertisement", Layer::AleAuthRecvAcceptV6, icmp(NdpMessage::NeighborAdvertisement)),
        ("permit NDP redirect", Layer::AleAuthRecvAcceptV6, with(icmp(NdpMessage::Redirect), remote(link_local))),
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

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::wfp::{
        DHCPV6_ALL_SERVERS_LINK, DHCPV6_ALL_SERVERS_SITE, Delivery, Direction, Engine, Packet, StackDrop, deliver,
    };

    /// The agent's BFE handle on a bare engine.
    struct TestBfe(Engine);

    impl Bfe for TestBfe {
        fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError> {
            self.0.open_session(7, name, dynamic)
        }
        fn begin(&mut self, session: SessionId) -> Result<(), EngineError> {
            self.0.begin_transaction(session)
        }
        fn commit(&mut self, session: SessionId) -> Result<(), EngineError> {
            self.0.commit_transaction(session).map(|_| ())
        }
        fn abort(&mut self, session: SessionId) -> Result<(), EngineError> {
            self.0.abort_transaction(session)
        }
        fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError> {
            self.0.add_provider(session, key, persistent)
        }
        fn add_sublayer(
            &mut self,
            session: SessionId,
            key: &str,
            provider: Option<&str>,
            weight: u16,
            persistent: bool,
        ) -> Result<(), EngineError> {
            self.0.add_sublayer(session, key, provider, weight, persistent)
        }
        fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError> {
            self.0.add_filter(session, spec)
        }
        fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError> {
            self.0.delete_filter(session, id)
        }
        fn filters_of_provider(&self, provider: &str) -> Vec<FilterId> {
            self.0.filters().filter(|f| f.spec.provider.as_deref() == Some(provider)).map(|f| f.id).collect()
        }
        fn provider_exists(&self, key: &str) -> bool {
            self.0.providers().any(|p| p.key == key)
        }
        fn sublayer_exists(&self, key: &str) -> bool {
            self.0.sublayers().any(|s| s.key == key)
        }
    }

    fn policy(allow_lan: bool, allow_dhcp: bool) -> LockdownPolicy {
        LockdownPolicy { exceptions: Vec::new(), allow_loopback: true, allow_lan, allow_dhcp, danger_ipv4_only: false }
    }

    fn locked(p: &LockdownPolicy) -> Engine {
        let mut fw = WfpFirewall::open(TestBfe(Engine::new()), FilterLifetime::Persistent, 0xFFFF, true).unwrap();
        fw.engage_lockdown(p).unwrap();
        fw.into_bfe().0
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// What the lockdown does with a packet: the deciding filter, or why it never got there.
    fn fate(e: &Engine, p: &Packet) -> String {
        match deliver(e, p) {
            Delivery::Classified(d) if d.is_permit() => format!("permit by {}", d.filter_name.unwrap_or_default()),
            Delivery::Classified(d) => format!("block by {}", d.filter_name.unwrap_or_default()),
            Delivery::DroppedByStack(StackDrop::NdpHopLimit { .. }) => "dropped by the stack".into(),
        }
    }

    fn ndp(m: NdpMessage, dir: Direction, remote: &str) -> Packet {
        Packet::ndp(m, dir, v6("fe80::2"), v6(remote), 255)
    }

    #[test]
    fn the_lockdown_lets_neighbour_discovery_and_dhcpv6_through() {
        use Direction::{Inbound, Outbound};
        use NdpMessage::*;
        for (lan, dhcp) in [(false, true), (true, true), (false, false)] {
            let e = locked(&policy(lan, dhcp));
            let permitted = [
                ndp(RouterSolicitation, Outbound, "ff02::2"),
                ndp(RouterAdvertisement, Inbound, "fe80::1"),
                ndp(NeighborSolicitation, Outbound, "ff02::1:ff00:1"),
                ndp(NeighborSolicitation, Outbound, "2001:db8::1"),
                ndp(NeighborSolicitation, Inbound, "fe80::1"),
                ndp(NeighborSolicitation, Inbound, "::"),
                ndp(NeighborAdvertisement, Outbound, "fe80::1"),
                ndp(NeighborAdvertisement, Outbound, "ff02::1"),
                ndp(NeighborAdvertisement, Inbound, "2001:db8::1"),
                ndp(Redirect, Inbound, "fe80::1"),
            ];
            for p in &permitted {
                let got = fate(&e, p);
                assert!(got.starts_with("permit by lockstep: permit NDP"), "lan {lan} dhcp {dhcp}: {p:?}: {got}");
            }
            // Off the RFC 4861 tuples: the block-all.
            for p in [
                ndp(RouterSolicitation, Outbound, "ff02::1"),
                ndp(RouterAdvertisement, Inbound, "2001:db8::1"),
                ndp(Redirect, Inbound, "2001:db8::1"),
            ] {
                assert_eq!(fate(&e, &p), "block by lockstep: block all", "lan {lan}: {p:?}");
            }
            let mut echo = ndp(RouterSolicitation, Outbound, "ff02::2");
            echo.context.local.set_port(128);
            assert_eq!(fate(&e, &echo), "block by lockstep: block all", "echo request is not NDP");
            // Received NDP off the link (hop limit not 255) never reaches a filter.
            let forged = Packet::ndp(RouterAdvertisement, Inbound, v6("fe80::2"), v6("fe80::1"), 64);
            assert_eq!(fate(&e, &forged), "dropped by the stack");
            // DHCPv6 (and DHCPv4) follow the DHCP setting.
            let ll = v6("fe80::2");
            for p in [
                Packet::dhcpv6_request(ll, DHCPV6_ALL_SERVERS_LINK),
                Packet::dhcpv6_request(ll, DHCPV6_ALL_SERVERS_SITE),
                Packet::dhcpv6_response(ll, v6("fe80::1")),
                Packet::dhcpv4_request(),
            ] {
                let got = fate(&e, &p);
                // With the LAN setting on, the link-local server's answer is also a LAN permit's.
                let ok = match (dhcp, lan) {
                    (true, false) => got == "permit by lockstep: permit DHCP",
                    (true, true) => got.starts_with("permit by lockstep: permit "),
                    (false, _) => got == "block by lockstep: block all",
                };
                assert!(ok, "dhcp {dhcp} lan {lan}: {p:?}: {got}");
            }
        }
    }

    #[test]
    fn the_boot_time_copy_lets_neighbour_discovery_through_before_bfe() {
        let e = locked(&policy(false, true));
        let early = Engine::power_on(&e.persistent_store());
        let rs = ndp(NdpMessage::RouterSolicitation, Direction::Outbound, "ff02::2");
        assert_eq!(fate(&early, &rs), "permit by lockstep: permit NDP router solicitation (boot-time)");
        let ra = ndp(NdpMessage::RouterAdvertisement, Direction::Inbound, "2001:db8::1");
        assert_eq!(fate(&early, &ra), "block by lockstep: block all (boot-time)");
    }
}
