//! Engine and flow-table tests (arbitration and matching are tested in their own files).

use super::*;

const AGENT: &str = r"C:\Program Files\Lockstep\agent.exe";
const ROGUE: &str = r"C:\Users\eve\agent.exe";
const SL: &str = "lockstep";
const PROV: &str = "lockstep-provider";
const V4: Layer = Layer::AleAuthConnectV4;
const IN4: Layer = Layer::AleAuthRecvAcceptV4;

fn ctx(app_path: Option<&str>, remote: &str) -> ClassifyContext {
    let local = "10.0.0.2:50000".parse().unwrap();
    let mut c = ClassifyContext::new(V4, Protocol::Tcp, local, remote.parse().unwrap());
    c.app_id = app_path.map(|p| AppId::from_image_path(p).unwrap());
    c
}

fn spec(name: &str, action: Action, weight: u8, conditions: Vec<Condition>) -> FilterSpec {
    let base = FilterSpec::new(name, V4, SL, action);
    let weight = Weight::Range(weight);
    FilterSpec { weight, conditions, ..base }
}

fn block_all() -> FilterSpec {
    spec("block-all", Action::Block, 0, vec![])
}

fn permit_agent() -> FilterSpec {
    let app = AppId::from_image_path(AGENT).unwrap();
    spec("permit-agent", Action::Permit, 15, vec![Condition::AppId(app)])
}

fn inbound_block(name: &str) -> FilterSpec {
    FilterSpec::new(name, IN4, SL, Action::Block)
}

/// An engine with provider `PROV` and sublayer `SL` (0xFFFF) from a session of pid 100.
fn setup(dynamic: bool) -> (Engine, SessionId) {
    let mut e = Engine::new();
    let s = e.open_session(100, "agent", dynamic).unwrap();
    e.add_provider(s, PROV, false).unwrap();
    let res = e.add_sublayer(s, SL, Some(PROV), 0xFFFF, false);
    res.unwrap();
    (e, s)
}

fn allowed(e: &Engine, app_path: Option<&str>) -> bool {
    let d = e.classify(&ctx(app_path, "203.0.113.10:443"));
    d.is_permit()
}

fn err<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
    r.unwrap_err().to_string()
}

fn ids<'a>(filters: impl Iterator<Item = &'a Filter>) -> Vec<FilterId> {
    filters.map(|f| f.id).collect()
}

fn deleted(cs: &ChangeSet) -> Vec<(FilterId, &str, DeleteReason)> {
    cs.deleted.iter().map(|(id, n, r)| (*id, n.as_str(), *r)).collect()
}

fn gens(e: &Engine) -> (u64, u64) {
    (e.layer_generation(V4), e.layer_generation(IN4))
}

#[test]
fn kill_switch_end_to_end() {
    let (mut e, s) = setup(false);
    let block = e.add_filter(s, block_all()).unwrap();
    let permit = e.add_filter(s, permit_agent()).unwrap();
    let d = e.classify(&ctx(Some(AGENT), "203.0.113.10:443"));
    assert_eq!((d.action, d.filter), (Action::Permit, Some(permit)));
    assert_eq!(d.sublayer.as_deref(), Some(SL));
    // Same image name at another path: blocked by the catch-all.
    let d = e.classify(&ctx(Some(ROGUE), "203.0.113.10:443"));
    assert_eq!((d.action, d.filter), (Action::Block, Some(block)));
    assert_eq!(d.filter_name.as_deref(), Some("block-all"));
    // Other layers are untouched: IPv6 connect falls through to the default permit.
    let mut v6 = ctx(None, "[2001:db8::1]:443");
    (v6.layer, v6.local) = (Layer::AleAuthConnectV6, "[fd00::2]:5".parse().unwrap());
    assert_eq!(e.classify(&v6), Decision::default_permit());
    let weight = e.filter(permit).map(|f| f.effective_weight);
    assert_eq!(weight, Some(15 << 60));
    assert_eq!(ids(e.filters()), vec![block, permit]);
}

#[test]
fn foreign_vendor_sublayers() {
    let (mut e, s) = setup(false);
    e.add_filter(s, block_all()).unwrap();
    let other = e.open_session(200, "vendor", false).unwrap();
    let mut p = FilterSpec::new("vendor-allow", V4, "vendor", Action::Permit);
    p.clear_action_right = true;
    // A hard permit below our sublayer loses: our Block came first and is final.
    e.add_sublayer(other, "vendor", None, 0x1000, false).unwrap();
    e.add_filter(other, p.clone()).unwrap();
    assert!(!allowed(&e, None));
    // At equal sublayer weight the key decides ("aaa" < "lockstep"): the hard permit
    // is seen first and our block cannot override it (check 30).
    e.add_sublayer(other, "aaa", None, 0xFFFF, false).unwrap();
    p.sublayer = "aaa".into();
    let hard = e.add_filter(other, p).unwrap();
    let d = e.classify(&ctx(None, "203.0.113.10:443"));
    assert_eq!((d.action, d.filter, d.hard), (Action::Permit, Some(hard), true));
}

#[test]
fn add_errors_name_the_object() {
    let (mut e, s) = setup(false);
    let v6 = Condition::RemoteAddr("2001:db8::/32".parse().unwrap());
    let cases = [
        (FilterSpec { sublayer: "nope".into(), ..block_all() }, "sublayer `nope` does not exist"),
        (FilterSpec { provider: Some("ghost".into()), ..block_all() }, "provider `ghost` does not exist"),
        (
            FilterSpec { weight: Weight::Range(16), ..block_all() },
            "filter `block-all`: weight range 16 is outside 0..=15",
        ),
        (
            FilterSpec { conditions: vec![v6], ..block_all() },
            "filter `block-all`: address condition 2001:db8::/32 does not fit layer \
             FWPM_LAYER_ALE_AUTH_CONNECT_V4",
        ),
        (
            FilterSpec { lifetime: Lifetime::Dynamic, ..block_all() },
            "filter `block-all` asks for a dynamic lifetime but session 1 is not dynamic",
        ),
        (
            FilterSpec { lifetime: Lifetime::Persistent, ..block_all() },
            "persistent filter `block-all` requires sublayer `lockstep` to be persistent",
        ),
        (FilterSpec { name: String::new(), ..block_all() }, "filter key or name must not be empty"),
    ];
    for (bad, msg) in cases {
        assert_eq!(err(e.add_filter(s, bad)), msg);
    }
    assert_eq!(err(e.add_sublayer(s, SL, None, 1, false)), "sublayer `lockstep` already exists");
    let msg = "provider `lockstep-provider` already exists";
    assert_eq!(err(e.add_provider(s, PROV, false)), msg);
    let msg = "persistent sublayer `p` requires provider `lockstep-provider` to be persistent";
    assert_eq!(err(e.add_sublayer(s, "p", Some(PROV), 1, true)), msg);
    assert_eq!(err(e.add_sublayer(s, "x", Some("y"), 1, false)), "provider `y` does not exist");
    assert_eq!(err(e.add_filter(SessionId(99), block_all())), "session 99 does not exist");
    assert_eq!(err(e.delete_filter(s, FilterId(42))), "filter 42 does not exist");
    // Nothing above changed the tables or bumped a generation.
    assert_eq!((e.filters().count(), e.sublayers().count()), (0, 1));
    assert_eq!(gens(&e), (0, 0));
}

#[test]
fn delete_rules() {
    let (mut e, s) = setup(false);
    let id = e.add_filter(s, block_all()).unwrap();
    let msg = "sublayer `lockstep` is still used by 1 filter(s)";
    assert_eq!(err(e.delete_sublayer(s, SL)), msg);
    let msg = "provider `lockstep-provider` is still used by 1 sublayer(s) or filter(s)";
    assert_eq!(err(e.delete_provider(s, PROV)), msg);
    e.delete_filter(s, id).unwrap();
    e.delete_sublayer(s, SL).unwrap();
    e.delete_provider(s, PROV).unwrap();
    assert_eq!(err(e.delete_sublayer(s, SL)), "sublayer `lockstep` does not exist");
    assert_eq!(e.sublayers().count() + e.providers().count(), 0);
}

#[test]
fn dynamic_session_objects_vanish_on_close() {
    let (mut e, s) = setup(true);
    // Requested lifetimes are ignored in a dynamic session.
    let id = e.add_filter(s, FilterSpec { lifetime: Lifetime::Persistent, ..block_all() });
    let id = id.unwrap();
    let lifetime = e.filter(id).map(|f| f.spec.lifetime);
    assert_eq!(lifetime, Some(Lifetime::Dynamic));
    assert!(e.persistent_store().filters.is_empty());
    assert!(!allowed(&e, None));
    let cs = e.close_session(s).unwrap();
    assert_eq!(deleted(&cs), vec![(id, "block-all", DeleteReason::SessionEnded)]);
    assert_eq!((cs.layers, gens(&e)), (vec![V4], (2, 0)));
    assert!(allowed(&e, None), "fail-open once the dynamic session is gone");
    assert_eq!(e.sublayers().count() + e.providers().count(), 0);
    assert_eq!(err(e.close_session(s)), "session 1 does not exist");
}

#[test]
fn kill_dash_nine_runs_down_every_session_of_the_pid() {
    let (mut e, s) = setup(true);
    let s2 = e.open_session(100, "agent-2", true).unwrap();
    let a = e.add_filter(s, block_all()).unwrap();
    let b = e.add_filter(s2, inbound_block("b")).unwrap();
    let bystander = e.open_session(300, "other", true).unwrap();
    let cs = e.process_exited(100);
    let gone: Vec<FilterId> = cs.deleted.iter().map(|d| d.0).collect();
    assert_eq!((gone, cs.layers), (vec![a, b], vec![V4, IN4]));
    assert_eq!(gens(&e), (2, 2), "one bump per layer for the whole rundown");
    let left: Vec<SessionId> = e.sessions().map(|s| s.id).collect();
    assert_eq!(left, vec![bystander]);
    // Nothing left for that pid: empty change, no bump.
    assert!(e.process_exited(100).is_empty());
    assert_eq!(gens(&e), (2, 2));
}

#[test]
fn static_survives_process_exit_but_not_bfe_restart() {
    let (mut e, s) = setup(false);
    let id = e.add_filter(s, block_all()).unwrap();
    assert!(e.process_exited(100).is_empty());
    assert!(e.session(s).is_err());
    assert!(!allowed(&e, None), "static block-all outlives the agent (fail-closed)");
    let cs = e.bfe_restart();
    assert_eq!(deleted(&cs), vec![(id, "block-all", DeleteReason::BfeStopped)]);
    assert!(allowed(&e, None));
    assert_eq!(e.sublayers().count() + e.providers().count(), 0);
}

fn persistent_setup() -> (Engine, SessionId, FilterId) {
    let mut e = Engine::new();
    let s = e.open_session(100, "agent", false).unwrap();
    e.add_provider(s, "prov", true).unwrap();
    e.add_sublayer(s, SL, Some("prov"), 0xFFFF, true).unwrap();
    e.add_sublayer(s, "volatile", None, 1, false).unwrap();
    let lifetime = Lifetime::Persistent;
    let p = FilterSpec { provider: Some("prov".into()), lifetime, ..block_all() };
    let id = e.add_filter(s, p).unwrap();
    e.add_filter(s, permit_agent()).unwrap();
    (e, s, id)
}

#[test]
fn persistent_survives_bfe_restart() {
    let (mut e, s, id) = persistent_setup();
    let cs = e.bfe_restart();
    let names: Vec<&str> = cs.deleted.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(names, vec!["permit-agent"]);
    assert_eq!(e.filter(id).map(|f| f.session), Some(SessionId::BFE));
    assert!(!allowed(&e, Some(AGENT)), "only the persistent block-all remains");
    let keys: Vec<&str> = e.sublayers().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec![SL]);
    assert_eq!(err(e.add_filter(s, block_all())), "session 1 does not exist");
}

#[test]
fn persistent_survives_reboot() {
    let (e, _, _) = persistent_setup();
    let store = e.persistent_store();
    assert_eq!(store.providers, vec!["prov".to_string()]);
    let sublayer = (SL.to_string(), Some("prov".to_string()), 0xFFFF);
    assert_eq!((store.sublayers.clone(), store.filters.len()), (vec![sublayer], 1));
    let booted = Engine::boot(&store);
    let f: Vec<_> = booted.filters().map(|f| (f.id, f.session, &f.spec.name)).collect();
    assert_eq!(f, vec![(FilterId(1), SessionId::BFE, &"block-all".to_string())]);
    assert!(!allowed(&booted, None) && !allowed(&booted, Some(AGENT)));
    assert_eq!(booted.persistent_store(), store);
    assert_eq!(Engine::boot(&store), booted, "boot is deterministic");
    assert!(allowed(&Engine::boot(&PersistentStore::default()), None));
    // A hand-made store with a dangling reference loads what it can.
    let mut broken = store.clone();
    broken.filters[0].sublayer = "missing".into();
    assert_eq!(Engine::boot(&broken).filters().count(), 0);
}

#[test]
fn transaction_invisible_until_commit() {
    let (mut e, s) = setup(false);
    e.begin_transaction(s).unwrap();
    let a = e.add_filter(s, block_all()).unwrap();
    let b = e.add_filter(s, permit_agent()).unwrap();
    let ssh = spec("block-ssh", Action::Block, 3, vec![Condition::RemotePort(22)]);
    let c = e.add_filter(s, ssh).unwrap();
    e.delete_filter(s, c).unwrap();
    // A failed call inside the transaction does not abort it.
    assert!(e.add_filter(s, FilterSpec { sublayer: "nope".into(), ..block_all() }).is_err());
    assert_eq!(e.filters().count(), 0);
    assert!(allowed(&e, None));
    assert_eq!(gens(&e), (0, 0));
    assert_eq!(ids(e.filters_visible_to(s)), vec![a, b], "the holder sees its staged state");
    let other = e.open_session(200, "other", false).unwrap();
    assert_eq!(e.filters_visible_to(other).count(), 0, "others see the committed state");
    let cs = e.commit_transaction(s).unwrap();
    assert_eq!(cs.added, vec![a, b]);
    assert!(cs.deleted.is_empty(), "added then deleted inside a transaction is invisible");
    assert_eq!((cs.layers, gens(&e)), (vec![V4], (1, 0)), "one bump per commit");
    assert!(!allowed(&e, None) && allowed(&e, Some(AGENT)));
    assert_eq!(e.transaction_holder(), None);
}

#[test]
fn abort_discards_and_lock_is_exclusive() {
    let (mut e, s) = setup(false);
    let other = e.open_session(200, "other", false).unwrap();
    e.begin_transaction(s).unwrap();
    assert_eq!(err(e.begin_transaction(s)), "session 1 already has a transaction in progress");
    let locked = "the transaction lock is held by session 1 (caller's lock wait: 15000 ms)";
    assert_eq!(err(e.begin_transaction(other)), locked);
    assert_eq!(err(e.add_sublayer(other, "x", None, 1, false)), locked);
    assert_eq!(err(e.commit_transaction(other)), "session 2 has no transaction in progress");
    assert!(e.abort_transaction(other).is_err());
    e.add_filter(s, block_all()).unwrap();
    e.abort_transaction(s).unwrap();
    assert_eq!((e.filters().count(), gens(&e)), (0, (0, 0)));
    assert_eq!(e.abort_transaction(s), Err(EngineError::NoTransaction(s)));
    // Lock released: the other session may now transact.
    e.begin_transaction(other).unwrap();
    assert_eq!(e.transaction_holder(), Some(other));
}

#[test]
fn session_end_aborts_its_transaction() {
    let (mut e, s) = setup(false);
    let id = e.add_filter(s, block_all()).unwrap();
    e.begin_transaction(s).unwrap();
    e.delete_filter(s, id).unwrap();
    let cs = e.process_exited(100);
    assert!(cs.is_empty(), "the uncommitted delete is aborted, static objects stay");
    assert!(!allowed(&e, None));
    assert_eq!(e.transaction_holder(), None);
    let s2 = e.open_session(101, "agent", false).unwrap();
    e.begin_transaction(s2).unwrap();
    e.close_session(s2).unwrap();
    assert_eq!(e.transaction_holder(), None);
}

#[test]
fn rundown_of_other_session_while_locked() {
    let mut e = Engine::new();
    let a = e.open_session(1, "a", true).unwrap();
    let b = e.open_session(2, "b", false).unwrap();
    e.add_sublayer(a, "dyn", None, 5, false).unwrap();
    e.add_sublayer(b, SL, None, 0xFFFF, false).unwrap();
    let in_dyn = FilterSpec { sublayer: "dyn".into(), ..block_all() };
    let first = e.add_filter(b, in_dyn.clone()).unwrap();
    e.begin_transaction(b).unwrap();
    let staged = e.add_filter(b, in_dyn).unwrap();
    let kept = e.add_filter(b, block_all()).unwrap();
    // a dies while b holds the lock: its sublayer goes, with b's filters inside it.
    let cs = e.process_exited(1);
    assert_eq!(deleted(&cs), vec![(first, "block-all", DeleteReason::SessionEnded)]);
    let cs = e.commit_transaction(b).unwrap();
    assert_eq!(cs.added, vec![kept]);
    assert!(e.filter(staged).is_none());
}

#[test]
fn generation_bumps_once_per_change_and_only_for_touched_layers() {
    let (mut e, s) = setup(false);
    e.add_filter(s, block_all()).unwrap();
    assert_eq!(gens(&e), (1, 0));
    let id = e.add_filter(s, inbound_block("in")).unwrap();
    assert_eq!(gens(&e), (1, 1));
    e.delete_filter(s, id).unwrap();
    assert_eq!(gens(&e), (1, 2));
    // Sublayer/provider changes are not filter changes.
    e.add_sublayer(s, "empty", None, 1, false).unwrap();
    assert_eq!(gens(&e), (1, 2));
    e.begin_transaction(s).unwrap();
    for i in 0..3 {
        let p = spec(&format!("p{i}"), Action::Permit, 15, vec![Condition::RemotePort(i)]);
        e.add_filter(s, p).unwrap();
        e.add_filter(s, inbound_block(&format!("i{i}"))).unwrap();
    }
    let cs = e.commit_transaction(s).unwrap();
    assert_eq!((cs.layers, cs.added.len(), gens(&e)), (vec![V4, IN4], 6, (2, 3)));
    // An empty commit bumps nothing.
    e.begin_transaction(s).unwrap();
    assert!(e.commit_transaction(s).unwrap().is_empty());
    assert_eq!(gens(&e), (2, 3));
}

#[test]
fn no_permissive_state_across_transactional_transitions() {
    // unauth -> auth -> revoked, one transaction each; probe after every call: the rogue
    // copy never gets through, the agent only while authorized.
    let (mut e, s) = setup(false);
    let mut probes = Vec::new();
    let mut probe = |e: &Engine| probes.push((allowed(e, Some(ROGUE)), allowed(e, Some(AGENT))));
    e.begin_transaction(s).unwrap();
    probe(&e);
    e.add_filter(s, block_all()).unwrap();
    probe(&e);
    e.commit_transaction(s).unwrap();
    probe(&e);
    e.begin_transaction(s).unwrap();
    let permit = e.add_filter(s, permit_agent()).unwrap();
    probe(&e);
    e.commit_transaction(s).unwrap();
    probe(&e);
    e.begin_transaction(s).unwrap();
    e.delete_filter(s, permit).unwrap();
    probe(&e);
    e.commit_transaction(s).unwrap();
    probe(&e);
    // Before the first commit there is no policy at all (the boot-race window, L1).
    assert_eq!(probes[..2], [(true, true), (true, true)]);
    assert!(probes[2..].iter().all(|(rogue, _)| !rogue));
    let agent: Vec<bool> = probes[2..].iter().map(|p| p.1).collect();
    assert_eq!(agent, [false, false, true, true, false]);
}

#[test]
fn reset_then_apply_without_transaction_opens_a_window() {
    // Leak class L2: deleting the block-all before re-adding it is observable.
    let (mut e, s) = setup(false);
    let block = e.add_filter(s, block_all()).unwrap();
    e.delete_filter(s, block).unwrap();
    assert!(allowed(&e, None), "the model exposes the permissive window");
    e.add_filter(s, block_all()).unwrap();
    assert!(!allowed(&e, None));
}

#[test]
fn flow_authorized_once_and_passes_both_directions() {
    let (mut e, s) = setup(false);
    e.add_filter(s, block_all()).unwrap();
    e.add_filter(s, permit_agent()).unwrap();
    let mut flows = FlowTable::new();
    let (none, d) = flows.authorize_new(&e, 7, ctx(Some(ROGUE), "203.0.113.10:443"));
    assert!(none.is_none() && !d.is_permit());
    let (id, d) = flows.authorize_new(&e, 100, ctx(Some(AGENT), "203.0.113.10:443"));
    let id = id.unwrap();
    assert!(d.is_permit());
    for _ in 0..3 {
        assert_eq!(flows.on_packet(&e, id), PacketVerdict::Pass);
    }
    // A change at another layer does not touch this flow.
    e.add_filter(s, inbound_block("in")).unwrap();
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Pass);
    // Neither do uncommitted changes at its own layer.
    e.begin_transaction(s).unwrap();
    let block_https = spec("block-443", Action::Block, 15, vec![Condition::RemotePort(443)]);
    e.add_filter(s, block_https).unwrap();
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Pass);
    e.abort_transaction(s).unwrap();
    let mine: Vec<FlowId> = flows.flows_of(100).map(|f| f.id).collect();
    assert_eq!((mine, flows.flows_of(7).count()), (vec![id], 0));
    let flow = flows.get(id).map(|f| (f.layer, f.authorized_generation, f.context.reauthorize));
    assert_eq!(flow, Some((V4, 2, false)));
}

#[test]
fn revocation_cuts_tcp_session_at_next_segment() {
    let (mut e, s) = setup(false);
    e.add_filter(s, block_all()).unwrap();
    let permit = e.add_filter(s, permit_agent()).unwrap();
    let mut flows = FlowTable::new();
    let (id, _) = flows.authorize_new(&e, 100, ctx(Some(AGENT), "203.0.113.10:443"));
    let id = id.unwrap();
    // A change that still permits: reauthorized once, then plain passes again.
    let smtp = spec("no-smtp", Action::Block, 5, vec![Condition::RemotePort(25)]);
    e.add_filter(s, smtp).unwrap();
    match flows.on_packet(&e, id) {
        PacketVerdict::Reauthorized(d) => assert_eq!(d.filter, Some(permit)),
        other => panic!("expected reauthorization, got {other:?}"),
    }
    assert_eq!(flows.get(id).map(|f| f.authorized_generation), Some(e.layer_generation(V4)));
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Pass);
    // Revocation: the flow lives until its next packet, which tears it down.
    e.delete_filter(s, permit).unwrap();
    assert!(flows.get(id).is_some_and(|f| f.open));
    match flows.on_packet(&e, id) {
        PacketVerdict::TornDown(d) => assert_eq!(d.filter_name.as_deref(), Some("block-all")),
        other => panic!("expected teardown, got {other:?}"),
    }
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Closed);
    assert_eq!(flows.flows_of(100).count(), 0);
    // Re-permitting does not resurrect a torn-down flow.
    e.add_filter(s, permit_agent()).unwrap();
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Closed);
}

#[test]
fn revocation_cuts_inbound_and_udp_flows() {
    let (mut e, s) = setup(true);
    let mut flows = FlowTable::new();
    let mut udp = ctx(None, "198.51.100.1:53");
    udp.protocol = Protocol::Udp;
    let mut inbound = ctx(None, "192.0.2.9:40000");
    inbound.layer = IN4;
    let (u, _) = flows.authorize_new(&e, 5, udp);
    let (i, _) = flows.authorize_new(&e, 6, inbound);
    let (u, i) = (u.unwrap(), i.unwrap());
    e.add_filter(s, inbound_block("in-block")).unwrap();
    assert_eq!(flows.on_packet(&e, u), PacketVerdict::Pass);
    assert!(matches!(flows.on_packet(&e, i), PacketVerdict::TornDown(_)));
    let no_udp = spec("no-udp", Action::Block, 1, vec![Condition::Protocol(Protocol::Udp)]);
    e.add_filter(s, no_udp).unwrap();
    assert!(matches!(flows.on_packet(&e, u), PacketVerdict::TornDown(_)));
}

#[test]
fn agent_crash_reopens_new_flows_and_close_is_final() {
    let (mut e, s) = setup(true);
    e.add_filter(s, block_all()).unwrap();
    let mut flows = FlowTable::new();
    assert!(flows.authorize_new(&e, 9, ctx(None, "203.0.113.10:80")).0.is_none());
    e.process_exited(100);
    let (id, d) = flows.authorize_new(&e, 9, ctx(None, "203.0.113.10:80"));
    assert!(d.filter.is_none());
    let id = id.unwrap();
    flows.close(id);
    assert_eq!(flows.on_packet(&e, id), PacketVerdict::Closed);
    assert_eq!(flows.on_packet(&e, FlowId(999)), PacketVerdict::Closed);
    assert_eq!(flows.get(id).map(|f| f.open), Some(false));
}

#[test]
fn same_calls_same_state_and_serializable() {
    let run = || {
        let (mut e, s) = setup(false);
        e.add_filter(s, block_all()).unwrap();
        e.add_filter(s, permit_agent()).unwrap();
        let cs = e.process_exited(100);
        (e, cs)
    };
    assert_eq!(run(), run());
    let (e, cs) = run();
    let json = serde_json::to_string(&e).unwrap();
    let app = r#""\\device\\harddiskvolume3\\program files\\lockstep\\agent.exe""#;
    assert!(json.contains(app), "{json}");
    assert!(serde_json::to_string(&cs).is_ok());
    assert!(serde_json::to_string(&e.persistent_store()).is_ok());
}

#[test]
fn boot_time_filters_act_only_until_bfe_starts() {
    let mut e = Engine::new();
    let s = e.open_session(100, "agent", false).unwrap();
    e.add_provider(s, "prov", true).unwrap();
    e.add_sublayer(s, SL, Some("prov"), 0xFFFF, true).unwrap();
    let boot_block = FilterSpec { lifetime: Lifetime::BootTime, ..spec("boot-block", Action::Block, 0, vec![]) };
    let gen_before = gens(&e);
    e.add_filter(s, boot_block.clone()).unwrap();
    // Added while BFE runs: stored for the next boot, not in force, no reauthorization.
    assert!(allowed(&e, None), "a boot-time filter does not act while BFE runs");
    assert_eq!(gens(&e), gen_before);
    let permit = FilterSpec { lifetime: Lifetime::Persistent, ..permit_agent() };
    e.add_filter(s, permit).unwrap();
    let store = e.persistent_store();
    let lifetimes: Vec<Lifetime> = store.filters.iter().map(|f| f.lifetime).collect();
    assert_eq!(lifetimes, vec![Lifetime::BootTime, Lifetime::Persistent]);

    // Power-on: TCP/IP up, only the boot-time block acts, BFE is not there to talk to.
    let mut booted = Engine::power_on(&store);
    assert_eq!(booted.phase(), Phase::BootTime);
    assert!(!allowed(&booted, None) && !allowed(&booted, Some(AGENT)), "boot-time block-all, no permit yet");
    assert_eq!(booted.open_session(100, "early", false), Err(EngineError::BfeNotRunning));
    // BFE start: persistent filters take over and the boot-time one retires, in one change.
    let g = booted.layer_generation(V4);
    let cs = booted.start_bfe();
    assert_eq!(
        (cs.added.clone(), deleted(&cs)),
        (vec![FilterId(2)], vec![(FilterId(1), "boot-block", DeleteReason::BfeStarted)])
    );
    assert_eq!(booted.layer_generation(V4), g + 1, "flows authorized at boot are reauthorized");
    assert!(allowed(&booted, Some(AGENT)) && allowed(&booted, None), "persistent permit only; boot block retired");
    assert_eq!(booted.persistent_store(), store, "the boot-time filter stays stored for the next boot");
    // A BFE stop keeps persistent filters, never brings boot-time ones back, and
    // closes the management API until BFE starts again.
    let s2 = booted.open_session(100, "agent", false).unwrap();
    booted.stop_bfe();
    assert_eq!(booted.phase(), Phase::Stopped);
    assert!(allowed(&booted, None));
    assert_eq!(booted.add_filter(s2, block_all()), Err(EngineError::BfeNotRunning));
    assert!(booted.start_bfe().is_empty());
    assert_eq!(err(booted.add_filter(s2, block_all())), "session 1 does not exist");

    // Boot-time filters outlive reboots, so their parents must be persistent.
    let (mut e2, s) = setup(false);
    let bad = FilterSpec { lifetime: Lifetime::BootTime, ..block_all() };
    let msg = "persistent filter `block-all` requires sublayer `lockstep` to be persistent";
    assert_eq!(err(e2.add_filter(s, bad)), msg);
}

#[test]
fn arrival_interface_triggers_reauthorization_only_in_the_weak_host_model() {
    let (mut e, s) = setup(false);
    let eth =
        FilterSpec { conditions: vec![Condition::InterfaceLuid(1)], ..spec("eth-only", Action::Permit, 15, vec![]) };
    e.add_filter(s, eth).unwrap();
    e.add_filter(s, block_all()).unwrap();
    let mut flows = FlowTable::new();
    let mut c = ctx(None, "203.0.113.10:443");
    c.interface_luid = Some(1);
    let (id, d) = flows.authorize_new(&e, 5, c);
    let id = id.unwrap();
    assert_eq!(d.filter_name.as_deref(), Some("eth-only"));
    // Strong host: the arrival interface is no trigger.
    assert_eq!(flows.on_packet_via(&e, id, Some(2), HostModel::Strong), PacketVerdict::Pass);
    // Weak host, same interface: no trigger either.
    assert_eq!(flows.on_packet_via(&e, id, Some(1), HostModel::Weak), PacketVerdict::Pass);
    assert_eq!(flows.on_packet_via(&e, id, None, HostModel::Weak), PacketVerdict::Pass);
    // Weak host, another interface: reauthorized with that interface, and blocked here.
    match flows.on_packet_via(&e, id, Some(2), HostModel::Weak) {
        PacketVerdict::TornDown(d) => assert_eq!(d.filter_name.as_deref(), Some("block-all")),
        other => panic!("expected teardown, got {other:?}"),
    }
    // A permitted move continues the flow on the new interface.
    let any = spec("any-if", Action::Permit, 14, vec![Condition::InterfaceLuid(1), Condition::InterfaceLuid(3)]);
    e.add_filter(s, any).unwrap();
    let mut c = ctx(None, "203.0.113.10:443");
    c.interface_luid = Some(1);
    let id = flows.authorize_new(&e, 5, c).0.unwrap();
    assert!(matches!(flows.on_packet_via(&e, id, Some(3), HostModel::Weak), PacketVerdict::Reauthorized(_)));
    assert_eq!(flows.get(id).and_then(|f| f.context.interface_luid), Some(3));
    assert_eq!(flows.on_packet_via(&e, id, Some(3), HostModel::Weak), PacketVerdict::Pass);
    assert_eq!(HostModel::default(), HostModel::Strong);
}

#[test]
fn guest_frames_cross_only_the_mac_frame_layers() {
    let (mut e, s) = setup(false);
    for layer in Layer::ALL {
        e.add_filter(s, FilterSpec::new("ale-block-all", layer, SL, Action::Block)).unwrap();
    }
    let frame = ClassifyContext::mac_frame(Direction::Outbound, Some(7), false);
    assert_eq!(e.classify(&frame), Decision::default_permit(), "an ALE block-all does not see guest frames");
    let l2_block = |layer| FilterSpec::new("l2-block", layer, SL, Action::Block);
    let vm2vm = |layer| {
        FilterSpec { conditions: vec![Condition::Vm2Vm], ..spec("vm2vm", Action::Permit, 15, vec![]) }.with_layer(layer)
    };
    for layer in Layer::MAC_FRAME {
        e.add_filter(s, l2_block(layer)).unwrap();
        e.add_filter(s, vm2vm(layer)).unwrap();
    }
    assert_eq!(e.classify(&frame).filter_name.as_deref(), Some("l2-block"));
    let between_vms = ClassifyContext::mac_frame(Direction::Inbound, Some(7), true);
    assert_eq!(e.classify(&between_vms).filter_name.as_deref(), Some("vm2vm"));
    // Fields that do not exist at a layer are rejected.
    let bad = FilterSpec { conditions: vec![Condition::RemotePort(53)], ..l2_block(Layer::OutboundMacFrameNative) };
    let msg = "filter `l2-block`: condition RemotePort does not exist at layer FWPM_LAYER_OUTBOUND_MAC_FRAME_NATIVE";
    assert_eq!(err(e.add_filter(s, bad)), msg);
    let bad = FilterSpec { conditions: vec![Condition::Vm2Vm], ..block_all() };
    assert!(err(e.add_filter(s, bad)).contains("L2Flags does not exist at layer FWPM_LAYER_ALE_AUTH_CONNECT_V4"));
    assert!(Layer::MAC_FRAME.iter().all(|l| !l.is_ale() && !l.is_ipv6()) && Layer::ALL.iter().all(Layer::is_ale));
}

#[test]
fn lock_wait_is_the_session_setting() {
    let (mut e, s) = setup(false);
    let waits =
        e.open_session_with(200, "waits", SessionOptions { dynamic: true, txn_wait_timeout_ms: INFINITE_TXN_WAIT });
    let waits = waits.unwrap();
    let default = e.open_session(300, "default", false).unwrap();
    assert_eq!(e.session(default).map(|s| s.txn_wait_timeout_ms), Ok(DEFAULT_TXN_WAIT_TIMEOUT_MS));
    assert_eq!(DEFAULT_TXN_WAIT_TIMEOUT_MS, 15_000);
    e.begin_transaction(s).unwrap();
    assert_eq!(e.begin_transaction(default), Err(EngineError::TransactionLocked { holder: s, waited_ms: 15_000 }));
    let msg = "the transaction lock is held by session 1 (caller's lock wait: infinite)";
    assert_eq!(err(e.add_filter(waits, block_all())), msg);
}

#[test]
fn persistent_and_boot_time_flags_are_exclusive() {
    assert_eq!(Lifetime::from_flags(false, false), Some(Lifetime::Static));
    assert_eq!(Lifetime::from_flags(true, false), Some(Lifetime::Persistent));
    assert_eq!(Lifetime::from_flags(false, true), Some(Lifetime::BootTime));
    assert_eq!(Lifetime::from_flags(true, true), None);
}
