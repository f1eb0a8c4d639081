//! The simulated Windows device: an operating system with processes and the
//! Windows Filtering Platform, running the device agent and applications.
//!
//! Architecture invariant: firewall state lives here, in the simulated OS,
//! not in the agent. The agent programs it through the BFE API of its own
//! process; when a process ends, its BFE sessions end with it, and what
//! they owned dynamically disappears. Persistent objects are written to the
//! device's "disk", which outlives reboots.

mod apps;
mod bfe;
mod netstack;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use indexmap::IndexMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use url::Url;

pub use self::apps::{AppAction, AppResult};
use self::bfe::BfeHandle;
use self::netstack::ProcessNet;
use crate::agent::firewall::LockdownPolicy;
use crate::agent::wfp_backend::WfpFirewall;
use crate::agent::{Agent, AgentCommand, AgentPlatform, AgentSettings, AgentState};
use crate::config::{AGENT_PROCESS, AUTH_PROCESS, DeviceProcess, FilterLifetime};
use crate::http::{Browser, Credentials, FetchError, HttpClient, Landing, Navigation};
use crate::net::{BoxFuture, Directory, Net, SharedClock};
use crate::trace::{EventBody, FilterSummary, Recorder, Verdict};
use crate::wfp::{
    ChangeSet, ClassifyContext, Decision, Engine, FlowId, FlowTable, Layer, PacketVerdict, PersistentStore, Protocol,
};

/// What the device is made of.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// Device id.
    pub device_id: String,
    /// Its address.
    pub ip: IpAddr,
    /// The lab's DNS.
    pub directory: Directory,
    /// Every program that can run, the agent's included.
    pub processes: IndexMap<String, DeviceProcess>,
    /// The agent's settings.
    pub agent: AgentSettings,
    /// Lifetime of the agent's firewall objects.
    pub agent_filter_lifetime: FilterLifetime,
    /// Weight of the agent's sublayer.
    pub agent_sublayer_weight: u16,
    /// Deliberately broken firewall: never re-authorize flows.
    pub danger_skip_reauthorization: bool,
}

impl DeviceSetup {
    /// The device of a lab.
    pub fn new(lab: &crate::config::LabConfig, resolved: &crate::config::Resolved) -> DeviceSetup {
        DeviceSetup {
            device_id: lab.device.id.clone(),
            // Validation guarantees the device's host exists.
            ip: resolved.hosts.get(&lab.device.host).copied().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            directory: resolved.directory.clone(),
            processes: resolved.processes.clone(),
            agent: AgentSettings {
                device_id: lab.device.id.clone(),
                gateway_url: lab.agent.gateway_url.clone(),
                session_poll: lab.agent.session_poll,
                relock_margin: lab.agent.relock_margin,
                policy: lockdown_policy(resolved),
                danger_forget_relock: lab.agent.danger_forget_relock,
            },
            agent_filter_lifetime: lab.agent.filter_lifetime,
            agent_sublayer_weight: lab.agent.sublayer_weight,
            danger_skip_reauthorization: lab.firewall.danger_skip_reauthorization,
        }
    }
}

/// The device's disk: what survives a reboot.
pub type Disk = Arc<Mutex<PersistentStore>>;

/// A command from the lab's driver (the user at the keyboard, or an operator).
#[derive(Debug)]
pub enum DeviceCommand {
    /// Power the device on and boot it.
    PowerOn {
        /// The agent's state once booted.
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    /// The user signs in through the agent.
    SignIn {
        /// What the user types.
        credentials: Credentials,
        /// The agent's state afterwards.
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    /// Ask the agent for its state.
    AgentStatus {
        /// The state, or why there is none.
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    /// Kill every process of a name; replies with how many died.
    Kill {
        /// Lab name of the process.
        process: String,
        /// Number of processes killed.
        reply: oneshot::Sender<usize>,
    },
    /// Make an application do something.
    App {
        /// Lab name of the application.
        process: String,
        /// What to do.
        action: AppAction,
        /// What happened.
        reply: oneshot::Sender<AppResult>,
    },
}

impl DeviceCommand {
    /// Answers the command with `why` it cannot be carried out.
    pub fn refuse(self, why: &str) {
        match self {
            DeviceCommand::PowerOn { reply }
            | DeviceCommand::SignIn { reply, .. }
            | DeviceCommand::AgentStatus { reply } => {
                let _ = reply.send(Err(why.to_string()));
            }
            DeviceCommand::App { reply, .. } => {
                let _ = reply.send(AppResult::NotRunning(why.to_string()));
            }
            DeviceCommand::Kill { reply, .. } => {
                let _ = reply.send(0);
            }
        }
    }
}

struct ProcessEntry {
    name: String,
    tasks: Vec<AbortHandle>,
}

struct FlowOwner {
    pid: u32,
    process: String,
    user: String,
}

struct OsState {
    engine: Engine,
    flows: FlowTable,
    owners: BTreeMap<FlowId, FlowOwner>,
    processes: BTreeMap<u32, ProcessEntry>,
    next_pid: u32,
    /// Summaries of installed filters, for tracing their deletion.
    installed: BTreeMap<u64, FilterSummary>,
    agent_ui: Option<mpsc::UnboundedSender<AgentCommand>>,
    apps: BTreeMap<String, mpsc::UnboundedSender<(AppAction, oneshot::Sender<AppResult>)>>,
}

struct OsInner {
    setup: DeviceSetup,
    net: Net,
    clock: SharedClock,
    recorder: Recorder,
    disk: Disk,
    state: Mutex<OsState>,
}

/// A handle on the running operating system.
#[derive(Clone)]
pub struct Windows {
    inner: Arc<OsInner>,
}

/// What a process gets from the OS.
pub struct ProcessCtx {
    /// Process id.
    pub pid: u32,
    /// Lab name.
    pub name: String,
    os: Windows,
}

impl ProcessCtx {
    /// The process's network (filtered by the firewall with its identity).
    pub fn net(&self) -> Net {
        Arc::new(ProcessNet { os: self.os.clone(), pid: self.pid })
    }

    /// An HTTP client on the process's network.
    pub fn http(&self) -> HttpClient {
        HttpClient::new(self.net(), self.os.inner.setup.directory.clone())
    }

    /// The operating system.
    pub fn os(&self) -> &Windows {
        &self.os
    }
}

impl Windows {
    /// Boots the device: TCP/IP and the filter engine come up with the
    /// persistent filters from `disk`, then the agent service starts, then
    /// the applications.
    pub fn boot(setup: DeviceSetup, net: Net, clock: SharedClock, recorder: Recorder, disk: Disk) -> Windows {
        let engine = Engine::boot(&disk.lock().unwrap_or_else(PoisonError::into_inner));
        let persistent_filters = engine.filters().count();
        let installed = engine.filters().map(|f| (f.id.0, summarize(f))).collect();
        recorder.record(EventBody::DeviceBooted { device: setup.device_id.clone(), persistent_filters });
        let os = Windows {
            inner: Arc::new(OsInner {
                setup,
                net,
                clock,
                recorder,
                disk,
                state: Mutex::new(OsState {
                    engine,
                    flows: FlowTable::new(),
                    owners: BTreeMap::new(),
                    processes: BTreeMap::new(),
                    installed,
                    next_pid: 1000,
                    agent_ui: None,
                    apps: BTreeMap::new(),
                }),
            }),
        };
        os.start_agent();
        let apps: Vec<String> = os
            .inner
            .setup
            .processes
            .keys()
            .filter(|n| n.as_str() != AGENT_PROCESS && n.as_str() != AUTH_PROCESS)
            .map(|n| n.to_string())
            .collect();
        for name in apps {
            os.start_app(&name);
        }
        os
    }

    /// Handles one command from the driver; long work runs in its own task.
    pub fn handle(&self, command: DeviceCommand) {
        match command {
            DeviceCommand::PowerOn { reply } => {
                let _ = reply.send(Err("already running".into()));
            }
            DeviceCommand::SignIn { credentials, reply } => {
                self.ask_agent(reply, |tx| AgentCommand::SignIn { credentials, reply: tx }, |r| r)
            }
            DeviceCommand::AgentStatus { reply } => self.ask_agent(reply, |tx| AgentCommand::Status { reply: tx }, Ok),
            DeviceCommand::Kill { process, reply } => {
                let _ = reply.send(self.kill(&process));
            }
            DeviceCommand::App { process, action, reply } => match self.state().apps.get(&process).cloned() {
                Some(mailbox) => {
                    if let Err(e) = mailbox.send((action, reply)) {
                        let (_, reply) = e.0;
                        let _ = reply.send(AppResult::NotRunning(process));
                    }
                }
                None => {
                    let _ = reply.send(AppResult::NotRunning(process));
                }
            },
        }
    }

    /// Sends a command to the agent's user interface and relays its answer,
    /// as the agent's state, to `reply`.
    fn ask_agent<T: Send + 'static>(
        &self,
        reply: oneshot::Sender<Result<AgentState, String>>,
        command: impl FnOnce(oneshot::Sender<T>) -> AgentCommand,
        into_state: fn(T) -> Result<AgentState, String>,
    ) {
        let (tx, rx) = oneshot::channel();
        let sent = self.state().agent_ui.clone().is_some_and(|ui| ui.send(command(tx)).is_ok());
        if !sent {
            let _ = reply.send(Err("agent not running".into()));
            return;
        }
        tokio::spawn(async move {
            let result = rx.await.map_err(|_| "agent stopped".to_string()).and_then(into_state);
            let _ = reply.send(result);
        });
    }

    fn state(&self) -> MutexGuard<'_, OsState> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn raw_net(&self) -> &Net {
        &self.inner.net
    }

    fn local_ip_for(&self, remote: IpAddr) -> IpAddr {
        if remote.is_loopback() { remote } else { self.inner.setup.ip }
    }

    /// Starts the program `name` with `body` as its main; the process exits
    /// when `body` returns.
    pub fn spawn_process<F, Fut>(&self, name: &str, body: F) -> Result<u32, String>
    where
        F: FnOnce(ProcessCtx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let program =
            self.inner.setup.processes.get(name).ok_or_else(|| format!("no program `{name}` is installed"))?.clone();
        let pid = {
            let mut st = self.state();
            st.next_pid += 4;
            let pid = st.next_pid;
            st.processes.insert(pid, ProcessEntry { name: name.to_string(), tasks: Vec::new() });
            pid
        };
        self.inner.recorder.record(EventBody::ProcessStarted {
            pid,
            name: program.name.clone(),
            image: program.image.clone(),
            user: program.user.clone(),
        });
        let ctx = ProcessCtx { pid, name: name.to_string(), os: self.clone() };
        let os = self.clone();
        let main = body(ctx);
        let handle = tokio::spawn(async move {
            main.await;
            os.process_exited(pid, "exited");
        });
        if let Some(p) = self.state().processes.get_mut(&pid) {
            p.tasks.push(handle.abort_handle());
        }
        Ok(pid)
    }

    /// Kills every process named `name` (like `TerminateProcess`).
    pub fn kill(&self, name: &str) -> usize {
        let victims: Vec<(u32, Vec<AbortHandle>)> = {
            let mut st = self.state();
            let pids: Vec<u32> = st.processes.iter().filter(|(_, p)| p.name == name).map(|(pid, _)| *pid).collect();
            pids.into_iter()
                .filter_map(|pid| st.processes.get_mut(&pid).map(|p| (pid, std::mem::take(&mut p.tasks))))
                .collect()
        };
        let n = victims.len();
        for (pid, tasks) in victims {
            for t in tasks {
                t.abort();
            }
            self.process_exited(pid, "killed");
        }
        n
    }

    /// Ends a process: its BFE sessions run down, its flows close.
    fn process_exited(&self, pid: u32, reason: &str) {
        let (entry, changes, closed) = {
            let mut st = self.state();
            let Some(entry) = st.processes.remove(&pid) else { return };
            let changes = st.engine.process_exited(pid);
            let open: Vec<FlowId> = st.flows.flows_of(pid).map(|f| f.id).collect();
            for f in &open {
                st.flows.close(*f);
            }
            if entry.name == AGENT_PROCESS {
                st.agent_ui = None;
            }
            st.apps.remove(&entry.name);
            (entry, changes, open)
        };
        self.record_changes(0, &changes, Some("session ended with its process"));
        for f in closed {
            self.inner.recorder.record(EventBody::FlowClosed { flow: f.0, reason: format!("process {reason}") });
        }
        self.inner.recorder.record(EventBody::ProcessExited { pid, name: entry.name, reason: reason.to_string() });
    }

    fn start_agent(&self) {
        let (ui_tx, ui_rx) = mpsc::unbounded_channel();
        self.state().agent_ui = Some(ui_tx);
        let setup = self.inner.setup.clone();
        let clock = self.inner.clock.clone();
        let recorder = self.inner.recorder.clone();
        let started = self.spawn_process(AGENT_PROCESS, move |ctx| {
            let bfe = BfeHandle::new(ctx.os().clone(), ctx.pid);
            let platform: Arc<dyn AgentPlatform> = Arc::new(SignInWindow { os: ctx.os().clone() });
            let http = ctx.http();
            async move {
                let firewall = match WfpFirewall::open(bfe, setup.agent_filter_lifetime, setup.agent_sublayer_weight) {
                    Ok(fw) => fw,
                    Err(e) => {
                        recorder.record(EventBody::AgentState {
                            from: "stopped".into(),
                            to: "stopped".into(),
                            reason: format!("cannot open the firewall: {e}"),
                        });
                        return;
                    }
                };
                Agent::new(setup.agent, Box::new(firewall), platform, http, clock, recorder).run(ui_rx).await;
            }
        });
        if started.is_err() {
            self.state().agent_ui = None;
        }
    }

    fn start_app(&self, name: &str) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().apps.insert(name.to_string(), tx);
        let clock = self.inner.clock.clone();
        let _ = self.spawn_process(name, move |ctx| {
            let browser = Browser::new(ctx.http(), clock);
            apps::run(ctx.net(), browser, rx)
        });
    }

    /// The process identity used for classification: app id, SIDs, account.
    fn identity(&self, pid: u32) -> Option<(String, crate::wfp::AppId, Vec<String>, String)> {
        let name = self.state().processes.get(&pid)?.name.clone();
        let program = self.inner.setup.processes.get(&name)?;
        let mut sids = vec![user_sid(&program.user)];
        if name == AGENT_PROCESS {
            sids.push(service_sid(AGENT_PROCESS));
        }
        Some((name, program.app_id.clone(), sids, program.user.clone()))
    }

    /// Classifies a new flow of `pid`; returns its id if permitted.
    fn authorize(
        &self,
        pid: u32,
        direction: crate::wfp::Direction,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<FlowId> {
        let (process, app_id, sids, user) =
            self.identity(pid).ok_or_else(|| io::Error::other(format!("process {pid} is not running")))?;
        let layer = Layer::for_direction(direction, remote.is_ipv6());
        let ctx = ClassifyContext {
            app_id: Some(app_id.clone()),
            user_sids: sids,
            loopback: remote.ip().is_loopback(),
            ..ClassifyContext::new(layer, Protocol::Tcp, local, remote)
        };
        let (flow, decision) = {
            let mut st = self.state();
            let OsState { engine, flows, .. } = &mut *st;
            let (flow, decision) = flows.authorize_new(engine, pid, ctx);
            if let Some(f) = flow {
                st.owners.insert(f, FlowOwner { pid, process: process.clone(), user: user.clone() });
            }
            (flow, decision)
        };
        self.record_decision(flow, layer, pid, &process, &app_id, &user, local, remote, &decision, false);
        match flow {
            Some(f) => Ok(f),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("blocked by WFP filter `{}`", decision.filter_name.as_deref().unwrap_or("?")),
            )),
        }
    }

    /// One packet on `flow`: passes, or is re-authorized after a policy
    /// change; `Err` means the flow is (now) torn down.
    fn packet(&self, flow: FlowId) -> Result<(), ()> {
        let (verdict, owner, ctx) = {
            let mut st = self.state();
            let verdict = if self.inner.setup.danger_skip_reauthorization {
                match st.flows.get(flow) {
                    Some(f) if f.open => PacketVerdict::Pass,
                    _ => PacketVerdict::Closed,
                }
            } else {
                let OsState { engine, flows, .. } = &mut *st;
                flows.on_packet(engine, flow)
            };
            let owner = st.owners.get(&flow).map(|o| (o.pid, o.process.clone(), o.user.clone()));
            let ctx = st.flows.get(flow).map(|f| f.context.clone());
            (verdict, owner, ctx)
        };
        let record = |decision: &Decision| {
            if let (Some((pid, process, user)), Some(ctx)) = (&owner, &ctx)
                && let Some(app_id) = &ctx.app_id
            {
                self.record_decision(
                    Some(flow),
                    ctx.layer,
                    *pid,
                    process,
                    app_id,
                    user,
                    ctx.local,
                    ctx.remote,
                    decision,
                    true,
                );
            }
        };
        match verdict {
            PacketVerdict::Pass => Ok(()),
            PacketVerdict::Reauthorized(d) => {
                record(&d);
                Ok(())
            }
            PacketVerdict::TornDown(d) => {
                record(&d);
                self.inner
                    .recorder
                    .record(EventBody::FlowClosed { flow: flow.0, reason: "torn down by re-authorization".into() });
                Err(())
            }
            PacketVerdict::Closed => Err(()),
        }
    }

    fn data(&self, flow: FlowId, direction: crate::trace::Direction, bytes: usize) {
        self.inner.recorder.record(EventBody::FlowData { flow: flow.0, direction, bytes });
    }

    fn close_flow(&self, flow: FlowId, reason: &str) {
        let was_open = {
            let mut st = self.state();
            let open = st.flows.get(flow).is_some_and(|f| f.open);
            st.flows.close(flow);
            open
        };
        if was_open {
            self.inner.recorder.record(EventBody::FlowClosed { flow: flow.0, reason: reason.to_string() });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_decision(
        &self,
        flow: Option<FlowId>,
        layer: Layer,
        pid: u32,
        process: &str,
        app_id: &crate::wfp::AppId,
        user: &str,
        local: SocketAddr,
        remote: SocketAddr,
        decision: &Decision,
        reauth: bool,
    ) {
        self.inner.recorder.record(EventBody::FlowDecision {
            flow: flow.map(|f| f.0),
            layer: layer.name().to_string(),
            pid,
            process: process.to_string(),
            app_id: app_id.to_string(),
            user: user.to_string(),
            protocol: "tcp".into(),
            local,
            remote,
            verdict: if decision.is_permit() { Verdict::Permit } else { Verdict::Block },
            filter: decision.filter_name.clone(),
            reauth,
        });
    }

    /// Records a set of filter changes and saves persistent state to disk.
    fn record_changes(&self, session: u64, changes: &ChangeSet, reason: Option<&str>) {
        if changes.is_empty() {
            return;
        }
        let (added, deleted) = {
            let mut st = self.state();
            let added: Vec<FilterSummary> =
                changes.added.iter().filter_map(|id| st.engine.filter(*id).map(summarize)).collect();
            for f in &added {
                st.installed.insert(f.id, f.clone());
            }
            let deleted = changes
                .deleted
                .iter()
                .map(|(id, name, _)| {
                    st.installed.remove(&id.0).unwrap_or_else(|| FilterSummary {
                        id: id.0,
                        name: name.clone(),
                        layer: String::new(),
                        action: String::new(),
                        lifetime: String::new(),
                    })
                })
                .collect();
            *self.inner.disk.lock().unwrap_or_else(PoisonError::into_inner) = st.engine.persistent_store();
            (added, deleted)
        };
        self.inner.recorder.record(EventBody::WfpCommitted {
            session,
            added,
            deleted,
            reason: reason.map(str::to_string),
        });
    }
}

fn summarize(f: &crate::wfp::Filter) -> FilterSummary {
    FilterSummary {
        id: f.id.0,
        name: f.spec.name.clone(),
        layer: f.spec.layer.name().to_string(),
        action: format!("{:?}", f.spec.action).to_lowercase(),
        lifetime: format!("{:?}", f.spec.lifetime).to_lowercase(),
    }
}

/// The SID of an account (deterministic stand-ins for real SIDs).
pub fn user_sid(user: &str) -> String {
    match user.to_ascii_uppercase().as_str() {
        "SYSTEM" => "S-1-5-18".to_string(),
        "LOCAL SERVICE" => "S-1-5-19".to_string(),
        "NETWORK SERVICE" => "S-1-5-20".to_string(),
        _ => format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1000 + fnv(user) % 9000),
    }
}

/// The service SID of a service (`S-1-5-80-...`).
pub fn service_sid(service: &str) -> String {
    let h = fnv(service);
    format!("S-1-5-80-{}-{}", h % 4_000_000_000, (h >> 32) % 4_000_000_000)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The agent's sign-in window: a separate process (the auth exception) that
/// runs a browser through the sign-in.
struct SignInWindow {
    os: Windows,
}

impl AgentPlatform for SignInWindow {
    fn sign_in_window(&self, url: Url, credentials: Credentials) -> BoxFuture<'static, Result<Landing, FetchError>> {
        let (tx, rx) = oneshot::channel();
        let clock = self.os.inner.clock.clone();
        let spawned = self.os.spawn_process(AUTH_PROCESS, move |ctx| {
            let browser = Browser::new(ctx.http(), clock);
            async move {
                let nav = Navigation { login: Some(credentials), follow: true, ..Navigation::default() };
                let _ = tx.send(browser.navigate(url, &nav).await);
            }
        });
        Box::pin(async move {
            spawned.map_err(FetchError::Failed)?;
            rx.await.unwrap_or_else(|_| Err(FetchError::Failed("sign-in window closed".into())))
        })
    }
}

/// The lockdown policy for the agent, from the lab's resolved config.
pub fn lockdown_policy(resolved: &crate::config::Resolved) -> LockdownPolicy {
    LockdownPolicy {
        exceptions: resolved
            .lockdown
            .allow
            .iter()
            .filter_map(|rule| {
                Some(crate::agent::firewall::Exception {
                    process: rule.process.clone(),
                    app_id: resolved.processes.get(&rule.process)?.app_id.clone(),
                    remote: rule.remote.clone(),
                })
            })
            .collect(),
        allow_loopback: resolved.lockdown.allow_loopback,
    }
}
