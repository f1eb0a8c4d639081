//! The device agent: mandatory authentication.
//!
//! States: `locked` -> `authenticating` -> `connected` -> `locked`.
//!
//! * **locked**: the lockdown is engaged (block everything but the
//!   process-specific exceptions). This is the state at service start,
//!   before anything else happens.
//! * **authenticating**: the sign-in window (a separate process, itself an
//!   exception) runs the OpenID Connect login through the gateway and the
//!   identity provider. The firewall does not change.
//! * **connected**: the gateway confirmed a device session; the lockdown is
//!   lifted in one transaction. The agent re-engages it, in one transaction,
//!   `relock_margin` before the session expires, or as soon as its periodic
//!   check finds the session revoked or expired.
//!
//! No transition passes through a state more permissive than both its ends:
//! each firewall change is a single atomic transaction.
//!
//! The agent also follows the device's life: at start it locks first and then
//! restores a saved session only once the gateway confirms it; it re-locks on a
//! user switch or an organization change, re-applies the lockdown when the
//! network changes, and re-checks its session at once on resume from sleep.
//! Two levers of the documented product open the lockdown on purpose, each
//! bounded in time and recorded in the trace: the captive-portal opening (the
//! browser may reach ports 80 and 443 anywhere) and administrator override
//! codes (the lockdown is lifted).

pub mod firewall;
pub mod wfp_backend;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use url::Url;

use self::firewall::{Exception, Firewall, LockdownPolicy};
use crate::http::{Credentials, Fetch, FetchError, HttpClient, Landing};
use crate::net::{BoxFuture, SharedClock, UnixMillis, millis};
use crate::protocol::{DEVICE_HANDOFF_URL, DEVICE_SESSION_PATH, DeviceSessionInfo, LOGIN_PATH};
use crate::totp::{TotpSettings, TotpVerifier};
use crate::trace::{EventBody, Recorder};

/// The agent's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Lockdown engaged.
    Locked,
    /// Sign-in window open.
    Authenticating,
    /// Device session live, lockdown lifted.
    Connected,
}

impl AgentState {
    /// Lowercase name, as in the trace.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Locked => "locked",
            AgentState::Authenticating => "authenticating",
            AgentState::Connected => "connected",
        }
    }
}

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Device id it registers as.
    pub device_id: String,
    /// Base URL of the gateway.
    pub gateway_url: String,
    /// How often it checks its session.
    pub session_poll: Duration,
    /// Re-lock this long before the session expires.
    pub relock_margin: Duration,
    /// Lock when the gateway has not confirmed the session for this long
    /// (zero: never).
    pub confirm_within: Duration,
    /// The lockdown.
    pub policy: LockdownPolicy,
    /// Deliberately broken: never re-engage the lockdown once connected.
    pub danger_forget_relock: bool,
    /// The captive-portal lever: how long an opening lasts (zero: off) and what it opens.
    pub captive_portal: Option<(Duration, Vec<Exception>)>,
    /// The administrator-override lever.
    pub admin_override: Option<AdminOverride>,
}

/// Administrator override codes as the agent checks them.
#[derive(Clone, Debug)]
pub struct AdminOverride {
    /// TOTP parameters of the codes (the step is how long one code is valid).
    pub totp: TotpSettings,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// How long an accepted code lifts the lockdown.
    pub duration: Duration,
}

/// A lever that is open right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenLever {
    CaptivePortal,
    AdminOverride,
}

impl OpenLever {
    fn name(self) -> &'static str {
        match self {
            OpenLever::CaptivePortal => "captive_portal",
            OpenLever::AdminOverride => "admin_override",
        }
    }
}

/// What the platform provides the agent beyond its firewall.
pub trait AgentPlatform: Send + Sync + 'static {
    /// Opens the sign-in window at `url` (a separate process) and lets the
    /// user sign in with `credentials`; returns where the window ended.
    fn sign_in_window(&self, url: Url, credentials: Credentials) -> BoxFuture<'static, Result<Landing, FetchError>>;
    /// The device session token the agent saved (it survives restarts and upgrades).
    fn saved_session(&self) -> Option<String>;
    /// Saves (or, with `None`, forgets) the device session token.
    fn save_session(&self, token: Option<&str>);
}

/// A request from the agent's user interface.
#[derive(Debug)]
pub enum AgentCommand {
    /// The OS suspends the device (sleep): the agent's timers stop.
    Suspend,
    /// The device resumed from sleep.
    Resume,
    /// Another Windows user is now at the console.
    UserSwitched {
        /// The new user.
        user: String,
    },
    /// The device was moved to another organization (team).
    OrgChanged {
        /// The new organization.
        org: String,
    },
    /// The network changed (new interface, DHCP renew).
    NetworkChanged,
    /// A captive portal was detected; the agent may open the lever.
    CaptivePortal {
        /// What the agent did.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// The user enters an administrator override code.
    AdminOverride {
        /// The code typed.
        code: String,
        /// What the agent did.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// The service manager stops the agent (upgrade, shutdown).
    Stop,
    /// The user signs in through the agent's window.
    SignIn {
        /// What the user types.
        credentials: Credentials,
        /// The agent's state once the attempt is over.
        reply: oneshot::Sender<Result<AgentState, String>>,
    },
    /// The UI asks for the current state.
    Status {
        /// The state.
        reply: oneshot::Sender<AgentState>,
    },
}

/// The running agent.
pub struct Agent {
    settings: AgentSettings,
    firewall: Box<dyn Firewall>,
    platform: Arc<dyn AgentPlatform>,
    http: HttpClient,
    clock: SharedClock,
    recorder: Recorder,
    state: AgentState,
    session: Option<(String, DeviceSessionInfo)>,
    /// When the check that last confirmed the session was sent.
    confirmed_at: Option<UnixMillis>,
    next_poll: Option<UnixMillis>,
    suspended: bool,
    status: tokio::sync::watch::Sender<AgentState>,
    lever: Option<(OpenLever, UnixMillis)>,
    /// A captive-portal opening is refused before this time (one opening per period).
    portal_cooldown_until: Option<UnixMillis>,
    override_codes: Option<TotpVerifier>,
}

impl Agent {
    /// An agent using `http` (its own process's network) for the gateway.
    pub fn new(
        settings: AgentSettings,
        firewall: Box<dyn Firewall>,
        platform: Arc<dyn AgentPlatform>,
        http: HttpClient,
        clock: SharedClock,
        recorder: Recorder,
    ) -> Self {
        let override_codes = settings.admin_override.as_ref().and_then(|o| TotpVerifier::new(&o.totp, &o.secret).ok());
        Agent {
            settings,
            firewall,
            platform,
            http,
            clock,
            recorder,
            state: AgentState::Locked,
            session: None,
            confirmed_at: None,
            next_poll: None,
            suspended: false,
            status: tokio::sync::watch::channel(AgentState::Locked).0,
            lever: None,
            portal_cooldown_until: None,
            override_codes,
        }
    }

    /// Runs until the command channel closes or the service manager stops it:
    /// engages the lockdown first, then restores a saved session if the gateway
    /// still confirms it.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<AgentCommand>) {
        self.lock("service started");
        if let Some(token) = self.platform.saved_session() {
            self.restore(token).await;
        }
        loop {
            let (relock_in, poll_in, lever_in, unconfirmed_in) = if self.suspended {
                (None, None, None, None)
            } else {
                let now = self.clock.now();
                (
                    self.relock_delay(),
                    self.next_poll.map(|at| at.since(now)),
                    self.lever.map(|(_, at)| at.since(now)),
                    self.unconfirmed_delay(),
                )
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(AgentCommand::Stop) | None => return,
                    Some(command) => self.handle(command).await,
                },
                _ = sleep_opt(lever_in) => self.close_lever("timeout"),
                _ = sleep_opt(relock_in) => {
                    self.session_ended("session expiring");
                }
                _ = sleep_opt(unconfirmed_in) => self.hold_unconfirmed(),
                _ = sleep_opt(poll_in) => {
                    self.check_session().await;
                    self.next_poll = self.session.as_ref().map(|_| self.clock.now().plus(self.settings.session_poll));
                }
            }
        }
    }

    async fn handle(&mut self, command: AgentCommand) {
        match command {
            AgentCommand::SignIn { credentials, reply } => {
                let result = self.sign_in(credentials).await;
                let _ = reply.send(result);
            }
            AgentCommand::Status { reply } => {
                let _ = reply.send(self.state.clone());
            }
            AgentCommand::Suspend => {
                // The suspend notice is the agent's last chance to act before
                // sleep: a session may be revoked meanwhile and packets still in
                // flight arrive as the device dozes off, so a connected agent
                // locks now and lifts again only once the gateway re-confirms
                // the session on resume.
                if self.state == AgentState::Connected && !self.settings.danger_forget_relock {
                    self.close_lever_silently();
                    self.lock("going to sleep: lockdown engaged until the session is re-confirmed on resume");
                }
                self.suspended = true;
            }
            AgentCommand::Resume => {
                self.suspended = false;
                self.resumed().await;
            }
            AgentCommand::UserSwitched { user } => self.forget_session(&format!("Windows user switched to {user}")),
            AgentCommand::OrgChanged { org } => self.forget_session(&format!("organization changed to {org}")),
            AgentCommand::NetworkChanged => {
                if self.state == AgentState::Connected {
                    self.reconfirm("network changed").await;
                } else if self.lever.is_none() {
                    self.lock("network changed: lockdown re-applied");
                }
            }
            AgentCommand::CaptivePortal { reply } => {
                let _ = reply.send(self.open_captive_portal());
            }
            AgentCommand::AdminOverride { code, reply } => {
                let _ = reply.send(self.admin_override(&code));
            }
            AgentCommand::Stop => {}
        }
    }

    /// A saved session survives a restart only if the gateway confirms it.
    async fn restore(&mut self, token: String) {
        let asked = self.clock.now();
        match self.query_session(&token, self.query_wait()).await {
            Ok(info) => self.connect(token, info, asked, "saved session confirmed by the gateway"),
            Err(SessionQueryError::Refused(e)) => {
                self.platform.save_session(None);
                self.set_state(AgentState::Locked, &format!("saved session refused: {e}"));
            }
            // Unreachable: stay locked; the user can sign in again.
            Err(SessionQueryError::Unreachable(e)) => {
                self.set_state(AgentState::Locked, &format!("saved session not confirmed: {e}"))
            }
        }
    }

    /// Back from sleep: a session that expired meanwhile ends at once; a live one
    /// is re-confirmed with the gateway before anything else.
    async fn resumed(&mut self) {
        let Some((_, info)) = self.session.clone() else {
            if self.lever.is_none() {
                self.lock("resumed from sleep: lockdown re-applied");
            }
            return;
        };
        if self.settings.danger_forget_relock {
            return;
        }
        if info.expires_at.minus(self.settings.relock_margin) <= self.clock.now() {
            self.session_ended("session expired during sleep");
            return;
        }
        self.reconfirm("resumed from sleep").await;
    }

    /// A transition while connected (resume, network change). The gateway may
    /// have revoked the session since the agent last asked, and a transition
    /// grants no grace: the lockdown goes back on first, so nothing passes
    /// while the gateway is asked, and comes off only when it confirms the
    /// session. An open lever ends with it. If the gateway cannot be reached,
    /// the agent stays locked, keeps the session and asks again at every poll.
    async fn reconfirm(&mut self, why: &str) {
        let Some((token, _)) = self.session.clone() else { return };
        self.close_lever_silently();
        if self.state != AgentState::Locked {
            self.lock(&format!("{why}: lockdown held until the gateway re-confirms the session"));
        }
        let asked = self.clock.now();
        match self.query_session(&token, self.query_wait()).await {
            Ok(info) => self.connect(token, info, asked, &format!("{why}: session re-confirmed by the gateway")),
            Err(SessionQueryError::Refused(e)) => self.session_ended(&format!("gateway says: {e}")),
            Err(SessionQueryError::Unreachable(e)) => {
                self.next_poll = Some(self.clock.now().plus(self.settings.session_poll));
                let retry = fmt(self.settings.session_poll);
                self.set_state(
                    AgentState::Locked,
                    &format!("{why}: session not re-confirmed ({e}); asking again every {retry}"),
                );
            }
        }
    }

    /// Drops the session (and the saved one) and re-locks (a user switch, an organization change).
    fn forget_session(&mut self, reason: &str) {
        self.platform.save_session(None);
        self.session_ended(reason);
    }

    fn open_captive_portal(&mut self) -> Result<String, String> {
        let Some((timeout, scope)) = self.settings.captive_portal.clone() else {
            return Err("the captive-portal lever is off".into());
        };
        if self.state == AgentState::Connected {
            return Ok("not needed: connected".into());
        }
        let now = self.clock.now();
        if self.lever.is_some() {
            return Err("a lever is already open".into());
        }
        if let Some(until) = self.portal_cooldown_until.filter(|u| now < *u) {
            return Err(format!("refused: the last opening was less than {} ago (until {until})", fmt(timeout)));
        }
        let mut policy = self.settings.policy.clone();
        policy.exceptions.extend(scope.iter().cloned());
        self.firewall.engage_lockdown(&policy).map_err(|e| e.to_string())?;
        let until = now.plus(timeout);
        self.lever = Some((OpenLever::CaptivePortal, until));
        self.portal_cooldown_until = Some(until.plus(timeout));
        let scope_text: Vec<String> = scope
            .iter()
            .map(|ex| {
                let to: Vec<String> = ex.remote.iter().map(|r| r.to_string()).collect();
                format!("{} -> {}", ex.process, to.join(", "))
            })
            .collect();
        self.recorder.record(EventBody::LeverOpened {
            lever: OpenLever::CaptivePortal.name().into(),
            scope: scope_text,
            until_t: self.recorder.trace_time(until),
        });
        Ok(format!("opened for {}", fmt(timeout)))
    }

    fn admin_override(&mut self, code: &str) -> Result<String, String> {
        let (Some(lever), Some(verifier)) = (self.settings.admin_override.clone(), self.override_codes.as_mut()) else {
            return Err("administrator overrides are off".into());
        };
        let now = self.clock.now();
        if let Err(e) = verifier.verify(code.trim(), now, false) {
            self.recorder.record(EventBody::LeverRefused {
                lever: OpenLever::AdminOverride.name().into(),
                reason: e.to_string(),
            });
            return Err(format!("override code refused: {e}"));
        }
        if self.state != AgentState::Connected {
            self.firewall.lift_lockdown().map_err(|e| e.to_string())?;
        }
        let until = now.plus(lever.duration);
        self.lever = Some((OpenLever::AdminOverride, until));
        self.recorder.record(EventBody::LeverOpened {
            lever: OpenLever::AdminOverride.name().into(),
            scope: vec!["everything".into()],
            until_t: self.recorder.trace_time(until),
        });
        Ok(format!("lockdown lifted for {}", fmt(lever.duration)))
    }

    /// Ends an open lever: the lockdown comes back unless a session is live.
    fn close_lever(&mut self, reason: &str) {
        let Some((lever, _)) = self.lever.take() else { return };
        self.recorder.record(EventBody::LeverClosed { lever: lever.name().into(), reason: reason.to_string() });
        if self.state != AgentState::Connected {
            self.lock(&format!("{} closed ({reason})", lever.name()));
        }
    }

    fn close_lever_silently(&mut self) {
        if let Some((lever, _)) = self.lever.take() {
            self.recorder
                .record(EventBody::LeverClosed { lever: lever.name().into(), reason: "lockdown re-engaged".into() });
        }
    }

    /// The agent's state as its tray UI sees it (updated on every change).
    pub fn status(&self) -> tokio::sync::watch::Receiver<AgentState> {
        self.status.subscribe()
    }

    fn set_state(&mut self, to: AgentState, reason: &str) {
        self.status.send_replace(to.clone());
        {
            self.recorder.record(EventBody::AgentState {
                from: self.state.as_str().to_string(),
                to: to.as_str().to_string(),
                reason: reason.to_string(),
            });
        }
        self.state = to;
    }

    /// Engages the lockdown. If the firewall refuses, the agent stays in
    /// `locked` and says so: it never reports a lockdown it could not apply.
    fn lock(&mut self, reason: &str) {
        match self.firewall.engage_lockdown(&self.settings.policy) {
            Ok(()) => self.set_state(AgentState::Locked, reason),
            Err(e) => self.set_state(AgentState::Locked, &format!("{reason}; lockdown NOT applied: {e}")),
        }
    }

    fn relock_delay(&self) -> Option<Duration> {
        let (_, info) = self.session.as_ref()?;
        if self.settings.danger_forget_relock {
            return None;
        }
        let at = info.expires_at.minus(self.settings.relock_margin);
        Some(at.since(self.clock.now()))
    }

    fn session_ended(&mut self, reason: &str) {
        if self.session.take().is_some() {
            self.platform.save_session(None);
        }
        self.next_poll = None;
        if self.settings.danger_forget_relock {
            return;
        }
        self.close_lever_silently();
        self.lock(reason);
    }

    /// Lifts the lockdown for a session the gateway confirmed in answer to a
    /// check sent at `asked`.
    fn connect(&mut self, token: String, info: DeviceSessionInfo, asked: UnixMillis, reason: &str) {
        if let Err(e) = self.firewall.lift_lockdown() {
            self.set_state(AgentState::Locked, &format!("could not lift the lockdown: {e}"));
            return;
        }
        self.close_lever_silently();
        self.platform.save_session(Some(&token));
        self.session = Some((token, info));
        self.confirmed_at = Some(asked);
        self.next_poll = Some(self.clock.now().plus(self.settings.session_poll));
        self.set_state(AgentState::Connected, reason);
    }

    async fn sign_in(&mut self, credentials: Credentials) -> Result<AgentState, String> {
        if self.state == AgentState::Connected {
            return Ok(AgentState::Connected);
        }
        self.set_state(AgentState::Authenticating, "sign-in window opened");
        let url = format!(
            "{}{LOGIN_PATH}?device={}",
            self.settings.gateway_url.trim_end_matches('/'),
            url::form_urlencoded::byte_serialize(self.settings.device_id.as_bytes()).collect::<String>()
        );
        let result = match Url::parse(&url) {
            Ok(url) => self.platform.sign_in_window(url, credentials).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let token = match result {
            Ok(Landing::Handoff(url)) if url.as_str().starts_with(DEVICE_HANDOFF_URL) => url
                .query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| "hand-off without a token".to_string()),
            Ok(Landing::Handoff(url)) => Err(format!("unexpected hand-off to {url}")),
            Ok(Landing::Page(page)) => Err(format!("sign-in ended on a page (status {})", page.status)),
            Err(e) => Err(e),
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                self.set_state(AgentState::Locked, &format!("sign-in failed: {e}"));
                return Err(e);
            }
        };
        let asked = self.clock.now();
        let confirmed = self.query_session(&token, self.query_wait()).await;
        match confirmed {
            Ok(info) => {
                self.connect(token, info, asked, "device session confirmed by the gateway");
                match self.state {
                    AgentState::Connected => Ok(AgentState::Connected),
                    _ => Err("could not lift the lockdown".into()),
                }
            }
            Err(e) => {
                let e = e.to_string();
                self.set_state(AgentState::Locked, &format!("gateway did not confirm the session: {e}"));
                Err(e)
            }
        }
    }

    /// Asks the gateway about a device session; it must be live and bound
    /// to this device.
    async fn query_session(&self, token: &str, wait: Duration) -> Result<DeviceSessionInfo, SessionQueryError> {
        let url = Url::parse(&format!("{}{DEVICE_SESSION_PATH}", self.settings.gateway_url.trim_end_matches('/')))
            .map_err(|e| SessionQueryError::Unreachable(e.to_string()))?;
        // Bounded: a connection black-holed mid-request (a partition) must
        // not stall the agent, which serves sign-ins and re-locks from the
        // same loop; the stuck connection is dropped with the request.
        let wait = wait.max(Duration::from_millis(1));
        let send = self.http.send(Fetch::get(url).header("authorization", format!("Bearer {token}")));
        let response = tokio::time::timeout(wait, send)
            .await
            .map_err(|_| SessionQueryError::Unreachable(format!("no answer within {}", fmt(wait))))?
            .map_err(|e| SessionQueryError::Unreachable(e.to_string()))?;
        match response.status {
            200 => {}
            401 | 403 => {
                return Err(SessionQueryError::Refused(format!(
                    "status {}: {}",
                    response.status,
                    response.text().trim()
                )));
            }
            other => return Err(SessionQueryError::Unreachable(format!("status {other}"))),
        }
        let info: DeviceSessionInfo =
            serde_json::from_slice(&response.body).map_err(|e| SessionQueryError::Unreachable(e.to_string()))?;
        if info.device != self.settings.device_id {
            return Err(SessionQueryError::Refused(format!(
                "session is bound to device `{}`, not this one",
                info.device
            )));
        }
        Ok(info)
    }

    async fn check_session(&mut self) {
        let Some((token, _)) = self.session.clone() else { return };
        let asked = self.clock.now();
        // An answer that comes after the confirmation deadline comes too late.
        let wait = self.unconfirmed_delay().map_or(self.query_wait(), |d| d.min(self.query_wait()));
        let confirmed = self.query_session(&token, wait).await;
        match confirmed {
            // Held locked after a transition or a silence: the lockdown comes off now.
            Ok(info) if self.state != AgentState::Connected => {
                self.connect(token, info, asked, "session re-confirmed by the gateway")
            }
            Ok(info) => {
                // The gateway is the authority on expiry; follow it.
                if let Some((_, current)) = self.session.as_mut() {
                    current.expires_at = info.expires_at;
                }
                self.confirmed_at = Some(asked);
            }
            Err(SessionQueryError::Refused(e)) => self.session_ended(&format!("gateway says: {e}")),
            // Unreachable gateway: keep the session; past the confirmation
            // deadline the lockdown goes back on (the relock timer still fires).
            Err(SessionQueryError::Unreachable(_)) => {
                if self.unconfirmed_delay().is_some_and(|d| d.is_zero()) {
                    self.hold_unconfirmed();
                }
            }
        }
    }

    /// How long a session check may wait for the gateway's answer.
    fn query_wait(&self) -> Duration {
        self.settings.session_poll.max(Duration::from_secs(1))
    }

    /// How long until the lockdown must go back on for want of a confirmation
    /// (while connected, unless that check is off).
    fn unconfirmed_delay(&self) -> Option<Duration> {
        if self.state != AgentState::Connected
            || self.settings.confirm_within.is_zero()
            || self.settings.danger_forget_relock
        {
            return None;
        }
        let at = self.confirmed_at?.plus(self.settings.confirm_within);
        Some(at.since(self.clock.now()))
    }

    /// The gateway has not confirmed the session within `confirm_within` (a
    /// partition, a blocked gateway, a gateway down): a revocation may be
    /// going unheard, so the lockdown goes back on. The session is kept and
    /// the agent keeps asking; the first confirmation lifts the lockdown.
    fn hold_unconfirmed(&mut self) {
        self.close_lever_silently();
        let within = fmt(self.settings.confirm_within);
        self.lock(&format!("the gateway has not confirmed the session for {within}: lockdown held until it does"));
    }

    /// The current state.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// When the current session expires, if connected.
    pub fn session_expiry(&self) -> Option<UnixMillis> {
        self.session.as_ref().map(|(_, i)| i.expires_at)
    }
}

/// Why the gateway did not confirm a device session.
#[derive(Debug, thiserror::Error)]
enum SessionQueryError {
    /// The gateway says the session is not live, or it is another device's.
    #[error("{0}")]
    Refused(String),
    /// The gateway could not be asked.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(millis(d))).to_string()
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
