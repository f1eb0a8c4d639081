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

/// The host's IP receive model (`netsh interface ipv4 set interface ... weakhostreceive`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HostModel {
    /// Strong host (the Windows default): a packet is tied to the interface it arrived
    /// on; a different arrival interface is not a reauthorization trigger.
    #[default]
    Strong,
    /// Weak host: packets of a flow may arrive on any interface, and one arriving on an
    /// interface other than the flow's triggers reauthorization (MS "ALE Reauthorization").
    Weak,
}

/// The ALE flow table.
///
/// Reauthorization re-classifies the flow's original context (with `reauthorize` set) at
/// the flow's own layer, whatever the packet's direction. It is triggered by a filter
/// added or deleted at that layer since the last authorization, and, in the weak-host
/// model, by a packet arriving on another interface than the flow's.
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

    /// A packet (either direction) on flow `id`, on the flow's own interface: passes, or
    /// is reauthorized if the flow's layer changed since it was last authorized.
    pub fn on_packet(&mut self, engine: &Engine, id: FlowId) -> PacketVerdict {
        self.on_packet_via(engine, id, None, HostModel::Strong)
    }

    /// A packet on flow `id` that arrived on interface `arrival_luid` (`None`: the flow's
    /// own). In the weak-host model an arrival interface other than the flow's triggers
    /// reauthorization of the context with that interface; if it is permitted, the flow
    /// continues on the new interface. In the strong-host model the arrival interface
    /// never triggers reauthorization (whether the stack would even deliver such a packet
    /// is an IP-layer question the model leaves out).
    pub fn on_packet_via(
        &mut self,
        engine: &Engine,
        id: FlowId,
        arrival_luid: Option<u64>,
        host: HostModel,
    ) -> PacketVerdict {
        let Some(flow) = self.flows.get_mut(&id).filter(|f| f.open) else {
            return PacketVerdict::Closed;
        };
        let generation = engine.layer_generation(flow.layer);
        let moved = match (host, arrival_luid) {
            (HostModel::Weak, Some(luid)) if flow.context.interface_luid != Some(luid) => Some(luid),
            _ => None,
        };
        if generation == flow.authorized_generation && moved.is_none() {
            return PacketVerdict::Pass;
        }
        let mut ctx = flow.context.clone();
        ctx.reauthorize = true;
        if let Some(luid) = moved {
            ctx.interface_luid = Some(luid);
        }
        let decision = engine.classify(&ctx);
        if decision.is_permit() {
            flow.authorized_generation = generation;
            flow.context.interface_luid = ctx.interface_luid;
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
