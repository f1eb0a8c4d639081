//! Parsing and validating scenario files, every error located.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::{Action, Client, Expectation, MfaUse, Scenario, Step};
use crate::authenticator::AuthenticatorProfile;
use crate::config::{AGENT_PROCESS, AUTH_PROCESS, DEFAULT_LAB_NAME, LabConfig, Resolved};
use crate::device::OsEvent;
use crate::http::Credentials;
use crate::idp::IdpCommand;
use crate::idp::forge::Forgery;
use crate::input::{InputError, ReadError, Source, line_col, read_source};
use crate::policy::FactorKind;

/// Invariants a scenario may declare it expects to see violated.
pub const KNOWN_INVARIANTS: &[&str] = &["E1", "E2", "E3", "E4", "E5", "E7"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    lab: Option<Spanned<String>>,
    seed: u64,
    config: Option<toml::Table>,
    #[serde(default)]
    expect_violations: Vec<Spanned<String>>,
    #[serde(default, rename = "authenticator")]
    authenticators: Vec<Spanned<toml::Table>>,
    #[serde(default, rename = "totp_app")]
    totp_apps: Vec<Spanned<RawTotpApp>>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTotpApp {
    name: String,
    /// How far the app's clock is off, in seconds (negative: slow).
    #[serde(default)]
    clock_skew_s: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "do")]
    action: Spanned<String>,
    at: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    #[allow(dead_code)]
    note: Option<String>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    process: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    xhr: Option<Spanned<bool>>,
    follow: Option<Spanned<bool>>,
    login_as: Option<Spanned<String>>,
    cookies_from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    line: Option<Spanned<String>>,
    by: Option<Spanned<String>>,
    factor: Option<Spanned<String>>,
    verify_with: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    relay_origin: Option<Spanned<String>>,
    naive_client: Option<Spanned<bool>>,
    replay_last_code: Option<Spanned<bool>>,
    authenticator: Option<Spanned<String>>,
    fresh_profile: Option<Spanned<bool>>,
    org: Option<Spanned<String>>,
    code: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    forge: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    event: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
}

impl RawStep {
    /// The action-specific fields that are present, with their spans.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        let mut add = |name: &'static str, span: Option<Range<usize>>| {
            if let Some(s) = span {
                v.push((name, s));
            }
        };
        add("user", self.user.as_ref().map(Spanned::span));
        add("password", self.password.as_ref().map(Spanned::span));
        add("process", self.process.as_ref().map(Spanned::span));
        add("from", self.from.as_ref().map(Spanned::span));
        add("url", self.url.as_ref().map(Spanned::span));
        add("xhr", self.xhr.as_ref().map(Spanned::span));
        add("follow", self.follow.as_ref().map(Spanned::span));
        add("login_as", self.login_as.as_ref().map(Spanned::span));
        add("cookies_from", self.cookies_from.as_ref().map(Spanned::span));
        add("to", self.to.as_ref().map(Spanned::span));
        add("stream", self.stream.as_ref().map(Spanned::span));
        add("line", self.line.as_ref().map(Spanned::span));
        add("by", self.by.as_ref().map(Spanned::span));
        add("factor", self.factor.as_ref().map(Spanned::span));
        add("verify_with", self.verify_with.as_ref().map(Spanned::span));
        add("kind", self.kind.as_ref().map(Spanned::span));
        add("relay_origin", self.relay_origin.as_ref().map(Spanned::span));
        add("naive_client", self.naive_client.as_ref().map(Spanned::span));
        add("replay_last_code", self.replay_last_code.as_ref().map(Spanned::span));
        add("authenticator", self.authenticator.as_ref().map(Spanned::span));
        add("fresh_profile", self.fresh_profile.as_ref().map(Spanned::span));
        add("org", self.org.as_ref().map(Spanned::span));
        add("code", self.code.as_ref().map(Spanned::span));
        add("duration", self.duration.as_ref().map(Spanned::span));
        add("forge", self.forge.as_ref().map(Spanned::span));
        add("count", self.count.as_ref().map(Spanned::span));
        add("event", self.event.as_ref().map(Spanned::span));
        add("reason", self.reason.as_ref().map(Spanned::span));
        add("host", self.host.as_ref().map(Spanned::span));
        add("peer", self.peer.as_ref().map(Spanned::span));
        v
    }
}

const ACTIONS: &[(&str, &[&str])] = &[
    ("boot", &[]),
    ("sign_in", &["user", "password"]),
    (
        "request",
        &[
            "process",
            "from",
            "url",
            "xhr",
            "follow",
            "login_as",
            "cookies_from",
            "password",
            "factor",
            "verify_with",
            "relay_origin",
            "naive_client",
            "replay_last_code",
            "fresh_profile",
        ],
    ),
    ("enroll", &["process", "from", "kind", "login_as", "factor", "verify_with", "cookies_from"]),
    ("clone_authenticator", &["authenticator", "to"]),
    ("issue_enrollment_code", &["user"]),
    ("stream_open", &["process", "to", "stream"]),
    ("stream_send", &["process", "stream", "line"]),
    ("advance", &["by"]),
    ("revoke", &["user"]),
    ("check_agent", &[]),
    ("kill", &["process"]),
    ("reboot", &[]),
    ("start", &["process"]),
    ("stop_bfe", &[]),
    ("start_bfe", &[]),
    ("upgrade_agent", &[]),
    ("sleep", &[]),
    ("resume", &[]),
    ("network_change", &[]),
    ("switch_user", &["user"]),
    ("change_org", &["org"]),
    ("captive_portal", &[]),
    ("admin_override", &["code"]),
    ("ui_status", &["process"]),
    ("idp_rotate_keys", &[]),
    ("idp_remove_key", &[]),
    ("idp_outage", &["duration"]),
    ("idp_delay", &["by"]),
    ("idp_forge", &["forge"]),
    ("kid_flood", &["from", "count"]),
    ("count_events", &["event", "reason"]),
    ("partition", &["host", "peer"]),
    ("heal", &[]),
    ("restart_host", &["host"]),
];

/// Events `count_events` can count.
pub const COUNTABLE_EVENTS: &[&str] = &[
    "jwks_fetched",
    "token_accepted",
    "token_rejected",
    "idp_keys_published",
    "idp_token_issued",
    "idp_rejected",
    "gateway_login_rejected",
    "session_issued",
];

/// Largest `count` of a `kid_flood`.
const MAX_FLOOD: i64 = 10_000;

/// The lab process name of the agent's tray UI (the default for `ui_status`).
pub const UI_PROCESS: &str = "lockstep-ui";

struct Ctx<'a> {
    source: &'a Source,
    lab: &'a LabConfig,
    resolved: &'a Resolved,
    /// Names of the scenario's authenticators and TOTP apps.
    factors: Vec<String>,
}

impl Ctx<'_> {
    /// A program of the device, by lab name.
    fn program(&self, p: &Spanned<String>) -> Result<String, InputError> {
        if !self.resolved.processes.contains_key(p.get_ref()) {
            let all: Vec<&str> = self.resolved.processes.keys().map(String::as_str).collect();
            return Err(self.err(
                p.span(),
                format!("`{}` is not a program of the device (there are: {})", p.get_ref(), all.join(", ")),
            ));
        }
        Ok(p.get_ref().clone())
    }

    /// A host of the lab, by name, with its address.
    fn lab_host(&self, h: &Spanned<String>) -> Result<(String, std::net::IpAddr), InputError> {
        match self.resolved.hosts.get(h.get_ref()) {
            Some(ip) => Ok((h.get_ref().clone(), *ip)),
            None => {
                let all: Vec<&str> = self.resolved.hosts.keys().map(String::as_str).collect();
                Err(self.err(
                    h.span(),
                    format!("`{}` is not a host of the lab (there are: {})", h.get_ref(), all.join(", ")),
                ))
            }
        }
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> InputError {
        self.source.error(Some(span), message)
    }

    fn duration(&self, s: &Spanned<String>) -> Result<Duration, InputError> {
        humantime::parse_duration(s.get_ref()).map_err(|e| {
            self.err(s.span(), format!("`{}` is not a duration (e.g. `90s`, `10m`, `1h30m`): {e}", s.get_ref()))
        })
    }

    fn credentials(
        &self,
        user: &Spanned<String>,
        password: Option<&Spanned<String>>,
    ) -> Result<Credentials, InputError> {
        let password = match password {
            Some(p) => p.get_ref().clone(),
            None => self
                .lab
                .idp
                .users
                .iter()
                .find(|u| &u.username == user.get_ref())
                .map(|u| u.password.clone())
                .ok_or_else(|| {
                    self.err(
                        user.span(),
                        format!(
                            "`{}` is not a user of the lab's identity provider (give `password` to try anyway)",
                            user.get_ref()
                        ),
                    )
                })?,
        };
        Ok(Credentials { username: user.get_ref().clone(), password })
    }

    fn factor(&self, f: &Spanned<String>) -> Result<String, InputError> {
        if self.factors.contains(f.get_ref()) {
            return Ok(f.get_ref().clone());
        }
        Err(self.err(
            f.span(),
            format!(
                "`{}` is not an [[authenticator]] or [[totp_app]] of this scenario (there are: {})",
                f.get_ref(),
                self.factors.join(", ")
            ),
        ))
    }

    fn client(&self, s: &RawStep) -> Result<Client, InputError> {
        match (&s.process, &s.from) {
            (Some(p), None) => Ok(Client::Device(self.app(p)?)),
            (None, Some(f)) if f.get_ref() == "attacker" => Ok(Client::Attacker),
            (None, Some(f)) => Err(self.err(f.span(), "`from` can only be `attacker`")),
            (Some(_), Some(f)) => Err(self.err(f.span(), "give either `process` or `from`, not both")),
            (None, None) => Err(self.err(
                s.action.span(),
                format!("`{}` needs `process` (a device application) or `from = \"attacker\"`", s.action.get_ref()),
            )),
        }
    }

    fn mfa_use(&self, s: &RawStep) -> Result<MfaUse, InputError> {
        let relay_origin = match &s.relay_origin {
            Some(o) => {
                let url = Url::parse(o.get_ref()).map_err(|e| self.err(o.span(), format!("not an origin: {e}")))?;
                Some(url.origin().ascii_serialization())
            }
            None => None,
        };
        Ok(MfaUse {
            factor: s.factor.as_ref().map(|f| self.factor(f)).transpose()?,
            verify_with: s.verify_with.as_ref().map(|f| self.factor(f)).transpose()?,
            relay_origin,
            naive_client: s.naive_client.as_ref().is_some_and(|x| *x.get_ref()),
            replay_last_code: s.replay_last_code.as_ref().is_some_and(|x| *x.get_ref()),
        })
    }

    fn stolen_from(&self, s: &RawStep, client: &Client) -> Result<Option<String>, InputError> {
        match &s.cookies_from {
            Some(c) if *client == Client::Attacker => Ok(Some(self.app(c)?)),
            Some(c) => Err(self.err(c.span(), "`cookies_from` is for `from = \"attacker\"`")),
            None => Ok(None),
        }
    }

    fn app(&self, p: &Spanned<String>) -> Result<String, InputError> {
        let name = p.get_ref();
        if name != AGENT_PROCESS && name != AUTH_PROCESS && self.resolved.processes.contains_key(name) {
            return Ok(name.clone());
        }
        let apps: Vec<&str> = self.lab.device.processes.iter().map(|p| p.name.as_str()).collect();
        Err(self
            .err(p.span(), format!("`{name}` is not an application of the device (there are: {})", apps.join(", "))))
    }
}

fn required<'s, T>(
    field: &'s Option<Spanned<T>>,
    name: &str,
    action: &Spanned<String>,
    ctx: &Ctx<'_>,
) -> Result<&'s Spanned<T>, InputError> {
    field.as_ref().ok_or_else(|| ctx.err(action.span(), format!("`{}` needs `{name}`", action.get_ref())))
}

pub(super) fn parse(source: &Source, dir: Option<&Path>) -> Result<Scenario, InputError> {
    let raw: RawScenario = toml::from_str(&source.text).map_err(|e| source.toml_error(&e))?;
    if raw.name.get_ref().trim().is_empty() {
        return Err(source.error(
            Some(raw.name.span()),
            "the scenario's `name` is empty: name it (reports and trace files are named after it)",
        ));
    }

    let base = match &raw.lab {
        None => LabConfig::default_source(),
        Some(l) if l.get_ref() == DEFAULT_LAB_NAME => LabConfig::default_source(),
        Some(l) => {
            let path = match dir {
                Some(d) => d.join(l.get_ref()),
                None => Path::new(l.get_ref()).to_path_buf(),
            };
            match read_source(&path, &path.display().to_string()) {
                Ok(lab) => lab,
                Err(ReadError::Io(e)) => {
                    return Err(source.error(Some(l.span()), format!("cannot read lab `{}`: {e}", path.display())));
                }
                Err(ReadError::Invalid(e)) => return Err(e),
            }
        }
    };
    let (lab, resolved) = match &raw.config {
        Some(overrides) => LabConfig::with_overrides(&base, overrides, source)?,
        None => LabConfig::parse(&base)?,
    };
    let mut authenticators = Vec::new();
    let mut totp_apps = Vec::new();
    let mut factors: Vec<String> = Vec::new();
    for a in &raw.authenticators {
        let mut table = a.get_ref().clone();
        let name = match table.remove("name") {
            Some(toml::Value::String(n)) => n,
            _ => return Err(source.error(Some(a.span()), "an [[authenticator]] needs a `name`")),
        };
        let profile: AuthenticatorProfile = toml::Value::Table(table)
            .try_into()
            .map_err(|e| source.error(Some(a.span()), format!("authenticator `{name}`: {e}")))?;
        profile.validate().map_err(|e| source.error(Some(a.span()), format!("authenticator `{name}`: {e}")))?;
        if factors.contains(&name) {
            return Err(source.error(Some(a.span()), format!("`{name}` is declared twice")));
        }
        factors.push(name.clone());
        authenticators.push((name, profile));
    }
    for t in &raw.totp_apps {
        let app = t.get_ref();
        if factors.contains(&app.name) {
            return Err(source.error(Some(t.span()), format!("`{}` is declared twice", app.name)));
        }
        factors.push(app.name.clone());
        totp_apps.push((app.name.clone(), app.clock_skew_s.saturating_mul(1000)));
    }
    // Clones made by steps can be named by later steps.
    for step in &raw.steps {
        let step = step.get_ref();
        if step.action.get_ref() == "clone_authenticator"
            && let Some(to) = &step.to
        {
            if factors.contains(to.get_ref()) {
                return Err(source.error(Some(to.span()), format!("`{}` is already an authenticator", to.get_ref())));
            }
            factors.push(to.get_ref().clone());
        }
    }
    let ctx = Ctx { source, lab: &lab, resolved: &resolved, factors };

    let mut expect_violations = Vec::new();
    for v in &raw.expect_violations {
        if !KNOWN_INVARIANTS.contains(&v.get_ref().as_str()) {
            return Err(ctx.err(
                v.span(),
                format!("unknown invariant `{}` (known: {})", v.get_ref(), KNOWN_INVARIANTS.join(", ")),
            ));
        }
        expect_violations.push(v.get_ref().clone());
    }

    if raw.steps.is_empty() {
        return Err(source.error(None, "a scenario needs at least one [[step]]"));
    }
    let mut steps = Vec::new();
    for spanned in &raw.steps {
        let s = spanned.get_ref();
        let line = line_col(&source.text, spanned.span().start).0;
        let name = s.action.get_ref().as_str();
        let Some((_, allowed)) = ACTIONS.iter().find(|(a, _)| *a == name) else {
            let known: Vec<&str> = ACTIONS.iter().map(|(a, _)| *a).collect();
            return Err(ctx.err(s.action.span(), format!("unknown action `{name}` (known: {})", known.join(", "))));
        };
        for (field, span) in s.present() {
            if !allowed.contains(&field) {
                return Err(ctx.err(span, format!("`{field}` does not apply to `{name}`")));
            }
        }
        let action = build_action(s, &ctx)?;
        let at = s.at.as_ref().map(|a| ctx.duration(a)).transpose()?;
        let expect = match &s.expect {
            Some(e) => Some(Expectation::parse(e.get_ref()).map_err(|m| ctx.err(e.span(), m))?),
            None => None,
        };
        steps.push(Step { line, at, action, expect });
    }

    Ok(Scenario {
        name: raw.name.into_inner(),
        description: raw.description.trim().to_string(),
        file: source.name.clone(),
        seed: raw.seed,
        lab,
        resolved,
        expect_violations,
        authenticators,
        totp_apps,
        steps,
    })
}

fn build_action(s: &RawStep, ctx: &Ctx<'_>) -> Result<Action, InputError> {
    let a = &s.action;
    Ok(match a.get_ref().as_str() {
        "boot" => Action::Boot,
        "check_agent" => Action::CheckAgent,
        "kill" => Action::Kill { process: ctx.program(required(&s.process, "process", a, ctx)?)? },
        "start" => Action::Start { process: ctx.program(required(&s.process, "process", a, ctx)?)? },
        "ui_status" => Action::UiStatus {
            process: match &s.process {
                Some(p) => ctx.program(p)?,
                None => ctx.program(&Spanned::new(a.span(), UI_PROCESS.to_string()))?,
            },
        },
        "reboot" => Action::Reboot,
        "partition" => {
            let host = ctx.lab_host(required(&s.host, "host", a, ctx)?)?;
            let peer = ctx.lab_host(required(&s.peer, "peer", a, ctx)?)?;
            if host.0 == peer.0 {
                return Err(
                    ctx.err(s.peer.as_ref().map_or(a.span(), Spanned::span), "a host cannot be cut from itself")
                );
            }
            Action::Partition { host, peer }
        }
        "heal" => Action::Heal,
        "restart_host" => {
            let host = required(&s.host, "host", a, ctx)?;
            let lab = ctx.lab;
            let mut restartable = vec![lab.gateway.host.as_str(), lab.idp.host.as_str(), lab.mfa.host.as_str()];
            restartable.extend(lab.origins.values().map(|o| o.host.as_str()));
            if !restartable.contains(&host.get_ref().as_str()) {
                return Err(ctx.err(
                    host.span(),
                    format!(
                        "`{}` cannot be restarted by `restart_host` (it restarts {}; the device has `reboot`)",
                        host.get_ref(),
                        restartable.join(", ")
                    ),
                ));
            }
            Action::RestartHost { host: ctx.lab_host(host)? }
        }
        "stop_bfe" => Action::Os(OsEvent::StopBfe),
        "start_bfe" => Action::Os(OsEvent::StartBfe),
        "upgrade_agent" => Action::Os(OsEvent::UpgradeAgent),
        "sleep" => Action::Os(OsEvent::Sleep),
        "resume" => Action::Os(OsEvent::Resume),
        "network_change" => Action::Os(OsEvent::NetworkChange),
        "captive_portal" => Action::Os(OsEvent::CaptivePortal),
        "switch_user" => Action::Os(OsEvent::SwitchUser(required(&s.user, "user", a, ctx)?.get_ref().clone())),
        "change_org" => Action::Os(OsEvent::ChangeOrg(required(&s.org, "org", a, ctx)?.get_ref().clone())),
        "admin_override" => match &s.code {
            Some(code) => Action::Os(OsEvent::AdminOverride(code.get_ref().clone())),
            None if ctx.lab.lockdown.admin_override.is_some() => Action::AdminOverrideNow,
            None => {
                return Err(ctx.err(
                    a.span(),
                    "`admin_override` without `code` needs `[lockdown.admin_override]` in the lab (its current code is typed)",
                ));
            }
        },
        "sign_in" => {
            Action::SignIn { credentials: ctx.credentials(required(&s.user, "user", a, ctx)?, s.password.as_ref())? }
        }
        "advance" => Action::Advance { by: ctx.duration(required(&s.by, "by", a, ctx)?)? },
        "revoke" => {
            let user = required(&s.user, "user", a, ctx)?;
            if !ctx.lab.idp.users.iter().any(|u| &u.username == user.get_ref()) {
                return Err(
                    ctx.err(user.span(), format!("`{}` is not a user of the lab's identity provider", user.get_ref()))
                );
            }
            Action::Revoke { user: user.get_ref().clone() }
        }
        "enroll" => {
            let client = ctx.client(s)?;
            let kind_field = required(&s.kind, "kind", a, ctx)?;
            let kind: FactorKind = serde_json::from_value(serde_json::json!(kind_field.get_ref()))
                .map_err(|_| ctx.err(kind_field.span(), "`kind` is one of `totp`, `security_key`, `biometrics`"))?;
            let stolen_from = ctx.stolen_from(s, &client)?;
            let mfa = ctx.mfa_use(s)?;
            if mfa.factor.is_none() {
                return Err(ctx.err(a.span(), "`enroll` needs `factor` (the authenticator or TOTP app to enrol)"));
            }
            let login = s.login_as.as_ref().map(|u| ctx.credentials(u, None)).transpose()?;
            Action::Enroll { client, kind, login, stolen_from, mfa }
        }
        "clone_authenticator" => {
            let from = ctx.factor(required(&s.authenticator, "authenticator", a, ctx)?)?;
            let to = required(&s.to, "to", a, ctx)?.get_ref().clone();
            Action::CloneAuthenticator { from, to }
        }
        "issue_enrollment_code" => {
            let user = required(&s.user, "user", a, ctx)?;
            Action::IssueEnrollmentCode { user: user.get_ref().clone() }
        }
        "request" => {
            let client = ctx.client(s)?;
            let url_field = required(&s.url, "url", a, ctx)?;
            let url = Url::parse(url_field.get_ref())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| ctx.err(url_field.span(), format!("`{}` is not an http(s) URL", url_field.get_ref())))?;
            let stolen_from = ctx.stolen_from(s, &client)?;
            let login = match (&s.login_as, &s.password) {
                (Some(u), p) => Some(ctx.credentials(u, p.as_ref())?),
                (None, Some(p)) => return Err(ctx.err(p.span(), "`password` goes with `login_as`")),
                (None, None) => None,
            };
            Action::Request {
                client,
                url,
                xhr: s.xhr.as_ref().is_some_and(|x| *x.get_ref()),
                follow: s.follow.as_ref().is_some_and(|x| *x.get_ref()),
                login,
                stolen_from,
                mfa: ctx.mfa_use(s)?,
                fresh_profile: s.fresh_profile.as_ref().is_some_and(|x| *x.get_ref()),
            }
        }
        "stream_open" => {
            let to = required(&s.to, "to", a, ctx)?;
            Action::StreamOpen {
                process: ctx.app(required(&s.process, "process", a, ctx)?)?,
                to: ctx.resolved.directory.socket_addr_of_endpoint(to.get_ref()).map_err(|m| ctx.err(to.span(), m))?,
                stream: required(&s.stream, "stream", a, ctx)?.get_ref().clone(),
            }
        }
        "stream_send" => Action::StreamSend {
            process: ctx.app(required(&s.process, "process", a, ctx)?)?,
            stream: required(&s.stream, "stream", a, ctx)?.get_ref().clone(),
            line: s.line.as_ref().map(|l| l.get_ref().clone()).unwrap_or_else(|| "ping".into()),
        },
        "idp_rotate_keys" => Action::Idp(IdpCommand::RotateKeys),
        "idp_remove_key" => Action::Idp(IdpCommand::RemoveKey),
        "idp_outage" => Action::Idp(IdpCommand::Outage(ctx.duration(required(&s.duration, "duration", a, ctx)?)?)),
        "idp_delay" => Action::Idp(IdpCommand::Delay(ctx.duration(required(&s.by, "by", a, ctx)?)?)),
        "idp_forge" => {
            let f = required(&s.forge, "forge", a, ctx)?;
            let kind = match f.get_ref().as_str() {
                "off" => None,
                name => Some(Forgery::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = Forgery::ALL.iter().map(|(_, n)| *n).collect();
                    ctx.err(f.span(), format!("unknown forgery `{name}` (known: {}, off)", known.join(", ")))
                })?),
            };
            Action::Idp(IdpCommand::Forge(kind))
        }
        "kid_flood" => {
            if let Some(f) = &s.from
                && f.get_ref() != "attacker"
            {
                return Err(ctx.err(f.span(), "`from` can only be `attacker`"));
            }
            let c = required(&s.count, "count", a, ctx)?;
            let count = usize::try_from(*c.get_ref())
                .ok()
                .filter(|n| (1..=MAX_FLOOD as usize).contains(n))
                .ok_or_else(|| ctx.err(c.span(), format!("`count` is a number of tokens from 1 to {MAX_FLOOD}")))?;
            Action::KidFlood { count }
        }
        "count_events" => {
            let e = required(&s.event, "event", a, ctx)?;
            if !COUNTABLE_EVENTS.contains(&e.get_ref().as_str()) {
                return Err(ctx.err(
                    e.span(),
                    format!("`{}` is not a countable event (known: {})", e.get_ref(), COUNTABLE_EVENTS.join(", ")),
                ));
            }
            Action::CountEvents { event: e.get_ref().clone(), reason: s.reason.as_ref().map(|r| r.get_ref().clone()) }
        }
        other => return Err(ctx.err(a.span(), format!("unknown action `{other}`"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Scenario, InputError> {
        parse(&Source::new("t.toml", text), None)
    }

    const HEAD: &str = "name = \"t\"\nseed = 1\n";

    #[test]
    fn a_minimal_scenario_parses() {
        let s = parse_str(&format!("{HEAD}[[step]]\ndo = \"boot\"\nexpect = \"agent locked\"\n")).unwrap();
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].line, 3);
    }

    #[test]
    fn errors_are_located() {
        let cases = [
            // (text after HEAD, line, col, fragment of the message)
            ("[[step]]\ndo = \"bot\"\n", 4, 6, "unknown action"),
            ("[[step]]\ndo = \"advance\"\nby = \"ten\"\n", 5, 6, "not a duration"),
            ("[[step]]\ndo = \"advance\"\nurl = \"x\"\n", 5, 7, "does not apply"),
            ("[[step]]\ndo = \"boot\"\nexpect = \"allowed\"\n", 5, 10, "unknown expectation"),
            (
                "[[step]]\ndo = \"request\"\nprocess = \"excel\"\nurl = \"https://chat.lab.test/\"\n",
                5,
                11,
                "not an application",
            ),
            ("[[step]]\ndo = \"sign_in\"\nuser = \"mallory\"\n", 5, 8, "not a user"),
            ("[[step]]\ndo = \"boot\"\nbogus = 1\n", 5, 1, "unknown field"),
            (
                "[[step]]\ndo = \"stream_open\"\nprocess = \"teams\"\nto = \"nowhere:1\"\nstream = \"s\"\n",
                6,
                6,
                "not a known host",
            ),
            ("expect_violations = [\"E9\"]\n[[step]]\ndo = \"boot\"\n", 3, 22, "unknown invariant"),
            ("[config.gateway]\nleeway = true\n[[step]]\ndo = \"boot\"\n", 4, 1, "gateway.leeway"),
            ("[config.gateway]\nleeway = \"1500ms\"\n[[step]]\ndo = \"boot\"\n", 4, 1, "whole number of seconds"),
            ("[config.gateway]\nleeway = \"6m\"\n[[step]]\ndo = \"boot\"\n", 4, 1, "largest clock leeway"),
            ("[[step]]\ndo = \"sign_in\"\n", 4, 6, "needs `user`"),
            ("[[step]]\ndo = \"kill\"\nprocess = \"explorer\"\n", 5, 11, "not a program"),
            ("[[step]]\ndo = \"idp_outage\"\n", 4, 6, "needs `duration`"),
            ("[[step]]\ndo = \"idp_outage\"\nduration = \"a while\"\n", 5, 12, "not a duration"),
            ("[[step]]\ndo = \"idp_delay\"\nby = \"-1s\"\n", 5, 6, "not a duration"),
            ("[[step]]\ndo = \"idp_forge\"\nforge = \"rot13\"\n", 5, 9, "unknown forgery"),
            ("[[step]]\ndo = \"idp_forge\"\n", 4, 6, "needs `forge`"),
            ("[[step]]\ndo = \"idp_rotate_keys\"\nforge = \"off\"\n", 5, 9, "does not apply"),
            ("[[step]]\ndo = \"kid_flood\"\ncount = 0\n", 5, 9, "from 1 to"),
            ("[[step]]\ndo = \"kid_flood\"\ncount = 5\nfrom = \"browser\"\n", 6, 8, "only be `attacker`"),
            ("[[step]]\ndo = \"count_events\"\nevent = \"jwks\"\n", 5, 9, "not a countable event"),
            ("[[step]]\ndo = \"count_events\"\nreason = \"x\"\n", 4, 6, "needs `event`"),
            ("[config.idp]\nprofile = \"auth0\"\n[[step]]\ndo = \"boot\"\n", 4, 1, "idp.profile"),
            ("[config.idp]\ndanger_forge = \"maybe\"\n[[step]]\ndo = \"boot\"\n", 4, 1, "idp.danger_forge"),
            ("[config.gateway]\njwks_max_ttl = \"soon\"\n[[step]]\ndo = \"boot\"\n", 4, 1, "gateway.jwks_max_ttl"),
        ];
        for (body, line, col, fragment) in cases {
            let err = parse_str(&format!("{HEAD}{body}")).unwrap_err();
            assert_eq!(err.position, Some((line, col)), "{body:?}: {err}");
            assert!(err.message.contains(fragment), "{body:?}: {err}");
        }
    }

    #[test]
    fn an_empty_name_is_refused_where_it_is_written() {
        for name in ["\"\"", "\"   \""] {
            let err = parse_str(&format!("seed = 1\nname = {name}\n[[step]]\ndo = \"boot\"\n")).unwrap_err();
            assert_eq!(err.position, Some((2, 8)), "{err}");
            assert!(err.message.contains("`name` is empty"), "{err}");
        }
    }

    #[test]
    fn deeply_nested_input_is_refused_with_its_position() {
        // A dotted header and a dotted key thousands of keys deep (toml
        // itself gives these no position), and arrays nested as deep.
        let deep = vec!["a"; 20_000].join(".");
        let cases = [
            (format!("{HEAD}# a.b.c.d\n[{deep}]\nx = 1\n"), (4, 2)),
            (format!("{HEAD}[config]\n\"q.q\" = 1.5\n{deep} = 1\n"), (5, 1)),
            (format!("{HEAD}x = {}{}\n", "[".repeat(20_000), "]".repeat(20_000)), (3, 5)),
        ];
        for (text, position) in cases {
            let err = parse_str(&text).unwrap_err();
            assert_eq!(err.position.map(|(l, _)| l), Some(position.0), "{err}");
            assert!(err.position.is_some_and(|(_, c)| c >= position.1), "{err}");
            assert!(err.to_string().starts_with(&format!("t.toml:{}:", position.0)), "{err}");
        }
    }

    #[test]
    fn toml_syntax_errors_keep_their_position() {
        let err = parse_str("name = \"t\"\nseed = \n").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
        assert!(err.to_string().starts_with("t.toml:2:"), "{err}");
    }
}
