//! The firewall conformance suite: the 30 checks of research §3.8 as data-driven cases
//! that any backend can run.
//!
//! - [`Case`]: one case file (`tests/conformance/cases/NN-slug.toml`), described in
//!   firewall terms (sublayers, filters, processes, traffic, lifecycle events), with an
//!   expectation on every step; [`parse_case`] reads one and reports errors as
//!   `file:line:col: message`.
//! - [`Backend`]: a firewall implementation. It starts a fresh device per case and
//!   performs one operation at a time; the shared [`execute`] compares every observation
//!   with the case, so every backend is judged alike. [`WfpModel`] runs cases on the pure
//!   WFP model ([`crate::wfp`]).
//! - A case either declares its own filters or names the Lockstep agent's lockdown
//!   ([`AgentDef`], `agent` steps): then the backend installs the lockdown the way the
//!   agent does (the WFP model through [`crate::agent::wfp_backend`], the real
//!   nftables backend through [`crate::nft`]), so the suite tests the agent's real rules,
//!   not a copy of them.
//! - [`run_suite`]: runs every case against a backend and its [`UnsupportedList`] (the
//!   rustls/BoGo approach): a case not listed must pass; a listed case is still run, and
//!   if it passes the entry is stale and fails the suite; an entry naming no case fails
//!   the suite; every entry carries a reason.
//!
//! `tests/conformance/README.md` documents the schema for case authors.

mod case;
mod model;
mod parse;
mod runner;

pub use case::{
    AgentDef, AgentEndpoint, AgentException, AgentSettings, AgentState, Case, Conditions, ErrorKind, Expect,
    FilterAction, FilterDef, LayerName, Op, PacketOutcome, ProcessDef, Step, SublayerDef, Traffic, Verdict, WeightSpec,
};
pub use model::WfpModel;
pub use parse::{TRAFFIC_CLASSES, load_case, parse_case};
pub use runner::{
    Backend, CaseError, CaseOutcome, CaseReport, CaseResult, Mismatch, Observation, SuiteError, SuiteReport,
    UnsupportedEntry, UnsupportedList, check, execute, load_cases, load_unsupported, parse_unsupported, run_suite,
};
