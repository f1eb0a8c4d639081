//! A pure, deterministic model of the Windows Filtering Platform (WFP) as the lab's
//! simulated Windows device sees it. No IO, no clock, no randomness; all state lives in
//! ordered maps, so the same call sequence always gives the same ids and decisions.
//!
//! # What is modelled
//!
//! - **Layers**: the four ALE authorization layers (`ALE_AUTH_CONNECT_V4/V6`,
//!   `ALE_AUTH_RECV_ACCEPT_V4/V6`, [`Layer::ALL`]), the only ones real VPN/zero-trust
//!   clients use, and the two native MAC-frame layers ([`Layer::MAC_FRAME`]) that a
//!   Hyper-V guest's frames cross in the host's virtual switch: guest traffic never
//!   reaches the host's ALE layers, so an ALE block-all does not stop it
//!   ([`ClassifyContext::mac_frame`], condition [`Condition::Vm2Vm`]).
//! - **Arbitration** ([`arbitrate`], MS "Filter Arbitration"): every sublayer is visited
//!   from highest to lowest weight; inside one, the highest-weight matching filter decides
//!   and the rest are not consulted; across sublayers Block beats a soft Permit, a Block is
//!   final, and a hard permit (`FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`) yields only to a
//!   callout veto. Nothing matched means Permit.
//! - **Conditions**: OR within a field, AND across fields, no conditions match everything.
//!   `APP_ID` is an exact normalized NT path ([`AppId`]); `ALE_USER_ID` is modelled as
//!   "the token contains this SID". Each condition exists only at its layers
//!   ([`Condition::fits`]): no process or IP fields at L2, no L2 flags at ALE.
//! - **Weights**: `FWP_UINT8` range 0..=15 sets the top 4 bits, `FWP_UINT64` is exact,
//!   `FWP_EMPTY` is BFE-assigned within range 0.
//! - **Engine** ([`Engine`]): sessions (dynamic or not, with their transaction lock wait,
//!   15 s by default: [`SessionOptions`]), providers, sublayers, filters, explicit and
//!   implicit transactions, lifetimes (dynamic / static / persistent / boot-time; the
//!   persistent and boot-time flags are exclusive: [`Lifetime::from_flags`]),
//!   process-exit session rundown, and the device's life in [`Phase`]s:
//!   power-on (TCP/IP up, only boot-time filters in force), BFE start (persistent filters
//!   in force, boot-time ones retired, in one step), BFE stop and restart.
//! - **Flows** ([`FlowTable`], MS "ALE Reauthorization"): a flow is classified once when
//!   created; its packets then pass until a filter is added or deleted at its layer, after
//!   which the next packet is reauthorized and a Block tears the flow down. In the
//!   weak-host model ([`HostModel`]) a packet arriving on another interface than the
//!   flow's is reauthorized too.
//! - **Traffic classes** ([`Packet`]): the exact DHCPv4/DHCPv6/NDP 133-137/DNS/DoH
//!   contexts of WireGuard's rule set, with the IP hop limit, and the stack's RFC 4861
//!   check that drops a received NDP message whose hop limit is not 255 before any layer
//!   classifies it ([`deliver`]). WFP itself has no hop-limit condition.
//!
//! # Simplifications
//!
//! - Every action is terminating: there is no `Continue`, callouts only exist as
//!   [`Action::CalloutVeto`], and a Block cannot be soft (no "soft block" overridden by a
//!   permit elsewhere).
//! - The BFE's auto-generated low 60 weight bits (derived from the conditions by an
//!   undocumented algorithm) are modelled as 0: filters in the same range, and `Auto`
//!   filters, tie. Ties inside a sublayer go to the lower [`FilterId`] (added earlier);
//!   sublayers of equal weight are visited in key order.
//! - When several sublayers soft-permit, the highest one is reported as the decider; a
//!   later hard permit takes over (it is what makes the result unoverridable).
//! - Lifetime: in a dynamic session every object is dynamic whatever was requested; in a
//!   non-dynamic session a filter's `spec.lifetime` picks Static or Persistent and
//!   `Dynamic` is rejected ([`EngineError::DynamicInStaticSession`]).
//! - A persistent filter/sublayer needs persistent parents. When a session's dynamic
//!   sublayer or provider dies, any other session's filters left inside it die too.
//! - There is one engine-wide transaction lock and no waiting (there is no clock):
//!   `begin_transaction` or a write from another session while it is held fails at once
//!   with [`EngineError::TransactionLocked`], which reports the caller's
//!   `txnWaitTimeoutInMSec` as the time a real caller would have waited before failing
//!   (for ever with `INFINITE`). The lock-hold timeout and `FWP_E_TXN_ABORTED` are not
//!   modelled.
//!   Session rundown of a non-holder still proceeds. Reads (`filters`, `classify`) always
//!   see committed state.
//! - A failed call inside a transaction changes nothing and leaves the transaction open.
//! - BFE stop keeps persistent filters in force (they "live until deleted"); they keep
//!   their ids and there is no window without them. A boot-time filter added while BFE
//!   runs is stored for the next boot and does not act before it; boot-time filters need
//!   persistent parents, like persistent ones.
//! - Reauthorization classifies the flow's original context at its own layer (not the
//!   opposite layer for reverse-direction packets) and is triggered by filter changes and
//!   weak-host interface changes only (no pending-connection trigger). In the strong-host
//!   model a packet on another interface simply passes: the IP-level strong-host drop is
//!   not modelled.
//! - The MAC-frame layers are stateless here as in WFP, but their frames carry only the
//!   interface and the VM-to-VM flag; no MAC addresses, VLAN, ether type or vSwitch port
//!   fields, and no Hyper-V firewall (the separate WMI-managed one Mullvad uses).
//! - The only stack check before classification is RFC 4861's NDP hop limit on receive
//!   (no checksum, source-address or reassembly validation).
//! - Only address conditions are checked against the layer's family at add time.

mod classify;
mod engine;
mod filter;
mod flow;
mod traffic;

#[cfg(test)]
mod tests;

pub use classify::{ClassifyContext, Decision, arbitrate, conditions_match};
pub use engine::{
    ChangeSet, DEFAULT_TXN_WAIT_TIMEOUT_MS, DeleteReason, Engine, EngineError, INFINITE_TXN_WAIT, PersistentStore,
    Phase, Provider, Session, SessionOptions, Sublayer,
};
pub use filter::{
    AUTO_WEIGHT_BITS, AUTO_WEIGHT_MAX, Action, AppId, AppIdError, Condition, ConditionField, Direction, Filter,
    FilterId, FilterSpec, IpPrefix, Layer, Lifetime, PrefixError, Protocol, SessionId, WEIGHT_RANGE_MAX, Weight,
};
pub use flow::{Flow, FlowId, FlowTable, HostModel, PacketVerdict};
pub use traffic::{
    ALL_ROUTERS, DEFAULT_HOP_LIMIT, DHCPV4_CLIENT_PORT, DHCPV4_SERVER_PORT, DHCPV6_ALL_SERVERS_LINK,
    DHCPV6_ALL_SERVERS_SITE, DHCPV6_CLIENT_PORT, DHCPV6_SERVER_PORT, Delivery, NDP_HOP_LIMIT, NdpMessage, Packet,
    StackDrop, deliver,
};
