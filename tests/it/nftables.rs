//! The nftables backend against a real kernel: each test builds its own
//! pair of network namespaces joined by a veth pair on loopback-range
//! addresses, runs a TCP echo server in the "server" namespace, loads the
//! backend's rule set into the "client" (device) namespace, and probes it
//! with real processes (`bash` and `/dev/tcp`), as an ordinary user, as the
//! auth identity by uid (`setpriv`) or by cgroup v2.
//!
//! Needs root, `nft` and `ip`. Without them each test prints
//! `SKIPPED: nftables missing (install: ...)` (or `SKIPPED: nftables cannot
//! run here: not running as root`) and passes, unless
//! `LOCKSTEP_REQUIRE_PEERS` (or its older alias `LOCKSTEP_REQUIRE_NFT`) is
//! set, as `.ci/run` does, which turns a missing prerequisite into a
//! failure: the rule of [`crate::peer`].
//!
//! The backend-neutral conformance suite runs on nftables through the CLI
//! (`lab conformance --backend nftables`, tested in `lab/tests/conformance.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::agent::firewall::{Endpoint, Exception, Firewall, LockdownPolicy};
use lockstep::nft::{CgroupPath, CutReport, LinuxIdentity, NftConfig, NftError, NftFirewall, TableName};
use lockstep::wfp::AppId;

use crate::peer;

/// uid of the auth process in these tests.
pub const AUTH_UID: u32 = 4242;
/// uid of an ordinary user.
pub const USER_UID: u32 = 1000;
/// The port the auth process may reach.
pub const AUTH_PORT: u16 = 7000;
/// A port it may not reach (same server).
pub const OTHER_PORT: u16 = 7001;
/// A port in the client namespace (inbound probes).
pub const INBOUND_PORT: u16 = 7100;
/// A connect that a reject refuses returns within this; a hang lasts the
/// probe's 3 s timeout.
pub const FAST: Duration = Duration::from_millis(1500);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A system tool, found in `/usr/sbin` and `/sbin` too (a non-root PATH
/// often lacks them).
fn tool(program: &str) -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    cmd
}

/// Runs a system tool; `Err` carries its stderr.
pub fn sh(argv: &[&str]) -> Result<(), String> {
    let out = tool(argv[0]).args(&argv[1..]).output().map_err(|e| format!("{}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!("`{}`: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// What installs the tools these tests run (`setpriv` and `timeout` come
/// with every Debian system).
pub const NFT_INSTALL: &str = "apt-get install nftables iproute2";

/// Why the real tests cannot run here, if they cannot (and, when they can,
/// counts the calling test as one that runs against real nftables).
pub fn missing_prerequisite() -> Option<String> {
    for (tool, arg) in [("nft", "--version"), ("ip", "-V"), ("setpriv", "--version"), ("timeout", "--version")] {
        match self::tool(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("`{tool}` {MISSING}")),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    peer::found("nftables");
    None
}

/// How [`missing_prerequisite`] ends the reason of a tool not installed.
const MISSING: &str = "is not installed";

/// Prints the SKIPPED line and returns `None`, or fails the test when
/// missing peers must fail ([`peer::required`]).
pub fn skip(reason: &str) -> Option<Lab> {
    if reason.ends_with(MISSING) { peer::missing("nftables", NFT_INSTALL) } else { peer::unusable("nftables", reason) }
}

/// A lab for one test, or `None` (after the skip line) when this machine
/// cannot run it.
pub fn lab(test: &str) -> Option<Lab> {
    if let Some(reason) = missing_prerequisite() {
        return skip(&reason);
    }
    match Lab::new(test) {
        Ok(lab) => Some(lab),
        Err(reason) => skip(&format!("cannot build the network namespaces: {reason}")),
    }
}

/// Who runs a probe in the client namespace.
#[derive(Clone, Debug)]
pub enum Who {
    /// root, in the root cgroup.
    Root,
    /// This uid (`setpriv --reuid --regid --clear-groups`).
    Uid(u32),
    /// root, inside this cgroup v2 directory (joined before `ip netns exec`,
    /// so `ip`, `bash` and every child are in it).
    Cgroup(PathBuf),
}

/// What a probe did.
#[derive(Debug)]
pub struct Probe {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Probe {
    /// The exchange completed.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The connect failed at once (refused, not timed out).
    pub fn refused_fast(&self) -> bool {
        self.code == Some(10) && self.elapsed < FAST
    }
}

/// Moves the calling thread into the network namespace at `path`
/// (`/run/netns/NAME`); sockets it creates afterwards live there.
pub fn enter_netns(path: &str) -> Result<(), String> {
    let ns = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A TCP echo server (one line back per line) in a namespace: a thread of
/// the test process that entered the namespace with `setns` before binding.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(netns: &str, addr: SocketAddr) -> Result<EchoServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = format!("/run/netns/{netns}");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let listener = (|| {
                enter_netns(&path)?;
                let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(l)
            })();
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || echo(stream));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(EchoServer { stop, handle: Some(handle) }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err("echo server thread died".into()),
        }
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
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

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Two network namespaces, `client` (the device, where the firewall is
/// loaded) and `server` (the IdP and the rest of the world), joined by a
/// veth pair: client 127.0.N.1/24 and fd00:N::1/64, server 127.0.N.2 and
/// 127.0.N.3 (a second host) and fd00:N::2. The 127/8 local route is
/// removed and `route_localnet` set, so the loopback-range addresses travel
/// over the veth. Everything is deleted on drop.
pub struct Lab {
    /// Name of the client namespace.
    pub client_ns: String,
    /// Name of the server namespace.
    pub server_ns: String,
    /// Client address (IPv4).
    pub client_v4: Ipv4Addr,
    /// Server address (IPv4), the IdP.
    pub server_v4: Ipv4Addr,
    /// A second server address: not an exception destination.
    pub other_v4: Ipv4Addr,
    /// Client address (IPv6).
    pub client_v6: Ipv6Addr,
    /// Server address (IPv6).
    pub server_v6: Ipv6Addr,
    tag: String,
    cgroup_root: Option<PathBuf>,
    cgroups: Vec<PathBuf>,
    servers: Vec<EchoServer>,
}

impl Lab {
    /// Builds the namespaces (names carry the test name, the pid and a
    /// counter, so parallel tests and parallel test binaries never clash).
    pub fn new(test: &str) -> Result<Lab, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("lsk-{test}-{}-{n}", std::process::id());
        let octet = 100 + (n % 150) as u8;
        let lab = Lab {
            client_ns: format!("{tag}-c"),
            server_ns: format!("{tag}-s"),
            client_v4: Ipv4Addr::new(127, 0, octet, 1),
            server_v4: Ipv4Addr::new(127, 0, octet, 2),
            other_v4: Ipv4Addr::new(127, 0, octet, 3),
            client_v6: format!("fd00:{octet}::1").parse().unwrap(),
            server_v6: format!("fd00:{octet}::2").parse().unwrap(),
            tag,
            cgroup_root: None,
            cgroups: Vec::new(),
            servers: Vec::new(),
        };
        // From here on, Drop cleans up whatever was created.
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> Result<(), String> {
        let (c, s) = (self.client_ns.as_str(), self.server_ns.as_str());
        sh(&["ip", "netns", "add", c])?;
        sh(&["ip", "netns", "add", s])?;
        sh(&["ip", "link", "add", "veth-c", "netns", c, "type", "veth", "peer", "name", "veth-s", "netns", s])?;
        let v4 = |a: Ipv4Addr| format!("{a}/24");
        let v6 = |a: Ipv6Addr| format!("{a}/64");
        for (ns, dev, addrs) in [
            (c, "veth-c", vec![v4(self.client_v4), v6(self.client_v6)]),
            (s, "veth-s", vec![v4(self.server_v4), v4(self.other_v4), v6(self.server_v6)]),
        ] {
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.route_localnet=1",
                "net.ipv4.conf.default.route_localnet=1",
                &format!("net.ipv4.conf.{dev}.route_localnet=1"),
            ])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", ns, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"])?;
            for a in &addrs {
                if a.contains(':') {
                    sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"])?;
                } else {
                    sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev])?;
                }
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// A backend for the client namespace: table `lockstep`, the given
    /// identities, idle flows NOT cut (so the rule set alone is tested,
    /// unless a test turns `cut_idle_flows` on).
    pub fn firewall(&self, identities: &[(&str, LinuxIdentity)]) -> NftFirewall {
        let mut config = NftConfig::new(TableName::new("lockstep").unwrap());
        config.netns = Some(self.client_ns.clone());
        config.identities = identities.iter().map(|(p, i)| (p.to_string(), i.clone())).collect::<BTreeMap<_, _>>();
        config.cut_idle_flows = false;
        NftFirewall::new(config).unwrap()
    }

    /// The agent's lockdown: `auth-window` may reach the IdP on
    /// [`AUTH_PORT`] over IPv4 and IPv6.
    pub fn lockdown(&self) -> LockdownPolicy {
        LockdownPolicy {
            exceptions: vec![Exception {
                process: "auth-window".into(),
                app_id: AppId::from_image_path(r"C:\Program Files\Lockstep\auth-window.exe").unwrap(),
                service_sid: None,
                remote: vec![
                    Endpoint::host(IpAddr::V4(self.server_v4), AUTH_PORT),
                    Endpoint::host(IpAddr::V6(self.server_v6), AUTH_PORT),
                ],
            }],
            allow_loopback: true,
            allow_lan: false,
            allow_dhcp: true,
            danger_ipv4_only: false,
        }
    }

    /// A new cgroup v2 group for this lab (`<root>/<tag>/<leaf>`), as the
    /// rule's relative path and the absolute directory processes join, or
    /// why cgroup v2 is unavailable.
    pub fn cgroup(&mut self, leaf: &str) -> Result<(CgroupPath, PathBuf), String> {
        let root = match &self.cgroup_root {
            Some(r) => r.clone(),
            None => {
                let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
                let mount = mounts
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[2] == "cgroup2")
                    .map(|f| PathBuf::from(f[1]))
                    .ok_or("no cgroup2 hierarchy is mounted")?;
                let dir = mount.join(&self.tag);
                std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                self.cgroups.push(dir.clone());
                self.cgroup_root = Some(dir.clone());
                dir
            }
        };
        let dir = root.join(leaf);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        self.cgroups.push(dir.clone());
        let rel = format!("{}/{leaf}", self.tag);
        Ok((CgroupPath::new("cgroup", &rel).map_err(|e| e.to_string())?, dir))
    }

    /// Starts an echo server in the server namespace.
    pub fn serve(&mut self, addr: SocketAddr) {
        let s = EchoServer::start(&self.server_ns, addr).unwrap();
        self.servers.push(s);
    }

    /// Starts an echo server in the client namespace.
    pub fn serve_on_client(&mut self, addr: SocketAddr) {
        let s = EchoServer::start(&self.client_ns, addr).unwrap();
        self.servers.push(s);
    }

    /// The usual servers: IdP on [`AUTH_PORT`] and [`OTHER_PORT`] (IPv4
    /// and IPv6) and the other host on [`AUTH_PORT`].
    pub fn serve_world(&mut self) {
        for ip in [IpAddr::V4(self.server_v4), IpAddr::V6(self.server_v6)] {
            self.serve(SocketAddr::new(ip, AUTH_PORT));
            self.serve(SocketAddr::new(ip, OTHER_PORT));
        }
        self.serve(SocketAddr::new(IpAddr::V4(self.other_v4), AUTH_PORT));
    }

    /// The command that runs `script` in namespace `ns` as `who`, under
    /// `timeout secs`.
    pub fn command(ns: &str, who: &Who, secs: u32, script: &str) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Who::Cgroup(dir) = who {
            // Join first, then exec: ip, bash and every child are in it.
            argv.extend(["sh", "-c", r#"echo $$ > "$0/cgroup.procs" && exec "$@""#].map(String::from));
            argv.push(dir.display().to_string());
        }
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
        if let Who::Uid(uid) = who {
            let u = uid.to_string();
            argv.extend(["setpriv", "--reuid", &u, "--regid", &u, "--clear-groups"].map(String::from));
        }
        argv.extend(["timeout", &secs.to_string(), "bash", "-c", script].map(String::from));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    /// Connects from `ns` as `who` to `to`, sends a line and expects it
    /// back. Exit 10: the connect failed; 11/12: the send or the read
    /// failed; 13: a different line came back.
    pub fn probe_from(ns: &str, who: &Who, to: SocketAddr) -> Probe {
        let script = format!(
            "exec 3<>/dev/tcp/{}/{} || exit 10; echo ping >&3 || exit 11; read -t 2 -r l <&3 || exit 12; \
             [ \"$l\" = ping ] || exit 13",
            to.ip(),
            to.port()
        );
        let start = Instant::now();
        let out = Lab::command(ns, who, 3, &script).output().expect("run the probe");
        Probe {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// [`Lab::probe_from`] the client namespace.
    pub fn probe(&self, who: &Who, to: SocketAddr) -> Probe {
        Lab::probe_from(&self.client_ns, who, to)
    }

    /// IdP address on a port.
    pub fn idp(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.server_v4), port)
    }

    /// IdP IPv6 address on a port.
    pub fn idp6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.server_v6), port)
    }

    /// Opens a connection from the client namespace as `who` that exchanges
    /// one line, then waits for [`Session::next`] before its next step.
    pub fn session(&self, who: &Who, to: SocketAddr, next: Step) -> Session {
        let step = match next {
            Step::Send => "echo two >&3 || exit 15; read -t 2 -r l <&3 || exit 16; echo \"got:$l\"",
            Step::Wait => "read -t 2 -r l <&3; echo \"read:$?:$l\"; exit 17",
        };
        let script = format!(
            "exec 3<>/dev/tcp/{}/{} || exit 10; echo one >&3 || exit 11; read -t 2 -r l <&3 || exit 12; \
             echo \"got:$l\"; read -r go || exit 14; {step}",
            to.ip(),
            to.port()
        );
        let mut child = Lab::command(&self.client_ns, who, 10, &script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the session");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        Session { child, stdin, stdout, first: first.trim().to_string() }
    }
}

/// What a [`Session`] does after the first exchange.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Send a second line and read it back (exit 15: the send failed, 16:
    /// the read failed, 0: `got:two`).
    Send,
    /// Send nothing, wait up to 2 s for the peer (prints `read:<status>:`
    /// and exits 17; status > 128 means the 2 s passed with no news).
    Wait,
}

/// A client connection in progress (a child process, always waited for).
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// What the first exchange printed (`got:one` when it worked).
    pub first: String,
}

impl Session {
    /// Lets the client take its next step and waits for it to end.
    pub fn next(mut self) -> Probe {
        let start = Instant::now();
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let mut stdout = String::new();
        let _ = self.stdout.read_to_string(&mut stdout);
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = self.child.wait().expect("wait for the session");
        Probe { code: status.code(), stdout, stderr, elapsed: start.elapsed() }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = sh(&["ip", "netns", "del", &self.client_ns]);
        let _ = sh(&["ip", "netns", "del", &self.server_ns]);
        for dir in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn assert_refused(p: &Probe, what: &str) {
    assert!(p.refused_fast(), "{what}: expected a fast refusal, got {p:?}");
}

fn assert_through(p: &Probe, what: &str) {
    assert!(p.ok(), "{what}: expected the exchange to work, got {p:?}");
}

/// The uid identity as the agent's process map.
fn by_uid() -> Vec<(&'static str, LinuxIdentity)> {
    vec![("auth-window", LinuxIdentity::uid(AUTH_UID))]
}

// (a) Under lockdown, ordinary processes are refused at once, and the auth
// identity is refused outside its listed destination.
#[test]
fn nftables_lockdown_refuses_others_and_scopes_the_auth_process() {
    let Some(mut lab) = lab("block") else { return };
    lab.serve_world();
    // Control: everything works before the lockdown.
    assert_through(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root before lockdown");
    assert_through(&lab.probe(&Who::Uid(AUTH_UID), lab.idp(OTHER_PORT)), "auth uid to the other port before lockdown");

    let mut fw = lab.firewall(&by_uid());
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root to the IdP");
    assert_refused(&lab.probe(&Who::Uid(USER_UID), lab.idp(AUTH_PORT)), "a user to the IdP");
    assert_refused(&lab.probe(&Who::Root, lab.idp6(AUTH_PORT)), "root to the IdP over IPv6");
    assert_refused(&lab.probe(&Who::Uid(AUTH_UID), lab.idp(OTHER_PORT)), "auth uid to a port not listed");
    assert_refused(&lab.probe(&Who::Uid(AUTH_UID), lab.idp6(OTHER_PORT)), "auth uid to a v6 port not listed");
    let other = SocketAddr::new(IpAddr::V4(lab.other_v4), AUTH_PORT);
    assert_refused(&lab.probe(&Who::Uid(AUTH_UID), other), "auth uid to a host not listed");
    // Loopback stays open inside the device.
    lab.serve_on_client(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7200));
    assert_through(&lab.probe(&Who::Root, "127.0.0.1:7200".parse().unwrap()), "loopback under lockdown");
}

// (b) The auth process gets through to its listed destination: by uid.
#[test]
fn nftables_auth_process_by_uid_gets_through() {
    let Some(mut lab) = lab("uid") else { return };
    lab.serve_world();
    let mut fw = lab.firewall(&by_uid());
    let fw_dyn: &mut dyn Firewall = &mut fw;
    fw_dyn.engage_lockdown(&lab.lockdown()).unwrap();
    assert_through(&lab.probe(&Who::Uid(AUTH_UID), lab.idp(AUTH_PORT)), "auth uid to the IdP");
    assert_through(&lab.probe(&Who::Uid(AUTH_UID), lab.idp6(AUTH_PORT)), "auth uid to the IdP over IPv6 (NDP allowed)");
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root to the IdP (same destination, other identity)");
    let listing = fw.list_table().unwrap().expect("table exists");
    assert!(
        listing.lines().any(|l| l.contains("meta skuid 4242 ip daddr") && !l.contains("counter packets 0 ")),
        "the uid exception counted the packets:\n{listing}"
    );
}

// (b) The auth process gets through to its listed destination: by cgroup v2
// (the probe's bash is a child of the process that joined the group, so
// this also shows children inheriting the exception).
#[test]
fn nftables_auth_process_by_cgroup_gets_through() {
    let Some(mut lab) = lab("cgroup") else { return };
    let (path, dir) = match lab.cgroup("auth") {
        Ok(cg) => cg,
        Err(reason) => {
            skip(&format!("cgroup v2 unavailable: {reason}"));
            return;
        }
    };
    let (_, elsewhere) = lab.cgroup("other").unwrap();
    lab.serve_world();
    let mut fw = lab.firewall(&[("auth-window", LinuxIdentity::cgroup(path))]);
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_through(&lab.probe(&Who::Cgroup(dir.clone()), lab.idp(AUTH_PORT)), "auth cgroup to the IdP");
    assert_through(&lab.probe(&Who::Cgroup(dir.clone()), lab.idp6(AUTH_PORT)), "auth cgroup over IPv6");
    assert_refused(&lab.probe(&Who::Cgroup(dir), lab.idp(OTHER_PORT)), "auth cgroup to a port not listed");
    assert_refused(&lab.probe(&Who::Cgroup(elsewhere), lab.idp(AUTH_PORT)), "a sibling cgroup to the IdP");
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root cgroup to the IdP");
}

// (c) Revocation cuts an established connection on its next segment: a
// client connects while the lockdown is lifted and exchanges a line; the
// lockdown is engaged; its next send fails at once. The explicit `ss -K`
// cut is off here, so the rule set alone does it.
#[test]
fn nftables_revocation_cuts_an_established_connection() {
    let Some(mut lab) = lab("revoke") else { return };
    lab.serve_world();
    let mut fw = lab.firewall(&by_uid());
    fw.lift_lockdown().unwrap();

    // Control: with no change the same client sends its second line fine.
    let control = lab.session(&Who::Root, lab.idp(AUTH_PORT), Step::Send);
    assert_eq!(control.first, "got:one");
    let p = control.next();
    assert!(p.ok() && p.stdout.contains("got:two"), "{p:?}");

    let s = lab.session(&Who::Root, lab.idp(AUTH_PORT), Step::Send);
    let s6 = lab.session(&Who::Uid(USER_UID), lab.idp6(AUTH_PORT), Step::Send);
    let auth = lab.session(&Who::Uid(AUTH_UID), lab.idp(AUTH_PORT), Step::Send);
    assert_eq!((s.first.as_str(), s6.first.as_str(), auth.first.as_str()), ("got:one", "got:one", "got:one"));
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_eq!(fw.last_cut(), &CutReport::NotRun);
    for (p, what) in [(s.next(), "root over IPv4"), (s6.next(), "a user over IPv6")] {
        assert!(!p.stdout.contains("got:two"), "{what}: the revoked flow still works: {p:?}");
        assert!(matches!(p.code, Some(15 | 16)), "{what}: {p:?}");
        assert!(p.elapsed < FAST, "{what}: cut by a reset, not a timeout: {p:?}");
        assert!(p.stderr.contains("reset"), "{what}: {p:?}");
    }
    // The auth process's own flow (opened while lifted) stays: it is still
    // allowed.
    let p = auth.next();
    assert!(p.ok() && p.stdout.contains("got:two"), "the auth flow survives: {p:?}");
}

// (c') With `cut_idle_flows`, engaging the lockdown also destroys idle
// established sockets (`ss -K`): a client that sends nothing learns at once.
// Control: without it, the idle client hears nothing for its whole wait.
#[test]
fn nftables_lockdown_can_destroy_idle_flows() {
    let Some(mut lab) = lab("idle") else { return };
    lab.serve_world();
    for cut in [false, true] {
        let mut fw = lab.firewall(&by_uid());
        let mut config = fw.config().clone();
        config.cut_idle_flows = cut;
        fw = NftFirewall::new(config).unwrap();
        fw.lift_lockdown().unwrap();
        // (ss cannot tell processes apart: a flow to an exception endpoint
        // is kept whoever owns it, and cut by the rules on its next segment.)
        let idle = lab.session(&Who::Root, lab.idp(OTHER_PORT), Step::Wait);
        let auth = lab.session(&Who::Uid(AUTH_UID), lab.idp(AUTH_PORT), Step::Wait);
        assert_eq!((idle.first.as_str(), auth.first.as_str()), ("got:one", "got:one"));
        fw.engage_lockdown(&lab.lockdown()).unwrap();
        let p = idle.next();
        let a = auth.next();
        // The auth flow to its endpoint is never destroyed.
        assert!(a.stdout.contains("read:142:"), "the auth flow only timed out waiting: {a:?}");
        assert!(a.elapsed >= Duration::from_millis(1900), "auth flow kept: {a:?}");
        if cut {
            assert_eq!(fw.last_cut(), &CutReport::Killed { sockets: 1 }, "{p:?}");
            assert!(p.elapsed < FAST, "idle flow destroyed at once: {p:?}");
            assert!(p.stderr.contains("abort") || p.stdout.contains("read:1:"), "{p:?}");
        } else {
            assert_eq!(fw.last_cut(), &CutReport::NotRun);
            assert!(p.elapsed >= Duration::from_millis(1900), "without ss -K the idle flow hears nothing: {p:?}");
        }
    }
}

// (d) Lifting the lockdown restores access.
#[test]
fn nftables_lift_restores_access() {
    let Some(mut lab) = lab("lift") else { return };
    lab.serve_world();
    let mut fw = lab.firewall(&by_uid());
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root under lockdown");
    fw.lift_lockdown().unwrap();
    assert_through(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root after lift");
    assert_through(&lab.probe(&Who::Uid(USER_UID), lab.idp6(OTHER_PORT)), "a user over IPv6 after lift");
    let listing = fw.list_table().unwrap().expect("the open table stays");
    assert!(listing.contains("policy accept") && !listing.contains("policy drop"), "{listing}");
    // And again: lockdown, lift, lockdown alternate cleanly.
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root under the second lockdown");
    fw.remove().unwrap();
    assert_eq!(fw.list_table().unwrap(), None);
    assert_through(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "root after the table is removed");
}

// (e) Replacement is atomic: a batch that fails leaves the previous table
// exactly as it was, still enforcing.
#[test]
fn nftables_failed_replacement_leaves_the_previous_table() {
    let Some(mut lab) = lab("atomic") else { return };
    lab.serve_world();
    let mut fw = lab.firewall(&by_uid());
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    // Counters are state, not rules: a stray packet (an IPv6 router solicitation,
    // say) may bump one between the two listings.
    let rules = |listing: Option<String>| listing.map(|l| without_counters(&l));
    let before = rules(fw.list_table().unwrap()).expect("table");

    // 1. A cgroup that does not exist: nft fails while resolving it, after
    //    the batch's `delete table` was already queued.
    let mut config = fw.config().clone();
    let missing = CgroupPath::new("cgroup", &format!("lockstep-no-such-group-{}", std::process::id())).unwrap();
    config.identities.insert("auth-window".into(), LinuxIdentity::cgroup(missing));
    let mut broken = NftFirewall::new(config).unwrap();
    match broken.engage_lockdown(&lab.lockdown()) {
        Err(e) => assert!(e.0.contains("cgroup"), "the error carries nft's stderr: {e}"),
        Ok(()) => panic!("a missing cgroup must fail"),
    }
    // 2. A batch that deletes the table and then fails to parse.
    let bad = "add table inet lockstep\ndelete table inet lockstep\ntable inet lockstep {\n\tchain output {\n\t\t\
               type filter hook output priority filter; policy accept;\n\t\tthis is not a rule\n\t}\n}\n";
    match fw.run_batch(bad, false) {
        Err(NftError::Command { stderr, .. }) => assert!(stderr.contains("syntax error"), "{stderr}"),
        other => panic!("{other:?}"),
    }
    // 3. A batch whose last command fails in the kernel (not the parser).
    let late = "delete table inet lockstep\ndelete table inet lockstep\n";
    assert!(fw.run_batch(late, false).is_err());

    assert_eq!(rules(fw.list_table().unwrap()).as_deref(), Some(before.as_str()), "the table changed");
    assert_refused(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "still locked after the failed batches");
    assert_through(&lab.probe(&Who::Uid(AUTH_UID), lab.idp(AUTH_PORT)), "the exception still works");
}

// (f) Under lockdown, connections from the server namespace into the device
// are refused (and work again once lifted).
#[test]
fn nftables_inbound_connections_are_refused_under_lockdown() {
    let Some(mut lab) = lab("inbound") else { return };
    let inbound = SocketAddr::new(IpAddr::V4(lab.client_v4), INBOUND_PORT);
    let inbound6 = SocketAddr::new(IpAddr::V6(lab.client_v6), INBOUND_PORT);
    lab.serve_on_client(inbound);
    lab.serve_on_client(inbound6);
    let mut fw = lab.firewall(&by_uid());
    fw.lift_lockdown().unwrap();
    assert_through(&Lab::probe_from(&lab.server_ns, &Who::Root, inbound), "inbound while lifted");
    fw.engage_lockdown(&lab.lockdown()).unwrap();
    assert_refused(&Lab::probe_from(&lab.server_ns, &Who::Root, inbound), "inbound under lockdown");
    assert_refused(&Lab::probe_from(&lab.server_ns, &Who::Root, inbound6), "inbound IPv6 under lockdown");
    // Even from the IdP's own port: replies are accepted only for marked
    // (excepted) flows, not for a connection the IdP host initiates.
    fw.lift_lockdown().unwrap();
    assert_through(&Lab::probe_from(&lab.server_ns, &Who::Root, inbound6), "inbound IPv6 after lift");
}

// The backend refuses a lockdown it cannot express, and changes nothing.
#[test]
fn nftables_unmapped_process_is_an_error_and_changes_nothing() {
    let Some(mut lab) = lab("unmapped") else { return };
    lab.serve_world();
    let mut fw = lab.firewall(&[("someone-else", LinuxIdentity::uid(AUTH_UID))]);
    fw.lift_lockdown().unwrap();
    let e = fw.engage_lockdown(&lab.lockdown()).unwrap_err();
    assert!(e.0.contains("auth-window"), "{e}");
    assert_through(&lab.probe(&Who::Root, lab.idp(AUTH_PORT)), "still open");
}

// The kernel primitive a dynamic (fail-open) lifetime would rest on, the
// counterpart of a WFP dynamic session: a table with `flags owner` belongs
// to the netlink socket of the nft process that created it and vanishes
// when that process dies. The backend itself loads ordinary (fail-closed,
// "static") tables; this pins the fact for the conformance suite.
#[test]
fn nftables_owner_table_vanishes_with_its_process() {
    let Some(lab) = lab("owner") else { return };
    let mut holder = tool("ip")
        .args(["netns", "exec", &lab.client_ns, "nft", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft -i");
    let mut stdin = holder.stdin.take().expect("piped");
    // One line is one batch in interactive mode.
    stdin
        .write_all(
            b"add table inet owned { flags owner; }; add chain inet owned output { type filter hook output \
              priority filter; policy drop; }\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    let listed = |lab: &Lab| {
        let out = tool("ip").args(["netns", "exec", &lab.client_ns, "nft", "list", "tables"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("table inet owned")
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !listed(&lab) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(listed(&lab), "the owner table exists while nft runs");
    // Another process cannot replace or delete it.
    let foreign =
        tool("ip").args(["netns", "exec", &lab.client_ns, "nft", "delete", "table", "inet", "owned"]).output().unwrap();
    assert!(!foreign.status.success(), "only the owner may delete it");
    // The owner dies (as an agent would crash): the table goes with it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(!listed(&lab), "the owner table outlived its process");
}

/// A table listing with every `counter packets N bytes M` reduced to `counter`.
fn without_counters(listing: &str) -> String {
    let mut out = Vec::new();
    let mut words = listing.split(' ').peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if w.ends_with("counter") && words.peek() == Some(&"packets") {
            // Skip "packets N bytes M".
            for _ in 0..4 {
                words.next();
            }
        }
    }
    out.join(" ")
}
