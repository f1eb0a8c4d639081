//! Traffic classes a kill switch must let through or pin down, as exact classification
//! contexts (the tuples of WireGuard's `tunnel/firewall/rules.go`, research §3.6.1), and
//! the receive-side validation the IP stack does before any WFP layer sees a packet.
//!
//! WFP has no hop-limit condition: a filter cannot require NDP's hop limit of 255 (real
//! clients carry a TODO about it). The hop limit is enforced by the stack itself: RFC 4861
//! has a node silently discard a received Router Solicitation, Router Advertisement,
//! Neighbor Solicitation, Neighbor Advertisement or Redirect whose IP hop limit is not
//! 255, so an off-link forgery never reaches `ALE_AUTH_RECV_ACCEPT_V6`. [`Packet`] carries
//! the hop limit next to the context and [`deliver`] applies that check first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use super::classify::{ClassifyContext, Decision};
use super::engine::Engine;
use super::filter::{Direction, Layer, Protocol};

/// The hop limit every NDP message must be sent and received with (RFC 4861).
pub const NDP_HOP_LIMIT: u8 = 255;

/// Hop limit / TTL of ordinary traffic in the constructors.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// DHCPv4 client and server ports.
pub const DHCPV4_CLIENT_PORT: u16 = 68;
/// DHCPv4 server port.
pub const DHCPV4_SERVER_PORT: u16 = 67;
/// DHCPv6 client port.
pub const DHCPV6_CLIENT_PORT: u16 = 546;
/// DHCPv6 server/relay port.
pub const DHCPV6_SERVER_PORT: u16 = 547;
/// `All_DHCP_Relay_Agents_and_Servers` (link scope).
pub const DHCPV6_ALL_SERVERS_LINK: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// `All_DHCP_Servers` (site scope).
pub const DHCPV6_ALL_SERVERS_SITE: Ipv6Addr = Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 1, 3);
/// All-routers multicast, the destination of a Router Solicitation.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The five NDP messages (ICMPv6 types 133-137, code 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum NdpMessage {
    /// 133, sent by hosts to `ff02::2`.
    RouterSolicitation,
    /// 134, received from a router's link-local address.
    RouterAdvertisement,
    /// 135, both directions.
    NeighborSolicitation,
    /// 136, both directions.
    NeighborAdvertisement,
    /// 137, received from a router's link-local address.
    Redirect,
}

impl NdpMessage {
    /// The ICMPv6 type.
    pub fn icmp_type(&self) -> u16 {
        match self {
            NdpMessage::RouterSolicitation => 133,
            NdpMessage::RouterAdvertisement => 134,
            NdpMessage::NeighborSolicitation => 135,
            NdpMessage::NeighborAdvertisement => 136,
            NdpMessage::Redirect => 137,
        }
    }

    /// The message with ICMPv6 type `t`, if it is an NDP type.
    pub fn from_icmp_type(t: u16) -> Option<NdpMessage> {
        [
            NdpMessage::RouterSolicitation,
            NdpMessage::RouterAdvertisement,
            NdpMessage::NeighborSolicitation,
            NdpMessage::NeighborAdvertisement,
            NdpMessage::Redirect,
        ]
        .into_iter()
        .find(|m| m.icmp_type() == t)
    }
}

/// A packet as the stack hands it to classification: the WFP context plus the one IP
/// header field WFP cannot see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// What the ALE layer classifies.
    pub context: ClassifyContext,
    /// IPv4 TTL / IPv6 hop limit.
    pub hop_limit: u8,
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn ctx(layer: Layer, protocol: Protocol, local: SocketAddr, remote: SocketAddr) -> ClassifyContext {
    ClassifyContext::new(layer, protocol, local, remote)
}

impl Packet {
    /// A packet with the default hop limit.
    pub fn new(context: ClassifyContext) -> Packet {
        Packet { context, hop_limit: DEFAULT_HOP_LIMIT }
    }

    /// DHCPv4 DISCOVER/REQUEST: `ALE_AUTH_CONNECT_V4`, UDP `0.0.0.0:68 → 255.255.255.255:67`.
    pub fn dhcpv4_request() -> Packet {
        let local = sa(Ipv4Addr::UNSPECIFIED, DHCPV4_CLIENT_PORT);
        let remote = sa(Ipv4Addr::BROADCAST, DHCPV4_SERVER_PORT);
        Packet::new(ctx(Layer::AleAuthConnectV4, Protocol::Udp, local, remote))
    }

    /// DHCPv4 OFFER/ACK: `ALE_AUTH_RECV_ACCEPT_V4`, UDP `server:67 → local:68`.
    pub fn dhcpv4_response(local: Ipv4Addr, server: Ipv4Addr) -> Packet {
        let (local, remote) = (sa(local, DHCPV4_CLIENT_PORT), sa(server, DHCPV4_SERVER_PORT));
        Packet::new(ctx(Layer::AleAuthRecvAcceptV4, Protocol::Udp, local, remote))
    }

    /// DHCPv6 SOLICIT/REQUEST: `ALE_AUTH_CONNECT_V6`, UDP `[link_local]:546 → [servers]:547`,
    /// `servers` being [`DHCPV6_ALL_SERVERS_LINK`] or [`DHCPV6_ALL_SERVERS_SITE`].
    pub fn dhcpv6_request(link_local: Ipv6Addr, servers: Ipv6Addr) -> Packet {
        let (local, remote) = (sa(link_local, DHCPV6_CLIENT_PORT), sa(servers, DHCPV6_SERVER_PORT));
        Packet::new(ctx(Layer::AleAuthConnectV6, Protocol::Udp, local, remote))
    }

    /// DHCPv6 ADVERTISE/REPLY: `ALE_AUTH_RECV_ACCEPT_V6`, UDP `[server]:547 → [link_local]:546`.
    pub fn dhcpv6_response(link_local: Ipv6Addr, server: Ipv6Addr) -> Packet {
        let (local, remote) = (sa(link_local, DHCPV6_CLIENT_PORT), sa(server, DHCPV6_SERVER_PORT));
        Packet::new(ctx(Layer::AleAuthRecvAcceptV6, Protocol::Udp, local, remote))
    }

    /// An NDP message at the IPv6 ALE layer of `direction`: ICMPv6, type in the local port
    /// field, code 0 in the remote port field (`FWPM_CONDITION_ICMP_TYPE` is
    /// `IP_LOCAL_PORT`, `ICMP_CODE` is `IP_REMOTE_PORT`).
    pub fn ndp(message: NdpMessage, direction: Direction, local: Ipv6Addr, remote: Ipv6Addr, hop_limit: u8) -> Packet {
        let layer = Layer::for_direction(direction, true);
        let context = ctx(layer, Protocol::IcmpV6, sa(local, message.icmp_type()), sa(remote, 0));
        Packet { context, hop_limit }
    }

    /// A DNS query to `server` over `transport` (UDP or TCP), at the connect layer of the
    /// server's family: remote port 53.
    /// A query to a loopback resolver carries the loopback flag.
    pub fn dns(transport: Protocol, local: SocketAddr, server: IpAddr) -> Packet {
        let layer = Layer::for_direction(Direction::Outbound, server.is_ipv6());
        let loopback = server.is_loopback();
        Packet::new(ClassifyContext { loopback, ..ctx(layer, transport, local, sa(server, 53)) })
    }

    /// DNS over HTTPS to `server`: TCP to port 443, indistinguishable from any HTTPS
    /// connection to the same address.
    pub fn doh(local: SocketAddr, server: IpAddr) -> Packet {
        let layer = Layer::for_direction(Direction::Outbound, server.is_ipv6());
        let loopback = server.is_loopback();
        Packet::new(ClassifyContext { loopback, ..ctx(layer, Protocol::Tcp, local, sa(server, 443)) })
    }

    /// The NDP message this packet carries, if it is one.
    pub fn ndp_message(&self) -> Option<NdpMessage> {
        let c = &self.context;
        if c.protocol != Protocol::IcmpV6 || !c.layer.is_ale() || !c.layer.is_ipv6() {
            return None;
        }
        NdpMessage::from_icmp_type(c.local.port())
    }

    /// The stack's receive-side checks that run before classification.
    pub fn stack_check(&self) -> Result<(), StackDrop> {
        let received = matches!(self.context.layer, Layer::AleAuthRecvAcceptV6);
        match self.ndp_message() {
            Some(message) if received && self.hop_limit != NDP_HOP_LIMIT => {
                Err(StackDrop::NdpHopLimit { message, hop_limit: self.hop_limit })
            }
            _ => Ok(()),
        }
    }
}

/// Why the stack dropped a packet before any filter saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum StackDrop {
    /// A received NDP message whose hop limit is not 255 (RFC 4861): it may come from
    /// off-link.
    #[error("received NDP {message:?} with hop limit {hop_limit} (RFC 4861 requires 255)")]
    NdpHopLimit {
        /// The message.
        message: NdpMessage,
        /// Its hop limit.
        hop_limit: u8,
    },
}

/// What happens to a packet that is not part of an existing flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Delivery {
    /// The stack discarded it before classification.
    DroppedByStack(StackDrop),
    /// Classified at its layer.
    Classified(Decision),
}

/// The stack's checks, then classification against the engine's filters.
pub fn deliver(engine: &Engine, packet: &Packet) -> Delivery {
    match packet.stack_check() {
        Err(drop) => Delivery::DroppedByStack(drop),
        Ok(()) => Delivery::Classified(engine.classify(&packet.context)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wfp::{Action, Condition, FilterSpec, IpPrefix, Weight};

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dhcp_tuples_are_exact() {
        let r = Packet::dhcpv4_request().context;
        assert_eq!((r.layer, r.protocol), (Layer::AleAuthConnectV4, Protocol::Udp));
        assert_eq!((r.local.to_string(), r.remote.to_string()), ("0.0.0.0:68".into(), "255.255.255.255:67".into()));
        let a = Packet::dhcpv4_response("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).context;
        assert_eq!((a.layer, a.local.port(), a.remote.port()), (Layer::AleAuthRecvAcceptV4, 68, 67));
        let s = Packet::dhcpv6_request(v6("fe80::2"), DHCPV6_ALL_SERVERS_LINK).context;
        assert_eq!(
            (s.layer, s.local.to_string(), s.remote.to_string()),
            (Layer::AleAuthConnectV6, "[fe80::2]:546".into(), "[ff02::1:2]:547".into())
        );
        assert_eq!(DHCPV6_ALL_SERVERS_SITE.to_string(), "ff05::1:3");
        let rep = Packet::dhcpv6_response(v6("fe80::2"), v6("fe80::1")).context;
        assert_eq!((rep.layer, rep.local.port(), rep.remote.port()), (Layer::AleAuthRecvAcceptV6, 546, 547));
    }

    #[test]
    fn ndp_uses_port_fields_and_the_stack_checks_hop_limit() {
        let rs = Packet::ndp(NdpMessage::RouterSolicitation, Direction::Outbound, v6("fe80::2"), ALL_ROUTERS, 255);
        assert_eq!((rs.context.local.port(), rs.context.remote.port()), (133, 0));
        assert_eq!(rs.ndp_message(), Some(NdpMessage::RouterSolicitation));
        let ra =
            |hop| Packet::ndp(NdpMessage::RouterAdvertisement, Direction::Inbound, v6("fe80::2"), v6("fe80::1"), hop);
        assert_eq!(ra(255).stack_check(), Ok(()));
        let drop = ra(64).stack_check().unwrap_err();
        assert_eq!(drop.to_string(), "received NDP RouterAdvertisement with hop limit 64 (RFC 4861 requires 255)");
        // Only received NDP is validated; other ICMPv6 types are not NDP.
        let mut out = ra(64);
        out.context.layer = Layer::AleAuthConnectV6;
        assert_eq!(out.stack_check(), Ok(()));
        let mut echo = ra(64);
        echo.context.local.set_port(128);
        assert_eq!((echo.ndp_message(), echo.stack_check()), (None, Ok(())));
        assert_eq!(NdpMessage::from_icmp_type(137), Some(NdpMessage::Redirect));
        assert_eq!(NdpMessage::from_icmp_type(138), None);
    }

    #[test]
    fn deliver_drops_before_any_filter() {
        let mut e = Engine::new();
        let s = e.open_session(1, "x", false).unwrap();
        e.add_sublayer(s, "sl", None, 1, false).unwrap();
        let mut permit = FilterSpec::new("ndp-134", Layer::AleAuthRecvAcceptV6, "sl", Action::Permit);
        permit.weight = Weight::Range(12);
        permit.conditions = vec![
            Condition::Protocol(Protocol::IcmpV6),
            Condition::LocalPort(134),
            Condition::RemotePort(0),
            Condition::RemoteAddr("fe80::/10".parse::<IpPrefix>().unwrap()),
        ];
        e.add_filter(s, permit).unwrap();
        e.add_filter(s, FilterSpec::new("block-all", Layer::AleAuthRecvAcceptV6, "sl", Action::Block)).unwrap();
        let ra =
            |hop| Packet::ndp(NdpMessage::RouterAdvertisement, Direction::Inbound, v6("fe80::2"), v6("fe80::1"), hop);
        match deliver(&e, &ra(255)) {
            Delivery::Classified(d) => assert_eq!(d.filter_name.as_deref(), Some("ndp-134")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(deliver(&e, &ra(1)), Delivery::DroppedByStack(StackDrop::NdpHopLimit { hop_limit: 1, .. })));
    }

    #[test]
    fn dns_and_doh() {
        let local: SocketAddr = "10.0.0.2:50000".parse().unwrap();
        let udp = Packet::dns(Protocol::Udp, local, "9.9.9.9".parse().unwrap()).context;
        assert_eq!((udp.layer, udp.protocol, udp.remote.port()), (Layer::AleAuthConnectV4, Protocol::Udp, 53));
        let tcp = Packet::dns(Protocol::Tcp, "[fd00::2]:5".parse().unwrap(), "2620:fe::fe".parse().unwrap()).context;
        assert_eq!((tcp.layer, tcp.protocol), (Layer::AleAuthConnectV6, Protocol::Tcp));
        let doh = Packet::doh(local, "9.9.9.9".parse().unwrap());
        assert_eq!((doh.context.protocol, doh.context.remote.port(), doh.hop_limit), (Protocol::Tcp, 443, 64));
        let local_resolver =
            Packet::dns(Protocol::Udp, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1".parse().unwrap());
        assert!(local_resolver.context.loopback && !udp.loopback);
    }
}
