//! `lab certify idp`: certifies a live OpenID Connect provider for use
//! behind a continuous-enforcement gateway.
//!
//! A test plan of checks (discovery, keys, the authorization code flow with
//! PKCE, ID token validation, session semantics, MFA evidence) runs over
//! real sockets against the provider; each check has an id, the requirement
//! it comes from, a verdict and redacted evidence. The login step (the
//! only part that needs a user) is a pluggable [`driver::LoginDriver`].

pub mod check;
pub mod container;
pub mod driver;
pub mod evidence;
pub mod plan;
pub mod report;
pub mod token;

pub use check::{CATALOG, CheckResult, CheckSpec, Profile, ProfileVerdict, Verdict};
pub use plan::{Certification, CertifyOptions, ProfileSummary, certify};
