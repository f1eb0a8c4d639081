//! The simulated world: builds every host of a lab inside one simulation,
//! plays a scenario's timeline against it, and hands the trace to the oracle.
//!
//! The driver sits outside the simulation: it steps turmoil tick by tick
//! and talks to hosts through control channels (the user at the keyboard,
//! the administrator at the console, the attacker at their desk), never
//! through the simulated network.

pub mod factors;
pub mod fleet;
mod hosts;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use url::Url;

use self::factors::{Factor, Factors, Responder};
use self::hosts::{AttackerCommand, GatewayCommand, IdpControl, MfaCommand};
use crate::authenticator::VirtualAuthenticator;
use crate::device::{AppAction, AppResult, DeviceCommand, OsEvent};
use crate::http::{FetchError, Landing, Navigation};
use crate::net::SharedClock;
use crate::net::sim::{DEFAULT_TCP_CAPACITY, SimFailure, SimParams, SimWorld};
use crate::oracle::{self, Violation};
use crate::protocol::LAUNCHER_ADD_FACTOR_PATH;
use crate::rng::SeededRng;
use crate::scenario::{Action, Client, MfaUse, Outcome, Scenario};
use crate::totp::TotpApp;
use crate::trace::{EventBody, Recorder, Trace};

/// A channel into a host's software, re-published each time the host starts.
pub struct Control<C> {
    slot: Arc<Mutex<Option<mpsc::UnboundedSender<C>>>>,
}

impl<C> Clone for Control<C> {
    fn clone(&self) -> Self {
        Control { slot: self.slot.clone() }
    }
}

impl<C> Default for Control<C> {
    fn default() -> Self {
        Control { slot: Arc::new(Mutex::new(None)) }
    }
}

impl<C> Control<C> {
    /// Called by the host when it starts: commands sent from now on arrive here.
    pub fn publish(&self) -> mpsc::UnboundedReceiver<C> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Sends a command; gives it back if the host is not running.
    pub fn send(&self, command: C) -> Result<(), C> {
        match self.slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(tx) => tx.send(command).map_err(|e| e.0),
            None => Err(command),
        }
    }
}

/// One step's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    /// 1-based index.
    pub index: usize,
    /// Line in the scenario file.
    pub line: usize,
    /// What the step did.
    pub action: String,
    /// What came of it.
    pub outcome: String,
    /// What was expected.
    pub expected: Option<String>,
    /// Whether the expectation held.
    pub ok: bool,
    /// Simulated time at the end of the step (ms).
    pub t: u64,
}

/// A whole run's result.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// What the scenario shows (its `description`).
    pub description: String,
    /// Scenario file.
    pub file: String,
    /// Seed used.
    pub seed: u64,
    /// Steps.
    pub steps: Vec<StepReport>,
    /// What the oracle found.
    pub violations: Vec<Violation>,
    /// Invariants the scenario expected to see violated.
    pub expected_violations: Vec<String>,
    /// Set when the lab itself failed (a component crashed or panicked).
    pub error: Option<String>,
    /// Weaknesses the run demonstrated that are not invariant violations
    /// (e.g. a phishable factor relayed successfully).
    pub findings: Vec<String>,
    /// The trace.
    pub trace: Trace,
    /// Simulated time in all (ms).
    pub sim_ms: u64,
    /// TCP connections opened in the simulation.
    pub connections: u64,
    /// Writes that moved bytes, all connections together.
    pub segments: u64,
}

impl RunReport {
    /// Every reason this run fails, in words (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("lab error: {e}"));
        }
        for s in self.steps.iter().filter(|s| !s.ok) {
            out.push(format!(
                "step {} (line {}: {}): expected `{}`, got `{}`",
                s.index,
                s.line,
                s.action,
                s.expected.as_deref().unwrap_or(""),
                s.outcome
            ));
        }
        if self.expected_violations.is_empty() {
            out.extend(self.violations.iter().map(|v| v.to_string()));
        } else {
            for inv in &self.expected_violations {
                if !self.violations.iter().any(|v| &v.invariant == inv) {
                    out.push(format!("expected a violation of {inv}, the oracle found none"));
                }
            }
            out.extend(
                self.violations
                    .iter()
                    .filter(|v| !self.expected_violations.contains(&v.invariant))
                    .map(|v| v.to_string()),
            );
        }
        out
    }

    /// Whether every expectation held and the oracle found only what was expected.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

/// Runs `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> RunReport {
    let lab = &scenario.lab;
    let resolved = &scenario.resolved;
    let params = SimParams {
        seed,
        epoch: resolved.epoch,
        tick: lab.sim.tick,
        latency: lab.sim.latency,
        tcp_capacity: DEFAULT_TCP_CAPACITY,
    };
    let mut world = SimWorld::new(&params);
    let clock: SharedClock = Arc::new(world.clock());
    let recorder = Recorder::new(resolved.epoch, clock.clone());
    recorder.record(EventBody::RunStarted {
        scenario: scenario.name.clone(),
        seed,
        epoch: resolved.epoch,
        lab: lab.name.clone(),
        spec: Box::new(resolved.lockdown.clone()),
    });
    let stats = world.stats();
    let root = SeededRng::from_seed(seed);
    let mut factors = Factors::default();
    let mut error = None;
    for (name, profile) in &scenario.authenticators {
        match VirtualAuthenticator::new(name, profile.clone(), &root.child("authenticators")) {
            Ok(a) => {
                factors.by_name.insert(name.clone(), Factor::Webauthn(Arc::new(tokio::sync::Mutex::new(a))));
            }
            Err(e) => error = Some(format!("authenticator {name}: {e}")),
        }
    }
    for (name, skew_ms) in &scenario.totp_apps {
        factors.by_name.insert(name.clone(), Factor::Totp(Arc::new(tokio::sync::Mutex::new(TotpApp::new(*skew_ms)))));
    }
    let controls = hosts::build(&mut world, lab, resolved, clock.clone(), &recorder, &root);
    let mut driver = Driver {
        world,
        timeout: lab.sim.step_timeout,
        controls,
        recorder: recorder.clone(),
        factors,
        mailbox: BTreeMap::new(),
        clock,
        rng: root.child("driver"),
        findings: Vec::new(),
        gateway_url: lab.gateway.auth_url.clone(),
        idp_issuer: lab.gateway.idp_issuer.clone(),
        client_id: lab.gateway.client_id.clone(),
        counted_up_to: BTreeMap::new(),
        floods: 0,
        interactive_user: lab.device.interactive_user.clone(),
        cut_links: Vec::new(),
        override_codes: lab
            .lockdown
            .admin_override
            .as_ref()
            .and_then(|o| Some((crate::device::override_totp(o), crate::totp::decode_base32(&o.secret).ok()?))),
    };
    let mut steps = Vec::new();
    if error.is_none() {
        error = driver.play(scenario, &mut steps).err().map(|e| e.to_string());
    }
    let sim_ms = crate::net::millis(driver.world.elapsed());
    recorder.record(EventBody::RunFinished { sim_ms });
    let trace = recorder.snapshot();
    let violations = oracle::check(&trace);
    RunReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        file: scenario.file.clone(),
        seed,
        steps,
        violations,
        expected_violations: scenario.expect_violations.clone(),
        error,
        findings: driver.findings,
        trace,
        sim_ms,
        connections: stats.connections(),
        segments: stats.segments(),
    }
}

struct Driver<'a> {
    world: SimWorld<'a>,
    timeout: Duration,
    controls: hosts::Controls,
    recorder: Recorder,
    factors: Factors,
    /// Enrollment codes administrators gave users, by user.
    mailbox: BTreeMap<String, String>,
    clock: SharedClock,
    rng: SeededRng,
    findings: Vec<String>,
    gateway_url: String,
    /// What the attacker's forged ID tokens claim (issuer, audience).
    idp_issuer: String,
    client_id: String,
    /// Per event type, the sequence number from which `count_events` counts next.
    counted_up_to: BTreeMap<String, u64>,
    /// Kid floods so far (each draws fresh key ids).
    floods: u64,
    interactive_user: String,
    /// Links cut by `partition` steps, in order, until `heal`.
    cut_links: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    /// What the administrator's console computes override codes from.
    override_codes: Option<(crate::totp::TotpSettings, Vec<u8>)>,
}

impl Driver<'_> {
    fn play(&mut self, scenario: &Scenario, reports: &mut Vec<StepReport>) -> Result<(), SimFailure> {
        // Let every host start and open its control channel.
        self.world.step()?;
        for (i, step) in scenario.steps.iter().enumerate() {
            if let Some(at) = step.at {
                self.advance_to(at)?;
            }
            let index = i + 1;
            let action = step.action.describe();
            self.recorder.record(EventBody::StepStarted { step: index, action: action.clone() });
            let outcome = self.execute(&step.action)?;
            let ok = step.expect.as_ref().is_none_or(|e| e.matches(&outcome));
            let expected = step.expect.as_ref().map(|e| e.to_string());
            self.recorder.record(EventBody::StepFinished {
                step: index,
                outcome: outcome.to_string(),
                expected: expected.clone(),
                ok,
            });
            reports.push(StepReport {
                index,
                line: step.line,
                action,
                outcome: outcome.to_string(),
                expected,
                ok,
                t: crate::net::millis(self.world.elapsed()),
            });
        }
        Ok(())
    }

    fn advance_to(&mut self, t: Duration) -> Result<(), SimFailure> {
        while self.world.elapsed() < t {
            self.world.step()?;
        }
        Ok(())
    }

    /// Steps the simulation until `rx` has a value or the step times out.
    fn wait<T>(&mut self, mut rx: oneshot::Receiver<T>) -> Result<Option<T>, SimFailure> {
        let deadline = self.world.elapsed() + self.timeout;
        loop {
            match rx.try_recv() {
                Ok(v) => return Ok(Some(v)),
                Err(oneshot::error::TryRecvError::Closed) => return Ok(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if self.world.elapsed() >= deadline {
                return Ok(None);
            }
            self.world.step()?;
        }
    }

    /// Sends a command made with a reply channel and waits for the reply.
    fn ask<C, T>(
        &mut self,
        control: &Control<C>,
        make: impl FnOnce(oneshot::Sender<T>) -> C,
    ) -> Result<Reply<T>, SimFailure> {
        let (tx, rx) = oneshot::channel();
        if control.send(make(tx)).is_err() {
            return Ok(Reply::NotRunning);
        }
        Ok(match self.wait(rx)? {
            Some(v) => Reply::Got(v),
            None => Reply::Timeout,
        })
    }

    fn device<T>(&mut self, make: impl FnOnce(oneshot::Sender<T>) -> DeviceCommand) -> Result<Reply<T>, SimFailure> {
        let control = self.controls.device.clone();
        self.ask(&control, make)
    }

    fn app(&mut self, process: &str, action: AppAction) -> Result<Reply<AppResult>, SimFailure> {
        let process = process.to_string();
        self.device(|reply| DeviceCommand::App { process, action, reply })
    }

    fn execute(&mut self, action: &Action) -> Result<Outcome, SimFailure> {
        Ok(match action {
            Action::Boot => agent_outcome(self.device(|reply| DeviceCommand::PowerOn { reply })?),
            Action::SignIn { credentials } => {
                let credentials = credentials.clone();
                agent_outcome(self.device(|reply| DeviceCommand::SignIn { credentials, reply })?)
            }
            Action::CheckAgent => agent_outcome(self.device(|reply| DeviceCommand::AgentStatus { reply })?),
            Action::Kill { process } => {
                let process = process.clone();
                match self.device(|reply| DeviceCommand::Kill { process: process.clone(), reply })? {
                    Reply::Got(0) => Outcome::Failed(format!("no process `{process}` is running")),
                    Reply::Got(_) => Outcome::Ok,
                    Reply::NotRunning => Outcome::Failed("the device is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::Partition { host, peer } => {
                self.world.partition(host.1, peer.1);
                if !self.cut_links.contains(&(host.1, peer.1)) {
                    self.cut_links.push((host.1, peer.1));
                }
                Outcome::Ok
            }
            Action::Heal => {
                for (a, b) in std::mem::take(&mut self.cut_links) {
                    self.world.repair(a, b);
                }
                Outcome::Ok
            }
            Action::RestartHost { host } => {
                self.world.bounce(host.1);
                // Let it start and open its control channel again.
                self.world.step()?;
                Outcome::Ok
            }
            Action::Advance { by } => {
                let target = self.world.elapsed() + *by;
                self.advance_to(target)?;
                Outcome::Ok
            }
            Action::Revoke { user } => {
                let control = self.controls.gateway.clone();
                let user = user.clone();
                match self.ask(&control, |reply| GatewayCommand::Revoke { user, reply })? {
                    Reply::Got(n) => Outcome::Revoked(n),
                    Reply::NotRunning => Outcome::Failed("the gateway is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::Request { client, url, xhr, follow, login, stolen_from, mfa, fresh_profile } => {
                let nav = Navigation {
                    fresh_profile: *fresh_profile,
                    xhr: *xhr,
                    follow: *follow,
                    login: login.clone(),
                    stolen_jar: None,
                    factor: self.responder(mfa, None),
                };
                let outcome = self.navigate(client, url.clone(), nav, stolen_from.as_deref())?;
                if let (Some(origin), Some(factor), Outcome::Http(200)) = (&mfa.relay_origin, &mfa.factor, &outcome) {
                    self.findings.push(format!(
                        "phishable factor: `{factor}` answered on the look-alike origin {origin} and the relayed \
                         login reached {url} (a TOTP code does not know which site it is typed into)"
                    ));
                }
                outcome
            }
            Action::Enroll { client, kind, login, stolen_from, mfa } => {
                let mut url = match Url::parse(&format!(
                    "{}{LAUNCHER_ADD_FACTOR_PATH}",
                    self.gateway_url.trim_end_matches('/')
                )) {
                    Ok(u) => u,
                    Err(e) => return Ok(Outcome::Failed(e.to_string())),
                };
                url.query_pairs_mut().append_pair("kind", kind.as_str());
                // Only the real user reads their mailbox.
                let code = match client {
                    Client::Device(_) => {
                        let user = login.as_ref().map(|c| c.username.clone()).unwrap_or(self.interactive_user.clone());
                        self.mailbox.get(&user).cloned()
                    }
                    Client::Attacker => None,
                };
                let nav = Navigation {
                    fresh_profile: false,
                    xhr: false,
                    follow: true,
                    login: login.clone(),
                    stolen_jar: None,
                    factor: self.responder(mfa, code),
                };
                let outcome = self.navigate(client, url, nav, stolen_from.as_deref())?;
                if let (Client::Attacker, Outcome::Http(200 | 201)) = (client, &outcome) {
                    self.findings.push(format!(
                        "the attacker enrolled `{}` as a {kind} for the victim",
                        mfa.factor.as_deref().unwrap_or("?")
                    ));
                }
                outcome
            }
            Action::CloneAuthenticator { from, to } => {
                let Some(Factor::Webauthn(original)) = self.factors.by_name.get(from).cloned() else {
                    return Ok(Outcome::Failed(format!("`{from}` is not a FIDO2 authenticator")));
                };
                let clone = match original.try_lock() {
                    Ok(device) => device.clone_device(to, &self.rng.child(to)),
                    Err(_) => return Ok(Outcome::Failed(format!("`{from}` is in use"))),
                };
                self.factors.by_name.insert(to.clone(), Factor::Webauthn(Arc::new(tokio::sync::Mutex::new(clone))));
                Outcome::Ok
            }
            Action::IssueEnrollmentCode { user } => {
                let control = self.controls.mfa.clone();
                let who = user.clone();
                match self.ask(&control, |reply| MfaCommand::IssueEnrollmentCode { user: who, reply })? {
                    Reply::Got(code) => {
                        self.mailbox.insert(user.clone(), code);
                        Outcome::Ok
                    }
                    Reply::NotRunning => Outcome::Failed("the MFA service is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::Reboot => agent_outcome(self.device(|reply| DeviceCommand::Reboot { reply })?),
            Action::Start { process } => {
                let process = process.clone();
                match self.device(|reply| DeviceCommand::Start { process, reply })? {
                    Reply::Got(Ok(_)) => Outcome::Ok,
                    Reply::Got(Err(e)) => Outcome::Failed(e),
                    Reply::NotRunning => Outcome::Failed("the device is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::Os(event) => self.os_event(event.clone())?,
            Action::AdminOverrideNow => {
                let code = match &self.override_codes {
                    Some((settings, secret)) => crate::totp::code_at(settings, secret, self.clock.now())
                        .unwrap_or_else(|e| format!("no code: {e}")),
                    None => String::new(),
                };
                self.os_event(OsEvent::AdminOverride(code))?
            }
            Action::UiStatus { process } => {
                let to = std::net::SocketAddr::new([127, 0, 0, 1].into(), crate::device::AGENT_UI_PORT);
                match self.app(process, AppAction::AskAgent { to })? {
                    Reply::Got(AppResult::Stream(Ok(line))) => match line.strip_prefix("agent ") {
                        Some(state) => Outcome::Agent(state.to_string()),
                        None => Outcome::Failed(format!("unexpected answer `{line}`")),
                    },
                    Reply::Got(AppResult::Stream(Err(e))) => fetch_outcome(e),
                    other => app_failure(other),
                }
            }
            Action::Idp(command) => {
                let control = self.controls.idp.clone();
                let command = command.clone();
                match self.ask(&control, |reply| IdpControl { command, reply })? {
                    Reply::Got(Ok(_)) => Outcome::Ok,
                    Reply::Got(Err(e)) => Outcome::Failed(e),
                    Reply::NotRunning => Outcome::Failed("the identity provider is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::KidFlood { count } => {
                let now = self.clock.now();
                let claims = serde_json::json!({
                    "iss": self.idp_issuer,
                    "aud": self.client_id,
                    "sub": "mallory",
                    "iat": now.as_secs(),
                    "exp": now.plus(Duration::from_secs(300)).as_secs(),
                });
                self.floods += 1;
                let rng = self.rng.child(&format!("kid-flood-{}", self.floods));
                let tokens = match crate::idp::forge::kid_flood(&claims, *count, &rng) {
                    Ok(t) => t,
                    Err(e) => return Ok(Outcome::Failed(e.to_string())),
                };
                let control = self.controls.gateway.clone();
                match self.ask(&control, |reply| GatewayCommand::VerifyIdTokens { tokens, reply })? {
                    Reply::Got(n) => Outcome::Accepted(n),
                    Reply::NotRunning => Outcome::Failed("the gateway is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
            Action::CountEvents { event, reason } => {
                let trace = self.recorder.snapshot();
                let from = self.counted_up_to.get(event).copied().unwrap_or(0);
                let n = trace
                    .events
                    .iter()
                    .filter(|e| e.seq >= from)
                    .filter(|e| {
                        let v = serde_json::to_value(&e.body).unwrap_or_default();
                        v.get("event").and_then(|x| x.as_str()) == Some(event.as_str())
                            && reason.as_ref().is_none_or(|r| {
                                v.get("reason").and_then(|x| x.as_str()).is_some_and(|x| x.starts_with(r.as_str()))
                            })
                    })
                    .count();
                self.counted_up_to.insert(event.clone(), trace.events.last().map_or(0, |e| e.seq + 1));
                Outcome::Count(n)
            }
            Action::StreamOpen { process, to, stream } => {
                let action = AppAction::StreamOpen { to: *to, name: stream.clone() };
                stream_outcome(self.app(process, action)?)
            }
            Action::StreamSend { process, stream, line } => {
                let action = AppAction::StreamSend { name: stream.clone(), line: line.clone() };
                stream_outcome(self.app(process, action)?)
            }
        })
    }
}

impl Driver<'_> {
    fn os_event(&mut self, event: OsEvent) -> Result<Outcome, SimFailure> {
        let lever = matches!(event, OsEvent::CaptivePortal | OsEvent::AdminOverride(_));
        let portal = event == OsEvent::CaptivePortal;
        Ok(match self.device(|reply| DeviceCommand::Os { event, reply })? {
            Reply::Got(Ok(what)) => {
                let finding = format!(
                    "captive-portal lever {what}: meanwhile the browser may reach any host on ports 80 and 443, \
                     so a network that merely claims a portal buys the browser that much web access"
                );
                if portal && what.starts_with("opened") && !self.findings.contains(&finding) {
                    self.findings.push(finding);
                }
                Outcome::Ok
            }
            Reply::Got(Err(_)) if lever => Outcome::Refused,
            Reply::Got(Err(e)) => Outcome::Failed(e),
            Reply::NotRunning => Outcome::Failed("the device is not running".into()),
            Reply::Timeout => Outcome::Timeout,
        })
    }

    fn factor(&self, name: &Option<String>) -> Option<Factor> {
        name.as_ref().and_then(|n| self.factors.by_name.get(n).cloned())
    }

    fn responder(&self, mfa: &MfaUse, enrollment_code: Option<String>) -> Option<crate::http::FactorHandle> {
        if mfa.factor.is_none() && mfa.verify_with.is_none() {
            return None;
        }
        Some(
            Responder {
                factor: self.factor(&mfa.factor),
                verify_with: self.factor(&mfa.verify_with),
                relay_origin: mfa.relay_origin.clone(),
                naive_client: mfa.naive_client,
                replay_last_code: mfa.replay_last_code,
                enrollment_code,
                clock: self.clock.clone(),
                treat_http_as_secure: false,
            }
            .handle(),
        )
    }

    /// Loads `url` in a device application's browser or the attacker's.
    fn navigate(
        &mut self,
        client: &Client,
        url: Url,
        mut nav: Navigation,
        stolen_from: Option<&str>,
    ) -> Result<Outcome, SimFailure> {
        Ok(match client {
            Client::Device(process) => match self.app(process, AppAction::Navigate { url, nav })? {
                Reply::Got(AppResult::Landing(r)) => landing_outcome(r),
                other => app_failure(other),
            },
            Client::Attacker => {
                if let Some(victim) = stolen_from {
                    match self.app(victim, AppAction::ExportCookies)? {
                        Reply::Got(AppResult::Cookies(jar)) => nav.stolen_jar = Some(jar),
                        other => return Ok(app_failure(other)),
                    }
                }
                let control = self.controls.attacker.clone();
                match self.ask(&control, |reply| AttackerCommand::Navigate { url, nav, reply })? {
                    Reply::Got(r) => landing_outcome(r),
                    Reply::NotRunning => Outcome::Failed("the attacker's host is not running".into()),
                    Reply::Timeout => Outcome::Timeout,
                }
            }
        })
    }
}

/// A reply from a host, or why there is none.
enum Reply<T> {
    Got(T),
    NotRunning,
    Timeout,
}

fn agent_outcome(reply: Reply<Result<crate::agent::AgentState, String>>) -> Outcome {
    match reply {
        Reply::Got(Ok(state)) => Outcome::Agent(state.as_str().to_string()),
        Reply::Got(Err(e)) => Outcome::Failed(e),
        Reply::NotRunning => Outcome::Failed("the device is not running".into()),
        Reply::Timeout => Outcome::Timeout,
    }
}

fn fetch_outcome(e: FetchError) -> Outcome {
    match e {
        FetchError::Blocked(_) => Outcome::Blocked,
        FetchError::Cut(_) => Outcome::Cut,
        FetchError::Refused(_) => Outcome::Refused,
        other => Outcome::Failed(other.to_string()),
    }
}

fn landing_outcome(result: Result<Landing, FetchError>) -> Outcome {
    match result {
        Ok(Landing::Page(page)) => Outcome::Http(page.status),
        Ok(Landing::Handoff(_)) => Outcome::Handoff,
        Err(e) => fetch_outcome(e),
    }
}

fn stream_outcome(reply: Reply<AppResult>) -> Outcome {
    match reply {
        Reply::Got(AppResult::Stream(Ok(_))) => Outcome::Ok,
        Reply::Got(AppResult::Stream(Err(e))) => fetch_outcome(e),
        other => app_failure(other),
    }
}

fn app_failure(reply: Reply<AppResult>) -> Outcome {
    match reply {
        Reply::Got(AppResult::NotRunning(p)) => Outcome::Failed(format!("{p} is not running")),
        Reply::Got(other) => Outcome::Failed(format!("unexpected reply {other:?}")),
        Reply::NotRunning => Outcome::Failed("the device is not running".into()),
        Reply::Timeout => Outcome::Timeout,
    }
}
