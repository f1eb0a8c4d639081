//! The simulated Windows device: an operating system with processes and the
//! Windows Filtering Platform, running the device agent and applications.
//!
//! Architecture invariant: firewall state lives here, in the simulated OS,
//! not in the agent. The agent programs it through the BFE API of its own
//! process; when a process ends, its BFE sessions end with it, and what
//! they owned dynamically disappears. Persistent objects are written to the
//! device's "disk", which outlives reboots.
//!
//! A boot follows Windows' order: power-on brings TCP/IP up with the
//! boot-time filters stored on disk; after `boot.bfe_start` BFE initializes
//! (persistent filters in force, boot-time ones retired); after
//! `boot.services` the automatic services start (the agent among them);
//! after `boot.logon` the user logs on and the applications start. Processes
//! of each stage may fetch URLs as they start, so a race with the agent shows.
//! The service manager restarts the agent after `agent.restart_delay` when it
//! dies, except during a shutdown, an upgrade or while BFE is stopped.

mod apps;
mod bfe;
mod installer;
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
pub use self::installer::install_agent;
use self::netstack::ProcessNet;
use crate::agent::firewall::{Endpoint, Exception, LockdownPolicy};
use crate::agent::wfp_backend::WfpFirewall;
use crate::agent::{AdminOverride, Agent, AgentCommand, AgentPlatform, AgentSettings, AgentState};
use crate::config::{AGENT_PROCESS, AUTH_PROCESS, BootConfig, DHCP_PROCESS, DeviceProcess, FilterLifetime, StartStage};
use crate::http::{Browser, Credentials, FetchError, HttpClient, Landing, Navigation};
use crate::net::{BoxFuture, Directory, Net, SharedClock};
use crate::trace::{EventBody, FilterSummary, Recorder, Verdict};
use crate::wfp::{
    ChangeSet, ClassifyContext, Decision, Engine, FlowId, FlowTable, IpPrefix, Layer, PacketVerdict, PersistentStore,
    Phase, Protocol,
};

/// What the device is made of.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// Device id.
    pub device_id: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its IPv6 address, if it has one (the simulated network carries IPv4 from the
    /// device; IPv6 flows are classified with this local address).
    pub ipv6: Option<IpAddr>,
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
    /// Whether the agent adds a boot-time copy of its lockdown.
    pub agent_boot_time_filters: bool,
    /// Service recovery delay for the agent (zero: never restarted).
    pub agent_restart_delay: std::time::Duration,
    /// How long an upgrade leaves the device without an agent.
    pub agent_upgrade_gap: std::time::Duration,
    /// Boot stage durations.
    pub boot: BootConfig,
    /// The Windows user at the console at boot.
    pub interactive_user: String,
}

impl DeviceSetup {
    /// The device of a lab.
    pub fn new(lab: &crate::config::LabConfig, resolved: &crate::config::Resolved) -> DeviceSetup {
        DeviceSetup {
            device_id: lab.device.id.clone(),
            // Validation guarantees the device's host exists.
            ip: resolved.hosts.get(&lab.device.host).copied().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            ipv6: lab.device.ipv6,
            directory: resolved.directory.clone(),
            processes: resolved.processes.clone(),
            agent: AgentSettings {
                device_id: lab.device.id.clone(),
                gateway_url: lab.agent.gateway_url.clone(),
                session_poll: lab.agent.session_poll,
                relock_margin: lab.agent.relock_margin,
                confirm_within: lab.agent.confirm_within,
                policy: lockdown_policy(lab, resolved),
                danger_forget_relock: lab.agent.danger_forget_relock,
                captive_portal: captive_portal_lever(lab, resolved),
                admin_override: lab.lockdown.admin_override.as_ref().and_then(|o| {
                    Some(AdminOverride {
                        totp: override_totp(o),
                        secret: crate::totp::decode_base32(&o.secret).ok()?,
                        duration: o.duration,
                    })
                }),
            },
            agent_filter_lifetime: lab.agent.filter_lifetime,
            agent_sublayer_weight: lab.agent.sublayer_weight,
            danger_skip_reauthorization: lab.firewall.danger_skip_reauthorization,
            agent_boot_time_filters: lab.agent.boot_time_filters,
            agent_restart_delay: lab.agent.restart_delay,
            agent_upgrade_gap: lab.agent.upgrade_gap,
            boot: lab.device.boot.clone(),
            interactive_user: lab.device.interactive_user.clone(),
        }
    }
}

/// What the device keeps on disk across reboots.
#[derive(Clone, Debug, Default)]
pub struct DiskContents {
    /// BFE's persistent and boot-time objects.
    pub firewall: PersistentStore,
    /// The agent's saved device session token.
    pub agent_session: Option<String>,
}

/// The device's disk: what survives a reboot.
pub type Disk = Arc<Mutex<DiskContents>>;

/// The TOTP parameters of administrator override codes (8 digits, one per `code_step`).
pub fn override_totp(o: &crate::config::AdminOverrideConfig) -> crate::totp::TotpSettings {
    crate::totp::TotpSettings { algorithm: crate::totp::TotpAlgorithm::SHA1, digits: 8, step: o.code_step, skew: 0 }
}

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
    /// Restart the device (shutdown, then a full boot).
    Reboot {
        /// The agent's state once booted again.
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    /// Start a program that is not running (`start = "manual"` ones, or one that exited).
    Start {
        /// Lab name of the program.
        process: String,
        /// What happened.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// An operating-system event or lever, answered in words.
    Os {
        /// What happens.
        event: OsEvent,
        /// What came of it.
        reply: oneshot::Sender<Result<String, String>>,
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

/// Things that happen to the device besides its user's clicks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OsEvent {
    /// BFE stops (the agent service, which depends on it, stops first).
    StopBfe,
    /// BFE starts again (the service manager then starts the agent).
    StartBfe,
    /// The agent is upgraded: the old one stops, the new one starts after a gap.
    UpgradeAgent,
    /// The device goes to sleep.
    Sleep,
    /// The device resumes.
    Resume,
    /// The network changes: a new interface (new LUID) and a DHCP exchange.
    NetworkChange,
    /// Another Windows user takes the console.
    SwitchUser(String),
    /// The device moves to another organization.
    ChangeOrg(String),
    /// The network presents a captive portal.
    CaptivePortal,
    /// The user types an administrator override code.
    AdminOverride(String),
}

impl DeviceCommand {
    /// Answers the command with `why` it cannot be carried out.
    pub fn refuse(self, why: &str) {
        match self {
            DeviceCommand::PowerOn { reply }
            | DeviceCommand::Reboot { reply }
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
            DeviceCommand::Start { reply, .. } | DeviceCommand::Os { reply, .. } => {
                let _ = reply.send(Err(why.to_string()));
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
    /// LUID of the network interface (a new interface gets a new one).
    luid: u64,
    asleep: bool,
    /// Set while the OS itself stops the agent (shutdown, upgrade, BFE stop):
    /// the service manager then does not restart it.
    agent_stop_expected: bool,
    shutting_down: bool,
    /// The service manager's pending restart of the agent.
    agent_restart: Option<AbortHandle>,
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

/// The lab port of the agent's loopback channel to its tray UI.
pub const AGENT_UI_PORT: u16 = 47100;

impl Windows {
    /// Powers the device on: TCP/IP comes up with the boot-time filters stored
    /// on `disk` (BFE has not started yet) and the boot-start programs run.
    /// [`Windows::run_boot`] carries the boot on.
    pub fn power_on(setup: DeviceSetup, net: Net, clock: SharedClock, recorder: Recorder, disk: Disk) -> Windows {
        let engine = Engine::power_on(&disk.lock().unwrap_or_else(PoisonError::into_inner).firewall);
        let boot_time = engine.filters().filter(|f| f.spec.lifetime == crate::wfp::Lifetime::BootTime).count();
        let persistent_filters = engine.filters().count() - boot_time;
        let installed = engine.filters().filter(|f| engine.is_active(f)).map(|f| (f.id.0, summarize(f))).collect();
        recorder.record(EventBody::TransitionBegan { kind: "boot".into(), detail: "power on".into(), user: None });
        recorder.record(EventBody::DeviceBooted {
            device: setup.device_id.clone(),
            persistent_filters,
            boot_time_filters: boot_time,
        });
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
                    luid: 1,
                    asleep: false,
                    agent_stop_expected: false,
                    shutting_down: false,
                    agent_restart: None,
                }),
            }),
        };
        let _ = os.spawn_process(DHCP_PROCESS, |_| std::future::pending());
        os.dhcp_exchange("DHCP discover at boot");
        os.start_stage(StartStage::Boot);
        os
    }

    /// The rest of the boot: BFE, the services (the agent), the user's logon.
    pub async fn run_boot(&self) {
        let boot = self.inner.setup.boot.clone();
        tokio::time::sleep(boot.bfe_start).await;
        self.bfe_started("BFE started: persistent filters in force, boot-time filters retired");
        self.stage("bfe");
        tokio::time::sleep(boot.services).await;
        self.start_agent();
        self.start_stage(StartStage::Service);
        self.stage("services");
        tokio::time::sleep(boot.logon).await;
        self.start_stage(StartStage::Logon);
        self.stage("logon");
    }

    fn stage(&self, stage: &str) {
        self.inner.recorder.record(EventBody::BootStage { stage: stage.to_string() });
    }

    fn transition(&self, kind: &str, detail: &str) {
        self.inner.recorder.record(EventBody::TransitionBegan {
            kind: kind.to_string(),
            detail: detail.to_string(),
            user: None,
        });
    }

    fn start_stage(&self, stage: StartStage) {
        let names: Vec<String> = self
            .inner
            .setup
            .processes
            .values()
            .filter(|p| p.start == stage && p.name != AGENT_PROCESS)
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            self.start_app(&name);
        }
    }

    /// Shuts the device down: every process ends (the disk keeps what was saved).
    pub fn shutdown(&self, why: &str) {
        self.transition("shutdown", why);
        let names: Vec<String> = {
            let mut st = self.state();
            st.shutting_down = true;
            st.agent_stop_expected = true;
            if let Some(restart) = st.agent_restart.take() {
                restart.abort();
            }
            st.processes.values().map(|p| p.name.clone()).collect()
        };
        for name in names {
            self.kill_as(&name, "shut down");
        }
    }

    /// Handles one command from the driver; long work runs in its own task.
    pub fn handle(&self, command: DeviceCommand) {
        match command {
            DeviceCommand::PowerOn { reply } | DeviceCommand::Reboot { reply } => {
                let _ = reply.send(Err("the device's host handles power".into()));
            }
            DeviceCommand::SignIn { credentials, reply } => {
                self.ask_agent(reply, |tx| AgentCommand::SignIn { credentials, reply: tx }, |r| r)
            }
            DeviceCommand::AgentStatus { reply } => self.ask_agent(reply, |tx| AgentCommand::Status { reply: tx }, Ok),
            DeviceCommand::Kill { process, reply } => {
                let _ = reply.send(self.kill(&process));
            }
            DeviceCommand::Start { process, reply } => {
                let result = if self.running(&process).is_some() {
                    Err(format!("`{process}` is already running"))
                } else if !self.inner.setup.processes.contains_key(&process) {
                    Err(format!("no program `{process}` is installed"))
                } else if process == AGENT_PROCESS {
                    self.start_agent();
                    Ok("started".to_string())
                } else {
                    self.start_app(&process);
                    Ok("started".to_string())
                };
                let _ = reply.send(result);
            }
            DeviceCommand::Os { event, reply } => self.os_event(event, reply),
            DeviceCommand::App { process, action, reply } => {
                if self.state().asleep {
                    let _ = reply.send(AppResult::NotRunning("the device is asleep".into()));
                    return;
                }
                match self.state().apps.get(&process).cloned() {
                    Some(mailbox) => {
                        if let Err(e) = mailbox.send((action, reply)) {
                            let (_, reply) = e.0;
                            let _ = reply.send(AppResult::NotRunning(process));
                        }
                    }
                    None => {
                        let _ = reply.send(AppResult::NotRunning(process));
                    }
                }
            }
        }
    }

    fn os_event(&self, event: OsEvent, reply: oneshot::Sender<Result<String, String>>) {
        let ok = |text: &str| Ok(text.to_string());
        let result = match event {
            OsEvent::StopBfe => {
                if self.state().engine.phase() != Phase::Running {
                    Err("BFE is not running".to_string())
                } else {
                    self.transition("bfe_stopped", "BFE stopped (the agent service depends on it)");
                    self.state().agent_stop_expected = true;
                    self.kill_as(AGENT_PROCESS, "stopped with BFE");
                    let changes = self.state().engine.stop_bfe();
                    self.record_changes(0, &changes, Some("BFE stopped: non-persistent objects dropped"));
                    ok("stopped")
                }
            }
            OsEvent::StartBfe => {
                if self.state().engine.phase() == Phase::Running {
                    Err("BFE is already running".to_string())
                } else {
                    self.bfe_started("BFE started");
                    self.start_agent();
                    ok("started")
                }
            }
            OsEvent::UpgradeAgent => {
                self.transition("upgrade", "agent upgrade: the old version stops, the new one starts after a gap");
                self.state().agent_stop_expected = true;
                let stopping = self.tell_agent(AgentCommand::Stop);
                let os = self.clone();
                let gap = self.inner.setup.agent_upgrade_gap;
                tokio::spawn(async move {
                    // The installer waits up to a second for the old agent to exit, then kills it.
                    for _ in 0..100 {
                        if os.running(AGENT_PROCESS).is_none() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    os.state().agent_stop_expected = true;
                    os.kill_as(AGENT_PROCESS, "killed by the installer");
                    let _ = reply.send(Ok(if stopping { "old agent stopped" } else { "no agent was running" }.into()));
                    tokio::time::sleep(gap).await;
                    os.start_agent();
                });
                return;
            }
            OsEvent::Sleep => {
                self.transition("sleep", "the device goes to sleep");
                self.state().asleep = true;
                self.tell_agent(AgentCommand::Suspend);
                ok("asleep")
            }
            // Only a sleeping device resumes: an awake one has no transition
            // to make (and must not open a transition window).
            OsEvent::Resume if !self.state().asleep => Err("the device is not asleep".to_string()),
            OsEvent::Resume => {
                self.state().asleep = false;
                self.transition("resume", "the device resumed");
                self.dhcp_exchange("DHCP renew on resume");
                self.tell_agent(AgentCommand::Resume);
                ok("resumed")
            }
            OsEvent::NetworkChange => {
                let (old, new) = {
                    let mut st = self.state();
                    st.luid += 1;
                    (st.luid - 1, st.luid)
                };
                self.transition("network_change", &format!("new interface: LUID {old} -> {new}"));
                self.dhcp_exchange("DHCP on the new interface");
                self.tell_agent(AgentCommand::NetworkChanged);
                ok("changed")
            }
            OsEvent::SwitchUser(user) => {
                self.inner.recorder.record(EventBody::TransitionBegan {
                    kind: "user_switch".into(),
                    detail: format!("Windows user switched to {user}"),
                    user: Some(user.clone()),
                });
                self.tell_agent(AgentCommand::UserSwitched { user });
                ok("switched")
            }
            OsEvent::ChangeOrg(org) => {
                self.transition("org_change", &format!("organization changed to {org}"));
                self.tell_agent(AgentCommand::OrgChanged { org });
                ok("changed")
            }
            OsEvent::CaptivePortal => {
                return self.ask_agent(reply, |tx| AgentCommand::CaptivePortal { reply: tx }, |r| r);
            }
            OsEvent::AdminOverride(code) => {
                return self.ask_agent(reply, |tx| AgentCommand::AdminOverride { code, reply: tx }, |r| r);
            }
        };
        let _ = reply.send(result);
    }

    fn bfe_started(&self, why: &str) {
        let changes = self.state().engine.start_bfe();
        self.record_changes(0, &changes, Some(why));
    }

    /// The DHCP client's exchange, classified at the connect layer. The lab has no
    /// DHCP server: the request is classified and traced, not carried.
    fn dhcp_exchange(&self, why: &str) {
        let Some(pid) = self.running(DHCP_PROCESS) else {
            return;
        };
        let local = SocketAddr::new(self.inner.setup.ip, 68);
        let remote = SocketAddr::new(IpAddr::from([255, 255, 255, 255]), 67);
        if let Ok(flow) = self.authorize(pid, crate::wfp::Direction::Outbound, Protocol::Udp, local, remote) {
            self.close_flow(flow, &format!("{why}: request sent (the lab has no DHCP server)"));
        }
    }

    /// Sends a command to the agent; false if it is not running.
    fn tell_agent(&self, command: AgentCommand) -> bool {
        self.state().agent_ui.clone().is_some_and(|ui| ui.send(command).is_ok())
    }

    /// Sends a command to the agent and relays its answer, mapped by `answer`, to `reply`.
    fn ask_agent<T: Send + 'static, R: Send + 'static>(
        &self,
        reply: oneshot::Sender<Result<R, String>>,
        command: impl FnOnce(oneshot::Sender<T>) -> AgentCommand,
        answer: fn(T) -> Result<R, String>,
    ) {
        let (tx, rx) = oneshot::channel();
        if !self.tell_agent(command(tx)) {
            let _ = reply.send(Err("agent not running".into()));
            return;
        }
        tokio::spawn(async move {
            let result = rx.await.map_err(|_| "agent stopped".to_string()).and_then(answer);
            let _ = reply.send(result);
        });
    }

    /// The pid of a running process named `name`, if any.
    fn running(&self, name: &str) -> Option<u32> {
        self.state().processes.iter().find(|(_, p)| p.name == name).map(|(pid, _)| *pid)
    }

    fn state(&self) -> MutexGuard<'_, OsState> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn raw_net(&self) -> &Net {
        &self.inner.net
    }

    fn local_ip_for(&self, remote: IpAddr) -> IpAddr {
        if remote.is_loopback() {
            remote
        } else if remote.is_ipv6() {
            self.inner.setup.ipv6.unwrap_or(IpAddr::from([0u16; 8]))
        } else {
            self.inner.setup.ip
        }
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
            if st.shutting_down {
                return Err("the device is shutting down".into());
            }
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
        self.kill_as(name, "killed")
    }

    fn kill_as(&self, name: &str, reason: &str) -> usize {
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
            self.process_exited(pid, reason);
        }
        n
    }

    /// Ends a process: its BFE sessions run down, its flows close. The
    /// service manager restarts an agent that died on its own.
    fn process_exited(&self, pid: u32, reason: &str) {
        let (entry, changes, closed, restart) = {
            let mut st = self.state();
            let Some(entry) = st.processes.remove(&pid) else { return };
            let changes = st.engine.process_exited(pid);
            let open: Vec<FlowId> = st.flows.flows_of(pid).map(|f| f.id).collect();
            for f in &open {
                st.flows.close(*f);
            }
            let mut restart = false;
            if entry.name == AGENT_PROCESS {
                st.agent_ui = None;
                restart = !std::mem::take(&mut st.agent_stop_expected) && !st.shutting_down;
            }
            st.apps.remove(&entry.name);
            (entry, changes, open, restart)
        };
        self.record_changes(0, &changes, Some("session ended with its process"));
        for f in closed {
            self.inner.recorder.record(EventBody::FlowClosed { flow: f.0, reason: format!("process {reason}") });
        }
        self.inner.recorder.record(EventBody::ProcessExited { pid, name: entry.name, reason: reason.to_string() });
        if restart {
            self.transition("agent_stopped", &format!("the agent {reason}"));
            self.schedule_agent_restart();
        }
    }

    /// Service recovery: the service manager restarts the agent after a delay.
    fn schedule_agent_restart(&self) {
        let delay = self.inner.setup.agent_restart_delay;
        if delay.is_zero() {
            return;
        }
        let os = self.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let ready = {
                let mut st = os.state();
                st.agent_restart = None;
                st.engine.phase() == Phase::Running && st.agent_ui.is_none() && !st.shutting_down
            };
            if ready {
                os.start_agent();
            }
        });
        if let Some(old) = self.state().agent_restart.replace(handle.abort_handle()) {
            old.abort();
        }
    }

    fn start_agent(&self) {
        let (ui_tx, ui_rx) = mpsc::unbounded_channel();
        {
            let mut st = self.state();
            if st.agent_ui.is_some() || st.processes.values().any(|p| p.name == AGENT_PROCESS) {
                return;
            }
            st.agent_ui = Some(ui_tx);
            st.agent_stop_expected = false;
        }
        let setup = self.inner.setup.clone();
        let clock = self.inner.clock.clone();
        let recorder = self.inner.recorder.clone();
        let started = self.spawn_process(AGENT_PROCESS, move |ctx| {
            let bfe = BfeHandle::new(ctx.os().clone(), ctx.pid);
            let platform: Arc<dyn AgentPlatform> = Arc::new(SignInWindow { os: ctx.os().clone() });
            let http = ctx.http();
            let net = ctx.net();
            async move {
                let firewall = match WfpFirewall::open(
                    bfe,
                    setup.agent_filter_lifetime,
                    setup.agent_sublayer_weight,
                    setup.agent_boot_time_filters,
                ) {
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
                let agent = Agent::new(setup.agent, Box::new(firewall), platform, http, clock, recorder);
                let status = agent.status();
                tokio::select! {
                    biased;
                    _ = agent.run(ui_rx) => {}
                    _ = serve_ui(net, status) => {}
                }
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
        let on_start = self.inner.setup.processes.get(name).map(|p| p.on_start.clone()).unwrap_or_default();
        let recorder = self.inner.recorder.clone();
        let process = name.to_string();
        let _ = self.spawn_process(name, move |ctx| {
            let browser = Browser::new(ctx.http(), clock);
            async move {
                for url in on_start {
                    let outcome = match browser.navigate(url.clone(), &Navigation::default()).await {
                        Ok(Landing::Page(page)) => format!("http {}", page.status),
                        Ok(Landing::Handoff(to)) => format!("hand-off to {to}"),
                        Err(e) => e.to_string(),
                    };
                    recorder.record(EventBody::AppTraffic { process: process.clone(), url: url.to_string(), outcome });
                }
                apps::run(ctx.net(), browser, rx).await
            }
        });
    }

    /// The process identity used for classification: app id, SIDs, account.
    fn identity(&self, pid: u32) -> Option<(String, crate::wfp::AppId, Vec<String>, String)> {
        let name = self.state().processes.get(&pid)?.name.clone();
        let program = self.inner.setup.processes.get(&name)?;
        let mut sids = vec![user_sid(&program.user)];
        if let Some(service) = &program.service {
            sids.push(service_sid(service));
        }
        Some((name, program.app_id.clone(), sids, program.user.clone()))
    }

    /// Classifies a new flow of `pid`; returns its id if permitted.
    fn authorize(
        &self,
        pid: u32,
        direction: crate::wfp::Direction,
        protocol: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<FlowId> {
        let (process, app_id, sids, user) =
            self.identity(pid).ok_or_else(|| io::Error::other(format!("process {pid} is not running")))?;
        let layer = Layer::for_direction(direction, remote.is_ipv6());
        let loopback = remote.ip().is_loopback();
        let ctx = ClassifyContext {
            app_id: Some(app_id.clone()),
            user_sids: sids,
            loopback,
            interface_luid: if loopback { None } else { Some(self.state().luid) },
            ..ClassifyContext::new(layer, protocol, local, remote)
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
        self.record_decision(flow, layer, protocol, pid, &process, &app_id, &user, local, remote, &decision, false);
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
                    ctx.protocol,
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
        protocol: Protocol,
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
            protocol: format!("{protocol:?}").to_lowercase(),
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
            self.inner.disk.lock().unwrap_or_else(PoisonError::into_inner).firewall = st.engine.persistent_store();
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
    fn saved_session(&self) -> Option<String> {
        self.os.inner.disk.lock().unwrap_or_else(PoisonError::into_inner).agent_session.clone()
    }

    fn save_session(&self, token: Option<&str>) {
        self.os.inner.disk.lock().unwrap_or_else(PoisonError::into_inner).agent_session = token.map(str::to_string);
    }

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
pub fn lockdown_policy(lab: &crate::config::LabConfig, resolved: &crate::config::Resolved) -> LockdownPolicy {
    LockdownPolicy {
        exceptions: resolved
            .lockdown
            .allow
            .iter()
            .filter_map(|rule| {
                Some(Exception {
                    process: rule.process.clone(),
                    app_id: resolved.processes.get(&rule.process)?.app_id.clone(),
                    service_sid: rule.service.as_deref().map(service_sid),
                    remote: rule.remote.iter().map(|r| Endpoint::host(r.ip(), r.port())).collect(),
                })
            })
            .collect(),
        allow_loopback: resolved.lockdown.allow_loopback,
        allow_lan: lab.lockdown.allow_lan,
        allow_dhcp: lab.lockdown.allow_dhcp,
        danger_ipv4_only: lab.agent.danger_ipv4_only,
    }
}

/// What a captive-portal opening lets through: the browser, to any host on ports
/// 80 and 443 (a portal can be anywhere), if the lever is on and a browser exists.
pub fn captive_portal_lever(
    lab: &crate::config::LabConfig,
    resolved: &crate::config::Resolved,
) -> Option<(std::time::Duration, Vec<Exception>)> {
    if lab.lockdown.captive_portal.is_zero() {
        return None;
    }
    let browser = resolved.processes.get(crate::config::PORTAL_BROWSER)?;
    let any = ["0.0.0.0/0", "::/0"].iter().filter_map(|p| p.parse::<IpPrefix>().ok());
    let remote = any.flat_map(|prefix| [80, 443].map(|port| Endpoint { prefix, port: Some(port) })).collect();
    let exception =
        Exception { process: browser.name.clone(), app_id: browser.app_id.clone(), service_sid: None, remote };
    Some((lab.lockdown.captive_portal, vec![exception]))
}

/// The agent's loopback channel to its tray UI: one line in (`status`), its state out.
async fn serve_ui(net: Net, status: tokio::sync::watch::Receiver<AgentState>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), AGENT_UI_PORT);
    let Ok(mut listener) = net.bind(addr).await else { return std::future::pending().await };
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let status = status.clone();
        tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(conn);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match line.trim() {
                    "status" => format!("agent {}\n", status.borrow().as_str()),
                    other => format!("unknown command `{other}`\n"),
                };
                if write.write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}
