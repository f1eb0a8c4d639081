//! The Base Filtering Engine: sessions, transactions, object lifetimes and the kernel
//! filter tables that classification reads.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::classify::{ClassifyContext, Decision, arbitrate};
use super::filter::{Condition, Filter, FilterId, FilterSpec, Layer, Lifetime, SessionId, Weight};

/// A policy provider (`FWPM_PROVIDER0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provider {
    /// Provider key.
    pub key: String,
    /// Effective lifetime.
    pub lifetime: Lifetime,
    /// Session that added it.
    pub session: SessionId,
}

/// A sublayer (`FWPM_SUBLAYER0`); sublayers span every layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sublayer {
    /// Sublayer key.
    pub key: String,
    /// Owning provider key.
    pub provider: Option<String>,
    /// Priority: higher weights are evaluated first.
    pub weight: u16,
    /// Effective lifetime.
    pub lifetime: Lifetime,
    /// Session that added it.
    pub session: SessionId,
}

/// `FWPM_SESSION0.txnWaitTimeoutInMSec` when the caller passes 0: the default wait
/// for the transaction lock, 15 s (MS Learn "Object Management").
pub const DEFAULT_TXN_WAIT_TIMEOUT_MS: u32 = 15_000;

/// `INFINITE`: wait for the transaction lock for ever (WireGuard's dynamic session).
pub const INFINITE_TXN_WAIT: u32 = u32::MAX;

/// What a caller sets in `FWPM_SESSION0` when opening a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SessionOptions {
    /// `FWPM_SESSION_FLAG_DYNAMIC`.
    pub dynamic: bool,
    /// `txnWaitTimeoutInMSec` ([`DEFAULT_TXN_WAIT_TIMEOUT_MS`] by default,
    /// [`INFINITE_TXN_WAIT`] for ever).
    pub txn_wait_timeout_ms: u32,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { dynamic: false, txn_wait_timeout_ms: DEFAULT_TXN_WAIT_TIMEOUT_MS }
    }
}

/// An open engine session (`FwpmEngineOpen0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Handle.
    pub id: SessionId,
    /// Process that opened it; its exit runs the session down.
    pub owner_pid: u32,
    /// Display name.
    pub name: String,
    /// `FWPM_SESSION_FLAG_DYNAMIC`.
    pub dynamic: bool,
    /// How long a call of this session waits for another session's transaction lock.
    pub txn_wait_timeout_ms: u32,
}

/// Why a filter disappeared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum DeleteReason {
    /// Deleted by a caller.
    Explicit,
    /// Its dynamic session closed or its owner process exited.
    SessionEnded,
    /// Non-persistent object dropped by a BFE stop.
    BfeStopped,
    /// A boot-time filter retired when BFE finished initializing (it stays stored
    /// for the next boot).
    BfeStarted,
}

/// Where the filtering engine is in the device's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// TCP/IP is up, BFE has not initialized since power-on: only boot-time filters act.
    BootTime,
    /// BFE is running: every filter but the boot-time ones acts.
    #[default]
    Running,
    /// BFE was stopped after it had run: persistent filters stay in force, no session
    /// can be opened and boot-time filters do not come back until the next boot.
    Stopped,
}

/// Filters added and deleted by one committed change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSet {
    /// New filters, in id order.
    pub added: Vec<FilterId>,
    /// Removed filters with their names, in id order.
    pub deleted: Vec<(FilterId, String, DeleteReason)>,
    /// Layers whose generation was bumped, in `Layer` order.
    pub layers: Vec<Layer>,
}

impl ChangeSet {
    /// Whether no filter was added or deleted.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.deleted.is_empty()
    }
}

/// Engine errors; no state changes when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Unknown or closed session handle.
    #[error("session {0} does not exist")]
    UnknownSession(SessionId),
    /// Referenced provider is missing.
    #[error("provider `{0}` does not exist")]
    UnknownProvider(String),
    /// Referenced sublayer is missing.
    #[error("sublayer `{0}` does not exist")]
    UnknownSublayer(String),
    /// Filter id not installed.
    #[error("filter {0} does not exist")]
    UnknownFilter(FilterId),
    /// Provider key already used.
    #[error("provider `{0}` already exists")]
    DuplicateProvider(String),
    /// Sublayer key already used.
    #[error("sublayer `{0}` already exists")]
    DuplicateSublayer(String),
    /// Empty provider/sublayer key or filter name.
    #[error("{0} key or name must not be empty")]
    EmptyName(&'static str),
    /// Sublayer still referenced by filters.
    #[error("sublayer `{key}` is still used by {filters} filter(s)")]
    SublayerInUse { key: String, filters: usize },
    /// Provider still referenced by sublayers or filters.
    #[error("provider `{key}` is still used by {objects} sublayer(s) or filter(s)")]
    ProviderInUse { key: String, objects: usize },
    /// Weight range above 15.
    #[error("filter `{filter}`: weight range {range} is outside 0..=15")]
    InvalidWeight { filter: String, range: u8 },
    /// A condition that cannot apply to the filter's layer.
    #[error("filter `{filter}`: {reason}")]
    InvalidCondition { filter: String, reason: String },
    /// `Lifetime::Dynamic` requested from a non-dynamic session.
    #[error("filter `{filter}` asks for a dynamic lifetime but session {session} is not dynamic")]
    DynamicInStaticSession { filter: String, session: SessionId },
    /// A persistent object whose parent is not persistent.
    #[error("persistent {kind} `{name}` requires {parent_kind} `{parent}` to be persistent")]
    PersistentParent { kind: &'static str, name: String, parent_kind: &'static str, parent: String },
    /// Another session holds the transaction lock. The model cannot block: this is what
    /// the caller sees once its session's `txnWaitTimeoutInMSec` (`waited_ms`) has passed
    /// without the holder finishing (`FWP_E_TIMEOUT`); with [`INFINITE_TXN_WAIT`] a real
    /// caller would still be waiting.
    #[error("the transaction lock is held by session {holder} (caller's lock wait: {})", wait_text(*waited_ms))]
    TransactionLocked { holder: SessionId, waited_ms: u32 },
    /// The session already has an open transaction.
    #[error("session {0} already has a transaction in progress")]
    TransactionInProgress(SessionId),
    /// Commit or abort without an open transaction.
    #[error("session {0} has no transaction in progress")]
    NoTransaction(SessionId),
    /// The management API is unavailable: BFE is not running.
    #[error("the Base Filtering Engine is not running")]
    BfeNotRunning,
}

fn wait_text(ms: u32) -> String {
    if ms == INFINITE_TXN_WAIT { "infinite".to_string() } else { format!("{ms} ms") }
}

/// Persistent providers, sublayers and filters as BFE keeps them on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PersistentStore {
    /// Provider keys, in key order.
    pub providers: Vec<String>,
    /// `(key, provider, weight)` per sublayer, in key order.
    pub sublayers: Vec<(String, Option<String>, u16)>,
    /// Filter specs (lifetime `Persistent` or `BootTime`), in original id order.
    pub filters: Vec<FilterSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
struct Tables {
    providers: BTreeMap<String, Provider>,
    sublayers: BTreeMap<String, Sublayer>,
    filters: BTreeMap<FilterId, Filter>,
}

impl Tables {
    fn provider_lifetime(&self, key: &str) -> Result<Lifetime, EngineError> {
        self.providers.get(key).map(|p| p.lifetime).ok_or_else(|| EngineError::UnknownProvider(key.to_string()))
    }

    /// Keeps the objects `keep` accepts, then drops anything left with a missing parent.
    fn retain_owned(&mut self, keep: impl Fn(Lifetime, SessionId) -> bool) {
        self.filters.retain(|_, f| keep(f.spec.lifetime, f.session));
        self.sublayers.retain(|_, s| keep(s.lifetime, s.session));
        self.providers.retain(|_, p| keep(p.lifetime, p.session));
        self.drop_orphans();
    }

    /// Removes the dynamic objects of session `s`.
    fn remove_dynamic_of(&mut self, s: SessionId) {
        self.retain_owned(|l, owner| l != Lifetime::Dynamic || owner != s);
    }

    fn drop_orphans(&mut self) {
        let providers = &self.providers;
        let has_provider = |p: &Option<String>| p.as_ref().is_none_or(|k| providers.contains_key(k));
        self.sublayers.retain(|_, sl| has_provider(&sl.provider));
        let sublayers = &self.sublayers;
        self.filters.retain(|_, f| has_provider(&f.spec.provider) && sublayers.contains_key(&f.spec.sublayer));
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Transaction {
    session: SessionId,
    staged: Tables,
}

/// The Base Filtering Engine plus the kernel filter tables.
///
/// Every mutating call made outside an explicit transaction is its own implicit
/// transaction. Ids (sessions from 1, filters from 1) are assigned from counters, so a
/// given call sequence always yields the same ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Engine {
    phase: Phase,
    sessions: BTreeMap<SessionId, Session>,
    committed: Tables,
    txn: Option<Transaction>,
    generations: BTreeMap<Layer, u64>,
    last_session: u64,
    last_filter: u64,
}

impl Engine {
    /// An empty engine with BFE running.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Power-on: the TCP/IP driver starts and loads `store`'s boot-time filters; BFE has
    /// not started ([`Phase::BootTime`]), so persistent filters are not in force yet and
    /// no session can be opened. Filters get ids 1.. in store order and belong to
    /// [`SessionId::BFE`]; objects that fail validation are skipped.
    pub fn power_on(store: &PersistentStore) -> Engine {
        let mut engine = Engine::new();
        let bfe = Session {
            id: SessionId::BFE,
            owner_pid: 0,
            name: "BFE".into(),
            dynamic: false,
            txn_wait_timeout_ms: DEFAULT_TXN_WAIT_TIMEOUT_MS,
        };
        let t = &mut engine.committed;
        for key in &store.providers {
            let _ = add_provider(t, &bfe, key, true);
        }
        for (key, provider, weight) in &store.sublayers {
            let _ = add_sublayer(t, &bfe, key, provider.as_deref(), *weight, true);
        }
        for spec in &store.filters {
            let mut spec = spec.clone();
            if spec.lifetime != Lifetime::BootTime {
                spec.lifetime = Lifetime::Persistent;
            }
            let _ = add_filter(t, &bfe, &mut engine.last_filter, spec);
        }
        engine.phase = Phase::BootTime;
        engine
    }

    /// A fresh boot straight to a running BFE: [`Engine::power_on`] then [`Engine::start_bfe`].
    pub fn boot(store: &PersistentStore) -> Engine {
        let mut engine = Engine::power_on(store);
        engine.start_bfe();
        engine
    }

    /// Where the engine is in the device's life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// BFE finishes initializing: persistent filters come into force and boot-time filters
    /// retire, in one step (no window between them). From [`Phase::Stopped`] it only makes
    /// the management API available again.
    pub fn start_bfe(&mut self) -> ChangeSet {
        match self.phase {
            Phase::Running => ChangeSet::default(),
            Phase::Stopped => {
                self.phase = Phase::Running;
                ChangeSet::default()
            }
            Phase::BootTime => {
                let mut change = ChangeSet::default();
                let mut layers = BTreeSet::new();
                for f in self.committed.filters.values() {
                    match f.spec.lifetime {
                        Lifetime::BootTime => {
                            change.deleted.push((f.id, f.spec.name.clone(), DeleteReason::BfeStarted))
                        }
                        _ => change.added.push(f.id),
                    }
                    layers.insert(f.spec.layer);
                }
                self.bump(&layers);
                change.layers = layers.into_iter().collect();
                self.phase = Phase::Running;
                change
            }
        }
    }

    /// BFE stops: every session ends (its transaction aborted), every non-persistent
    /// object is dropped; persistent objects stay in force, now owned by [`SessionId::BFE`].
    pub fn stop_bfe(&mut self) -> ChangeSet {
        if self.phase != Phase::Running {
            return ChangeSet::default();
        }
        self.txn = None;
        self.sessions.clear();
        let mut next = self.committed.clone();
        next.retain_owned(|l, _| matches!(l, Lifetime::Persistent | Lifetime::BootTime));
        let bfe = SessionId::BFE;
        next.providers.values_mut().for_each(|p| p.session = bfe);
        next.sublayers.values_mut().for_each(|s| s.session = bfe);
        next.filters.values_mut().for_each(|f| f.session = bfe);
        let change = self.apply(next, DeleteReason::BfeStopped);
        self.phase = Phase::Stopped;
        change
    }

    /// Whether a filter is in force in the current phase.
    pub fn is_active(&self, f: &Filter) -> bool {
        (f.spec.lifetime == Lifetime::BootTime) == (self.phase == Phase::BootTime)
    }

    /// The persistent objects of the committed state.
    pub fn persistent_store(&self) -> PersistentStore {
        let t = &self.committed;
        let persistent = |l: Lifetime| matches!(l, Lifetime::Persistent | Lifetime::BootTime);
        PersistentStore {
            providers: t.providers.values().filter(|p| persistent(p.lifetime)).map(|p| p.key.clone()).collect(),
            sublayers: t
                .sublayers
                .values()
                .filter(|s| persistent(s.lifetime))
                .map(|s| (s.key.clone(), s.provider.clone(), s.weight))
                .collect(),
            filters: t.filters.values().filter(|f| persistent(f.spec.lifetime)).map(|f| f.spec.clone()).collect(),
        }
    }

    /// `FwpmEngineOpen0`; `dynamic` sets `FWPM_SESSION_FLAG_DYNAMIC`; the lock wait is
    /// the default 15 s.
    pub fn open_session(&mut self, owner_pid: u32, name: &str, dynamic: bool) -> Result<SessionId, EngineError> {
        let options = SessionOptions { dynamic, ..SessionOptions::default() };
        self.open_session_with(owner_pid, name, options)
    }

    /// `FwpmEngineOpen0` with every modelled `FWPM_SESSION0` setting.
    pub fn open_session_with(
        &mut self,
        owner_pid: u32,
        name: &str,
        options: SessionOptions,
    ) -> Result<SessionId, EngineError> {
        if self.phase != Phase::Running {
            return Err(EngineError::BfeNotRunning);
        }
        self.last_session += 1;
        let id = SessionId(self.last_session);
        let SessionOptions { dynamic, txn_wait_timeout_ms } = options;
        let session = Session { id, owner_pid, name: name.to_string(), dynamic, txn_wait_timeout_ms };
        self.sessions.insert(id, session);
        Ok(id)
    }

    /// `FwpmEngineClose0`: aborts the session's transaction, then deletes its dynamic objects.
    pub fn close_session(&mut self, s: SessionId) -> Result<ChangeSet, EngineError> {
        self.session(s)?;
        Ok(self.end_sessions(&[s]))
    }

    /// RPC rundown: closes every session owned by `pid`, as one change.
    pub fn process_exited(&mut self, pid: u32) -> ChangeSet {
        let ids: Vec<SessionId> = self.sessions.values().filter(|s| s.owner_pid == pid).map(|s| s.id).collect();
        self.end_sessions(&ids)
    }

    /// BFE stop + start ([`Engine::stop_bfe`] then [`Engine::start_bfe`]): all sessions end,
    /// every non-persistent object is dropped, persistent objects stay in force.
    pub fn bfe_restart(&mut self) -> ChangeSet {
        let change = self.stop_bfe();
        self.start_bfe();
        change
    }

    /// An open session.
    pub fn session(&self, s: SessionId) -> Result<&Session, EngineError> {
        self.sessions.get(&s).ok_or(EngineError::UnknownSession(s))
    }

    /// Open sessions in id order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// `FwpmProviderAdd0`.
    pub fn add_provider(&mut self, s: SessionId, key: &str, persistent: bool) -> Result<(), EngineError> {
        self.write(s, |t, session, _| add_provider(t, session, key, persistent))
    }

    /// `FwpmSubLayerAdd0`.
    pub fn add_sublayer(
        &mut self,
        s: SessionId,
        key: &str,
        provider: Option<&str>,
        weight: u16,
        persistent: bool,
    ) -> Result<(), EngineError> {
        self.write(s, |t, session, _| add_sublayer(t, session, key, provider, weight, persistent))
    }

    /// `FwpmFilterAdd0`.
    pub fn add_filter(&mut self, s: SessionId, spec: FilterSpec) -> Result<FilterId, EngineError> {
        self.write(s, |t, session, last| add_filter(t, session, last, spec))
    }

    /// `FwpmFilterDeleteById0`.
    pub fn delete_filter(&mut self, s: SessionId, id: FilterId) -> Result<(), EngineError> {
        self.write(s, |t, _, _| t.filters.remove(&id).map(|_| ()).ok_or(EngineError::UnknownFilter(id)))
    }

    /// `FwpmSubLayerDeleteByKey0`; fails while filters reference it.
    pub fn delete_sublayer(&mut self, s: SessionId, key: &str) -> Result<(), EngineError> {
        self.write(s, |t, _, _| {
            if !t.sublayers.contains_key(key) {
                return Err(EngineError::UnknownSublayer(key.to_string()));
            }
            let filters = t.filters.values().filter(|f| f.spec.sublayer == key).count();
            if filters > 0 {
                return Err(EngineError::SublayerInUse { key: key.to_string(), filters });
            }
            t.sublayers.remove(key);
            Ok(())
        })
    }

    /// `FwpmProviderDeleteByKey0`; fails while sublayers or filters reference it.
    pub fn delete_provider(&mut self, s: SessionId, key: &str) -> Result<(), EngineError> {
        self.write(s, |t, _, _| {
            t.provider_lifetime(key)?;
            let uses = |p: &Option<String>| p.as_deref() == Some(key);
            let objects = t.sublayers.values().filter(|sl| uses(&sl.provider)).count()
                + t.filters.values().filter(|f| uses(&f.spec.provider)).count();
            if objects > 0 {
                return Err(EngineError::ProviderInUse { key: key.to_string(), objects });
            }
            t.providers.remove(key);
            Ok(())
        })
    }

    /// `FwpmTransactionBegin0`: takes the engine-wide transaction lock.
    pub fn begin_transaction(&mut self, s: SessionId) -> Result<(), EngineError> {
        if self.phase != Phase::Running {
            return Err(EngineError::BfeNotRunning);
        }
        let waited_ms = self.session(s)?.txn_wait_timeout_ms;
        match &self.txn {
            Some(t) if t.session == s => Err(EngineError::TransactionInProgress(s)),
            Some(t) => Err(EngineError::TransactionLocked { holder: t.session, waited_ms }),
            None => {
                self.txn = Some(Transaction { session: s, staged: self.committed.clone() });
                Ok(())
            }
        }
    }

    /// `FwpmTransactionCommit0`: applies every staged change atomically.
    pub fn commit_transaction(&mut self, s: SessionId) -> Result<ChangeSet, EngineError> {
        let staged = self.take_txn(s)?;
        Ok(self.apply(staged, DeleteReason::Explicit))
    }

    /// `FwpmTransactionAbort0`: discards every staged change.
    pub fn abort_transaction(&mut self, s: SessionId) -> Result<(), EngineError> {
        self.take_txn(s).map(|_| ())
    }

    /// Session holding the transaction lock, if any.
    pub fn transaction_holder(&self) -> Option<SessionId> {
        self.txn.as_ref().map(|t| t.session)
    }

    /// Classifies `ctx` against the committed filters of `ctx.layer`.
    pub fn classify(&self, ctx: &ClassifyContext) -> Decision {
        let subs: Vec<(&str, u16)> = self.committed.sublayers.values().map(|s| (s.key.as_str(), s.weight)).collect();
        arbitrate(&subs, self.committed.filters.values().filter(|f| self.is_active(f)), ctx)
    }

    /// Bumped once per committed change that adds or deletes a filter in `layer`.
    pub fn layer_generation(&self, layer: Layer) -> u64 {
        self.generations.get(&layer).copied().unwrap_or(0)
    }

    /// Committed filters in id order.
    pub fn filters(&self) -> impl Iterator<Item = &Filter> {
        self.committed.filters.values()
    }

    /// Filters as session `s` sees them, in id order: the staged state of its open
    /// transaction (what `FwpmFilterEnum0` inside the transaction returns), otherwise the
    /// committed state.
    pub fn filters_visible_to(&self, s: SessionId) -> impl Iterator<Item = &Filter> {
        let tables = match &self.txn {
            Some(t) if t.session == s => &t.staged,
            _ => &self.committed,
        };
        tables.filters.values()
    }

    /// A committed filter.
    pub fn filter(&self, id: FilterId) -> Option<&Filter> {
        self.committed.filters.get(&id)
    }

    /// Committed sublayers in key order.
    pub fn sublayers(&self) -> impl Iterator<Item = &Sublayer> {
        self.committed.sublayers.values()
    }

    /// Committed providers in key order.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.committed.providers.values()
    }

    /// Runs a mutation in the session's transaction, or as an implicit transaction.
    fn write<T>(
        &mut self,
        s: SessionId,
        op: impl FnOnce(&mut Tables, &Session, &mut u64) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if self.phase != Phase::Running {
            return Err(EngineError::BfeNotRunning);
        }
        let session = self.sessions.get(&s).ok_or(EngineError::UnknownSession(s))?;
        match &mut self.txn {
            Some(t) if t.session == s => op(&mut t.staged, session, &mut self.last_filter),
            Some(t) => {
                Err(EngineError::TransactionLocked { holder: t.session, waited_ms: session.txn_wait_timeout_ms })
            }
            None => {
                let mut next = self.committed.clone();
                let out = op(&mut next, session, &mut self.last_filter)?;
                self.apply(next, DeleteReason::Explicit);
                Ok(out)
            }
        }
    }

    fn take_txn(&mut self, s: SessionId) -> Result<Tables, EngineError> {
        self.session(s)?;
        match self.txn.take() {
            Some(t) if t.session == s => Ok(t.staged),
            other => {
                self.txn = other;
                Err(EngineError::NoTransaction(s))
            }
        }
    }

    fn end_sessions(&mut self, ids: &[SessionId]) -> ChangeSet {
        if self.txn.as_ref().is_some_and(|t| ids.contains(&t.session)) {
            self.txn = None;
        }
        let mut next = self.committed.clone();
        for &s in ids {
            self.sessions.remove(&s);
            next.remove_dynamic_of(s);
            if let Some(t) = &mut self.txn {
                t.staged.remove_dynamic_of(s);
            }
        }
        self.apply(next, DeleteReason::SessionEnded)
    }

    /// Installs `next` as the committed state and bumps each touched layer once.
    fn apply(&mut self, next: Tables, reason: DeleteReason) -> ChangeSet {
        let old = &self.committed.filters;
        let mut layers = BTreeSet::new();
        let mut change = ChangeSet::default();
        for (id, f) in &next.filters {
            if !old.contains_key(id) {
                change.added.push(*id);
                if self.is_active(f) {
                    layers.insert(f.spec.layer);
                }
            }
        }
        for (id, f) in old {
            if !next.filters.contains_key(id) {
                change.deleted.push((*id, f.spec.name.clone(), reason));
                if self.is_active(f) {
                    layers.insert(f.spec.layer);
                }
            }
        }
        self.bump(&layers);
        change.layers = layers.into_iter().collect();
        self.committed = next;
        change
    }

    fn bump(&mut self, layers: &BTreeSet<Layer>) {
        for layer in layers {
            *self.generations.entry(*layer).or_insert(0) += 1;
        }
    }
}

/// Effective lifetime: everything is dynamic in a dynamic session; otherwise the request.
fn resolve_lifetime(session: &Session, requested: Lifetime, name: &str) -> Result<Lifetime, EngineError> {
    match (session.dynamic, requested) {
        (true, _) => Ok(Lifetime::Dynamic),
        (false, Lifetime::Dynamic) => {
            Err(EngineError::DynamicInStaticSession { filter: name.to_string(), session: session.id })
        }
        (false, l) => Ok(l),
    }
}

fn requested(persistent: bool) -> Lifetime {
    if persistent { Lifetime::Persistent } else { Lifetime::Static }
}

fn add_provider(t: &mut Tables, session: &Session, key: &str, persistent: bool) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::EmptyName("provider"));
    }
    if t.providers.contains_key(key) {
        return Err(EngineError::DuplicateProvider(key.to_string()));
    }
    let lifetime = resolve_lifetime(session, requested(persistent), key)?;
    t.providers.insert(key.to_string(), Provider { key: key.to_string(), lifetime, session: session.id });
    Ok(())
}

fn add_sublayer(
    t: &mut Tables,
    session: &Session,
    key: &str,
    provider: Option<&str>,
    weight: u16,
    persistent: bool,
) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::EmptyName("sublayer"));
    }
    if t.sublayers.contains_key(key) {
        return Err(EngineError::DuplicateSublayer(key.to_string()));
    }
    let lifetime = resolve_lifetime(session, requested(persistent), key)?;
    if let Some(p) = provider {
        let pl = t.provider_lifetime(p)?;
        if lifetime == Lifetime::Persistent && pl != Lifetime::Persistent {
            return Err(EngineError::PersistentParent {
                kind: "sublayer",
                name: key.to_string(),
                parent_kind: "provider",
                parent: p.to_string(),
            });
        }
    }
    let sublayer = Sublayer {
        key: key.to_string(),
        provider: provider.map(str::to_string),
        weight,
        lifetime,
        session: session.id,
    };
    t.sublayers.insert(key.to_string(), sublayer);
    Ok(())
}

fn add_filter(
    t: &mut Tables,
    session: &Session,
    last_id: &mut u64,
    mut spec: FilterSpec,
) -> Result<FilterId, EngineError> {
    if spec.name.is_empty() {
        return Err(EngineError::EmptyName("filter"));
    }
    if let Weight::Range(range) = spec.weight
        && !spec.weight.is_valid()
    {
        return Err(EngineError::InvalidWeight { filter: spec.name, range });
    }
    check_conditions(&spec)?;
    let lifetime = resolve_lifetime(session, spec.lifetime, &spec.name)?;
    // Persistent and boot-time filters outlive a reboot: so must their parents.
    let stored = matches!(lifetime, Lifetime::Persistent | Lifetime::BootTime);
    let persistent_parent = |parent_kind, parent: &str, l: Lifetime| {
        if stored && l != Lifetime::Persistent {
            Err(EngineError::PersistentParent {
                kind: "filter",
                name: spec.name.clone(),
                parent_kind,
                parent: parent.to_string(),
            })
        } else {
            Ok(())
        }
    };
    let sublayer =
        t.sublayers.get(&spec.sublayer).ok_or_else(|| EngineError::UnknownSublayer(spec.sublayer.clone()))?;
    persistent_parent("sublayer", &spec.sublayer, sublayer.lifetime)?;
    if let Some(p) = &spec.provider {
        persistent_parent("provider", p, t.provider_lifetime(p)?)?;
    }
    *last_id += 1;
    let id = FilterId(*last_id);
    spec.lifetime = lifetime;
    // The BFE's auto-generated low 60 bits are modelled as 0 (see module docs).
    let effective_weight = spec.weight.effective(0);
    t.filters.insert(id, Filter { id, spec, effective_weight, session: session.id });
    Ok(id)
}

fn check_conditions(spec: &FilterSpec) -> Result<(), EngineError> {
    let invalid = |reason: String| EngineError::InvalidCondition { filter: spec.name.clone(), reason };
    for c in &spec.conditions {
        if !c.fits(spec.layer) {
            return Err(invalid(format!("condition {:?} does not exist at layer {}", c.field(), spec.layer)));
        }
        match c {
            Condition::RemoteAddr(p) | Condition::LocalAddr(p) if p.is_ipv6() != spec.layer.is_ipv6() => {
                return Err(invalid(format!("address condition {p} does not fit layer {}", spec.layer)));
            }
            Condition::UserSid(sid) if sid.is_empty() => {
                return Err(invalid("empty user SID".into()));
            }
            _ => {}
        }
    }
    Ok(())
}
