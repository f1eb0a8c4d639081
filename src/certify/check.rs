//! The certification's checks: what each one requires and where the
//! requirement comes from, and the verdict a run gives it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::evidence::Exchange;

/// A group of checks with one overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// What every relying party needs: discovery, keys, the code flow with
    /// PKCE, ID token validation.
    Basic,
    /// Evidence of how the user authenticated (`acr`, `amr`, `auth_time`),
    /// which the gateway maps to its factor types.
    MfaEvidence,
    /// Session semantics as a gateway sees them: re-authentication,
    /// `max_age`, refresh, revocation, logout.
    SessionSemantics,
    /// Signing-key publication and rotation.
    KeyManagement,
}

impl Profile {
    /// Every profile, in report order.
    pub const ALL: [Profile; 4] =
        [Profile::Basic, Profile::MfaEvidence, Profile::SessionSemantics, Profile::KeyManagement];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Basic => "basic",
            Profile::MfaEvidence => "mfa-evidence",
            Profile::SessionSemantics => "session-semantics",
            Profile::KeyManagement => "key-management",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// A title for reports.
    pub fn title(self) -> &'static str {
        match self {
            Profile::Basic => "Basic",
            Profile::MfaEvidence => "MFA evidence",
            Profile::SessionSemantics => "Session semantics",
            Profile::KeyManagement => "Key management",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check of the plan, as the catalog defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// Stable id (`area.name`), used in reports, JUnit and tests.
    pub id: &'static str,
    /// What is checked, in one line.
    pub title: &'static str,
    /// The specification section or OpenID conformance module it comes from.
    pub requirement: &'static str,
    /// Why it matters to a continuous-enforcement gateway.
    pub rationale: &'static str,
    /// The profile it belongs to.
    pub profile: Profile,
    /// Whether a failure fails the profile (otherwise it is advisory: a
    /// failure is reported as a warning).
    pub required: bool,
}

macro_rules! checks {
    ($($name:ident = $id:literal, $profile:ident, $required:literal, $title:literal, $req:literal, $why:literal;)*) => {
        /// The catalog, one constant per check.
        pub mod ids {
            use super::*;
            $(
                #[doc = $title]
                pub const $name: CheckSpec = CheckSpec {
                    id: $id,
                    title: $title,
                    requirement: $req,
                    rationale: $why,
                    profile: Profile::$profile,
                    required: $required,
                };
            )*
        }
        /// Every check, in plan order.
        pub const CATALOG: &[CheckSpec] = &[$(ids::$name),*];
    };
}

checks! {
    DISCOVERY_FETCH = "discovery.fetch", Basic, true,
        "The discovery document is served as JSON at the well-known URL",
        "OpenID Connect Discovery 1.0 §4; oidcc-discovery-endpoint-verification",
        "The gateway learns every endpoint and the key URL from it.";
    DISCOVERY_ISSUER = "discovery.issuer", Basic, true,
        "The document's issuer is exactly the issuer URL",
        "OpenID Connect Discovery 1.0 §4.3; oidcc-discovery-issuer-not-matching-config",
        "An issuer mismatch is the mix-up attack's opening: the gateway must refuse such a provider.";
    DISCOVERY_FIELDS = "discovery.required-fields", Basic, true,
        "The required metadata is present and `code` is a supported response type",
        "OpenID Connect Discovery 1.0 §3",
        "Without them the gateway cannot run the authorization code flow.";
    DISCOVERY_ALGS = "discovery.algorithms", Basic, true,
        "ID token algorithms include RS256 and never `none`; HS* only advisory",
        "OpenID Connect Discovery 1.0 §3 (id_token_signing_alg_values_supported); OpenID Connect Core 1.0 §15.1",
        "A provider that offers `none` or symmetric algorithms invites downgrade and key-confusion attacks.";
    DISCOVERY_PKCE = "discovery.pkce-methods", Basic, false,
        "`code_challenge_methods_supported` lists S256",
        "RFC 8414 §2; RFC 7636 §4.2",
        "The gateway only sends S256; a provider that does not say so may silently ignore PKCE.";
    JWKS_FETCH = "jwks.fetch", Basic, true,
        "The JWKS is served and its signing keys parse",
        "RFC 7517 §5; OpenID Connect Core 1.0 §10.1",
        "The gateway verifies every ID token against these keys.";
    JWKS_KID = "jwks.kid", Basic, true,
        "Every key has a `kid` when there are several, and kids are unique",
        "OpenID Connect Core 1.0 §10.1",
        "Without kids the gateway cannot pick the key during a rotation.";
    JWKS_PUBLIC_ONLY = "jwks.public-only", Basic, true,
        "No private key material is published",
        "RFC 7517 §9.2; RFC 7518 §6.2.2, §6.3.2",
        "A published private key lets anyone mint ID tokens the gateway accepts.";
    CODE_FLOW = "code.flow", Basic, true,
        "Authorization code + PKCE S256 yields an ID token and a Bearer access token",
        "OpenID Connect Core 1.0 §3.1.3.3; RFC 7636; oidcc-server",
        "This is the only flow the gateway uses.";
    STATE_ROUND_TRIP = "code.state", Basic, true,
        "`state` comes back unchanged",
        "RFC 6749 §4.1.2; oidcc-ensure-request-with-state",
        "The gateway binds the browser to its own sign-in with it (CSRF).";
    ISS_PARAMETER = "code.iss-parameter", Basic, true,
        "The authorization response's `iss` names the issuer when the provider advertises it",
        "RFC 9207 §2",
        "A gateway that trusts several providers tells them apart by it (mix-up defence).";
    ID_TOKEN_ALG = "id-token.alg", Basic, true,
        "The ID token is signed with an asymmetric algorithm (RS*, PS*, ES*)",
        "OpenID Connect Core 1.0 §3.1.3.7 (7); RFC 8725 §3.1",
        "The gateway accepts no other algorithm.";
    ID_TOKEN_SIGNATURE = "id-token.signature", Basic, true,
        "The ID token's `kid` is in the JWKS and its signature verifies",
        "OpenID Connect Core 1.0 §3.1.3.7 (6), §10.1; oidcc-idtoken-signature",
        "A token the gateway cannot verify cannot open a session.";
    ID_TOKEN_ISS = "id-token.iss", Basic, true,
        "The ID token's `iss` is exactly the issuer",
        "OpenID Connect Core 1.0 §3.1.3.7 (2)",
        "Tokens of another issuer must never open a session.";
    ID_TOKEN_AUD = "id-token.aud", Basic, true,
        "`aud` contains the client id; `azp` is the client id when there are several audiences",
        "OpenID Connect Core 1.0 §3.1.3.7 (3)-(5)",
        "A token minted for another client must not work at the gateway.";
    ID_TOKEN_TIMES = "id-token.times", Basic, true,
        "`exp` is in the future, `iat` is present and not in the future, `nbf` (if any) has passed",
        "OpenID Connect Core 1.0 §2, §3.1.3.7 (9)-(10)",
        "The gateway's session starts from these times.";
    ID_TOKEN_NONCE = "id-token.nonce", Basic, true,
        "The ID token carries the `nonce` the client sent",
        "OpenID Connect Core 1.0 §3.1.3.7 (11); oidcc-ensure-request-with-nonce",
        "The nonce stops the replay of an ID token into another sign-in.";
    ID_TOKEN_HASHES = "id-token.hashes", Basic, true,
        "`at_hash` and `c_hash`, when present, match",
        "OpenID Connect Core 1.0 §3.1.3.8, §3.3.2.11",
        "A mismatch means the token was issued for other credentials.";
    CODE_REUSE = "code.reuse", Basic, true,
        "A code redeemed twice is refused",
        "RFC 6749 §4.1.2, §10.5; oidcc-codereuse",
        "A stolen code must not open a second session.";
    PKCE_WRONG_VERIFIER = "pkce.wrong-verifier", Basic, true,
        "A code redeemed with the wrong `code_verifier` is refused",
        "RFC 7636 §4.6",
        "PKCE is what makes an intercepted code useless.";
    PKCE_PLAIN = "pkce.plain-rejected", Basic, true,
        "An authorization request with `code_challenge_method=plain` is refused",
        "RFC 7636 §4.2, §7.2; RFC 9700 §2.1.1 (gateway policy: S256 only)",
        "`plain` sends the verifier in the clear; the gateway's policy allows only S256.";
    PKCE_MISSING = "pkce.required", Basic, false,
        "An authorization request without PKCE is refused",
        "RFC 9700 §2.1.1",
        "A provider that accepts requests without PKCE can be downgraded by whoever forges the request.";
    REDIRECT_UNREGISTERED = "redirect-uri.unregistered", Basic, true,
        "An unregistered `redirect_uri` gets no redirect",
        "OpenID Connect Core 1.0 §3.1.2.1; RFC 6749 §3.1.2.4; oidcc-ensure-registered-redirect-uri",
        "An open redirect hands codes to the attacker.";
    REDIRECT_TOKEN_MISMATCH = "redirect-uri.token-mismatch", Basic, true,
        "A code redeemed with another `redirect_uri` is refused",
        "RFC 6749 §4.1.3",
        "The binding of the code to its redirect is what stops code injection.";
    USERINFO_SUB = "userinfo.sub", Basic, true,
        "The userinfo `sub` equals the ID token's",
        "OpenID Connect Core 1.0 §5.3.2; oidcc-userinfo-get",
        "Claims of another user must never be merged into the session.";
    MFA_AMR_PRESENT = "mfa.amr-present", MfaEvidence, true,
        "The ID token has an `amr` claim",
        "OpenID Connect Core 1.0 §2; RFC 8176",
        "Without `amr` the gateway cannot accept the provider's MFA and prompts at the edge every time.";
    MFA_AMR_REGISTERED = "mfa.amr-registered", MfaEvidence, false,
        "Every `amr` value is registered in RFC 8176",
        "RFC 8176 §2; IANA Authentication Method Reference Values",
        "Unregistered values need a vendor-specific mapping, or they are ignored.";
    MFA_AMR_MAPPING = "mfa.amr-mapping", MfaEvidence, false,
        "At least one `amr` value maps to one of the gateway's factor types",
        "Lockstep policy: RFC 8176 → factor types (policy::amr_factor)",
        "Only mapped values can satisfy an application's MFA requirement with the provider's evidence.";
    MFA_AUTH_TIME = "mfa.auth-time", MfaEvidence, true,
        "The ID token has `auth_time`",
        "OpenID Connect Core 1.0 §2",
        "The gateway judges how fresh the provider's evidence is by it.";
    MFA_ACR_VALUES = "mfa.acr-values", MfaEvidence, true,
        "A requested `acr_values` is honoured in the ID token's `acr`",
        "OpenID Connect Core 1.0 §3.1.2.1, §5.5.1.1; oidcc-ensure-request-with-acr-values-succeeds",
        "Step-up at the provider is asked for with it.";
    SESSION_PROMPT_NONE = "session.prompt-none", SessionSemantics, true,
        "With a live session, `prompt=none` returns a code without any page",
        "OpenID Connect Core 1.0 §3.1.2.1; oidcc-prompt-none-logged-in",
        "The gateway's silent re-checks rely on it.";
    SESSION_PROMPT_LOGIN = "session.prompt-login", SessionSemantics, true,
        "`prompt=login` forces a new authentication (a fresh `auth_time`)",
        "OpenID Connect Core 1.0 §3.1.2.1; oidcc-prompt-login",
        "The gateway asks for it when a session must be re-proven.";
    SESSION_MAX_AGE = "session.max-age", SessionSemantics, true,
        "`max_age` is honoured: `auth_time` is present and no older than asked",
        "OpenID Connect Core 1.0 §3.1.2.1, §2; oidcc-max-age-1",
        "Session lifetimes at the gateway are only as good as this.";
    SESSION_REFRESH = "session.refresh", SessionSemantics, true,
        "A refresh token (where issued) yields a new ID token for the same user",
        "OpenID Connect Core 1.0 §12.2; oidcc-refresh-token",
        "Sessions are extended this way without user interaction.";
    SESSION_REFRESH_ROTATION = "session.refresh-rotation", SessionSemantics, false,
        "A refresh token used once is not accepted again",
        "RFC 9700 §4.14.2",
        "A leaked refresh token otherwise lives as long as the grant.";
    SESSION_REVOCATION = "session.revocation", SessionSemantics, true,
        "A revoked refresh token no longer works (where revocation is advertised)",
        "RFC 7009 §2.1, §2.2",
        "Revocation is how an administrator ends a session at the source.";
    SESSION_REVOCATION_ACCESS = "session.revocation-access", SessionSemantics, false,
        "A revoked access token is refused at userinfo",
        "RFC 7009 §2.2",
        "A revoked token that keeps working keeps the session's data flowing.";
    SESSION_LOGOUT = "session.logout", SessionSemantics, true,
        "After RP-initiated logout, `prompt=none` answers `login_required`",
        "OpenID Connect RP-Initiated Logout 1.0 §2, §3; oidcc-rp-initiated-logout",
        "A logout that leaves the provider's session alive signs the user straight back in.";
    KEYS_CACHE_HEADERS = "keys.cache-headers", KeyManagement, false,
        "The JWKS response says how long it may be cached",
        "RFC 9111 §5.2; OpenID Connect Core 1.0 §10.1.1",
        "The gateway's key cache TTL bounds how long a removed key stays trusted.";
    KEYS_ROTATION = "keys.rotation", KeyManagement, true,
        "After a triggered rotation, new tokens use a published new key and verify after one refetch",
        "OpenID Connect Core 1.0 §10.1.1",
        "Rotation must never lock users out or leave the gateway trusting a key the provider dropped.";
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The requirement holds.
    Pass,
    /// An advisory check failed, or a required one passed with a caveat.
    Warning,
    /// The requirement does not apply: the provider does not offer the
    /// feature (it is not advertised).
    Skipped,
    /// The check could not be run by this certifier (e.g. the login driver
    /// cannot observe sessions); the profile is incomplete.
    NotRun,
    /// The requirement does not hold.
    Fail,
}

impl Verdict {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warning => "warning",
            Verdict::Skipped => "skipped",
            Verdict::NotRun => "not-run",
            Verdict::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    /// Check id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Where the requirement comes from.
    pub requirement: String,
    /// Why it matters.
    pub rationale: String,
    /// Profile.
    pub profile: Profile,
    /// Whether it is required for its profile.
    pub required: bool,
    /// The verdict.
    pub verdict: Verdict,
    /// What was observed, in a sentence or two.
    pub detail: String,
    /// The HTTP exchanges behind the verdict, secrets redacted.
    pub evidence: Vec<Exchange>,
}

impl CheckResult {
    /// A result for `spec`. An advisory check's failure becomes a warning.
    pub fn new(spec: &CheckSpec, verdict: Verdict, detail: impl Into<String>, evidence: Vec<Exchange>) -> Self {
        let verdict = if verdict == Verdict::Fail && !spec.required { Verdict::Warning } else { verdict };
        CheckResult {
            id: spec.id.to_string(),
            title: spec.title.to_string(),
            requirement: spec.requirement.to_string(),
            rationale: spec.rationale.to_string(),
            profile: spec.profile,
            required: spec.required,
            verdict,
            detail: detail.into(),
            evidence,
        }
    }
}

/// A profile's overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileVerdict {
    /// Every required check passed or does not apply.
    Pass,
    /// A required check failed.
    Fail,
    /// No required check failed, but some could not be run.
    Incomplete,
}

impl ProfileVerdict {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileVerdict::Pass => "pass",
            ProfileVerdict::Fail => "fail",
            ProfileVerdict::Incomplete => "incomplete",
        }
    }
}

/// The overall verdict of `profile` over `results`.
pub fn profile_verdict(profile: Profile, results: &[CheckResult]) -> ProfileVerdict {
    let required = results.iter().filter(|r| r.profile == profile && r.required);
    let mut verdict = ProfileVerdict::Pass;
    for r in required {
        match r.verdict {
            Verdict::Fail => return ProfileVerdict::Fail,
            Verdict::NotRun => verdict = ProfileVerdict::Incomplete,
            Verdict::Pass | Verdict::Warning | Verdict::Skipped => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CATALOG {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            assert!(c.id.contains('.') && c.id.chars().all(|ch| ch.is_ascii_lowercase() || ".-".contains(ch)));
            assert!(!c.requirement.is_empty() && !c.rationale.is_empty() && !c.title.is_empty());
        }
        for p in Profile::ALL {
            assert!(CATALOG.iter().any(|c| c.profile == p && c.required), "{p} has no required check");
            assert_eq!(Profile::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn an_advisory_failure_is_a_warning_and_profiles_fail_only_on_required_checks() {
        let advisory = CheckResult::new(&ids::PKCE_MISSING, Verdict::Fail, "accepted", vec![]);
        assert_eq!(advisory.verdict, Verdict::Warning);
        let required = CheckResult::new(&ids::CODE_REUSE, Verdict::Fail, "accepted twice", vec![]);
        assert_eq!(required.verdict, Verdict::Fail);
        assert_eq!(profile_verdict(Profile::Basic, std::slice::from_ref(&advisory)), ProfileVerdict::Pass);
        assert_eq!(profile_verdict(Profile::Basic, &[advisory, required]), ProfileVerdict::Fail);
        let not_run = CheckResult::new(&ids::SESSION_LOGOUT, Verdict::NotRun, "driver", vec![]);
        assert_eq!(profile_verdict(Profile::SessionSemantics, &[not_run]), ProfileVerdict::Incomplete);
    }
}
