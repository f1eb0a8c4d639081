//! Lockstep: a deterministic lab for zero-trust continuous enforcement.
//!
//! See ARCHITECTURE.md for the map and the invariants. In short: components
//! (`idp`, `gateway`, `origin`, `web`, `agent`, `device`) are written once
//! against the network seam (`net`), run inside a turmoil simulation driven
//! by `world`, record what they do into a `trace`, and the `oracle` checks
//! the trace against the enforcement invariants.

pub mod agent;
pub mod authenticator;
pub mod certify;
pub mod config;
pub mod conformance;
pub mod device;
pub mod explore;
pub mod gateway;
pub mod http;
pub mod idp;
pub mod input;
pub mod jose;
pub mod mfa;
pub mod net;
pub mod nft;
pub mod oauth;
pub mod oracle;
pub mod origin;
pub mod policy;
pub mod protocol;
pub mod realmode;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod text;
pub mod totp;
pub mod trace;
pub mod web;
pub mod wfp;
pub mod world;
