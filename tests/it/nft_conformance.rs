//! The backend-neutral conformance suite (`tests/conformance/cases`) on real
//! nftables: backend `nftables`, judged against
//! `tests/conformance/nftables.unsupported.toml`.
//!
//! Each case gets a fresh pair of network namespaces ([`Lab`]): the client
//! namespace is the device (address 10.0.0.2 and fd00::2 plus whatever local
//! addresses the case names), the server namespace holds every remote address
//! the case's traffic names, with TCP and UDP echo servers on each remote
//! `ip:port` (loopback remotes and inbound listeners are served inside the
//! client namespace). Neighbours are static, so no NDP crosses the rules.
//!
//! How the case's terms map:
//! - **policy**: one `table inet lsc`, rebuilt from the committed state and
//!   replaced atomically with one `nft -f` batch (add, delete, define) on every
//!   change outside a transaction and on commit; a transaction stages the state
//!   and abort drops it;
//! - **sublayer**: a pair of base chains, hook `output` for the connect layers
//!   and hook `input` for the recv-accept layers, priority = its rank by
//!   sublayer weight (highest weight = lowest priority number = evaluated
//!   first). An `accept` ends only its own base chain, so a later chain's
//!   block still wins, as a soft permit loses to another sublayer's block;
//! - **filter**: one rule per layer it is installed at (`meta nfproto`
//!   selects v4 or v6), ordered inside the chain by effective weight (highest
//!   first; ties in order of addition), so the first match decides within a
//!   sublayer; permit → `accept`, block → `reject` (TCP reset, else icmpx
//!   admin-prohibited) so probes fail at once; every rule carries `counter`
//!   and `comment "<filter name>"`, and `decided_by` is the first rule (in
//!   evaluation order) whose counter moved during the probe;
//! - **conditions**: addresses and ports as `ip/ip6 daddr/saddr`, `th
//!   dport/sport` (remote = destination on output, source on input),
//!   protocol as `meta l4proto`, loopback as `oif lo` / `iif lo`; `app` as
//!   `meta skuid`: each distinct normalized image path of the case gets its
//!   own uid (20000 + n) and every process runs under its image's uid; `user`
//!   as `meta skgid`: each distinct SID gets a gid (30000 + n) and a process
//!   runs with the gid of its service SID if it has one, else of its user SID
//!   (a case where one gid cannot stand for the SIDs a filter asks for is
//!   unsupported);
//! - **flows**: the chains judge packets in the connection's original
//!   direction only (`ct direction reply accept` first), so a flow is judged at
//!   its own layer, as in WFP, and never by the opposite layer. There is no
//!   established-accept rule: every packet a flow sends is judged by the
//!   current rules. A `packet` step is one round trip on the kept connection
//!   (a line out, its echo back; the direction field cannot be honoured by an
//!   echo exchange): it fails (reset / EPERM) → `torn_down` and the flow is
//!   gone (later packets: `closed`); it passes → `reauthorized` if a filter at
//!   the flow's layer was added or deleted since the flow's last packet (the
//!   packet really was judged again by the new rules), else `pass`;
//! - **sessions**: static only; a session's end (close, kill) aborts its
//!   transaction and leaves the rules; `kill` also ends the process's flows.
//!
//! Whatever has no honest translation is `CaseError::Unsupported` as soon as
//! a step needs it: hard permits, vetoes, persistent and boot-time filters,
//! dynamic sessions, BFE stop/start, reboot, power-on, sleep, interfaces,
//! Hyper-V frames, ICMP, local-port conditions at connect (bash cannot bind a
//! source port), identity conditions on inbound connections, and a
//! transaction lock between sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::conformance::{
    Backend, Case, CaseError, ErrorKind, FilterAction, FilterDef, LayerName, Observation, Op, PacketOutcome, Traffic,
    Verdict, WeightSpec, load_cases, load_unsupported, run_suite,
};
use lockstep::wfp::{AppId, Direction, Protocol, Weight};

use crate::nftables::{Lab, missing_prerequisite, sh, skip};

const TABLE: &str = "lsc";
const CLIENT_V4: &str = "10.0.0.2";
const CLIENT_V6: &str = "fd00::2";
const CLIENT_MAC: &str = "02:00:00:00:00:01";
const SERVER_MAC: &str = "02:00:00:00:00:02";

fn unsupported<T>(reason: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError::Unsupported(reason.into()))
}

fn failed(kind: ErrorKind, message: String) -> Observation {
    Observation::Failed { kind, message, waited_ms: None }
}

/// A UDP echo server (one datagram back per datagram) in a namespace.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start(netns: &str, addr: SocketAddr) -> Result<UdpEcho, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = format!("/run/netns/{netns}");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let socket = (|| {
                crate::nftables::enter_netns(&path)?;
                let s = UdpSocket::bind(addr).map_err(|e| format!("bind udp {addr}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
                Ok(s)
            })();
            let socket = match socket {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(UdpEcho { stop, handle: Some(handle) }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err("udp echo thread died".into()),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Who runs a client: root, or a mapped uid/gid.
#[derive(Clone, Copy, Debug)]
struct Ident {
    uid: u32,
    gid: u32,
}

fn client_command(ns: &str, who: Option<Ident>, secs: u32, script: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some(id) = who {
        cmd.args(["setpriv", "--reuid", &id.uid.to_string(), "--regid", &id.gid.to_string(), "--clear-groups"]);
    }
    cmd.args(["timeout", &secs.to_string(), "bash", "-c", script]);
    cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

fn dev_path(proto: Protocol, to: SocketAddr) -> String {
    let kind = if proto == Protocol::Udp { "udp" } else { "tcp" };
    format!("/dev/{kind}/{}/{}", to.ip(), to.port())
}

/// A kept connection: a bash client that exchanged one line and does one
/// more round trip per line on its stdin.
struct Flow {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    process: Option<String>,
    layer: LayerName,
    seen: u64,
}

impl Flow {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// One round trip; `true` if the echo came back.
    fn exchange(&mut self) -> bool {
        if self.stdin.write_all(b"go\n").and_then(|_| self.stdin.flush()).is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(self.stdout.read_line(&mut line), Ok(n) if n > 0) && line.trim() == "ok"
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed (or staged) policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Policy {
    sublayers: Vec<String>,
    /// Installed filters in order of addition.
    filters: Vec<String>,
}

struct Session {
    process: String,
    txn: Option<Policy>,
}

/// One case's device.
struct Device {
    lab: Lab,
    _udp: Vec<UdpEcho>,
    idents: BTreeMap<String, Ident>,
    app_uid: BTreeMap<AppId, u32>,
    sid_gid: BTreeMap<String, u32>,
    committed: Policy,
    sessions: BTreeMap<String, Session>,
    generation: BTreeMap<LayerName, u64>,
    flows: BTreeMap<String, Flow>,
    /// Counters at the end of the last observation (empty after a table replacement, which zeroes them).
    last_counters: Counters,
}

/// Counter of one rule: (hook 0 = output / 1 = input, chain rank, rule index) → (filter, rejects, packets).
type Counters = BTreeMap<(u8, usize, usize), (String, bool, u64)>;

fn layers_of(t: &Traffic) -> LayerName {
    match (t.direction, t.remote.is_ipv6()) {
        (Direction::Outbound, false) => LayerName::ConnectV4,
        (Direction::Outbound, true) => LayerName::ConnectV6,
        (Direction::Inbound, false) => LayerName::RecvAcceptV4,
        (Direction::Inbound, true) => LayerName::RecvAcceptV6,
    }
}

fn is_v6(l: LayerName) -> bool {
    matches!(l, LayerName::ConnectV6 | LayerName::RecvAcceptV6)
}

fn is_input(l: LayerName) -> bool {
    matches!(l, LayerName::RecvAcceptV4 | LayerName::RecvAcceptV6)
}

fn set<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

/// Why nftables (or this harness) cannot express a filter, if it cannot.
fn filter_unsupported(def: &FilterDef) -> Option<String> {
    let name = &def.name;
    if def.hard {
        return Some(format!(
            "filter `{name}` is a hard permit (FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT): an nftables accept ends only its \
             own base chain, later chains still judge the packet, and nothing lets one chain's accept override \
             another chain's drop"
        ));
    }
    if def.action == FilterAction::Veto {
        return Some(format!(
            "filter `{name}` is a callout veto: nftables has no callouts and no verdict ranked above a hard permit"
        ));
    }
    if def.persistent || def.boot_time {
        return Some(format!(
            "filter `{name}` is persistent or boot-time: nftables rules live in the running kernel only; nothing \
             stores them across a reboot or loads them before the agent, except a separate boot service"
        ));
    }
    if def.layers.iter().any(|l| !l.is_flow_layer()) {
        return Some(format!(
            "filter `{name}` is at a MAC-frame layer (Hyper-V virtual switch): there is no virtual switch in the lab \
             and the inet family does not see L2 frames"
        ));
    }
    let c = &def.conditions;
    if !c.interface.is_empty() {
        return Some(format!(
            "filter `{name}` has an interface (LUID) condition: the lab has one veth and its traffic cannot choose \
             an interface per step (nft `oif` does bind an ifindex at load time, the LUID analogue, but it is not \
             exercised here)"
        ));
    }
    if c.vm2vm {
        return Some(format!("filter `{name}` has a vm2vm condition: no virtual switch in the lab"));
    }
    if !c.icmp_type.is_empty() || !c.icmp_code.is_empty() {
        return Some(format!(
            "filter `{name}` matches ICMP type/code: in nftables they are `icmp type/code` fields, not the port \
             fields as in WFP, and the probes cannot send ICMP"
        ));
    }
    None
}

impl Device {
    fn start(case: &Case) -> Result<Device, CaseError> {
        // Identities first: they need nothing from the kernel.
        let mut app_uid: BTreeMap<AppId, u32> = BTreeMap::new();
        let mut sid_gid: BTreeMap<String, u32> = BTreeMap::new();
        let mut images: Vec<String> = case.processes.iter().map(|p| p.image.clone()).collect();
        images.extend(case.filters.iter().flat_map(|f| f.conditions.app.clone()));
        for image in images {
            if let Ok(app) = AppId::from_image_path(&image) {
                let next = 20000 + app_uid.len() as u32;
                app_uid.entry(app).or_insert(next);
            }
        }
        let mut sids: Vec<String> = Vec::new();
        for p in &case.processes {
            sids.push(p.user.clone());
            sids.extend(p.service_sid.clone());
        }
        sids.extend(case.filters.iter().flat_map(|f| f.conditions.user.clone()));
        for sid in sids {
            let next = 30000 + sid_gid.len() as u32;
            sid_gid.entry(sid).or_insert(next);
        }
        let mut idents = BTreeMap::new();
        for p in &case.processes {
            let Some(uid) = AppId::from_image_path(&p.image).ok().and_then(|a| app_uid.get(&a).copied()) else {
                return unsupported(format!("process `{}`: image path `{}` does not normalize", p.name, p.image));
            };
            let sid = p.service_sid.as_ref().unwrap_or(&p.user);
            idents.insert(p.name.clone(), Ident { uid, gid: sid_gid[sid] });
        }
        for p in &case.processes {
            if let Some(parent) = p.parent.as_ref().and_then(|n| case.process(n))
                && AppId::from_image_path(&parent.image).ok() != AppId::from_image_path(&p.image).ok()
            {
                return unsupported(format!(
                    "process `{}` is a child of `{}` running another image: on Linux a child inherits its \
                         parent's uid, gid and cgroup, so a real child would share the parent's exception; only \
                         the harness starting it under its own image's uid would make it pass, which proves nothing",
                    p.name, parent.name
                ));
            }
        }
        // One gid per socket: check it stands for the SIDs every filter asks for.
        for f in &case.filters {
            if f.conditions.user.is_empty() {
                continue;
            }
            for p in &case.processes {
                let holds = f.conditions.user.iter().any(|s| s == &p.user || Some(s) == p.service_sid.as_ref());
                let gid = idents[&p.name].gid;
                let matches = f.conditions.user.iter().any(|s| sid_gid[s] == gid);
                if holds != matches {
                    return unsupported(format!(
                        "filter `{}` asks for SIDs {:?}: process `{}` holds user and service SIDs but its socket \
                         carries one gid (`meta skgid`)",
                        f.name, f.conditions.user, p.name
                    ));
                }
            }
        }

        let lab = Lab::new("conf").map_err(CaseError::Backend)?;
        let mut dev = Device {
            lab,
            _udp: Vec::new(),
            idents,
            app_uid,
            sid_gid,
            committed: Policy::default(),
            sessions: BTreeMap::new(),
            generation: BTreeMap::new(),
            flows: BTreeMap::new(),
            last_counters: Counters::new(),
        };
        dev.network(case).map_err(CaseError::Backend)?;
        Ok(dev)
    }

    /// Addresses, routes, static neighbours and echo servers for every tuple the case names.
    fn network(&mut self, case: &Case) -> Result<(), String> {
        let (c, s) = (self.lab.client_ns.clone(), self.lab.server_ns.clone());
        let mut client_addrs: BTreeSet<IpAddr> = [CLIENT_V4, CLIENT_V6].iter().map(|a| a.parse().unwrap()).collect();
        let mut server_addrs: BTreeSet<IpAddr> = BTreeSet::new();
        // (namespace is client, protocol, address) → listener
        let mut listeners: BTreeSet<(bool, bool, SocketAddr)> = BTreeSet::new();
        for step in &case.steps {
            let t = match &step.op {
                Op::NewFlow { traffic, .. } | Op::Watch { traffic, .. } => traffic,
                _ => continue,
            };
            if !matches!(t.protocol, Protocol::Tcp | Protocol::Udp) || t.class.as_deref().is_some_and(is_exotic) {
                continue;
            }
            let udp = t.protocol == Protocol::Udp;
            let usable = |a: &IpAddr| !a.is_multicast() && !a.is_unspecified() && *a != IpAddr::from([255; 4]);
            match t.direction {
                Direction::Outbound if t.remote.ip().is_loopback() => {
                    listeners.insert((true, udp, t.remote));
                }
                Direction::Outbound => {
                    if usable(&t.remote.ip()) {
                        server_addrs.insert(t.remote.ip());
                        listeners.insert((false, udp, t.remote));
                    }
                }
                Direction::Inbound => {
                    if !t.local.ip().is_loopback() && usable(&t.local.ip()) {
                        client_addrs.insert(t.local.ip());
                    }
                    if !t.remote.ip().is_loopback() && usable(&t.remote.ip()) {
                        server_addrs.insert(t.remote.ip());
                    }
                    listeners.insert((true, udp, t.local));
                }
            }
        }
        sh(&["ip", "-n", &c, "link", "set", "veth-c", "address", CLIENT_MAC])?;
        sh(&["ip", "-n", &s, "link", "set", "veth-s", "address", SERVER_MAC])?;
        for (ns, dev, addrs) in [(&c, "veth-c", &client_addrs), (&s, "veth-s", &server_addrs)] {
            for a in addrs {
                if a.is_ipv6() {
                    sh(&["ip", "-n", ns, "addr", "add", &format!("{a}/128"), "dev", dev, "nodad"])?;
                } else {
                    sh(&["ip", "-n", ns, "addr", "add", &format!("{a}/32"), "dev", dev])?;
                }
            }
        }
        sh(&["ip", "-n", &c, "route", "add", "default", "dev", "veth-c", "src", CLIENT_V4])?;
        sh(&["ip", "-n", &c, "-6", "route", "add", "default", "dev", "veth-c", "src", CLIENT_V6])?;
        sh(&["ip", "-n", &s, "route", "add", "default", "dev", "veth-s"])?;
        sh(&["ip", "-n", &s, "-6", "route", "add", "default", "dev", "veth-s"])?;
        for (ns, dev, mac, addrs) in
            [(&c, "veth-c", SERVER_MAC, &server_addrs), (&s, "veth-s", CLIENT_MAC, &client_addrs)]
        {
            for a in addrs.iter().filter(|a| a.is_ipv6()) {
                let a = a.to_string();
                sh(&["ip", "-n", ns, "-6", "neigh", "replace", &a, "lladdr", mac, "dev", dev, "nud", "permanent"])?;
            }
        }
        for (on_client, udp, addr) in listeners {
            let ns = if on_client { &c } else { &s };
            if udp {
                self._udp.push(UdpEcho::start(ns, addr)?);
            } else if on_client {
                self.lab.serve_on_client(addr);
            } else {
                self.lab.serve(addr);
            }
        }
        Ok(())
    }

    fn session_policy(&mut self, session: &str) -> Option<(bool, Policy)> {
        let s = self.sessions.get(session)?;
        Some(match &s.txn {
            Some(p) => (true, p.clone()),
            None => (false, self.committed.clone()),
        })
    }

    /// Stores the changed policy: staged inside a transaction, else applied now.
    fn store(&mut self, case: &Case, session: &str, in_txn: bool, policy: Policy) -> Result<Observation, CaseError> {
        if in_txn {
            if let Some(s) = self.sessions.get_mut(session) {
                s.txn = Some(policy);
            }
            return Ok(Observation::Done);
        }
        self.apply(case, policy)?;
        Ok(Observation::Done)
    }

    fn rules(&self, def: &FilterDef, layer: LayerName) -> Vec<String> {
        let c = &def.conditions;
        let v6 = is_v6(layer);
        let input = is_input(layer);
        let mut m = vec![format!("meta nfproto {}", if v6 { "ipv6" } else { "ipv4" })];
        let fam = if v6 { "ip6" } else { "ip" };
        for (prefixes, remote) in [(&c.remote_addr, true), (&c.local_addr, false)] {
            if prefixes.is_empty() {
                continue;
            }
            let same: Vec<_> = prefixes.iter().filter(|p| p.addr().is_ipv6() == v6).collect();
            if same.is_empty() {
                return Vec::new(); // no value of this family: the filter cannot match here
            }
            let field = if remote == input { "saddr" } else { "daddr" };
            m.push(format!("{fam} {field} {}", set(same)));
        }
        if !c.protocol.is_empty() {
            let names = c.protocol.iter().map(|p| match p {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Icmp => "icmp",
                Protocol::IcmpV6 => "ipv6-icmp",
            });
            m.push(format!("meta l4proto {}", set(names)));
        }
        for (ports, remote) in [(&c.remote_port, true), (&c.local_port, false)] {
            if !ports.is_empty() {
                let field = if remote == input { "sport" } else { "dport" };
                m.push(format!("meta l4proto {{ tcp, udp }} th {field} {}", set(ports.iter())));
            }
        }
        if c.loopback {
            m.push(if input { "iif lo".into() } else { "oif lo".into() });
        }
        if !c.app.is_empty() {
            let uids: BTreeSet<u32> = c
                .app
                .iter()
                .filter_map(|a| AppId::from_image_path(a).ok())
                .filter_map(|a| self.app_uid.get(&a).copied())
                .collect();
            m.push(format!("meta skuid {}", set(uids)));
        }
        if !c.user.is_empty() {
            let gids: BTreeSet<u32> = c.user.iter().filter_map(|s| self.sid_gid.get(s).copied()).collect();
            m.push(format!("meta skgid {}", set(gids)));
        }
        let m = m.join(" ");
        let name = &def.name;
        match def.action {
            FilterAction::Permit => vec![format!("{m} counter accept comment \"{name}\"")],
            _ => vec![
                format!("{m} meta l4proto tcp counter reject with tcp reset comment \"{name}\""),
                format!("{m} counter reject with icmpx type admin-prohibited comment \"{name}\""),
            ],
        }
    }

    fn ranked(&self, case: &Case, policy: &Policy) -> Vec<String> {
        let mut subs = policy.sublayers.clone();
        let weight = |k: &String| case.sublayer(k).map(|s| s.weight).unwrap_or(0);
        subs.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.cmp(b)));
        subs
    }

    fn table(&self, case: &Case, policy: &Policy) -> String {
        let mut out = format!("add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
        for (rank, key) in self.ranked(case, policy).iter().enumerate() {
            for (hook, tag) in [("output", 'o'), ("input", 'i')] {
                out +=
                    &format!("\tchain {tag}{rank} {{\n\t\ttype filter hook {hook} priority {rank}; policy accept;\n");
                out += "\t\tmeta l4proto != { tcp, udp } accept\n\t\tct direction reply accept\n";
                let mut rules: Vec<(u64, usize, String)> = Vec::new();
                for (order, name) in policy.filters.iter().enumerate() {
                    let Some(def) = case.filter(name) else { continue };
                    if &def.sublayer != key {
                        continue;
                    }
                    let w = match def.weight {
                        WeightSpec::Range(r) => Weight::Range(r),
                        WeightSpec::Exact(w) => Weight::Exact(w),
                        WeightSpec::Auto => Weight::Auto,
                    }
                    .effective(0);
                    for layer in def.layers.iter().filter(|l| is_input(**l) == (hook == "input")) {
                        for r in self.rules(def, *layer) {
                            rules.push((w, order, r));
                        }
                    }
                }
                rules.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                for (_, _, r) in rules {
                    out += &format!("\t\t{r}\n");
                }
                out += "\t}\n";
            }
        }
        out + "}\n"
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.client_ns, "nft"]).args(args);
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("nft: {e}"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Replaces the table atomically with `policy`; layers whose filters changed get a new generation.
    fn apply(&mut self, case: &Case, policy: Policy) -> Result<(), CaseError> {
        let text = self.table(case, &policy);
        self.nft(&["-f", "-"], Some(&text)).map_err(|e| CaseError::Backend(format!("{e}\n{text}")))?;
        let at = |p: &Policy, l: LayerName| -> BTreeSet<String> {
            p.filters.iter().filter(|f| case.filter(f).is_some_and(|d| d.layers.contains(&l))).cloned().collect()
        };
        for l in [LayerName::ConnectV4, LayerName::ConnectV6, LayerName::RecvAcceptV4, LayerName::RecvAcceptV6] {
            if at(&self.committed, l) != at(&policy, l) {
                *self.generation.entry(l).or_default() += 1;
            }
        }
        self.committed = policy;
        self.last_counters.clear();
        Ok(())
    }

    fn counters(&self) -> Counters {
        let Ok(listing) = self.nft(&["list", "table", "inet", TABLE], None) else { return Counters::new() };
        let mut out = Counters::new();
        let (mut hook, mut rank, mut idx) = (0u8, 0usize, 0usize);
        for line in listing.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("chain ") {
                let name = rest.trim_end_matches(" {");
                hook = u8::from(name.starts_with('i'));
                rank = name[1..].parse().unwrap_or(0);
                idx = 0;
                continue;
            }
            let (Some(c), Some(p)) = (line.find("comment \""), line.find("counter packets ")) else { continue };
            let name = line[c + 9..].trim_end_matches('"').to_string();
            let packets = line[p + 16..].split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            out.insert((hook, rank, idx), (name, line.contains("reject"), packets));
            idx += 1;
        }
        out
    }

    /// The filter that decided: the first rule (evaluation order) of the right kind whose counter moved.
    fn decider(before: &Counters, after: &Counters, block: bool) -> Option<String> {
        after
            .iter()
            .find(|(k, (_, reject, n))| *reject == block && *n > before.get(k).map(|b| b.2).unwrap_or(0))
            .map(|(_, (name, _, _))| name.clone())
    }

    fn check_traffic(&self, case: &Case, t: &Traffic) -> Result<(), CaseError> {
        if !matches!(t.protocol, Protocol::Tcp | Protocol::Udp) {
            return unsupported(format!(
                "{t}: ICMP traffic; the probes are bash /dev/tcp and /dev/udp clients, which cannot send ICMP"
            ));
        }
        if let Some(class) = t.class.as_deref().filter(|c| is_exotic(c)) {
            return unsupported(format!(
                "{t}: traffic class `{class}` (broadcast/multicast/link-local DHCP or NDP tuples with fixed ports and \
                 hop limits) cannot be sent by the probes"
            ));
        }
        if t.hop_limit != 64 {
            return unsupported(format!("{t}: a hop limit of {} cannot be set by the probes", t.hop_limit));
        }
        if t.interface.is_some() && !case.interfaces.is_empty() {
            return unsupported(format!("{t}: traffic on a named interface; the lab has a single veth"));
        }
        // The probes cannot choose the client's own port (the source port at connect, the remote's source
        // port on an inbound connection); a port condition that the case's tuple would satisfy cannot be shown.
        for name in &self.committed.filters {
            let Some(def) = case.filter(name).filter(|d| d.layers.contains(&layers_of(t))) else { continue };
            let (ports, port) = match t.direction {
                Direction::Outbound => (&def.conditions.local_port, t.local.port()),
                Direction::Inbound => (&def.conditions.remote_port, t.remote.port()),
            };
            if ports.contains(&port) {
                return unsupported(format!(
                    "{t}: filter `{name}` matches the client's own port {port}, which the bash /dev/tcp and /dev/udp \
                     probes cannot bind"
                ));
            }
        }
        if t.direction == Direction::Inbound {
            // An inbound connection's first packet has no local socket at the input hook: `meta skuid/skgid`
            // cannot match it. Fine as long as WFP would not have matched the identity either.
            let p = t.process.as_deref().and_then(|p| case.process(p));
            for name in &self.committed.filters {
                let Some(def) = case.filter(name) else { continue };
                if !def.layers.contains(&layers_of(t)) {
                    continue;
                }
                let c = &def.conditions;
                let by_app = !c.app.is_empty()
                    && p.is_some_and(|p| {
                        let img = AppId::from_image_path(&p.image).ok();
                        c.app.iter().any(|a| AppId::from_image_path(a).ok() == img)
                    });
                let by_user = !c.user.is_empty()
                    && p.is_some_and(|p| c.user.iter().any(|s| s == &p.user || Some(s) == p.service_sid.as_ref()));
                if by_app || by_user {
                    return unsupported(format!(
                        "{t}: filter `{name}` matches the accepting process by identity at a receive layer; \
                         nftables' `meta skuid/skgid` sees no socket on an inbound connection's first packet at the \
                         input hook (and the `socket` expression has no uid key)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The namespace, identity and target of a client for this traffic.
    fn client(&self, t: &Traffic) -> Result<(String, Option<Ident>, SocketAddr), CaseError> {
        let who = t.process.as_ref().and_then(|p| self.idents.get(p).copied());
        match t.direction {
            Direction::Outbound => Ok((self.lab.client_ns.clone(), who, t.remote)),
            Direction::Inbound if t.remote.ip().is_loopback() => Ok((self.lab.client_ns.clone(), None, t.local)),
            Direction::Inbound => {
                let (l, r) = (t.local.ip().to_string(), t.remote.ip().to_string());
                let prefix = if t.local.is_ipv6() { format!("{l}/128") } else { format!("{l}/32") };
                sh(&["ip", "-n", &self.lab.server_ns, "route", "replace", &prefix, "dev", "veth-s", "src", &r])
                    .map_err(CaseError::Backend)?;
                Ok((self.lab.server_ns.clone(), None, t.local))
            }
        }
    }

    fn new_flow(&mut self, case: &Case, flow: &Option<String>, t: &Traffic) -> Result<Observation, CaseError> {
        self.check_traffic(case, t)?;
        let (ns, who, to) = self.client(t)?;
        // bash reads a socket one byte at a time, which loses the rest of a datagram: UDP replies are read
        // by `head -c` with the exact length.
        let (read_ping, read_x) = match t.protocol {
            Protocol::Udp => ("l=$(timeout 1 head -c 5 <&3)", "l=$(timeout 1 head -c 2 <&3) && [ \"$l\" = x ]"),
            _ => ("read -t 1 -r l <&3", "read -t 1 -r l <&3"),
        };
        let open = format!(
            "exec 3<>{} || exit 10; echo ping >&3 || exit 11; {read_ping} || exit 12; [ \"$l\" = ping ] || exit 13",
            dev_path(t.protocol, to)
        );
        let before = self.counters();
        let start = Instant::now();
        let (ok, detail) = match flow {
            None => {
                let out = client_command(&ns, who, 3, &open).output().map_err(|e| CaseError::Backend(e.to_string()))?;
                (out.status.success(), (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
            }
            Some(name) => {
                let script = format!(
                    "{open}; echo ok; while read -r go; do echo x >&3 || {{ echo fail:11; exit 11; }}; \
                     {read_x} || {{ echo fail:12; exit 12; }}; echo ok; done"
                );
                let mut child = client_command(&ns, who, 60, &script)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| CaseError::Backend(e.to_string()))?;
                let stdin = child.stdin.take().expect("piped");
                let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                let layer = layers_of(t);
                let seen = self.generation.get(&layer).copied().unwrap_or(0);
                let mut f = Flow { child, stdin, stdout, process: t.process.clone(), layer, seen };
                if line.trim() == "ok" {
                    self.flows.insert(name.clone(), f);
                    (true, (Some(0), String::new()))
                } else {
                    self.flows.remove(name);
                    let status = f.child.wait().ok().and_then(|s| s.code());
                    let mut err = String::new();
                    if let Some(mut e) = f.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    (false, (status, err))
                }
            }
        };
        let elapsed = start.elapsed();
        let after = self.counters();
        self.last_counters = after.clone();
        if ok {
            return Ok(Observation::Verdict {
                verdict: Verdict::Permit,
                decided_by: Device::decider(&before, &after, false),
            });
        }
        if matches!(detail.0, Some(10..=12)) && elapsed < Duration::from_millis(1500) {
            return Ok(Observation::Verdict {
                verdict: Verdict::Block,
                decided_by: Device::decider(&before, &after, true),
            });
        }
        Err(CaseError::Backend(format!(
            "{t}: the probe neither passed nor was refused: exit {:?} after {elapsed:?}: {}",
            detail.0,
            detail.1.trim()
        )))
    }

    fn packet(&mut self, flow: &str) -> Observation {
        let closed = Observation::Packet { outcome: PacketOutcome::Closed, decided_by: None };
        // Since the last observation, not since this step: a flow's own delayed ACK, sent right after a policy
        // change, is its next packet and may be the one the new rules judge.
        let before = self.last_counters.clone();
        let Some(f) = self.flows.get_mut(flow) else { return closed };
        if !f.alive() {
            self.flows.remove(flow);
            return closed;
        }
        let ok = f.exchange();
        let now = self.generation.get(&f.layer).copied().unwrap_or(0);
        let changed = f.seen != now;
        f.seen = now;
        let after = self.counters();
        self.last_counters = after.clone();
        if !ok {
            self.flows.remove(flow);
            return Observation::Packet {
                outcome: PacketOutcome::TornDown,
                decided_by: Device::decider(&before, &after, true),
            };
        }
        if changed {
            Observation::Packet {
                outcome: PacketOutcome::Reauthorized,
                decided_by: Device::decider(&before, &after, false),
            }
        } else {
            Observation::Packet { outcome: PacketOutcome::Pass, decided_by: None }
        }
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        let missing = |what: &str, name: &str| CaseError::Backend(format!("{what} `{name}` is not declared"));
        let no_session = |s: &str| Ok(failed(ErrorKind::UnknownSession, format!("session `{s}` is not open")));
        match op {
            Op::OpenSession { session, process, dynamic, .. } => {
                if *dynamic {
                    return unsupported(format!(
                        "session `{session}` is dynamic (objects die with the session or its process): this backend \
                         loads ordinary tables that outlive their loader; nftables' `flags owner` tables are the \
                         kernel primitive for it, but replacing an owner table needs the owning netlink socket kept \
                         open by one nft process per session, which this backend does not do"
                    ));
                }
                self.sessions.insert(session.clone(), Session { process: process.clone(), txn: None });
                Ok(Observation::Done)
            }
            Op::CloseSession { session } => match self.sessions.remove(session) {
                None => no_session(session),
                Some(_) => Ok(Observation::Done),
            },
            Op::AddSublayer { session, sublayer } => {
                let def = case.sublayer(sublayer).ok_or_else(|| missing("sublayer", sublayer))?;
                if def.persistent {
                    return unsupported(format!(
                        "sublayer `{sublayer}` is persistent: nftables chains do not survive a reboot"
                    ));
                }
                let Some((txn, mut p)) = self.session_policy(session) else { return no_session(session) };
                if p.sublayers.contains(sublayer) {
                    return Ok(failed(ErrorKind::AlreadyExists, format!("sublayer `{sublayer}` exists")));
                }
                p.sublayers.push(sublayer.clone());
                self.store(case, session, txn, p)
            }
            Op::AddFilter { session, filter } => {
                let def = case.filter(filter).ok_or_else(|| missing("filter", filter))?;
                if let Some(reason) = filter_unsupported(def) {
                    return unsupported(reason);
                }
                let Some((txn, mut p)) = self.session_policy(session) else { return no_session(session) };
                if !p.sublayers.contains(&def.sublayer) {
                    return Ok(failed(ErrorKind::UnknownSublayer, format!("no sublayer `{}`", def.sublayer)));
                }
                if p.filters.contains(filter) {
                    return Ok(failed(ErrorKind::AlreadyExists, format!("filter `{filter}` is installed")));
                }
                p.filters.push(filter.clone());
                self.store(case, session, txn, p)
            }
            Op::DeleteFilter { session, filter } => {
                let Some((txn, mut p)) = self.session_policy(session) else { return no_session(session) };
                if !p.filters.contains(filter) {
                    return Ok(failed(ErrorKind::UnknownFilter, format!("filter `{filter}` is not installed")));
                }
                p.filters.retain(|f| f != filter);
                self.store(case, session, txn, p)
            }
            Op::Begin { session } => {
                if !self.sessions.contains_key(session) {
                    return no_session(session);
                }
                if let Some((other, _)) = self.sessions.iter().find(|(n, s)| *n != session && s.txn.is_some()) {
                    return unsupported(format!(
                        "`begin` in session `{session}` while `{other}` holds a transaction: nftables has no \
                         transaction lock between management sessions (each `nft -f` batch is atomic, but nothing \
                         makes a second writer wait or fail)"
                    ));
                }
                let committed = self.committed.clone();
                let s = self.sessions.get_mut(session).expect("checked");
                if s.txn.is_some() {
                    return Ok(failed(ErrorKind::Rejected, "a transaction is already open".into()));
                }
                s.txn = Some(committed);
                Ok(Observation::Done)
            }
            Op::Commit { session } | Op::Abort { session } => {
                let Some(s) = self.sessions.get_mut(session) else { return no_session(session) };
                let Some(p) = s.txn.take() else {
                    return Ok(failed(ErrorKind::NoTransaction, format!("session `{session}` has no transaction")));
                };
                if matches!(op, Op::Commit { .. }) {
                    self.apply(case, p)?;
                }
                Ok(Observation::Done)
            }
            Op::Kill { process } => {
                self.sessions.retain(|_, s| &s.process != process);
                self.flows.retain(|_, f| f.process.as_ref() != Some(process));
                Ok(Observation::Done)
            }
            Op::NewFlow { flow, traffic } => self.new_flow(case, flow, traffic),
            Op::Packet { flow, via, .. } => {
                if via.is_some() {
                    return unsupported(
                        "a packet arriving on another interface (weak/strong host model): the lab has one interface, \
                         and Linux has no reauthorization by arrival interface (rp_filter is a different check)",
                    );
                }
                Ok(self.packet(flow))
            }
            Op::CloseFlow { flow } => {
                self.flows.remove(flow);
                Ok(Observation::Done)
            }
            Op::BfeStop | Op::BfeStart | Op::BfeRestart => unsupported(format!(
                "`{}`: Linux has no filtering service to stop or restart; nftables rules live in the kernel \
                 until replaced",
                op.action()
            )),
            Op::Reboot | Op::PowerOn => unsupported(format!(
                "`{}`: a network namespace cannot be rebooted; nothing in nftables persists across a reboot or \
                 distinguishes static from persistent objects",
                op.action()
            )),
            Op::SleepResume => unsupported("`sleep_resume`: a network namespace cannot sleep"),
            Op::RecreateInterface { .. } => unsupported("`recreate_interface`: the lab has no named interfaces"),
            Op::VmFrame { .. } => {
                unsupported("`vm_frame`: no Hyper-V virtual switch; the inet family does not see L2 guest frames")
            }
            Op::Watch { .. } | Op::Unwatch { .. } => Ok(Observation::Done),
        }
    }
}

/// Classes the probes cannot send (DHCP, NDP).
fn is_exotic(class: &str) -> bool {
    class.starts_with("dhcp") || class.starts_with("ndp")
}

/// Real nftables as a conformance backend.
#[derive(Default)]
pub struct NftBackend {
    device: Option<Device>,
}

impl Backend for NftBackend {
    fn name(&self) -> &str {
        "nftables"
    }

    fn start(&mut self, case: &Case) -> Result<(), CaseError> {
        self.device = None; // tears down the previous case's namespaces
        self.device = Some(Device::start(case)?);
        Ok(())
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        match self.device.as_mut() {
            Some(d) => d.perform(case, op),
            None => Err(CaseError::Backend("no device: start was not called".into())),
        }
    }
}

#[test]
fn nftables_backend_passes_the_conformance_suite_with_its_unsupported_list() {
    if let Some(reason) = missing_prerequisite() {
        skip(&reason);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let cases = load_cases(&root.join("cases")).unwrap();
    let list = load_unsupported(&root.join("nftables.unsupported.toml")).unwrap();
    let mut backend = NftBackend::default();
    let start = Instant::now();
    let report = run_suite(&mut backend, &cases, &list);
    backend.device = None;
    eprintln!("{report}\n(took {:?})", start.elapsed());
    assert!(report.passed(), "{report}");
}
