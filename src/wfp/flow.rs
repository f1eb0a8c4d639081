//! The ALE flow table: authorize once at flow creation, reauthorize after policy changes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::classify::{ClassifyContext, Decision};
use super::engine::Engine;
use super::filter::Layer;

/// Flow handle, assigned from 1 upwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An authorized ALE flow. Its packets in both directions share its authorization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Handle.
    pub id: FlowId,
    /// Layer where it was authorized (AUTH_CONNECT or AUTH_RECV_ACCEPT).
    pub layer: Layer,
    /// Process owning the socket.
    pub owner_pid: u32,
    /// The context as first authorized.
    pub context: ClassifyContext,
    /// `layer`'s generation at the last (re)authorization.
    pub authorized_generation: u64,
    /// False once closed or torn down.
    pub open: bool,
}

/// Fate of one packet on an existing flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PacketVerdict {
    /// No policy change since authorization: passes without evaluation.
    Pass,
    /// Policy changed; reauthorization permitted it again (generation updated).
    Reauthorized(Decision),
    /// Policy changed; reauthorization blocked it and the flow was torn down.
    TornDown(Decision),
    /// Unknown or already closed flow: nothing passes.
    Closed,
}

/// The ALE flow table.
///
/// Reauthorization re-classifies the flow's original context (with `reauthorize` set) at
/// the flow's own layer, whatever the packet's direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowTable {
    flows: BTreeMap<FlowId, Flow>,
    last_id: u64,
}

impl FlowTable {
    /// An empty table.
    pub fn new() -> FlowTable {
        FlowTable::default()
    }

    /// Classifies a new flow; creates it only if permitted.
    pub fn authorize_new(&mut self, engine: &Engine, pid: u32, mut ctx: ClassifyContext) -> (Option<FlowId>, Decision) {
        ctx.reauthorize = false;
        let decision = engine.classify(&ctx);
        if !decision.is_permit() {
            return (None, decision);
        }
        self.last_id += 1;
        let id = FlowId(self.last_id);
        let flow = Flow {
            id,
            layer: ctx.layer,
            owner_pid: pid,
            authorized_generation: engine.layer_generation(ctx.layer),
            context: ctx,
            open: true,
        };
        self.flows.insert(id, flow);
        (Some(id), decision)
    }

    /// A packet (either direction) on flow `id`: passes, or is reauthorized if the flow's
    /// layer changed since it was last authorized.
    pub fn on_packet(&mut self, engine: &Engine, id: FlowId) -> PacketVerdict {
        let Some(flow) = self.flows.get_mut(&id).filter(|f| f.open) else {
            return PacketVerdict::Closed;
        };
        let generation = engine.layer_generation(flow.layer);
        if generation == flow.authorized_generation {
            return PacketVerdict::Pass;
        }
        let mut ctx = flow.context.clone();
        ctx.reauthorize = true;
        let decision = engine.classify(&ctx);
        if decision.is_permit() {
            flow.authorized_generation = generation;
            PacketVerdict::Reauthorized(decision)
        } else {
            flow.open = false;
            PacketVerdict::TornDown(decision)
        }
    }

    /// Closes a flow (socket closed); later packets get [`PacketVerdict::Closed`].
    pub fn close(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(&id) {
            f.open = false;
        }
    }

    /// Open flows owned by `pid`, in id order.
    pub fn flows_of(&self, pid: u32) -> impl Iterator<Item = &Flow> {
        self.flows.values().filter(move |f| f.open && f.owner_pid == pid)
    }

    /// A flow, open or not.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.flows.get(&id)
    }

    /// All flows in id order, open or not.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }
}
