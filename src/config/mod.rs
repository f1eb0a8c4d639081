//! The lab configuration: topology, components and the policies they enforce.
//!
//! A lab is a TOML file (the default one, `fixtures/labs/default.toml`, is
//! embedded in the binary). Scenarios name a lab and may override any of its
//! fields in a `[config]` table. Every field is documented in the default lab.

mod validate;

use std::net::IpAddr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::input::{InputError, Source, split_serde_path};
use crate::policy::{AccessPolicy, AppAccess, MfaSetting, OrgMfa};
use crate::totp::TotpSettings;

pub use validate::{DeviceProcess, Resolved};

/// The embedded default lab.
pub const DEFAULT_LAB: &str = include_str!("../../fixtures/labs/default.toml");

/// Name under which scenarios refer to the embedded default lab.
pub const DEFAULT_LAB_NAME: &str = "default";

/// A whole lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Short name, recorded in traces.
    pub name: String,
    /// Simulated wall-clock time at the start of every run (RFC 3339).
    pub epoch: String,
    /// Simulator settings.
    pub sim: SimConfig,
    /// Hosts by name.
    pub hosts: IndexMap<String, HostConfig>,
    /// DNS: name -> host. Application domains point at the gateway.
    pub dns: IndexMap<String, String>,
    /// The mock identity provider.
    pub idp: IdpConfig,
    /// The access gateway.
    pub gateway: GatewayConfig,
    /// The independent MFA service.
    pub mfa: MfaConfig,
    /// Origin applications behind the gateway, by application name.
    pub origins: IndexMap<String, OriginConfig>,
    /// A public web site (the rest of the internet).
    pub web: WebConfig,
    /// The attacker's host.
    pub attacker: AttackerConfig,
    /// The simulated Windows device.
    pub device: DeviceConfig,
    /// The device agent.
    pub agent: AgentConfig,
    /// The firewall model.
    pub firewall: FirewallConfig,
    /// The mandatory-authentication policy (what the administrator asked for).
    pub lockdown: LockdownConfig,
    /// The oracle's tolerances.
    pub oracle: OracleConfig,
}

/// Simulator settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// turmoil's fixed tick.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// One-way latency of every link.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// How long a step may take before its outcome is `timeout`.
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
}

/// One host.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Its address.
    pub ip: IpAddr,
}

/// A signing algorithm for identity tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

/// Which vendor the mock IdP imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpProfile {
    /// RFC-clean: the behaviour the lab always had.
    #[default]
    Standard,
    /// Okta-like.
    Okta,
    /// Microsoft Entra ID-like.
    Entra,
    /// Google-like.
    Google,
}

/// A kind of forged ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forgery {
    /// `alg: none`, no signature, the published key's `kid`.
    AlgNone,
    /// HS256 with the published public key (its JWK's JSON) as the HMAC
    /// secret: the RS/ES-to-HS algorithm confusion.
    KeyConfusion,
    /// Signed by a key the provider never published, naming the published
    /// key's `kid` (the signature does not verify).
    UnpublishedKey,
    /// Signed by a key the provider never published, under its own `kid`
    /// (unknown to the verifier: it may refetch, and must still refuse).
    UnknownKid,
    /// Signed by the key most recently removed from the JWKS (the attacker
    /// stole it; the provider withdrew it in an emergency).
    RemovedKey,
}

/// The mock identity provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// Host it runs on.
    pub host: String,
    /// Issuer URL (also its base URL).
    pub issuer: String,
    /// ID token signing algorithm.
    pub signing_alg: SigningAlg,
    /// Lifetime of ID and access tokens.
    #[serde(with = "humantime_serde")]
    pub id_token_ttl: Duration,
    /// Lifetime of the IdP's own login session (SSO cookie).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Lifetime of an authorization code.
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// Registered clients.
    pub clients: Vec<IdpClient>,
    /// Users.
    pub users: Vec<IdpUser>,
    /// Compromised: the attacker controls the IdP, which signs a valid
    /// token for any user whatever password is typed.
    #[serde(default)]
    pub danger_compromised: bool,
    /// Vendor profile: `standard` (default), `okta`, `entra` or `google`
    /// (amr dialect, claim names, token lifetime, key rotation cadence; see
    /// `idp::profile`).
    #[serde(default)]
    pub profile: IdpProfile,
    /// `Cache-Control: max-age` on the JWKS (default: the profile's; none
    /// for `standard`).
    #[serde(default, with = "humantime_serde")]
    pub jwks_max_age: Option<Duration>,
    /// A delay before every response (a slow provider).
    #[serde(default, with = "humantime_serde")]
    pub response_delay: Duration,
    /// Misbehaving: the token endpoint returns ID tokens forged this way
    /// (`alg_none`, `key_confusion`, `unpublished_key`, `unknown_kid`,
    /// `removed_key`) instead of genuine ones.
    #[serde(default)]
    pub danger_forge: Option<Forgery>,
}

/// A registered OIDC client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (client_secret_basic or client_secret_post).
    pub client_secret: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
}

/// A user of the identity provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpUser {
    /// Login name (also the `sub`).
    pub username: String,
    /// Password.
    pub password: String,
    /// Email claim.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Authentication methods the IdP reports in `amr` for this user
    /// (RFC 8176 values; `["pwd"]` when absent).
    #[serde(default = "password_amr")]
    pub amr: Vec<String>,
}

/// The largest ID-token clock leeway the gateway accepts: a leeway is for
/// clock skew, and beyond a few minutes it would keep an expired token alive
/// (five minutes is the usual ceiling, e.g. Microsoft.IdentityModel's default
/// clock skew).
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

fn default_jwks_max_ttl() -> Duration {
    crate::http::keys::DEFAULT_JWKS_MAX_TTL
}

fn default_jwks_min_refetch() -> Duration {
    crate::http::keys::JWKS_REFETCH_INTERVAL
}

fn password_amr() -> Vec<String> {
    vec!["pwd".to_string()]
}

/// The access gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Host it runs on.
    pub host: String,
    /// Base URL of the gateway's own endpoints (login, callback, device API).
    pub auth_url: String,
    /// Issuer URL of the identity provider it trusts.
    pub idp_issuer: String,
    /// Its OIDC client id at the identity provider.
    pub client_id: String,
    /// Its OIDC client secret.
    pub client_secret: String,
    /// Lifetime of a gateway session.
    #[serde(with = "humantime_serde")]
    pub session_duration: Duration,
    /// Clock leeway when checking `exp`, `iat` and `nbf` of ID tokens (the
    /// skew tolerated between the IdP's clock and the gateway's): whole
    /// seconds, at most [`MAX_LEEWAY`]; 30 s by default. The times are
    /// checked at the instant the token is verified, after the code exchange
    /// and any JWKS fetch, so slow links need no leeway.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Lifetime of an app token handed to origins; an app token never
    /// outlives its session (nor, for an app that requires MFA, the app's
    /// MFA session).
    #[serde(with = "humantime_serde")]
    pub app_token_ttl: Duration,
    /// Upper bound on how long the gateway trusts the IdP's JWKS (the
    /// response's `Cache-Control: max-age`, capped by this; this without one).
    #[serde(default = "default_jwks_max_ttl", with = "humantime_serde")]
    pub jwks_max_ttl: Duration,
    /// Minimum time since the last JWKS fetch before a token with an
    /// unknown `kid` may trigger another.
    #[serde(default = "default_jwks_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// The ID token claim that carries the user's groups (`groups`; an
    /// Entra-like provider puts app roles in `roles`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Broken on purpose: the IdP's JWKS, once fetched, never expires (a
    /// removed key stays trusted; E2 catches it).
    #[serde(default)]
    pub danger_jwks_no_ttl: bool,
    /// Deliberately broken: app tokens last `app_token_ttl` whatever the
    /// session's end (the behaviour before issue 16), so an origin serves a
    /// request that reaches it after the session ended (E4 catches it).
    #[serde(default)]
    pub danger_app_token_outlives_session: bool,
    /// Deliberately broken: forward requests whose session has expired.
    #[serde(default)]
    pub danger_skip_expiry_check: bool,
    /// Deliberately broken: forward requests whose session was revoked.
    #[serde(default)]
    pub danger_skip_revocation_check: bool,
    /// Deliberately broken: forward requests to MFA-protected apps without
    /// asking for (or checking) the edge MFA verification.
    #[serde(default)]
    pub danger_skip_mfa: bool,
    /// Protected applications.
    pub apps: Vec<AppConfig>,
}

/// One protected application.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Name (also the app token's audience).
    pub name: String,
    /// The domain users browse to (resolves to the gateway).
    pub domain: String,
    /// Where the gateway forwards requests.
    pub origin: String,
    /// Groups allowed in (policy: allow if the user is in any of them).
    /// Ignored when `policies` are given.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Application-level MFA setting (`{ mode = "respect_global" }` by default).
    #[serde(default)]
    pub mfa: MfaSetting,
    /// Access policies in order; the first that admits the user decides,
    /// with its own MFA setting. Absent: one policy admitting `allow_groups`.
    #[serde(default)]
    pub policies: Vec<AccessPolicy>,
}

impl AppConfig {
    /// The app's access rules as the MFA policy sees them.
    pub fn access(&self) -> AppAccess {
        let policies = if self.policies.is_empty() {
            vec![AccessPolicy {
                name: "allow".into(),
                groups: self.allow_groups.clone(),
                mfa: MfaSetting::RespectGlobal,
            }]
        } else {
            self.policies.clone()
        };
        AppAccess { mfa: self.mfa.clone(), policies }
    }
}

/// The independent MFA service at the edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// Host it runs on.
    pub host: String,
    /// Its base URL (also the WebAuthn origin).
    pub url: String,
    /// WebAuthn relying-party id (the URL's host or a registrable suffix).
    pub rp_id: String,
    /// Organization-wide MFA settings.
    #[serde(default)]
    pub organization: OrgMfa,
    /// TOTP parameters.
    #[serde(default)]
    pub totp: TotpSettings,
    /// How a user's first factor may be enrolled.
    #[serde(default)]
    pub first_enrollment: FirstEnrollment,
    /// How long a verification made to change factors stays valid (bound
    /// to the device it was made on).
    #[serde(with = "humantime_serde", default = "ten_minutes")]
    pub change_verification: Duration,
    /// Failed verifications a user may make within `failure_window`.
    #[serde(default = "five")]
    pub max_failures: u32,
    /// The rate-limit window.
    #[serde(with = "humantime_serde", default = "ten_minutes")]
    pub failure_window: Duration,
    /// How long a WebAuthn or TOTP challenge stays open.
    #[serde(with = "humantime_serde", default = "ten_minutes")]
    pub challenge_ttl: Duration,
    /// Deliberately broken: accept a TOTP code more than once.
    #[serde(default)]
    pub danger_allow_totp_reuse: bool,
    /// Deliberately broken: never store a credential's new sign counter, so
    /// a cloned key's rollback goes unnoticed.
    #[serde(default)]
    pub danger_skip_counter_update: bool,
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn five() -> u32 {
    5
}

/// How a user with no factor enrols the first one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstEnrollment {
    /// Anyone signed in as the user may (the documented gap: whoever holds
    /// a hijacked SSO session enrols their own key first).
    #[default]
    Open,
    /// Only with a one-time enrollment code an administrator issued to the
    /// user out of band.
    EnrollmentCode,
}

/// An origin application.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Host it runs on.
    pub host: String,
    /// Port it listens on.
    pub port: u16,
}

/// A public web site.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Host it runs on.
    pub host: String,
    /// HTTP port.
    pub http_port: u16,
    /// Port of its long-lived stream (echo) service.
    pub stream_port: u16,
    /// Other hosts that run the same site (a LAN printer, an IPv6 site, a DNS resolver).
    #[serde(default)]
    pub also: Vec<WebMirror>,
}

/// Another host running the public site.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebMirror {
    /// Host it runs on.
    pub host: String,
    /// HTTP port (default: the site's).
    #[serde(default)]
    pub http_port: Option<u16>,
    /// Port of its stream (echo) service (default: the site's).
    #[serde(default)]
    pub stream_port: Option<u16>,
}

/// The attacker's host.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackerConfig {
    /// Host it runs on.
    pub host: String,
}

/// The simulated Windows device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Host it runs on.
    pub host: String,
    /// Device id that gateway sessions are bound to.
    pub id: String,
    /// The Windows user who signs in at the console.
    pub interactive_user: String,
    /// Its IPv6 address, if it has one.
    #[serde(default)]
    pub ipv6: Option<IpAddr>,
    /// Applications installed on the device.
    pub processes: Vec<ProcessConfig>,
    /// How long each stage of a Windows boot takes.
    #[serde(default)]
    pub boot: BootConfig,
}

/// The stages of a simulated Windows boot: TCP/IP comes up (boot-time filters),
/// then BFE (persistent filters), then services (the agent), then the user's logon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// From TCP/IP start until BFE has initialized.
    #[serde(with = "humantime_serde", default = "default_bfe_start")]
    pub bfe_start: Duration,
    /// From BFE start until the automatic services (the agent) start.
    #[serde(with = "humantime_serde", default = "default_services")]
    pub services: Duration,
    /// From the services' start until the interactive user has logged on.
    #[serde(with = "humantime_serde", default = "default_logon")]
    pub logon: Duration,
}

fn default_bfe_start() -> Duration {
    Duration::from_secs(2)
}

fn default_services() -> Duration {
    Duration::from_secs(1)
}

fn default_logon() -> Duration {
    Duration::from_secs(3)
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig { bfe_start: default_bfe_start(), services: default_services(), logon: default_logon() }
    }
}

/// When a device process starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartStage {
    /// Early in boot, before BFE (a boot-start driver's or the network stack's helper).
    Boot,
    /// With the automatic services, after BFE (like the agent).
    Service,
    /// At the interactive user's logon.
    #[default]
    Logon,
    /// Only when a scenario starts it.
    Manual,
}

/// An application on the device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Lab name, used by scenarios.
    pub name: String,
    /// Image path (a Windows path such as `C:\Program Files\App\app.exe`).
    pub image: String,
    /// Account it runs as (`SYSTEM` or a user name).
    pub user: String,
    /// When it starts.
    #[serde(default)]
    pub start: StartStage,
    /// The Windows service it runs as, if any (its token then holds the service SID).
    #[serde(default)]
    pub service: Option<String>,
    /// URLs it fetches once as soon as it starts (an updater's check, a sync client's login).
    #[serde(default)]
    pub on_start: Vec<String>,
}

/// How the agent's firewall objects live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterLifetime {
    /// In a dynamic session: gone when the agent process dies (fails open).
    Dynamic,
    /// Static: survive the agent, gone on BFE restart or reboot.
    Static,
    /// Persistent: survive reboots (fails closed).
    Persistent,
}

/// The device agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Image of the agent service.
    pub service_image: String,
    /// Image of the sign-in window process.
    pub auth_image: String,
    /// Base URL of the gateway it registers with.
    pub gateway_url: String,
    /// How often it checks its session with the gateway.
    #[serde(with = "humantime_serde")]
    pub session_poll: Duration,
    /// How long before the session's expiry it re-engages the lockdown.
    #[serde(with = "humantime_serde")]
    pub relock_margin: Duration,
    /// The longest the lockdown stays lifted without the gateway confirming
    /// the session (measured from when the confirming check was sent); past
    /// it the agent locks, keeps the session and lifts again at the first
    /// confirmation. Keep it within the lockdown's `revocation_grace`, or a
    /// device cut off from its gateway outlives a revocation. "0s": never
    /// (fail open until the session expires).
    #[serde(with = "humantime_serde", default = "default_confirm_within")]
    pub confirm_within: Duration,
    /// Lifetime of its firewall objects.
    pub filter_lifetime: FilterLifetime,
    /// Weight of its WFP sublayer.
    pub sublayer_weight: u16,
    /// Deliberately broken: never re-engage the lockdown after sign-in.
    #[serde(default)]
    pub danger_forget_relock: bool,
    /// Name of the agent's Windows service (its service SID scopes the exceptions).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Besides persistent filters, install a boot-time copy of the lockdown that acts
    /// from TCP/IP start until BFE has started (only with `filter_lifetime = "persistent"`).
    #[serde(default = "yes")]
    pub boot_time_filters: bool,
    /// Service recovery: the service manager restarts the agent this long after it
    /// dies ("0s": never).
    #[serde(with = "humantime_serde", default = "default_restart_delay")]
    pub restart_delay: Duration,
    /// How long an upgrade leaves the device without a running agent.
    #[serde(with = "humantime_serde", default = "default_upgrade_gap")]
    pub upgrade_gap: Duration,
    /// Deliberately broken: install the lockdown for IPv4 only.
    #[serde(default)]
    pub danger_ipv4_only: bool,
}

fn default_confirm_within() -> Duration {
    Duration::from_secs(15)
}

fn default_service_name() -> String {
    "LockstepAgent".to_string()
}

fn yes() -> bool {
    true
}

fn default_restart_delay() -> Duration {
    Duration::from_secs(5)
}

fn default_upgrade_gap() -> Duration {
    Duration::from_secs(3)
}

/// The firewall model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Deliberately broken: never re-authorize established flows.
    #[serde(default)]
    pub danger_skip_reauthorization: bool,
}

/// The mandatory-authentication policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockdownConfig {
    /// Whether loopback traffic stays allowed while locked.
    pub allow_loopback: bool,
    /// Whether private (RFC 1918, RFC 4193) and link-local destinations stay reachable
    /// while locked (the documented "LAN" setting; DNS to them stays blocked).
    #[serde(default)]
    pub allow_lan: bool,
    /// Whether DHCP (v4 and v6) stays allowed while locked, so the device keeps its address.
    #[serde(default = "yes")]
    pub allow_dhcp: bool,
    /// Captive-portal opening: when a portal is detected, the browser may reach any
    /// host on ports 80 and 443 for this long ("0s": the lever is off).
    #[serde(with = "humantime_serde", default)]
    pub captive_portal: Duration,
    /// Administrator override codes (a time-boxed bypass), if enabled.
    #[serde(default)]
    pub admin_override: Option<AdminOverrideConfig>,
    /// Process-specific exceptions.
    pub allow: Vec<LockdownException>,
}

/// Administrator override codes: an administrator reads the device's current code
/// (TOTP over `secret`, one per `code_step`) and gives it to the user, whose agent then
/// lifts the lockdown for `duration`. Each code works once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminOverrideConfig {
    /// Shared secret (base32) between the administrator's console and the agent.
    pub secret: String,
    /// How long an accepted code lifts the lockdown.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How long one code stays valid.
    #[serde(with = "humantime_serde", default = "default_override_step")]
    pub code_step: Duration,
}

fn default_override_step() -> Duration {
    Duration::from_secs(3600)
}

/// One process-specific exception of the lockdown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockdownException {
    /// Lab name of the process (`lockstep-agent`, `lockstep-auth`, or a device process).
    pub process: String,
    /// Destinations as `name:port`.
    pub to: Vec<String>,
    /// Require the process's token to hold this service's SID, besides its image path.
    #[serde(default)]
    pub service: Option<String>,
}

/// The oracle's tolerances.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleConfig {
    /// Flows tolerated this long after a session's expiry.
    #[serde(with = "humantime_serde")]
    pub expiry_grace: Duration,
    /// Flows tolerated this long after a revocation.
    #[serde(with = "humantime_serde")]
    pub revocation_grace: Duration,
}

/// Lab name of the agent service process.
pub const AGENT_PROCESS: &str = "lockstep-agent";
/// Lab name of the sign-in window process.
pub const AUTH_PROCESS: &str = "lockstep-auth";
/// The program a captive-portal opening lets through.
pub const PORTAL_BROWSER: &str = "browser";
/// Lab name of Windows' DHCP client (it sends the device's DHCP requests).
pub const DHCP_PROCESS: &str = "dhcp-client";
/// Image of the DHCP client's service host.
pub const DHCP_IMAGE: &str = r"C:\Windows\System32\svchost.exe";

impl LabConfig {
    /// How many hosts run software in a simulation of this lab (declared hosts that no
    /// component claims cost nothing).
    pub fn running_hosts(&self) -> usize {
        // idp, gateway, mfa, web, attacker, device; the origins; the web's extra sites.
        6 + self.origins.len() + self.web.also.len()
    }

    /// Parses and validates a lab file.
    pub fn parse(source: &Source) -> Result<(LabConfig, Resolved), InputError> {
        let config: LabConfig = toml::from_str(&source.text).map_err(|e| source.toml_error(&e))?;
        let resolved = config.validate().map_err(|e| source.error(source.locate(&e.path), e.message))?;
        Ok((config, resolved))
    }

    /// The embedded default lab.
    pub fn default_source() -> Source {
        Source::new("<embedded default lab>", DEFAULT_LAB)
    }

    /// Applies a scenario's `[config]` overrides to the lab `base` and
    /// validates the result. Errors point into `overrides_source` at the
    /// offending key (under `[config]`) when the override caused them.
    pub fn with_overrides(
        base: &Source,
        overrides: &toml::Table,
        overrides_source: &Source,
    ) -> Result<(LabConfig, Resolved), InputError> {
        let mut merged: toml::Table = toml::from_str(&base.text).map_err(|e| base.toml_error(&e))?;
        merge_tables(&mut merged, overrides);
        let locate = |path: &[String]| -> InputError {
            let mut in_override = vec!["config".to_string()];
            in_override.extend(path.iter().cloned());
            match overrides_source.locate(&in_override) {
                Some(span) => overrides_source.error(Some(span), ""),
                None => match base.locate(path) {
                    Some(span) => base.error(Some(span), ""),
                    None => overrides_source.error(overrides_source.locate(&["config".to_string()]), ""),
                },
            }
        };
        let config: LabConfig = serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let path = split_serde_path(&e.path().to_string());
            let mut err = locate(&path);
            err.message = format!("config.{}: {}", e.path(), e.inner().message().trim_end());
            err
        })?;
        let resolved = config.validate().map_err(|e| {
            let mut err = locate(&e.path);
            err.message = e.message;
            err
        })?;
        Ok((config, resolved))
    }

    /// The simulated wall-clock time at t = 0.
    pub fn epoch_millis(&self) -> Result<crate::net::UnixMillis, String> {
        crate::net::UnixMillis::parse_rfc3339(&self.epoch)
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else
/// (including arrays) is replaced.
pub fn merge_tables(base: &mut toml::Table, overlay: &toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_lab_is_valid() {
        let (lab, resolved) = LabConfig::parse(&LabConfig::default_source()).unwrap();
        assert_eq!(lab.name, "default");
        assert!(resolved.lockdown.allow.iter().any(|r| r.process == AUTH_PROCESS));
    }

    #[test]
    fn override_typo_is_located_in_the_scenario() {
        let scenario = Source::new("s.toml", "name = \"x\"\n[config.gateway]\ndanger_skip_expiry_chek = true\n");
        let table: toml::Table = toml::from_str(&scenario.text).unwrap();
        let overrides = table["config"].as_table().unwrap();
        let err = LabConfig::with_overrides(&LabConfig::default_source(), overrides, &scenario).unwrap_err();
        assert_eq!(err.file, "s.toml");
        assert_eq!(err.position, Some((3, 1)), "{err}");
        assert!(err.message.contains("danger_skip_expiry_chek"), "{err}");
    }

    #[test]
    fn override_of_a_wrong_type_is_located() {
        let scenario = Source::new("s.toml", "[config.gateway]\nsession_duration = 10\n");
        let table: toml::Table = toml::from_str(&scenario.text).unwrap();
        let overrides = table["config"].as_table().unwrap();
        let err = LabConfig::with_overrides(&LabConfig::default_source(), overrides, &scenario).unwrap_err();
        assert_eq!(err.position, Some((2, 1)), "{err}");
        assert!(err.message.contains("gateway.session_duration"), "{err}");
    }

    #[test]
    fn merge_replaces_scalars_and_arrays_and_merges_tables() {
        let mut base: toml::Table = toml::from_str("a = 1\n[t]\nx = 1\ny = [1, 2]\n").unwrap();
        let overlay: toml::Table = toml::from_str("[t]\ny = [3]\nz = true\n").unwrap();
        merge_tables(&mut base, &overlay);
        assert_eq!(base["a"].as_integer(), Some(1));
        assert_eq!(base["t"]["x"].as_integer(), Some(1));
        assert_eq!(base["t"]["y"].as_array().unwrap().len(), 1);
        assert_eq!(base["t"]["z"].as_bool(), Some(true));
    }
}
