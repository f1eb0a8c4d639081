//! The model backend: runs cases on [`crate::wfp::Engine`] and [`crate::wfp::FlowTable`].
//!
//! How case terms map onto the model:
//! - a process gets pid `100 + its index`; its identity is its image's [`AppId`] and the
//!   SIDs `user` and `service_sid` (a `parent` adds nothing: identity is per image);
//! - an interface gets LUID `1000 + 16 × index`; `recreate_interface` gives it the next
//!   free LUID and closes the flows on the old one; filter `interface` conditions are
//!   bound to the LUID current when the filter is added;
//! - a filter declared at several layers becomes one engine filter per layer, added in
//!   order (each its own implicit transaction outside an explicit one);
//! - the lifetime comes from the session (dynamic) or from the flags
//!   ([`Lifetime::from_flags`]);
//! - `reboot` keeps the persistent store, boots the engine and forgets sessions and flows;
//!   `power_on` does the same but stops before BFE starts;
//! - `sleep_resume` changes nothing: WFP state is not tied to power states;
//! - a packet's direction does not matter: reauthorization runs at the flow's own layer;
//! - the case's agent is the real one: `agent::wfp_backend::WfpFirewall`, opened as the
//!   agent's process on the first `agent` step, engages and lifts the lockdown through
//!   the same BFE calls as on the simulated device. Its handle is gone when its process
//!   is killed, BFE stops or the device reboots (its sessions ended); the next `agent`
//!   step starts it again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::case::{
    AgentSettings, AgentState, Case, ErrorKind, FilterAction, FilterDef, LayerName, Op, PacketOutcome, Traffic,
    Verdict, WeightSpec,
};
use super::runner::{Backend, CaseError, Observation};
use crate::agent::firewall::Firewall;
use crate::agent::wfp_backend::{Bfe, WfpFirewall};
use crate::wfp::{
    Action, AppId, ClassifyContext, Condition, Decision, Engine, EngineError, FilterId, FilterSpec, FlowId, FlowTable,
    Layer, Lifetime, Packet, PacketVerdict, PersistentStore, SessionId, SessionOptions, Weight,
};

/// The pure WFP model as a conformance backend.
#[derive(Debug, Default)]
pub struct WfpModel {
    device: Device,
}

#[derive(Default)]
struct Device {
    /// Shared with the agent's BFE handle.
    engine: Arc<Mutex<Engine>>,
    flows: FlowTable,
    store: PersistentStore,
    sessions: BTreeMap<String, SessionId>,
    luids: BTreeMap<String, u64>,
    last_luid: u64,
    named_flows: BTreeMap<String, FlowId>,
    agent: Option<RunningAgent>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("sessions", &self.sessions).field("flows", &self.named_flows).finish()
    }
}

/// The agent's firewall and the state it last brought its lockdown to.
struct RunningAgent {
    pid: u32,
    firewall: WfpFirewall<ModelBfe>,
    state: Option<(AgentState, AgentSettings)>,
}

/// The BFE management API as the agent's process calls it, on the model's engine.
struct ModelBfe {
    engine: Arc<Mutex<Engine>>,
    pid: u32,
}

fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bfe for ModelBfe {
    fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError> {
        lock(&self.engine).open_session(self.pid, name, dynamic)
    }
    fn begin(&mut self, session: SessionId) -> Result<(), EngineError> {
        lock(&self.engine).begin_transaction(session)
    }
    fn commit(&mut self, session: SessionId) -> Result<(), EngineError> {
        lock(&self.engine).commit_transaction(session).map(|_| ())
    }
    fn abort(&mut self, session: SessionId) -> Result<(), EngineError> {
        lock(&self.engine).abort_transaction(session)
    }
    fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError> {
        lock(&self.engine).add_provider(session, key, persistent)
    }
    fn add_sublayer(
        &mut self,
        session: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError> {
        lock(&self.engine).add_sublayer(session, key, provider, weight, persistent)
    }
    fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError> {
        lock(&self.engine).add_filter(session, spec)
    }
    fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError> {
        lock(&self.engine).delete_filter(session, id)
    }
    fn filters_of_provider(&self, provider: &str) -> Vec<FilterId> {
        lock(&self.engine).filters().filter(|f| f.spec.provider.as_deref() == Some(provider)).map(|f| f.id).collect()
    }
    fn provider_exists(&self, key: &str) -> bool {
        lock(&self.engine).providers().any(|p| p.key == key)
    }
    fn sublayer_exists(&self, key: &str) -> bool {
        lock(&self.engine).sublayers().any(|s| s.key == key)
    }
}

impl WfpModel {
    /// A backend; each case starts on a fresh device.
    pub fn new() -> WfpModel {
        WfpModel::default()
    }
}

fn layer_of(l: LayerName) -> Layer {
    match l {
        LayerName::ConnectV4 => Layer::AleAuthConnectV4,
        LayerName::ConnectV6 => Layer::AleAuthConnectV6,
        LayerName::RecvAcceptV4 => Layer::AleAuthRecvAcceptV4,
        LayerName::RecvAcceptV6 => Layer::AleAuthRecvAcceptV6,
        LayerName::MacFrameIn => Layer::InboundMacFrameNative,
        LayerName::MacFrameOut => Layer::OutboundMacFrameNative,
    }
}

fn failed(e: &EngineError) -> Observation {
    let (kind, waited_ms) = match e {
        EngineError::TransactionLocked { waited_ms, .. } => (ErrorKind::TransactionLocked, Some(*waited_ms)),
        EngineError::BfeNotRunning => (ErrorKind::BfeNotRunning, None),
        EngineError::UnknownSession(_) => (ErrorKind::UnknownSession, None),
        EngineError::UnknownFilter(_) => (ErrorKind::UnknownFilter, None),
        EngineError::UnknownSublayer(_) | EngineError::UnknownProvider(_) => (ErrorKind::UnknownSublayer, None),
        EngineError::DuplicateSublayer(_) | EngineError::DuplicateProvider(_) => (ErrorKind::AlreadyExists, None),
        EngineError::NoTransaction(_) => (ErrorKind::NoTransaction, None),
        EngineError::InvalidCondition { .. } => (ErrorKind::InvalidCondition, None),
        _ => (ErrorKind::Rejected, None),
    };
    Observation::Failed { kind, message: e.to_string(), waited_ms }
}

fn done<T>(r: Result<T, EngineError>) -> Observation {
    match r {
        Ok(_) => Observation::Done,
        Err(e) => failed(&e),
    }
}

fn verdict_of(d: &Decision) -> Observation {
    let verdict = if d.is_permit() { Verdict::Permit } else { Verdict::Block };
    Observation::Verdict { verdict, decided_by: d.filter_name.clone() }
}

fn unknown_session(name: &str) -> Observation {
    Observation::Failed {
        kind: ErrorKind::UnknownSession,
        message: format!("session `{name}` is not open"),
        waited_ms: None,
    }
}

impl Device {
    fn start(case: &Case) -> Device {
        let mut d = Device::default();
        for name in &case.interfaces {
            d.last_luid = 1000 + 16 * d.luids.len() as u64;
            d.luids.insert(name.clone(), d.last_luid);
        }
        d
    }

    fn pid(case: &Case, process: &str) -> u32 {
        100 + case.processes.iter().position(|p| p.name == process).unwrap_or(0) as u32
    }

    fn session(&self, name: &str) -> Option<SessionId> {
        self.sessions.get(name).copied()
    }

    fn forget_device_state(&mut self) {
        self.flows = FlowTable::new();
        self.sessions.clear();
        self.named_flows.clear();
        self.agent = None;
    }

    /// Brings the case's agent to `state` with `settings`, as the agent does: the
    /// lockdown in one transaction, then (connected) the session permit from its
    /// dynamic session.
    fn agent(&mut self, case: &Case, state: AgentState, settings: AgentSettings) -> Result<Observation, CaseError> {
        let def = case.agent.as_ref().ok_or_else(|| CaseError::Backend("the case has no [agent]".into()))?;
        let policy = def.lockdown(case, &settings).map_err(CaseError::Backend)?;
        let rejected = |e: crate::agent::firewall::FirewallError| Observation::Failed {
            kind: ErrorKind::Rejected,
            message: e.to_string(),
            waited_ms: None,
        };
        if self.agent.is_none() {
            let pid = Device::pid(case, &def.process);
            let bfe = ModelBfe { engine: self.engine.clone(), pid };
            match WfpFirewall::open(bfe, def.filter_lifetime, def.sublayer_weight, def.boot_time_filters) {
                Ok(firewall) => self.agent = Some(RunningAgent { pid, firewall, state: None }),
                Err(e) => return Ok(rejected(e)),
            }
        }
        let agent = self.agent.as_mut().expect("started above");
        let locked_as_asked = agent.state == Some((AgentState::Locked, settings));
        let result = match state {
            AgentState::Locked => agent.firewall.engage_lockdown(&policy),
            AgentState::Connected if agent.state == Some((AgentState::Connected, settings)) => Ok(()),
            AgentState::Connected if locked_as_asked => agent.firewall.lift_lockdown(),
            AgentState::Connected => {
                agent.firewall.engage_lockdown(&policy).and_then(|()| agent.firewall.lift_lockdown())
            }
        };
        Ok(match result {
            Ok(()) => {
                agent.state = Some((state, settings));
                Observation::Done
            }
            Err(e) => {
                agent.state = None;
                rejected(e)
            }
        })
    }

    fn specs(&self, def: &FilterDef) -> Result<Vec<FilterSpec>, Observation> {
        let rejected = |kind, message: String| Observation::Failed { kind, message, waited_ms: None };
        let Some(lifetime) = Lifetime::from_flags(def.persistent, def.boot_time) else {
            let msg = format!("filter `{}`: persistent and boot-time cannot be set together", def.name);
            return Err(rejected(ErrorKind::InvalidFlags, msg));
        };
        let c = &def.conditions;
        let mut conditions = Vec::new();
        for path in &c.app {
            let app = AppId::from_image_path(path).map_err(|e| rejected(ErrorKind::InvalidCondition, e.to_string()))?;
            conditions.push(Condition::AppId(app));
        }
        conditions.extend(c.user.iter().map(|s| Condition::UserSid(s.clone())));
        conditions.extend(c.remote_addr.iter().map(|p| Condition::RemoteAddr(*p)));
        conditions.extend(c.local_addr.iter().map(|p| Condition::LocalAddr(*p)));
        conditions.extend(c.remote_port.iter().chain(&c.icmp_code).map(|p| Condition::RemotePort(*p)));
        conditions.extend(c.local_port.iter().chain(&c.icmp_type).map(|p| Condition::LocalPort(*p)));
        conditions.extend(c.protocol.iter().map(|p| Condition::Protocol(*p)));
        if c.loopback {
            conditions.push(Condition::Loopback);
        }
        for name in &c.interface {
            conditions.push(Condition::InterfaceLuid(self.luids.get(name).copied().unwrap_or(0)));
        }
        if c.vm2vm {
            conditions.push(Condition::Vm2Vm);
        }
        let weight = match def.weight {
            WeightSpec::Range(r) => Weight::Range(r),
            WeightSpec::Exact(w) => Weight::Exact(w),
            WeightSpec::Auto => Weight::Auto,
        };
        let action = match def.action {
            FilterAction::Permit => Action::Permit,
            FilterAction::Block => Action::Block,
            FilterAction::Veto => Action::CalloutVeto,
        };
        let base = FilterSpec {
            weight,
            clear_action_right: def.hard,
            lifetime,
            conditions,
            ..FilterSpec::new(&def.name, Layer::AleAuthConnectV4, &def.sublayer, action)
        };
        Ok(def.layers.iter().map(|l| base.with_layer(layer_of(*l))).collect())
    }

    fn context(&self, case: &Case, t: &Traffic) -> Packet {
        let layer = Layer::for_direction(t.direction, t.remote.is_ipv6());
        let mut ctx = ClassifyContext::new(layer, t.protocol, t.local, t.remote);
        if let Some(p) = t.process.as_deref().and_then(|p| case.process(p)) {
            ctx.app_id = AppId::from_image_path(&p.image).ok();
            ctx.user_sids = std::iter::once(p.user.clone()).chain(p.service_sid.clone()).collect();
        }
        ctx.loopback = t.loopback;
        ctx.interface_luid = t.interface.as_ref().and_then(|i| self.luids.get(i).copied());
        Packet { context: ctx, hop_limit: t.hop_limit }
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        let missing = |what: &str, name: &str| CaseError::Backend(format!("{what} `{name}` is not declared"));
        Ok(match op {
            Op::OpenSession { session, process, dynamic, txn_wait_ms } => {
                let mut options = SessionOptions { dynamic: *dynamic, ..SessionOptions::default() };
                if let Some(w) = txn_wait_ms {
                    options.txn_wait_timeout_ms = *w;
                }
                match lock(&self.engine).open_session_with(Device::pid(case, process), session, options) {
                    Ok(id) => {
                        self.sessions.insert(session.clone(), id);
                        Observation::Done
                    }
                    Err(e) => failed(&e),
                }
            }
            Op::CloseSession { session } => match self.session(session) {
                None => unknown_session(session),
                Some(id) => {
                    self.sessions.remove(session);
                    done(lock(&self.engine).close_session(id))
                }
            },
            Op::AddSublayer { session, sublayer } => {
                let def = case.sublayer(sublayer).ok_or_else(|| missing("sublayer", sublayer))?;
                match self.session(session) {
                    None => unknown_session(session),
                    Some(id) => done(lock(&self.engine).add_sublayer(id, &def.key, None, def.weight, def.persistent)),
                }
            }
            Op::AddFilter { session, filter } => {
                let def = case.filter(filter).ok_or_else(|| missing("filter", filter))?;
                let Some(id) = self.session(session) else { return Ok(unknown_session(session)) };
                let specs = match self.specs(def) {
                    Ok(s) => s,
                    Err(obs) => return Ok(obs),
                };
                for spec in specs {
                    if let Err(e) = lock(&self.engine).add_filter(id, spec) {
                        return Ok(failed(&e));
                    }
                }
                Observation::Done
            }
            Op::DeleteFilter { session, filter } => {
                let Some(id) = self.session(session) else { return Ok(unknown_session(session)) };
                // By name, as this session sees the tables (inside its transaction: staged).
                let ids: Vec<FilterId> = lock(&self.engine)
                    .filters_visible_to(id)
                    .filter(|f| &f.spec.name == filter)
                    .map(|f| f.id)
                    .collect();
                if ids.is_empty() {
                    let message = format!("no instance of filter `{filter}` is installed");
                    return Ok(Observation::Failed { kind: ErrorKind::UnknownFilter, message, waited_ms: None });
                }
                for fid in ids {
                    if let Err(e) = lock(&self.engine).delete_filter(id, fid) {
                        return Ok(failed(&e));
                    }
                }
                Observation::Done
            }
            Op::Begin { session } => match self.session(session) {
                None => unknown_session(session),
                Some(id) => done(lock(&self.engine).begin_transaction(id)),
            },
            Op::Commit { session } => match self.session(session) {
                None => unknown_session(session),
                Some(id) => done(lock(&self.engine).commit_transaction(id)),
            },
            Op::Abort { session } => match self.session(session) {
                None => unknown_session(session),
                Some(id) => done(lock(&self.engine).abort_transaction(id)),
            },
            Op::Kill { process } => {
                let pid = Device::pid(case, process);
                lock(&self.engine).process_exited(pid);
                if self.agent.as_ref().is_some_and(|a| a.pid == pid) {
                    self.agent = None;
                }
                let owned: Vec<FlowId> = self.flows.flows_of(pid).map(|f| f.id).collect();
                owned.into_iter().for_each(|f| self.flows.close(f));
                Observation::Done
            }
            Op::BfeStop => {
                lock(&self.engine).stop_bfe();
                self.sessions.clear();
                self.agent = None;
                Observation::Done
            }
            Op::BfeStart => {
                lock(&self.engine).start_bfe();
                Observation::Done
            }
            Op::BfeRestart => {
                lock(&self.engine).bfe_restart();
                self.sessions.clear();
                self.agent = None;
                Observation::Done
            }
            Op::Reboot | Op::PowerOn => {
                let mut engine = lock(&self.engine);
                self.store = engine.persistent_store();
                *engine = Engine::power_on(&self.store);
                if matches!(op, Op::Reboot) {
                    engine.start_bfe();
                }
                drop(engine);
                self.forget_device_state();
                Observation::Done
            }
            Op::SleepResume => Observation::Done,
            Op::RecreateInterface { interface } => {
                let old = self.luids.get(interface).copied().ok_or_else(|| missing("interface", interface))?;
                self.last_luid += 1;
                self.luids.insert(interface.clone(), self.last_luid);
                let on_old: Vec<FlowId> = self
                    .flows
                    .iter()
                    .filter(|f| f.open && f.context.interface_luid == Some(old))
                    .map(|f| f.id)
                    .collect();
                on_old.into_iter().for_each(|f| self.flows.close(f));
                Observation::Done
            }
            Op::NewFlow { flow, traffic } => {
                let packet = self.context(case, traffic);
                if packet.stack_check().is_err() {
                    return Ok(Observation::Verdict { verdict: Verdict::Dropped, decided_by: None });
                }
                let engine = lock(&self.engine);
                match flow {
                    None => verdict_of(&engine.classify(&packet.context)),
                    Some(name) => {
                        let pid = traffic.process.as_deref().map(|p| Device::pid(case, p)).unwrap_or(0);
                        let (id, decision) = self.flows.authorize_new(&engine, pid, packet.context);
                        match id {
                            Some(id) => {
                                self.named_flows.insert(name.clone(), id);
                            }
                            None => {
                                self.named_flows.remove(name);
                            }
                        }
                        verdict_of(&decision)
                    }
                }
            }
            Op::Packet { flow, via, host_model, .. } => {
                let Some(id) = self.named_flows.get(flow).copied() else {
                    return Ok(Observation::Packet { outcome: PacketOutcome::Closed, decided_by: None });
                };
                let arrival = via.as_ref().and_then(|v| self.luids.get(v).copied());
                let engine = lock(&self.engine);
                let (outcome, decided_by) = match self.flows.on_packet_via(&engine, id, arrival, *host_model) {
                    PacketVerdict::Pass => (PacketOutcome::Pass, None),
                    PacketVerdict::Reauthorized(d) => (PacketOutcome::Reauthorized, d.filter_name),
                    PacketVerdict::TornDown(d) => (PacketOutcome::TornDown, d.filter_name),
                    PacketVerdict::Closed => (PacketOutcome::Closed, None),
                };
                Observation::Packet { outcome, decided_by }
            }
            Op::CloseFlow { flow } => {
                if let Some(id) = self.named_flows.get(flow) {
                    self.flows.close(*id);
                }
                Observation::Done
            }
            Op::VmFrame { direction, interface, vm2vm } => {
                let luid = interface.as_ref().and_then(|i| self.luids.get(i).copied());
                verdict_of(&lock(&self.engine).classify(&ClassifyContext::mac_frame(*direction, luid, *vm2vm)))
            }
            Op::Watch { .. } | Op::Unwatch { .. } => Observation::Done,
            Op::Agent { state, settings } => return self.agent(case, *state, *settings),
        })
    }
}

impl Backend for WfpModel {
    fn name(&self) -> &str {
        "wfp-model"
    }

    fn start(&mut self, case: &Case) -> Result<(), CaseError> {
        self.device = Device::start(case);
        Ok(())
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        self.device.perform(case, op)
    }
}
