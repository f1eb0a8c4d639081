//! The agent's installer: before the device's first boot in a run, it installs
//! the agent's lockdown the way the agent itself would (the same backend code,
//! against a scratch engine), so whatever the agent's configuration makes
//! persistent or boot-time is on the disk when the device powers on.

use super::{DeviceSetup, DiskContents};
use crate::agent::firewall::Firewall;
use crate::agent::wfp_backend::{Bfe, WfpFirewall};
use crate::wfp::{Engine, EngineError, FilterId, FilterSpec, SessionId};

/// The installer's own handle on a scratch engine.
struct ScratchBfe(Engine);

/// Process id the installer runs as.
const INSTALLER_PID: u32 = 4;

impl Bfe for ScratchBfe {
    fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError> {
        self.0.open_session(INSTALLER_PID, name, dynamic)
    }
    fn begin(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.0.begin_transaction(session)
    }
    fn commit(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.0.commit_transaction(session).map(|_| ())
    }
    fn abort(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.0.abort_transaction(session)
    }
    fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError> {
        self.0.add_provider(session, key, persistent)
    }
    fn add_sublayer(
        &mut self,
        session: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError> {
        self.0.add_sublayer(session, key, provider, weight, persistent)
    }
    fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError> {
        self.0.add_filter(session, spec)
    }
    fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError> {
        self.0.delete_filter(session, id)
    }
    fn filters_of_provider(&self, provider: &str) -> Vec<FilterId> {
        self.0.filters().filter(|f| f.spec.provider.as_deref() == Some(provider)).map(|f| f.id).collect()
    }
    fn provider_exists(&self, key: &str) -> bool {
        self.0.providers().any(|p| p.key == key)
    }
    fn sublayer_exists(&self, key: &str) -> bool {
        self.0.sublayers().any(|s| s.key == key)
    }
}

impl WfpFirewall<ScratchBfe> {
    fn into_engine(self) -> Engine {
        self.into_bfe().0
    }
}

/// What the disk holds right after the agent was installed: the persistent and
/// boot-time part of its lockdown (nothing, for dynamic or static filters).
pub fn install_agent(setup: &DeviceSetup) -> DiskContents {
    let fw = WfpFirewall::open(
        ScratchBfe(Engine::new()),
        setup.agent_filter_lifetime,
        setup.agent_sublayer_weight,
        setup.agent_boot_time_filters,
    );
    let engine = match fw {
        Ok(mut fw) => match fw.engage_lockdown(&setup.agent.policy) {
            Ok(()) => fw.into_engine(),
            Err(_) => return DiskContents::default(),
        },
        Err(_) => return DiskContents::default(),
    };
    DiskContents { firewall: engine.persistent_store(), agent_session: None }
}
