//! The BFE management API as a process on the device calls it: every call
//! is bound to the calling process, every visible change is traced, and
//! persistent objects are saved to the device's disk.

use crate::agent::wfp_backend::Bfe;
use crate::trace::EventBody;
use crate::wfp::{ChangeSet, EngineError, FilterId, FilterSpec, SessionId};

use super::Windows;

/// A process's handle on the Base Filtering Engine.
pub struct BfeHandle {
    os: Windows,
    pid: u32,
}

impl BfeHandle {
    /// The handle of process `pid`.
    pub fn new(os: Windows, pid: u32) -> Self {
        BfeHandle { os, pid }
    }

    /// Runs one engine call; a change outside a transaction is committed at
    /// once, so it is traced at once.
    fn call<T>(
        &mut self,
        session: SessionId,
        f: impl FnOnce(&mut crate::wfp::Engine) -> Result<T, EngineError>,
        added: impl FnOnce(&T) -> Option<FilterId>,
        deleted: Option<FilterId>,
    ) -> Result<T, EngineError> {
        let (result, implicit) = {
            let mut st = self.os.state();
            let in_txn = st.engine.transaction_holder() == Some(session);
            let deleted_name = deleted.and_then(|id| st.engine.filter(id)).map(|f| f.spec.name.clone());
            let result = f(&mut st.engine)?;
            let mut changes = ChangeSet::default();
            if !in_txn {
                if let Some(id) = added(&result) {
                    changes.added.push(id);
                }
                if let (Some(id), Some(name)) = (deleted, deleted_name) {
                    changes.deleted.push((id, name, crate::wfp::DeleteReason::Explicit));
                }
            }
            (result, changes)
        };
        self.os.record_changes(session.0, &implicit, None);
        Ok(result)
    }
}

impl Bfe for BfeHandle {
    fn open_session(&mut self, name: &str, dynamic: bool) -> Result<SessionId, EngineError> {
        let session = self.os.state().engine.open_session(self.pid, name, dynamic)?;
        self.os.inner.recorder.record(EventBody::WfpSessionOpened {
            session: session.0,
            pid: self.pid,
            name: name.to_string(),
            dynamic,
        });
        Ok(session)
    }

    fn begin(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.os.state().engine.begin_transaction(session)
    }

    fn commit(&mut self, session: SessionId) -> Result<(), EngineError> {
        let changes = self.os.state().engine.commit_transaction(session)?;
        self.os.record_changes(session.0, &changes, None);
        Ok(())
    }

    fn abort(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.os.state().engine.abort_transaction(session)
    }

    fn add_provider(&mut self, session: SessionId, key: &str, persistent: bool) -> Result<(), EngineError> {
        self.call(session, |e| e.add_provider(session, key, persistent), |_| None, None)
    }

    fn add_sublayer(
        &mut self,
        session: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError> {
        self.call(session, |e| e.add_sublayer(session, key, provider, weight, persistent), |_| None, None)
    }

    fn add_filter(&mut self, session: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError> {
        self.call(session, |e| e.add_filter(session, spec), |id| Some(*id), None)
    }

    fn delete_filter(&mut self, session: SessionId, id: FilterId) -> Result<(), EngineError> {
        self.call(session, |e| e.delete_filter(session, id), |_| None, Some(id))
    }

    fn filters_of_provider(&self, provider: &str) -> Vec<FilterId> {
        self.os
            .state()
            .engine
            .filters()
            .filter(|f| f.spec.provider.as_deref() == Some(provider))
            .map(|f| f.id)
            .collect()
    }

    fn provider_exists(&self, key: &str) -> bool {
        self.os.state().engine.providers().any(|p| p.key == key)
    }

    fn sublayer_exists(&self, key: &str) -> bool {
        self.os.state().engine.sublayers().any(|s| s.key == key)
    }
}
