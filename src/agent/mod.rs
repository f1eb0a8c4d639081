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

pub mod firewall;
pub mod wfp_backend;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use url::Url;

use self::firewall::{Firewall, LockdownPolicy};
use crate::http::{Credentials, Fetch, FetchError, HttpClient, Landing};
use crate::net::{BoxFuture, SharedClock, UnixMillis};
use crate::protocol::{DEVICE_HANDOFF_URL, DEVICE_SESSION_PATH, DeviceSessionInfo, LOGIN_PATH};
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
    /// The lockdown.
    pub policy: LockdownPolicy,
    /// Deliberately broken: never re-engage the lockdown once connected.
    pub danger_forget_relock: bool,
}

/// What the platform provides the agent beyond its firewall.
pub trait AgentPlatform: Send + Sync + 'static {
    /// Opens the sign-in window at `url` (a separate process) and lets the
    /// user sign in with `credentials`; returns where the window ended.
    fn sign_in_window(&self, url: Url, credentials: Credentials) -> BoxFuture<'static, Result<Landing, FetchError>>;
}

/// A request from the agent's user interface.
#[derive(Debug)]
pub enum AgentCommand {
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
    next_poll: Option<UnixMillis>,
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
        Agent {
            settings,
            firewall,
            platform,
            http,
            clock,
            recorder,
            state: AgentState::Locked,
            session: None,
            next_poll: None,
        }
    }

    /// Runs until the command channel closes: engages the lockdown first.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<AgentCommand>) {
        self.lock("service started");
        loop {
            let relock_in = self.relock_delay();
            let poll_in = self.next_poll.map(|at| at.since(self.clock.now()));
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(AgentCommand::SignIn { credentials, reply }) => {
                        let result = self.sign_in(credentials).await;
                        let _ = reply.send(result);
                    }
                    Some(AgentCommand::Status { reply }) => {
                        let _ = reply.send(self.state.clone());
                    }
                    None => return,
                },
                _ = sleep_opt(relock_in) => {
                    self.session_ended("session expiring");
                }
                _ = sleep_opt(poll_in) => {
                    self.check_session().await;
                    self.next_poll = self.session.as_ref().map(|_| self.clock.now().plus(self.settings.session_poll));
                }
            }
        }
    }

    fn set_state(&mut self, to: AgentState, reason: &str) {
        if self.state != to || to == AgentState::Locked {
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
        self.session = None;
        self.next_poll = None;
        if self.settings.danger_forget_relock {
            return;
        }
        self.lock(reason);
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
        let confirmed = self.query_session(&token).await;
        match confirmed {
            Ok(info) => {
                if let Err(e) = self.firewall.lift_lockdown() {
                    let reason = format!("could not lift the lockdown: {e}");
                    self.set_state(AgentState::Locked, &reason);
                    return Err(reason);
                }
                self.session = Some((token, info));
                self.next_poll = Some(self.clock.now().plus(self.settings.session_poll));
                self.set_state(AgentState::Connected, "device session confirmed by the gateway");
                Ok(AgentState::Connected)
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
    async fn query_session(&self, token: &str) -> Result<DeviceSessionInfo, SessionQueryError> {
        let url = Url::parse(&format!("{}{DEVICE_SESSION_PATH}", self.settings.gateway_url.trim_end_matches('/')))
            .map_err(|e| SessionQueryError::Unreachable(e.to_string()))?;
        let response = self
            .http
            .send(Fetch::get(url).header("authorization", format!("Bearer {token}")))
            .await
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
        let confirmed = self.query_session(&token).await;
        match confirmed {
            Ok(info) => {
                // The gateway is the authority on expiry; follow it.
                if let Some((_, current)) = self.session.as_mut() {
                    current.expires_at = info.expires_at;
                }
            }
            Err(SessionQueryError::Refused(e)) => self.session_ended(&format!("gateway says: {e}")),
            // Unreachable gateway: keep the session until it expires
            // (the relock timer still fires).
            Err(SessionQueryError::Unreachable(_)) => {}
        }
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

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
