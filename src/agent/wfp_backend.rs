//! The agent's Windows Filtering Platform backend: compiles the lockdown
//! into WFP filters in the agent's own provider and sublayer, and applies
//! every change in one transaction.
//!
//! Rule set (all in sublayer `lockstep`, weight from the agent's settings):
//!
//! | weight | filter | layers | conditions | action |
//! |---|---|---|---|---|
//! | 13 | permit loopback (if allowed) | connect + recv-accept, v4 + v6 | loopback flag | permit |
//! | 12 | permit *process* -> *endpoint* | connect, family of the endpoint | app id, remote address, remote port, TCP | permit |
//! | 0 | block all | connect + recv-accept, v4 + v6 | none | block |

use std::net::IpAddr;

use super::firewall::{Firewall, FirewallError, LockdownPolicy};
use crate::config::FilterLifetime;
use crate::wfp::{
    Action, Condition, EngineError, FilterId, FilterSpec, IpPrefix, Layer, Lifetime, Protocol, SessionId, Weight,
};

/// Key of the agent's WFP provider.
pub const PROVIDER: &str = "lockstep";
/// Key of the agent's WFP sublayer.
pub const SUBLAYER: &str = "lockstep";

/// The Base Filtering Engine's management API as a process sees it
/// (the `Fwpm*` calls), bound to the calling process.
pub trait Bfe: Send + Sync {
    /// `FwpmEngineOpen0`: opens a session owned by the calling process.
    fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError>;
    /// `FwpmTransactionBegin0`.
    fn begin(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmTransactionCommit0`.
    fn commit(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmTransactionAbort0`.
    fn abort(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// `FwpmProviderAdd0`.
    fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError>;
    /// `FwpmSubLayerAdd0`.
    fn add_sublayer(
        &mut self,
        session: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError>;
    /// `FwpmFilterAdd0`.
    fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError>;
    /// `FwpmFilterDeleteById0`.
    fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError>;
    /// `FwpmFilterEnum0` restricted to one provider.
    fn filters_of_provider(&self, provider: &str) -> Vec<FilterId>;
    /// Whether a provider exists (`FwpmProviderGetByKey0`).
    fn provider_exists(&self, key: &str) -> bool;
    /// Whether a sublayer exists (`FwpmSubLayerGetByKey0`).
    fn sublayer_exists(&self, key: &str) -> bool;
}

/// The WFP backend of the agent.
pub struct WfpFirewall<B: Bfe> {
    bfe: B,
    session: SessionId,
    lifetime: Lifetime,
}

fn fw_err(context: &str, e: EngineError) -> FirewallError {
    FirewallError(format!("{context}: {e}"))
}

impl<B: Bfe> WfpFirewall<B> {
    /// Opens the agent's BFE session and makes sure its provider and
    /// sublayer exist (they persist across reboots when filters do).
    pub fn open(mut bfe: B, lifetime: FilterLifetime, sublayer_weight: u16) -> Result<Self, FirewallError> {
        let dynamic = lifetime == FilterLifetime::Dynamic;
        let session = bfe.open_session("Lockstep agent", dynamic).map_err(|e| fw_err("open session", e))?;
        let lifetime = match lifetime {
            FilterLifetime::Dynamic => Lifetime::Dynamic,
            FilterLifetime::Static => Lifetime::Static,
            FilterLifetime::Persistent => Lifetime::Persistent,
        };
        let persistent = lifetime == Lifetime::Persistent;
        let mut fw = WfpFirewall { bfe, session, lifetime };
        fw.transaction(|bfe, s| {
            if !bfe.provider_exists(PROVIDER) {
                bfe.add_provider(s, PROVIDER, persistent).map_err(|e| fw_err("add provider", e))?;
            }
            if !bfe.sublayer_exists(SUBLAYER) {
                bfe.add_sublayer(s, SUBLAYER, Some(PROVIDER), sublayer_weight, persistent)
                    .map_err(|e| fw_err("add sublayer", e))?;
            }
            Ok(())
        })?;
        Ok(fw)
    }

    fn transaction(
        &mut self,
        body: impl FnOnce(&mut B, SessionId) -> Result<(), FirewallError>,
    ) -> Result<(), FirewallError> {
        let s = self.session;
        self.bfe.begin(s).map_err(|e| fw_err("begin transaction", e))?;
        match body(&mut self.bfe, s) {
            Ok(()) => self.bfe.commit(s).map_err(|e| fw_err("commit", e)),
            Err(e) => {
                let _ = self.bfe.abort(s);
                Err(e)
            }
        }
    }

    fn filter(&self, name: String, layer: Layer, weight: u8, action: Action, conditions: Vec<Condition>) -> FilterSpec {
        FilterSpec {
            name,
            layer,
            sublayer: SUBLAYER.to_string(),
            provider: Some(PROVIDER.to_string()),
            weight: Weight::Range(weight),
            action,
            clear_action_right: false,
            lifetime: self.lifetime,
            conditions,
        }
    }

    /// The filters of the lockdown.
    pub fn lockdown_filters(&self, policy: &LockdownPolicy) -> Vec<FilterSpec> {
        let mut specs = Vec::new();
        if policy.allow_loopback {
            for layer in Layer::ALL {
                specs.push(self.filter(
                    "lockstep: permit loopback".into(),
                    layer,
                    13,
                    Action::Permit,
                    vec![Condition::Loopback],
                ));
            }
        }
        for ex in &policy.exceptions {
            for remote in &ex.remote {
                let v6 = matches!(remote.ip(), IpAddr::V6(_));
                let layer = if v6 { Layer::AleAuthConnectV6 } else { Layer::AleAuthConnectV4 };
                specs.push(self.filter(
                    format!("lockstep: permit {} -> {remote}", ex.process),
                    layer,
                    12,
                    Action::Permit,
                    vec![
                        Condition::AppId(ex.app_id.clone()),
                        Condition::RemoteAddr(IpPrefix::host(remote.ip())),
                        Condition::RemotePort(remote.port()),
                        Condition::Protocol(Protocol::Tcp),
                    ],
                ));
            }
        }
        for layer in Layer::ALL {
            specs.push(self.filter("lockstep: block all".into(), layer, 0, Action::Block, vec![]));
        }
        specs
    }
}

impl<B: Bfe> Firewall for WfpFirewall<B> {
    fn engage_lockdown(&mut self, policy: &LockdownPolicy) -> Result<(), FirewallError> {
        let specs = self.lockdown_filters(policy);
        self.transaction(|bfe, s| {
            for id in bfe.filters_of_provider(PROVIDER) {
                bfe.delete_filter(s, id).map_err(|e| fw_err("delete filter", e))?;
            }
            for spec in specs {
                bfe.add_filter(s, spec).map_err(|e| fw_err("add filter", e))?;
            }
            Ok(())
        })
    }

    fn lift_lockdown(&mut self) -> Result<(), FirewallError> {
        self.transaction(|bfe, s| {
            for id in bfe.filters_of_provider(PROVIDER) {
                bfe.delete_filter(s, id).map_err(|e| fw_err("delete filter", e))?;
            }
            Ok(())
        })
    }
}
