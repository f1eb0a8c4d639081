//! Trace event types.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use indexmap::IndexMap;

use crate::net::UnixMillis;
use crate::policy::{AppAccess, FactorKind, OrgMfa};

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the trace, from 0.
    pub seq: u64,
    /// Simulated time: milliseconds since the run's epoch.
    pub t: u64,
    /// The host that recorded it (`lab` for the driver).
    pub host: String,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// A firewall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Traffic allowed.
    Permit,
    /// Traffic dropped.
    Block,
}

/// Direction of data on a flow, seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Sent by the device.
    Out,
    /// Received by the device.
    In,
}

/// What the gateway did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayVerdict {
    /// Proxied to the origin with an app token.
    Forward,
    /// Sent the browser to sign in (302).
    Redirect,
    /// Refused a non-browser request without a session (401).
    Unauthorized,
    /// Refused by policy (403).
    Forbidden,
    /// Malformed or unknown request (400/404).
    Reject,
    /// Served by the gateway itself (login flow, device API).
    Serve,
    /// The origin could not be reached (502).
    BadGateway,
}

/// A filter as it appears in the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterSummary {
    /// The engine's filter id.
    pub id: u64,
    /// The filter's display name.
    pub name: String,
    /// WFP layer name.
    pub layer: String,
    /// Permit, block or veto.
    pub action: String,
    /// Dynamic, static or persistent.
    pub lifetime: String,
}

/// One exception of the lockdown policy, resolved to addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowRule {
    /// The process's name in the lab.
    pub process: String,
    /// Its normalized app id (NT device path).
    pub app_id: String,
    /// Destinations it may reach while the device is locked.
    pub remote: Vec<SocketAddr>,
    /// The service whose SID the process must also hold, if required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The enforcement requirements a run is checked against: the lockdown
/// policy the administrator asked for (not what the agent installed) and
/// the oracle's tolerances. Recorded at the start of every run so that the
/// oracle needs nothing but the trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnforcementSpec {
    /// The device's host name in the trace.
    pub device_host: String,
    /// The device id that gateway sessions are bound to.
    pub device_id: String,
    /// Flows allowed while the device is not authenticated.
    pub allow: Vec<AllowRule>,
    /// Whether loopback traffic is allowed while locked.
    pub allow_loopback: bool,
    /// Whether private and link-local destinations stay reachable while locked.
    #[serde(default)]
    pub allow_lan: bool,
    /// Whether the DHCP client's requests stay allowed while locked.
    #[serde(default)]
    pub allow_dhcp: bool,
    /// The Windows user at the console when the device boots.
    #[serde(default)]
    pub interactive_user: String,
    /// Bound on one captive-portal opening (ms; 0: the lever is off).
    #[serde(default)]
    pub captive_portal_ms: u64,
    /// The program a captive-portal opening lets through (to ports 80 and 443).
    #[serde(default)]
    pub captive_portal_process: String,
    /// Bound on one administrator override (ms; 0: the lever is off).
    #[serde(default)]
    pub admin_override_ms: u64,
    /// How long after a session's expiry flows are still tolerated (ms).
    pub expiry_grace_ms: u64,
    /// How long after a revocation flows are still tolerated (ms).
    pub revocation_grace_ms: u64,
    /// The independent-MFA policy (E5, E7).
    #[serde(default)]
    pub mfa: MfaSpec,
    /// The longest the gateway may trust a fetched JWKS of the IdP (ms):
    /// how long after the IdP withdraws a key its tokens may still be
    /// accepted (E2). Absent in traces older than E2: no tolerance.
    #[serde(default)]
    pub jwks_max_ttl_ms: u64,
}

/// The MFA policy the administrator asked for, as the oracle needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MfaSpec {
    /// The MFA service's host name in the trace.
    pub host: String,
    /// The only origin a WebAuthn assertion may carry.
    pub origin: String,
    /// Organization settings.
    pub organization: OrgMfa,
    /// Each application's access rules, by name.
    pub apps: IndexMap<String, AppAccess>,
}

/// What the MFA service saw in an accepted factor (for E7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorFacts {
    /// Credential or TOTP secret id.
    pub credential: String,
    /// TOTP: the time step of the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<u64>,
    /// WebAuthn: `origin` from the client data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// WebAuthn: the authenticator's sign counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
    /// WebAuthn: the user-verified flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_verified: Option<bool>,
    /// WebAuthn: whether user verification was required.
    #[serde(default)]
    pub uv_required: bool,
    /// WebAuthn: the backup-eligible flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_eligible: Option<bool>,
}

/// Everything that can happen in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    // ---- driver ----
    /// The run begins.
    RunStarted {
        /// Scenario name.
        scenario: String,
        /// Root seed.
        seed: u64,
        /// Simulated wall-clock time at t = 0.
        epoch: UnixMillis,
        /// The lab configuration's name.
        lab: String,
        /// What the oracle checks.
        spec: Box<EnforcementSpec>,
    },
    /// A scenario step begins.
    StepStarted {
        /// 1-based step number.
        step: usize,
        /// What the step does, in words.
        action: String,
    },
    /// A scenario step finished.
    StepFinished {
        /// 1-based step number.
        step: usize,
        /// What happened.
        outcome: String,
        /// What the scenario expected, if anything.
        expected: Option<String>,
        /// Whether the expectation held (true when nothing was expected).
        ok: bool,
    },
    /// The run ended.
    RunFinished {
        /// Simulated milliseconds in all.
        sim_ms: u64,
    },

    // ---- device operating system ----
    /// The device powered on: TCP/IP is up with the boot-time filters stored on disk.
    DeviceBooted {
        /// Device id.
        device: String,
        /// Number of persistent filters stored from the previous boot (in force once BFE starts).
        persistent_filters: usize,
        /// Number of boot-time filters in force until BFE starts.
        #[serde(default)]
        boot_time_filters: usize,
    },
    /// A stage of the boot was reached: `bfe` (BFE initialized), `services`
    /// (automatic services started), `logon` (the user logged on), `ready`.
    BootStage {
        /// The stage.
        stage: String,
    },
    /// A fault or transition began on the device (boot, agent stopped, BFE stopped,
    /// sleep, resume, network change, user switch, organization change, upgrade).
    /// The oracle's E3 window stays open until the agent reports its state again.
    TransitionBegan {
        /// What kind.
        kind: String,
        /// Details for people.
        detail: String,
        /// For a user switch: the Windows user now at the console.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// A program fetched a URL on its own as it started (an updater's check at boot).
    AppTraffic {
        /// Lab name of the program.
        process: String,
        /// What it fetched.
        url: String,
        /// What came of it.
        outcome: String,
    },
    /// A lever of the lockdown opened on purpose (captive portal, admin override).
    LeverOpened {
        /// Which lever.
        lever: String,
        /// What it lets through.
        scope: Vec<String>,
        /// Trace time (ms) at which it closes by itself.
        until_t: u64,
    },
    /// A lever closed.
    LeverClosed {
        /// Which lever.
        lever: String,
        /// Why.
        reason: String,
    },
    /// A request to open a lever was refused.
    LeverRefused {
        /// Which lever.
        lever: String,
        /// Why.
        reason: String,
    },
    /// A process started.
    ProcessStarted {
        /// Process id.
        pid: u32,
        /// Lab name of the process.
        name: String,
        /// Image path as launched.
        image: String,
        /// Account it runs as.
        user: String,
    },
    /// A process ended.
    ProcessExited {
        /// Process id.
        pid: u32,
        /// Lab name of the process.
        name: String,
        /// Why (exited, killed, ...).
        reason: String,
    },

    // ---- firewall (Base Filtering Engine) ----
    /// A BFE session was opened.
    WfpSessionOpened {
        /// Session id.
        session: u64,
        /// Owning process.
        pid: u32,
        /// Session display name.
        name: String,
        /// Whether its objects die with it.
        dynamic: bool,
    },
    /// A BFE session ended.
    WfpSessionClosed {
        /// Session id.
        session: u64,
        /// Why.
        reason: String,
    },
    /// A set of filter changes became visible at once.
    WfpCommitted {
        /// Session that made the change (0 for the engine itself).
        session: u64,
        /// Filters added.
        added: Vec<FilterSummary>,
        /// Filters deleted.
        deleted: Vec<FilterSummary>,
        /// Why they were deleted, when not explicitly (session ended, BFE stopped).
        reason: Option<String>,
    },

    // ---- flows on the device ----
    /// The firewall classified a new flow or re-authorized an existing one.
    FlowDecision {
        /// Flow id (present when a flow exists or was created).
        flow: Option<u64>,
        /// WFP layer name.
        layer: String,
        /// Process id.
        pid: u32,
        /// Lab name of the process.
        process: String,
        /// Normalized app id of the process.
        app_id: String,
        /// Account of the process.
        user: String,
        /// `tcp` or `udp`.
        protocol: String,
        /// Local endpoint.
        local: SocketAddr,
        /// Remote endpoint.
        remote: SocketAddr,
        /// Permit or block.
        verdict: Verdict,
        /// Name of the deciding filter (none: nothing matched, default permit).
        filter: Option<String>,
        /// Whether this was a re-authorization of an existing flow.
        reauth: bool,
    },
    /// Data passed on an authorized flow.
    FlowData {
        /// Flow id.
        flow: u64,
        /// Which way.
        direction: Direction,
        /// How many bytes.
        bytes: usize,
    },
    /// A flow ended.
    FlowClosed {
        /// Flow id.
        flow: u64,
        /// Why (closed, torn down by re-authorization, process exit, ...).
        reason: String,
    },

    // ---- device agent ----
    /// The agent changed state.
    AgentState {
        /// Previous state.
        from: String,
        /// New state.
        to: String,
        /// Why.
        reason: String,
    },

    // ---- identity provider ----
    /// The IdP checked a user's credentials.
    IdpLogin {
        /// User name tried.
        user: String,
        /// `ok` or why not.
        result: String,
    },
    /// The IdP issued tokens.
    IdpTokenIssued {
        /// Subject.
        sub: String,
        /// Client.
        client_id: String,
        /// ID token signing algorithm.
        alg: String,
        /// Key id used.
        kid: String,
        /// Authentication methods claimed (`amr`).
        #[serde(default)]
        amr: Vec<String>,
        /// Set when the token was forged by a misbehaviour knob (its kind).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forged: Option<String>,
    },
    /// The IdP refused a request.
    IdpRejected {
        /// Endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The IdP's published key set changed (at start, rotation, removal).
    IdpKeysPublished {
        /// Key ids now in its JWKS, in publication order.
        kids: Vec<String>,
        /// The key id that signs new tokens.
        signing: String,
        /// Why it changed (`start`, `rotate`, `remove <kid>`, `retire <kid>`).
        why: String,
    },
    /// The IdP's misbehaviour knobs changed (a scenario action).
    IdpMisbehaviour {
        /// What is now in force, in words.
        what: String,
    },

    // ---- key caches (verifiers of JWTs) ----
    /// A verifier fetched a JWKS.
    JwksFetched {
        /// The JWKS URL.
        url: String,
        /// `first_use`, `ttl_expired` or `unknown_kid`.
        reason: String,
        /// `ok` or why the fetch failed.
        result: String,
        /// Key ids in the fetched set.
        kids: Vec<String>,
        /// How long the set is trusted (ms).
        ttl_ms: u64,
    },
    /// A verifier accepted a token.
    TokenAccepted {
        /// The JWKS URL whose keys verified it.
        keys: String,
        /// Its `kid`.
        kid: Option<String>,
        /// Its `alg`.
        alg: String,
    },
    /// A verifier rejected a token.
    TokenRejected {
        /// The JWKS URL it was checked against.
        keys: String,
        /// Its `kid`.
        kid: Option<String>,
        /// Its `alg` (as written).
        alg: String,
        /// Why.
        reason: String,
    },

    // ---- gateway ----
    /// The gateway created a session.
    SessionIssued {
        /// Session id.
        sid: String,
        /// User.
        user: String,
        /// Device the session is bound to (device registrations only).
        device: Option<String>,
        /// Trace time at which it expires.
        expires_t: u64,
        /// The user's groups, from the ID token.
        #[serde(default)]
        groups: Vec<String>,
    },
    /// The gateway revoked a session.
    SessionRevoked {
        /// Session id.
        sid: String,
        /// Why.
        reason: String,
    },
    /// The gateway decided on a request.
    GatewayDecision {
        /// Application, when the request was for one.
        app: Option<String>,
        /// HTTP method.
        method: String,
        /// Request path (no query string).
        path: String,
        /// Peer address.
        peer: IpAddr,
        /// What the gateway did.
        verdict: GatewayVerdict,
        /// Status returned.
        status: u16,
        /// Session presented, when one was recognised.
        sid: Option<String>,
        /// User of that session.
        user: Option<String>,
        /// Why.
        reason: String,
        /// The device the request came from, as the gateway identifies it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// The MFA verification the request rides on (forwarded requests).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfa: Option<String>,
    },
    /// The gateway rejected an identity token or login response.
    GatewayLoginRejected {
        /// Why.
        reason: String,
    },

    // ---- MFA service ----
    /// A factor was enrolled.
    MfaEnrolled {
        /// User.
        user: String,
        /// Factor type.
        factor: FactorKind,
        /// Short id of the credential or secret.
        credential: String,
        /// The authenticator's AAGUID (WebAuthn), hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aaguid: Option<String>,
        /// Whether it was the user's first factor.
        first: bool,
        /// Peer that enrolled it.
        peer: IpAddr,
    },
    /// The MFA service refused to enrol or to verify.
    MfaRejected {
        /// User, when known.
        user: Option<String>,
        /// Factor type, when known.
        factor: Option<FactorKind>,
        /// `enroll` or `verify`.
        stage: String,
        /// Why.
        reason: String,
        /// Peer.
        peer: IpAddr,
    },
    /// The MFA service accepted a second factor and issued evidence.
    MfaVerified {
        /// Evidence id (the gateway names it when forwarding).
        id: String,
        /// User.
        user: String,
        /// Gateway session the verification is bound to.
        sid: String,
        /// Device it is bound to, as the gateway identified it.
        device: Option<String>,
        /// Factor type.
        factor: FactorKind,
        /// `webauthn`, `totp`, or `mfa_session` (reuse of an earlier
        /// verification within its duration).
        method: String,
        /// Trace time of the factor check this rests on.
        verified_t: u64,
        /// Peer that answered.
        peer: IpAddr,
        /// Facts observed in the factor, whatever the verdict's reasoning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<FactorFacts>,
    },

    // ---- origins ----
    /// An origin application received a request.
    OriginRequest {
        /// Application.
        app: String,
        /// Peer address.
        peer: IpAddr,
        /// Status returned.
        status: u16,
        /// Session id from the app token, when valid.
        sid: Option<String>,
        /// User from the app token, when valid.
        user: Option<String>,
        /// Why this status.
        reason: String,
        /// The edge MFA evidence the app token carried, when valid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfa: Option<FactorKind>,
    },
}
