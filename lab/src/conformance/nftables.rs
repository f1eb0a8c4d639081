//! The conformance suite on real nftables, through the shipped backend only.
//!
//! Every rule this backend loads is compiled and loaded by `lockstep::nft`
//! (`NftFirewall`, as the agent's `Firewall`): an `agent` step turns the case's
//! agent lockdown into `engage_lockdown` / `lift_lockdown` calls, exactly the calls
//! the agent makes. There is no other renderer: a case that declares its own WFP
//! filters (sublayers, weights, hard permits) has no shipped nftables code path to
//! test and is unsupported here.
//!
//! Each case gets a fresh pair of network namespaces joined by a veth pair: the
//! client namespace is the device (10.0.0.2 and fd00::2, where the table is loaded),
//! the server namespace holds every remote address the case's traffic names, with TCP
//! and UDP echo servers on each remote `ip:port` (loopback remotes and inbound
//! listeners are served in the client namespace). Neighbours are static.
//!
//! How the case's terms map:
//! - **identity**: each distinct image path gets a uid (20000 + n); a process's probes
//!   run under its image's uid (`setpriv`), and the backend's identities map each
//!   process name to that uid (`meta skuid`); a Windows service SID has no Linux
//!   counterpart and is ignored by `NftFirewall`, as documented there;
//! - **traffic**: TCP and UDP probes are bash `/dev/tcp` and `/dev/udp` clients
//!   exchanging a line with the echo server; a reset, an ICMP error or no answer
//!   within a second is `block`. NDP, DHCP and ICMP cannot be sent by these probes;
//! - **flows**: a `packet` step is one round trip on the kept connection; it fails
//!   (reset) → `torn_down`, it passes → `reauthorized` if the agent changed the
//!   lockdown since the flow's last packet (nftables judges every packet by the
//!   current rules: there is no established-accept), else `pass`;
//! - **kill**: the process's flows end; the table stays (nftables tables outlive
//!   the process that loaded them).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::agent::firewall::Firewall;
use lockstep::conformance::{
    AgentSettings, AgentState, Backend, Case, CaseError, ErrorKind as CaseErrorKind, Observation, Op, PacketOutcome,
    Traffic, Verdict,
};
use lockstep::nft::{LinuxIdentity, NftConfig, NftError, NftFirewall, TableName};
use lockstep::wfp::{AppId, Direction, Protocol};

const TABLE: &str = "lockstep";
const CLIENT_V4: &str = "10.0.0.2";
const CLIENT_V6: &str = "fd00::2";
const CLIENT_MAC: &str = "02:00:00:00:00:01";
const SERVER_MAC: &str = "02:00:00:00:00:02";
/// The local port of outbound traffic when a case names none.
const EPHEMERAL_PORT: u16 = 49152;
/// A probe the firewall refuses fails within this; one that hangs lasts its timeout.
const FAST: Duration = Duration::from_millis(1500);

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unsupported<T>(reason: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError::Unsupported(reason.into()))
}

/// A system tool, found in `/usr/sbin` and `/sbin` too.
fn tool(program: &str) -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    cmd
}

fn sh(argv: &[&str]) -> Result<(), String> {
    let out = tool(argv[0]).args(&argv[1..]).output().map_err(|e| format!("{}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!("`{}`: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Why this machine cannot run the backend, if it cannot: it needs root (network
/// namespaces, nftables), `nft`, `ip`, `ss`, `setpriv`, `timeout` and `bash`.
pub fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("it needs root (network namespaces and nftables)".into());
    }
    for (program, arg) in
        [("nft", "--version"), ("ip", "-V"), ("ss", "-V"), ("setpriv", "--version"), ("timeout", "--version")]
    {
        match tool(program).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("`{program}` is missing (install: apt-get install nftables iproute2)")),
        }
    }
    None
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &str) -> Result<(), String> {
    let ns = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// An echo server (TCP: a line back per line; UDP: a datagram back per datagram)
/// on a thread that entered the namespace before binding.
struct Echo {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(netns: &str, addr: SocketAddr, udp: bool) -> Result<Echo, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = format!("/run/netns/{netns}");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            if let Err(e) = enter_netns(&path) {
                let _ = tx.send(Err(e));
                return;
            }
            if udp {
                let socket = match UdpSocket::bind(addr).and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                    Ok(s)
                }) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(format!("bind udp {addr}: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                let mut buf = [0u8; 2048];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
                return;
            }
            let listener = match TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("bind tcp {addr}: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || echo_lines(stream));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(Echo { stop, handle: Some(handle) }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err("echo server thread died".into()),
        }
    }
}

fn echo_lines(stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
        if out.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A kept connection: a bash client that exchanged one line and does one more round
/// trip per line on its stdin.
struct Flow {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    process: Option<String>,
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

/// One case's device: two namespaces, echo servers, the shipped backend.
struct Device {
    client: String,
    server: String,
    echoes: Vec<Echo>,
    /// Process name → uid of its image.
    uids: BTreeMap<String, u32>,
    firewall: NftFirewall,
    agent: Option<(AgentState, AgentSettings)>,
    /// Bumped by every agent transition (every packet is judged by the new rules).
    generation: u64,
    flows: BTreeMap<String, Flow>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.flows.clear();
        self.echoes.clear();
        let _ = sh(&["ip", "netns", "del", &self.client]);
        let _ = sh(&["ip", "netns", "del", &self.server]);
    }
}

/// Classes the probes cannot send.
fn exotic(t: &Traffic) -> Option<String> {
    match t.class.as_deref() {
        Some(c) if c.starts_with("dhcp") || c.starts_with("ndp") => Some(format!(
            "{t}: the probes are bash /dev/tcp and /dev/udp clients and cannot send {c} (fixed client ports, \
             multicast and link-local sources, ICMPv6)"
        )),
        _ if !matches!(t.protocol, Protocol::Tcp | Protocol::Udp) => {
            Some(format!("{t}: the probes cannot send {:?}", t.protocol))
        }
        _ => None,
    }
}

impl Device {
    fn start(case: &Case) -> Result<Device, CaseError> {
        // Identities: one uid per image.
        let mut app_uid: BTreeMap<AppId, u32> = BTreeMap::new();
        let mut uids = BTreeMap::new();
        for p in &case.processes {
            let Ok(app) = AppId::from_image_path(&p.image) else {
                return unsupported(format!("process `{}`: image path `{}` does not normalize", p.name, p.image));
            };
            let next = 20000 + app_uid.len() as u32;
            let uid = *app_uid.entry(app).or_insert(next);
            uids.insert(p.name.clone(), uid);
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("lsc-{}-{n}", std::process::id());
        let (client, server) = (format!("{tag}-c"), format!("{tag}-s"));
        let mut config = NftConfig::new(TableName::new(TABLE).map_err(|e| CaseError::Backend(e.to_string()))?);
        config.netns = Some(client.clone());
        config.identities = uids.iter().map(|(p, u)| (p.clone(), LinuxIdentity::uid(*u))).collect();
        let firewall = NftFirewall::new(config).map_err(|e| CaseError::Backend(e.to_string()))?;
        let mut dev = Device {
            client,
            server,
            echoes: Vec::new(),
            uids,
            firewall,
            agent: None,
            generation: 0,
            flows: BTreeMap::new(),
        };
        // From here on, Drop removes whatever was created.
        dev.network(case).map_err(CaseError::Backend)?;
        Ok(dev)
    }

    /// Namespaces, addresses, routes, static neighbours and echo servers for every
    /// tuple the case names.
    fn network(&mut self, case: &Case) -> Result<(), String> {
        let (c, s) = (self.client.clone(), self.server.clone());
        sh(&["ip", "netns", "add", &c])?;
        sh(&["ip", "netns", "add", &s])?;
        sh(&["ip", "link", "add", "veth-c", "netns", &c, "type", "veth", "peer", "name", "veth-s", "netns", &s])?;
        let mut client_addrs: BTreeSet<IpAddr> =
            [CLIENT_V4, CLIENT_V6].iter().map(|a| a.parse().expect("constant")).collect();
        let mut server_addrs: BTreeSet<IpAddr> = BTreeSet::new();
        // (in the client namespace, udp, address)
        let mut listeners: BTreeSet<(bool, bool, SocketAddr)> = BTreeSet::new();
        let usable = |a: &IpAddr| !a.is_multicast() && !a.is_unspecified() && *a != IpAddr::from([255; 4]);
        for step in &case.steps {
            let t = match &step.op {
                Op::NewFlow { traffic, .. } | Op::Watch { traffic, .. } => traffic,
                _ => continue,
            };
            if exotic(t).is_some() {
                continue;
            }
            let udp = t.protocol == Protocol::Udp;
            match t.direction {
                Direction::Outbound if t.remote.ip().is_loopback() => {
                    listeners.insert((true, udp, t.remote));
                }
                Direction::Outbound if usable(&t.remote.ip()) => {
                    server_addrs.insert(t.remote.ip());
                    listeners.insert((false, udp, t.remote));
                }
                Direction::Outbound => {}
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
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            for a in addrs {
                if a.is_ipv6() {
                    sh(&["ip", "-n", ns, "addr", "add", &format!("{a}/128"), "dev", dev, "nodad"])?;
                } else {
                    sh(&["ip", "-n", ns, "addr", "add", &format!("{a}/32"), "dev", dev])?;
                }
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
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
            self.echoes.push(Echo::start(ns, addr, udp)?);
        }
        Ok(())
    }

    /// The agent brings its lockdown to `state`, through `NftFirewall` as the agent's
    /// `Firewall`.
    fn agent(&mut self, case: &Case, state: AgentState, settings: AgentSettings) -> Result<Observation, CaseError> {
        let def = case.agent.as_ref().ok_or_else(|| CaseError::Backend("the case has no [agent]".into()))?;
        let policy = def.lockdown(case, &settings).map_err(CaseError::Backend)?;
        // What the backend cannot express is refused before anything is loaded.
        if let Err(e @ NftError::Unsupported { .. }) = self.firewall.policy_for(&policy) {
            return unsupported(format!("agent {} ({settings}): {e}", state.as_str()));
        }
        let fw: &mut dyn Firewall = &mut self.firewall;
        let result = match state {
            AgentState::Locked => fw.engage_lockdown(&policy),
            AgentState::Connected if self.agent == Some((AgentState::Connected, settings)) => Ok(()),
            AgentState::Connected if self.agent == Some((AgentState::Locked, settings)) => fw.lift_lockdown(),
            AgentState::Connected => fw.engage_lockdown(&policy).and_then(|()| fw.lift_lockdown()),
        };
        self.generation += 1;
        Ok(match result {
            Ok(()) => {
                self.agent = Some((state, settings));
                Observation::Done
            }
            Err(e) => {
                self.agent = None;
                Observation::Failed { kind: CaseErrorKind::Rejected, message: e.to_string(), waited_ms: None }
            }
        })
    }

    /// The namespace, uid and target of a client for this traffic.
    fn client(&self, t: &Traffic) -> Result<(String, Option<u32>, SocketAddr), CaseError> {
        let uid = t.process.as_ref().and_then(|p| self.uids.get(p).copied());
        match t.direction {
            Direction::Outbound => {
                let default_local = if t.remote.is_ipv6() { CLIENT_V6 } else { CLIENT_V4 };
                let own = t.local.port() == EPHEMERAL_PORT && t.local.ip().to_string() == default_local;
                if !own && !t.remote.ip().is_loopback() {
                    return unsupported(format!(
                        "{t}: the probes cannot choose their source address and port (bash /dev/tcp binds neither)"
                    ));
                }
                Ok((self.client.clone(), uid, t.remote))
            }
            Direction::Inbound if t.remote.ip().is_loopback() => Ok((self.client.clone(), None, t.local)),
            Direction::Inbound => {
                let (l, r) = (t.local.ip().to_string(), t.remote.ip().to_string());
                let prefix = if t.local.is_ipv6() { format!("{l}/128") } else { format!("{l}/32") };
                sh(&["ip", "-n", &self.server, "route", "replace", &prefix, "dev", "veth-s", "src", &r])
                    .map_err(CaseError::Backend)?;
                Ok((self.server.clone(), None, t.local))
            }
        }
    }

    fn client_command(ns: &str, uid: Option<u32>, secs: u32, script: &str) -> Command {
        let mut cmd = tool("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            let u = uid.to_string();
            cmd.args(["setpriv", "--reuid", &u, "--regid", &u, "--clear-groups"]);
        }
        cmd.args(["timeout", &secs.to_string(), "bash", "-c", script]);
        cmd
    }

    fn new_flow(&mut self, flow: &Option<String>, t: &Traffic) -> Result<Observation, CaseError> {
        if let Some(reason) = exotic(t) {
            return unsupported(reason);
        }
        let (ns, uid, to) = self.client(t)?;
        let kind = if t.protocol == Protocol::Udp { "udp" } else { "tcp" };
        // bash reads a socket one byte at a time, which loses the rest of a datagram:
        // UDP replies are read by `head -c` with the exact length.
        let (read_ping, read_x) = match t.protocol {
            Protocol::Udp => ("l=$(timeout 1 head -c 5 <&3)", "l=$(timeout 1 head -c 2 <&3) && [ \"$l\" = x ]"),
            _ => ("read -t 1 -r l <&3", "read -t 1 -r l <&3"),
        };
        let open = format!(
            "exec 3<>/dev/{kind}/{}/{} || exit 10; echo ping >&3 || exit 11; {read_ping} || exit 12; \
             [ \"$l\" = ping ] || exit 13",
            to.ip(),
            to.port()
        );
        let start = Instant::now();
        let (ok, code, stderr) = match flow {
            None => {
                let out = Device::client_command(&ns, uid, 3, &open)
                    .output()
                    .map_err(|e| CaseError::Backend(e.to_string()))?;
                (out.status.success(), out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
            }
            Some(name) => {
                let script = format!(
                    "{open}; echo ok; while read -r go; do echo x >&3 || exit 11; {read_x} || exit 12; echo ok; done"
                );
                let mut child = Device::client_command(&ns, uid, 120, &script)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| CaseError::Backend(e.to_string()))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err(CaseError::Backend("the probe's pipes are missing".into()));
                };
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                let mut f = Flow { child, stdin, stdout, process: t.process.clone(), seen: self.generation };
                if line.trim() == "ok" {
                    self.flows.insert(name.clone(), f);
                    (true, Some(0), String::new())
                } else {
                    self.flows.remove(name);
                    let code = f.child.wait().ok().and_then(|s| s.code());
                    let mut err = String::new();
                    if let Some(mut e) = f.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    (false, code, err)
                }
            }
        };
        let elapsed = start.elapsed();
        if ok {
            return Ok(Observation::Verdict { verdict: Verdict::Permit, decided_by: None });
        }
        if matches!(code, Some(10..=12)) && elapsed < FAST {
            return Ok(Observation::Verdict { verdict: Verdict::Block, decided_by: None });
        }
        Err(CaseError::Backend(format!(
            "{t}: the probe neither passed nor was refused: exit {code:?} after {elapsed:?}: {}",
            stderr.trim()
        )))
    }

    fn packet(&mut self, flow: &str) -> Observation {
        let closed = Observation::Packet { outcome: PacketOutcome::Closed, decided_by: None };
        let Some(f) = self.flows.get_mut(flow) else { return closed };
        if !f.alive() {
            self.flows.remove(flow);
            return closed;
        }
        let ok = f.exchange();
        let changed = f.seen != self.generation;
        f.seen = self.generation;
        if !ok {
            self.flows.remove(flow);
            return Observation::Packet { outcome: PacketOutcome::TornDown, decided_by: None };
        }
        let outcome = if changed { PacketOutcome::Reauthorized } else { PacketOutcome::Pass };
        Observation::Packet { outcome, decided_by: None }
    }

    fn perform(&mut self, case: &Case, op: &Op) -> Result<Observation, CaseError> {
        match op {
            Op::Agent { state, settings } => self.agent(case, *state, *settings),
            Op::NewFlow { flow, traffic } => self.new_flow(flow, traffic),
            Op::Packet { flow, via, .. } => {
                if via.is_some() {
                    return unsupported(
                        "a packet arriving on another interface: the lab has one interface, and Linux has no \
                         reauthorization by arrival interface",
                    );
                }
                Ok(self.packet(flow))
            }
            Op::CloseFlow { flow } => {
                self.flows.remove(flow);
                Ok(Observation::Done)
            }
            Op::Kill { process } => {
                // Its connections end; a table outlives the process that loaded it.
                self.flows.retain(|_, f| f.process.as_ref() != Some(process));
                Ok(Observation::Done)
            }
            Op::Watch { .. } | Op::Unwatch { .. } => Ok(Observation::Done),
            Op::OpenSession { .. }
            | Op::CloseSession { .. }
            | Op::AddSublayer { .. }
            | Op::AddFilter { .. }
            | Op::DeleteFilter { .. }
            | Op::Begin { .. }
            | Op::Commit { .. }
            | Op::Abort { .. } => unsupported(format!(
                "`{}`: the case declares its own WFP filters, and the shipped nftables backend (src/nft) compiles \
                 only the agent's lockdown: there is no shipped code path that would load them (cases with \
                 `agent` steps test the agent's rules on nftables)",
                op.action()
            )),
            Op::BfeStop | Op::BfeStart | Op::BfeRestart => unsupported(format!(
                "`{}`: Linux has no filtering service to stop or restart; nftables rules live in the kernel until \
                 replaced",
                op.action()
            )),
            Op::Reboot | Op::PowerOn => unsupported(format!(
                "`{}`: a network namespace cannot be rebooted, and nftables has no persistent or boot-time rules",
                op.action()
            )),
            Op::SleepResume => unsupported("`sleep_resume`: a network namespace cannot sleep"),
            Op::RecreateInterface { .. } => unsupported("`recreate_interface`: the lab has one interface"),
            Op::VmFrame { .. } => {
                unsupported("`vm_frame`: no Hyper-V virtual switch; the inet family does not see L2 guest frames")
            }
        }
    }
}

/// Real nftables, through `lockstep::nft`, as a conformance backend.
pub struct NftBackend {
    device: Option<Device>,
}

impl NftBackend {
    /// A backend, or why this machine cannot run it.
    pub fn new() -> Result<NftBackend, String> {
        match missing_prerequisite() {
            Some(reason) => Err(reason),
            None => Ok(NftBackend { device: None }),
        }
    }
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

impl Drop for NftBackend {
    fn drop(&mut self) {
        self.device = None;
    }
}
