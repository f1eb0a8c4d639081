//! Scenario files: a lab, a seed and a timeline of steps with expected
//! outcomes. See `scenarios/README.md` for the format.

mod outcome;
mod parse;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use url::Url;

pub use self::outcome::{Expectation, Outcome};
use crate::authenticator::AuthenticatorProfile;
use crate::config::{LabConfig, Resolved};
use crate::http::Credentials;
use crate::input::{InputError, Source, read_source};
use crate::policy::FactorKind;

/// The scenarios shipped in the binary (the same files as `scenarios/`).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("boot-to-login", include_str!("../../scenarios/boot-to-login.toml")),
    ("expired-session", include_str!("../../scenarios/expired-session.toml")),
    ("revoked-session", include_str!("../../scenarios/revoked-session.toml")),
    ("hijacked-sso-session", include_str!("../../scenarios/hijacked-sso-session.toml")),
    ("hijacked-sso-session-no-mfa", include_str!("../../scenarios/hijacked-sso-session-no-mfa.toml")),
    ("compromised-idp", include_str!("../../scenarios/compromised-idp.toml")),
    ("mfa-downgrade", include_str!("../../scenarios/mfa-downgrade.toml")),
    ("totp-replay", include_str!("../../scenarios/totp-replay.toml")),
    ("cloned-security-key", include_str!("../../scenarios/cloned-security-key.toml")),
    ("aitm-phishing-proxy", include_str!("../../scenarios/aitm-phishing-proxy.toml")),
    ("contractor-requires-security-key", include_str!("../../scenarios/contractor-requires-security-key.toml")),
    ("first-enrollment-race", include_str!("../../scenarios/first-enrollment-race.toml")),
    ("first-enrollment-gated", include_str!("../../scenarios/first-enrollment-gated.toml")),
    ("mfa-session-expiry", include_str!("../../scenarios/mfa-session-expiry.toml")),
    ("aaguid-allow-list", include_str!("../../scenarios/aaguid-allow-list.toml")),
    ("totp-clock-skew", include_str!("../../scenarios/totp-clock-skew.toml")),
    ("agent-crash", include_str!("../../scenarios/agent-crash.toml")),
    ("agent-upgrade", include_str!("../../scenarios/agent-upgrade.toml")),
    ("bfe-restart", include_str!("../../scenarios/bfe-restart.toml")),
    ("reboot-race", include_str!("../../scenarios/reboot-race.toml")),
    ("reboot-race-static-filters", include_str!("../../scenarios/reboot-race-static-filters.toml")),
    ("dynamic-session-fail-open", include_str!("../../scenarios/dynamic-session-fail-open.toml")),
    ("dns-leak-existing-socket", include_str!("../../scenarios/dns-leak-existing-socket.toml")),
    ("ipv6-parity", include_str!("../../scenarios/ipv6-parity.toml")),
    ("ipv6-parity-broken", include_str!("../../scenarios/ipv6-parity-broken.toml")),
    ("loopback-ui-channel", include_str!("../../scenarios/loopback-ui-channel.toml")),
    ("captive-portal-spoof", include_str!("../../scenarios/captive-portal-spoof.toml")),
    ("rfc1918-setting", include_str!("../../scenarios/rfc1918-setting.toml")),
    ("co-resident-app-leak", include_str!("../../scenarios/co-resident-app-leak.toml")),
    ("multi-user-switch", include_str!("../../scenarios/multi-user-switch.toml")),
    ("sleep-resume", include_str!("../../scenarios/sleep-resume.toml")),
    ("transition-after-revocation", include_str!("../../scenarios/transition-after-revocation.toml")),
    ("revocation-behind-partition", include_str!("../../scenarios/revocation-behind-partition.toml")),
    (
        "revocation-behind-partition-fail-open",
        include_str!("../../scenarios/revocation-behind-partition-fail-open.toml"),
    ),
    ("admin-override", include_str!("../../scenarios/admin-override.toml")),
    ("jwks-rotation", include_str!("../../scenarios/jwks-rotation.toml")),
    ("forged-token-alg-none", include_str!("../../scenarios/forged-token-alg-none.toml")),
    ("forged-token-key-confusion", include_str!("../../scenarios/forged-token-key-confusion.toml")),
    ("forged-token-unpublished-key", include_str!("../../scenarios/forged-token-unpublished-key.toml")),
    ("idp-profile-entra", include_str!("../../scenarios/idp-profile-entra.toml")),
    ("idp-outage", include_str!("../../scenarios/idp-outage.toml")),
    ("app-token-session-end", include_str!("../../scenarios/app-token-session-end.toml")),
    ("app-token-session-end-broken", include_str!("../../scenarios/app-token-session-end-broken.toml")),
    ("slow-link-expired-id-token", include_str!("../../scenarios/slow-link-expired-id-token.toml")),
    ("slow-idp-leeway-zero", include_str!("../../scenarios/slow-idp-leeway-zero.toml")),
];

/// Prefix naming an embedded scenario on the command line.
pub const EMBEDDED_PREFIX: &str = "embedded:";

/// A parsed, validated scenario with its lab.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The file it came from, as named by the user.
    pub file: String,
    /// Its seed (`--seed` overrides it).
    pub seed: u64,
    /// The lab it runs in, with its overrides applied.
    pub lab: LabConfig,
    /// The lab, resolved.
    pub resolved: Resolved,
    /// Invariant violations the scenario expects (a scenario that shows a
    /// known-bad configuration); empty means none may occur.
    pub expect_violations: Vec<String>,
    /// Virtual FIDO2 authenticators the scenario hands out, by name.
    pub authenticators: Vec<(String, AuthenticatorProfile)>,
    /// Authenticator apps (TOTP), by name, with their clock skew in ms.
    pub totp_apps: Vec<(String, i64)>,
    /// The timeline.
    pub steps: Vec<Step>,
}

/// How a step uses second factors.
#[derive(Clone, Debug, Default)]
pub struct MfaUse {
    /// The authenticator or TOTP app the user answers with (or enrols).
    pub factor: Option<String>,
    /// The factor used to verify before adding another (defaults to `factor`).
    pub verify_with: Option<String>,
    /// The look-alike origin the victim's browser shows (a relaying proxy).
    pub relay_origin: Option<String>,
    /// A browser that does not check the RP id against its origin.
    pub naive_client: bool,
    /// Type the code the TOTP app showed last instead of a fresh one.
    pub replay_last_code: bool,
}

/// One step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Line of the step in its file.
    pub line: usize,
    /// Run no earlier than this simulated time.
    pub at: Option<Duration>,
    /// What to do.
    pub action: Action,
    /// What should come of it.
    pub expect: Option<Expectation>,
}

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// An application on the device.
    Device(String),
    /// The attacker's host.
    Attacker,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Power the device on.
    Boot,
    /// The user signs in through the agent.
    SignIn {
        /// Credentials typed.
        credentials: Credentials,
    },
    /// An HTTP request.
    Request {
        /// Who.
        client: Client,
        /// What.
        url: Url,
        /// As a script (`X-Requested-With: XMLHttpRequest`).
        xhr: bool,
        /// Follow redirects.
        follow: bool,
        /// Sign in with these when a login form appears.
        login: Option<Credentials>,
        /// Replay the cookies stolen from this device application.
        stolen_from: Option<String>,
        /// Second factors.
        mfa: MfaUse,
        /// Start from a fresh browser profile.
        fresh_profile: bool,
    },
    /// Enrol a second factor through the App Launcher.
    Enroll {
        /// Who.
        client: Client,
        /// Factor type.
        kind: FactorKind,
        /// Sign in with these when a login form appears.
        login: Option<Credentials>,
        /// Replay the cookies stolen from this device application.
        stolen_from: Option<String>,
        /// The factor to enrol (`factor`) and to verify with (`verify_with`).
        mfa: MfaUse,
    },
    /// An attacker clones a hardware authenticator (extracts its keys).
    CloneAuthenticator {
        /// The authenticator.
        from: String,
        /// Name of the clone.
        to: String,
    },
    /// An administrator issues a one-time enrollment code to a user.
    IssueEnrollmentCode {
        /// The user.
        user: String,
    },
    /// A device application opens a long-lived stream.
    StreamOpen {
        /// The application.
        process: String,
        /// Destination.
        to: SocketAddr,
        /// Its name.
        stream: String,
    },
    /// A line on an open stream.
    StreamSend {
        /// The application.
        process: String,
        /// Stream name.
        stream: String,
        /// Line to send.
        line: String,
    },
    /// Let simulated time pass.
    Advance {
        /// How long.
        by: Duration,
    },
    /// An administrator revokes a user's sessions at the gateway.
    Revoke {
        /// The user.
        user: String,
    },
    /// Read the agent's state.
    CheckAgent,
    /// Kill every process of this name on the device (`TerminateProcess`).
    Kill {
        /// Lab name of the process (the agent's own included).
        process: String,
    },
    /// Restart the device.
    Reboot,
    /// Start a program of the device.
    Start {
        /// Lab name of the program.
        process: String,
    },
    /// Something happens to the device (BFE, upgrade, sleep, network, user, levers).
    Os(crate::device::OsEvent),
    /// Administrator override with the code the console shows now.
    AdminOverrideNow,
    /// The agent's tray UI asks its service for its state over loopback.
    UiStatus {
        /// The UI's lab process name.
        process: String,
    },
    /// Something happens to the identity provider (rotation, removal,
    /// outage, delay, forged tokens).
    Idp(crate::idp::IdpCommand),
    /// The attacker hands the gateway's ID-token check `count` tokens, each
    /// under a different unknown `kid`.
    KidFlood {
        /// How many.
        count: usize,
    },
    /// Cut the network link between two hosts, both ways (a partition).
    Partition {
        /// One side: name and address.
        host: (String, std::net::IpAddr),
        /// The other side.
        peer: (String, std::net::IpAddr),
    },
    /// Restore every link cut by `partition`.
    Heal,
    /// Crash a server host and start its software afresh (it loses what it
    /// held in memory: the gateway its sessions, the IdP its SSO sessions).
    RestartHost {
        /// Name and address.
        host: (String, std::net::IpAddr),
    },
    /// Count the trace events of one type (and reason prefix) recorded
    /// since the previous `count_events` step for that type.
    CountEvents {
        /// Event type (the trace's `event` tag).
        event: String,
        /// Only events whose `reason` starts with this.
        reason: Option<String>,
    },
}

impl Action {
    /// A one-line description, for traces and reports.
    pub fn describe(&self) -> String {
        match self {
            Action::Boot => "boot the device".into(),
            Action::SignIn { credentials } => format!("{} signs in", credentials.username),
            Action::Enroll { client, kind, mfa, .. } => {
                let who = match client {
                    Client::Device(p) => p.clone(),
                    Client::Attacker => "attacker".into(),
                };
                format!("{who} enrols {} as {kind}", mfa.factor.as_deref().unwrap_or("?"))
            }
            Action::CloneAuthenticator { from, to } => format!("attacker clones {from} into {to}"),
            Action::IssueEnrollmentCode { user } => format!("administrator issues an enrollment code to {user}"),
            Action::Request { client, url, xhr, stolen_from, login, mfa, .. } => {
                let who = match client {
                    Client::Device(p) => p.clone(),
                    Client::Attacker => "attacker".into(),
                };
                let mut s = format!("{who} requests {url}");
                if *xhr {
                    s.push_str(" (xhr)");
                }
                if let Some(c) = login {
                    s.push_str(&format!(" signing in as {}", c.username));
                }
                if let Some(from) = stolen_from {
                    s.push_str(&format!(" with cookies stolen from {from}"));
                }
                if let Some(f) = &mfa.factor {
                    s.push_str(&format!(", second factor {f}"));
                }
                if let Some(o) = &mfa.relay_origin {
                    s.push_str(&format!(" relayed through {o}"));
                }
                s
            }
            Action::StreamOpen { process, to, stream } => format!("{process} opens stream {stream} to {to}"),
            Action::StreamSend { process, stream, .. } => format!("{process} sends on stream {stream}"),
            Action::Advance { by } => format!("advance {}", humantime::format_duration(*by)),
            Action::Revoke { user } => format!("administrator revokes {user}'s sessions"),
            Action::CheckAgent => "check the agent's state".into(),
            Action::Kill { process } => format!("kill {process}"),
            Action::Reboot => "reboot the device".into(),
            Action::Start { process } => format!("start {process}"),
            Action::Os(event) => {
                use crate::device::OsEvent::*;
                match event {
                    StopBfe => "stop BFE".into(),
                    StartBfe => "start BFE".into(),
                    UpgradeAgent => "upgrade the agent".into(),
                    Sleep => "the device sleeps".into(),
                    Resume => "the device resumes".into(),
                    NetworkChange => "the network changes (new interface)".into(),
                    SwitchUser(u) => format!("Windows user switches to {u}"),
                    ChangeOrg(o) => format!("the device moves to organization {o}"),
                    CaptivePortal => "the network presents a captive portal".into(),
                    AdminOverride(code) => format!("the user types override code {code}"),
                }
            }
            Action::AdminOverrideNow => "the user types the administrator's current override code".into(),
            Action::UiStatus { process } => format!("{process} asks the agent for its state over loopback"),
            Action::Idp(command) => {
                use crate::idp::IdpCommand::*;
                match command {
                    RotateKeys => "the IdP rotates its signing key".into(),
                    RemoveKey => "the IdP removes its signing key from the JWKS (emergency)".into(),
                    Outage(d) => format!("the IdP is unavailable for {}", humantime::format_duration(*d)),
                    Delay(d) => format!("the IdP delays every response by {}", humantime::format_duration(*d)),
                    Forge(Some(f)) => format!("the token endpoint returns forged ID tokens ({})", f.as_str()),
                    Forge(None) => "the token endpoint returns genuine ID tokens".into(),
                }
            }
            Action::Partition { host, peer } => format!("the network between {} and {} is cut", host.0, peer.0),
            Action::Heal => "every cut network link is restored".into(),
            Action::RestartHost { host } => format!("{} crashes and restarts", host.0),
            Action::KidFlood { count } => format!("attacker presents {count} ID tokens with unknown kids"),
            Action::CountEvents { event, reason } => match reason {
                Some(r) => format!("count `{event}` events ({r}) since the last count of them"),
                None => format!("count `{event}` events since the last count of them"),
            },
        }
    }
}

impl Scenario {
    /// Reads and validates the scenario at `path` (a file, or
    /// `embedded:NAME`). Files are limited to
    /// [`MAX_INPUT_BYTES`](crate::input::MAX_INPUT_BYTES) and must be UTF-8.
    pub fn load(path: &str) -> Result<Scenario, InputError> {
        let source = match path.strip_prefix(EMBEDDED_PREFIX) {
            Some(name) => {
                let text = EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| InputError {
                    file: path.to_string(),
                    position: None,
                    message: format!(
                        "no embedded scenario `{name}` (there are: {})",
                        EMBEDDED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                })?;
                Source::new(path, text)
            }
            None => read_source(Path::new(path), path).map_err(|e| e.into_input_error(path))?,
        };
        let dir = Path::new(path).parent().map(Path::to_path_buf);
        parse::parse(&source, dir.as_deref())
    }

    /// Parses scenario text (`name` is used in error messages; a relative
    /// `lab` path resolves against `dir`).
    pub fn parse(source: &Source, dir: Option<&Path>) -> Result<Scenario, InputError> {
        parse::parse(source, dir)
    }
}
