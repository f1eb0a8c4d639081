//! A pure, deterministic model of the Windows Filtering Platform (WFP) as the lab's
//! simulated Windows device sees it. No IO, no clock, no randomness; all state lives in
//! ordered maps, so the same call sequence always gives the same ids and decisions.
//!
//! # What is modelled
//!
//! - **Layers**: the four ALE authorization layers (`ALE_AUTH_CONNECT_V4/V6`,
//!   `ALE_AUTH_RECV_ACCEPT_V4/V6`), the only ones real VPN/zero-trust clients use.
//! - **Arbitration** ([`arbitrate`], MS "Filter Arbitration"): every sublayer is visited
//!   from highest to lowest weight; inside one, the highest-weight matching filter decides
//!   and the rest are not consulted; across sublayers Block beats a soft Permit, a Block is
//!   final, and a hard permit (`FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`) yields only to a
//!   callout veto. Nothing matched means Permit.
//! - **Conditions**: OR within a field, AND across fields, no conditions match everything.
//!   `APP_ID` is an exact normalized NT path ([`AppId`]); `ALE_USER_ID` is modelled as
//!   "the token contains this SID".
//! - **Weights**: `FWP_UINT8` range 0..=15 sets the top 4 bits, `FWP_UINT64` is exact,
//!   `FWP_EMPTY` is BFE-assigned within range 0.
//! - **Engine** ([`Engine`]): sessions (dynamic or not), providers, sublayers, filters,
//!   explicit and implicit transactions, lifetimes (dynamic / static / persistent /
//!   boot-time), process-exit session rundown, and the device's life in [`Phase`]s:
//!   power-on (TCP/IP up, only boot-time filters in force), BFE start (persistent filters
//!   in force, boot-time ones retired, in one step), BFE stop and restart.
//! - **Flows** ([`FlowTable`], MS "ALE Reauthorization"): a flow is classified once when
//!   created; its packets then pass until a filter is added or deleted at its layer, after
//!   which the next packet is reauthorized and a Block tears the flow down.
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
//! - There is one engine-wide transaction lock and no waiting: `begin_transaction` or a
//!   write from another session while it is held fails with
//!   [`EngineError::TransactionLocked`] (real BFE waits up to `txnWaitTimeoutInMSec`).
//!   Session rundown of a non-holder still proceeds. Reads (`filters`, `classify`) always
//!   see committed state.
//! - A failed call inside a transaction changes nothing and leaves the transaction open.
//! - BFE stop keeps persistent filters in force (they "live until deleted"); they keep
//!   their ids and there is no window without them. A boot-time filter added while BFE
//!   runs is stored for the next boot and does not act before it; boot-time filters need
//!   persistent parents, like persistent ones.
//! - Reauthorization classifies the flow's original context at its own layer (not the
//!   opposite layer for reverse-direction packets) and is triggered only by filter
//!   changes (no weak-host interface change, no pending-connection trigger).
//! - Only address conditions are checked against the layer's family at add time.

mod classify;
mod engine;
mod filter;
mod flow;

#[cfg(test)]
mod tests;

pub use classify::{ClassifyContext, Decision, arbitrate, conditions_match};
pub use engine::{ChangeSet, DeleteReason, Engine, EngineError, PersistentStore, Phase, Provider, Session, Sublayer};
pub use filter::{
    AUTO_WEIGHT_BITS, AUTO_WEIGHT_MAX, Action, AppId, AppIdError, Condition, ConditionField, Direction, Filter,
    FilterId, FilterSpec, IpPrefix, Layer, Lifetime, PrefixError, Protocol, SessionId, WEIGHT_RANGE_MAX, Weight,
};
pub use flow::{Flow, FlowId, FlowTable, PacketVerdict};
