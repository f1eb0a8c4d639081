//! The applier: runs `nft` (and `ip`, `ss`), verifies, cuts idle flows.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use super::NftError;
use super::compile::{Ruleset, compile_delete, compile_lockdown, compile_open};
use super::policy::{DEFAULT_CT_MARK, Endpoint, LinuxIdentity, NftException, NftPolicy, TableName};
use crate::agent::firewall::{Firewall, FirewallError, LockdownPolicy};

/// How the backend is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftConfig {
    /// The table it owns.
    pub table: TableName,
    /// Run every command inside this named network namespace
    /// (`ip netns exec`), or in the caller's namespace when `None`.
    pub netns: Option<String>,
    /// Linux identity of each process the agent's lockdown may except,
    /// keyed by the lockdown's process name (the Windows app id has no
    /// Linux meaning).
    pub identities: BTreeMap<String, LinuxIdentity>,
    /// Accept the DHCP client tuples under lockdown.
    pub allow_dhcp: bool,
    /// Accept IPv6 neighbour discovery under lockdown.
    pub allow_ndp: bool,
    /// Conntrack mark of excepted flows.
    pub ct_mark: u32,
    /// After engaging the lockdown, destroy established TCP sockets it does
    /// not allow with `ss -K` (best effort) instead of waiting for their
    /// next segment.
    pub cut_idle_flows: bool,
}

impl NftConfig {
    /// Defaults: caller's namespace, no identities, DHCP and NDP allowed,
    /// the default mark, idle flows cut.
    pub fn new(table: TableName) -> NftConfig {
        NftConfig {
            table,
            netns: None,
            identities: BTreeMap::new(),
            allow_dhcp: true,
            allow_ndp: true,
            ct_mark: DEFAULT_CT_MARK,
            cut_idle_flows: true,
        }
    }
}

/// What the explicit cut after the last lockdown did. The rule set is the
/// primary mechanism either way: a flow the lockdown does not allow dies on
/// its next packet whatever this says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutReport {
    /// No cut ran (disabled, or no lockdown engaged yet).
    NotRun,
    /// `ss -K` ran; this many established TCP sockets matched its filter
    /// (flows not on loopback and not to an exception endpoint).
    Killed {
        /// Sockets listed by `ss -K`.
        sockets: usize,
    },
    /// `ss -K` could not run or failed (missing, or a kernel without
    /// `CONFIG_INET_DIAG_DESTROY`).
    Failed {
        /// Why.
        reason: String,
    },
}

/// The nftables backend of the agent.
#[derive(Debug)]
pub struct NftFirewall {
    config: NftConfig,
    last_cut: CutReport,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Result<Output, NftError> {
    let command = describe(&cmd);
    let spawn_err = |source| NftError::Spawn { command: command.clone(), source };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(text) = stdin {
        // nft reads the whole batch before it writes anything, so writing
        // first and collecting output afterwards cannot deadlock.
        let written = match child.stdin.take() {
            Some(mut pipe) => pipe.write_all(text.as_bytes()),
            None => Err(std::io::Error::other("stdin was not piped")),
        };
        if let Err(source) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NftError::Spawn { command, source });
        }
    }
    child.wait_with_output().map_err(spawn_err)
}

fn check(cmd: Command, stdin: Option<&str>) -> Result<Output, NftError> {
    let command = describe(&cmd);
    let out = run(cmd, stdin)?;
    if !out.status.success() {
        return Err(NftError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A command for a system tool: nft, ip and ss live in `/usr/sbin`, which
/// an unprivileged user's PATH often lacks, so it is appended.
fn tool(program: &str) -> Command {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    for sbin in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d.as_os_str() == sbin) {
            path.push(":");
            path.push(sbin);
        }
    }
    let mut cmd = Command::new(program);
    cmd.env("PATH", path);
    cmd
}

/// Whether `/sys/fs/cgroup` in this mount namespace is a cgroup2 mount.
fn host_cgroup2_at_default() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == "/sys/fs/cgroup" && f[2] == "cgroup2"
            })
        })
        .unwrap_or(false)
}

/// The shell line that loads a batch from stdin with the cgroup2 hierarchy
/// mounted at `/sys/fs/cgroup`, where nft resolves `socket cgroupv2` paths.
/// It runs in a private mount namespace (`ip netns exec` makes one; on the
/// host `unshare --mount`), so the host's mounts are untouched.
const MOUNT_AND_LOAD: &str = "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec nft -f -";

impl NftFirewall {
    /// A backend with this configuration (nothing is applied yet).
    pub fn new(config: NftConfig) -> Result<NftFirewall, NftError> {
        if let Some(ns) = &config.netns
            && (ns.is_empty() || ns == "." || ns == ".." || ns.contains(['/', '\0']) || ns.len() > 255)
        {
            return Err(NftError::InvalidField {
                field: "netns".into(),
                value: ns.clone(),
                reason: "must be a file name under /run/netns".into(),
            });
        }
        if config.ct_mark == 0 {
            return Err(NftError::InvalidField {
                field: "ct_mark".into(),
                value: "0".into(),
                reason: "0 is the mark of every unmarked flow".into(),
            });
        }
        for (process, identity) in &config.identities {
            if identity.uid.is_none() && identity.cgroup.is_none() {
                return Err(NftError::InvalidField {
                    field: format!("identities[{process:?}]"),
                    value: process.clone(),
                    reason: "neither uid nor cgroup is set".into(),
                });
            }
        }
        Ok(NftFirewall { config, last_cut: CutReport::NotRun })
    }

    /// Its configuration.
    pub fn config(&self) -> &NftConfig {
        &self.config
    }

    /// What the explicit cut after the last lockdown did.
    pub fn last_cut(&self) -> &CutReport {
        &self.last_cut
    }

    /// A command run in the backend's namespace.
    pub fn command(&self, program: &str) -> Command {
        match &self.config.netns {
            Some(ns) => {
                let mut c = tool("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => tool(program),
        }
    }

    /// The agent's lockdown in Linux terms: each exception's process gets
    /// its configured identity, each remote becomes a TCP endpoint. A
    /// process without an identity is an error (the exception is not
    /// silently dropped, and nothing is applied).
    ///
    /// The Windows service SID of an exception has no Linux counterpart: the
    /// configured identity (uid and/or cgroup) is what scopes the process.
    /// Endpoints must be single hosts with a port; the LAN setting and the
    /// IPv4-only fault are not expressed (an error, never a silent drop).
    pub fn policy_for(&self, lockdown: &LockdownPolicy) -> Result<NftPolicy, NftError> {
        if lockdown.allow_lan {
            return Err(NftError::Unsupported { what: "allow_lan (private destinations while locked)".into() });
        }
        if lockdown.danger_ipv4_only {
            return Err(NftError::Unsupported { what: "danger_ipv4_only".into() });
        }
        let mut exceptions = Vec::new();
        for (index, ex) in lockdown.exceptions.iter().enumerate() {
            let identity = self
                .config
                .identities
                .get(&ex.process)
                .ok_or_else(|| NftError::UnmappedProcess { process: ex.process.clone(), index })?;
            let mut remote = Vec::new();
            for (j, r) in ex.remote.iter().enumerate() {
                let host = r.prefix.prefix_len() == if r.is_ipv6() { 128 } else { 32 };
                match (host, r.port) {
                    (true, Some(port)) => remote.push(Endpoint::tcp(std::net::SocketAddr::new(r.prefix.addr(), port))),
                    _ => {
                        return Err(NftError::Unsupported {
                            what: format!("exceptions[{index}].remote[{j}] = {r} (only one host and port)"),
                        });
                    }
                }
            }
            exceptions.push(NftException { process: ex.process.clone(), identity: identity.clone(), remote });
        }
        Ok(NftPolicy {
            table: self.config.table.clone(),
            exceptions,
            allow_loopback: lockdown.allow_loopback,
            allow_dhcp: self.config.allow_dhcp && lockdown.allow_dhcp,
            allow_ndp: self.config.allow_ndp,
            ct_mark: self.config.ct_mark,
        })
    }

    /// Loads a batch with `nft -f -` in the backend's namespace (with the
    /// private cgroup2 mount when `needs_cgroup`). nft applies all of it
    /// or none of it; on failure the error carries nft's stderr.
    pub fn run_batch(&self, batch: &str, needs_cgroup: bool) -> Result<(), NftError> {
        let cmd = if !needs_cgroup {
            let mut c = self.command("nft");
            c.args(["-f", "-"]);
            c
        } else if self.config.netns.is_some() {
            let mut c = self.command("sh");
            c.args(["-c", MOUNT_AND_LOAD]);
            c
        } else if host_cgroup2_at_default() {
            let mut c = tool("nft");
            c.args(["-f", "-"]);
            c
        } else {
            let mut c = tool("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c", MOUNT_AND_LOAD]);
            c
        };
        check(cmd, Some(batch)).map(|_| ())
    }

    /// Loads a compiled rule set, then checks that the kernel holds exactly
    /// its chains (hook, policy drop/accept, rule count).
    pub fn load(&self, ruleset: &Ruleset) -> Result<(), NftError> {
        self.run_batch(&ruleset.text, ruleset.uses_cgroup)?;
        self.verify(ruleset)
    }

    /// Compares `nft -j list table` with what was compiled.
    pub fn verify(&self, ruleset: &Ruleset) -> Result<(), NftError> {
        let table = ruleset.table.as_str();
        let fail = |reason: String| NftError::Verify { table: table.to_string(), reason };
        let mut cmd = self.command("nft");
        cmd.args(["-j", "list", "table", "inet", table]);
        let out = check(cmd, None)?;
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable `nft -j` output: {e}")))?;
        let items = json["nftables"].as_array().ok_or_else(|| fail("no `nftables` array".into()))?;
        let mut chains: BTreeMap<String, (String, String, usize)> = BTreeMap::new();
        for item in items {
            if let Some(c) = item.get("chain") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let hook = c["hook"].as_str().unwrap_or_default().to_string();
                let policy = c["policy"].as_str().unwrap_or_default().to_string();
                chains.insert(name, (hook, policy, 0));
            }
        }
        for item in items {
            if let Some(r) = item.get("rule") {
                let chain = r["chain"].as_str().unwrap_or_default();
                match chains.get_mut(chain) {
                    Some(entry) => entry.2 += 1,
                    None => return Err(fail(format!("rule in unknown chain {chain:?}"))),
                }
            }
        }
        if chains.len() != ruleset.chains.len() {
            return Err(fail(format!("{} chains, expected {}", chains.len(), ruleset.chains.len())));
        }
        for want in &ruleset.chains {
            let Some((hook, policy, rules)) = chains.get(want.name) else {
                return Err(fail(format!("chain {} is missing", want.name)));
            };
            if hook != want.name || policy != want.policy || *rules != want.rules {
                return Err(fail(format!(
                    "chain {}: hook {hook}, policy {policy}, {rules} rules; expected hook {}, policy {}, {} rules",
                    want.name, want.name, want.policy, want.rules
                )));
            }
        }
        Ok(())
    }

    /// Engages a lockdown (one atomic replacement of the table), verifies
    /// it, then cuts idle established flows if configured.
    pub fn apply_lockdown(&mut self, policy: &NftPolicy) -> Result<(), NftError> {
        if policy.table != self.config.table {
            return Err(NftError::InvalidField {
                field: "table".into(),
                value: policy.table.to_string(),
                reason: format!("this backend owns table {}", self.config.table),
            });
        }
        let ruleset = compile_lockdown(policy)?;
        self.load(&ruleset)?;
        self.last_cut = if self.config.cut_idle_flows { self.cut_idle_flows(policy) } else { CutReport::NotRun };
        Ok(())
    }

    /// Lifts the lockdown: one atomic replacement with the open table.
    pub fn apply_open(&mut self) -> Result<(), NftError> {
        let identities: Vec<(&str, &LinuxIdentity)> =
            self.config.identities.iter().map(|(p, i)| (p.as_str(), i)).collect();
        let ruleset = compile_open(&self.config.table, &identities, self.config.ct_mark)?;
        self.load(&ruleset)
    }

    /// Deletes the table (whether or not it exists), in one batch.
    pub fn remove(&mut self) -> Result<(), NftError> {
        self.run_batch(&compile_delete(&self.config.table), false)
    }

    /// `nft list table` of the backend's table, or `None` if it does not
    /// exist.
    pub fn list_table(&self) -> Result<Option<String>, NftError> {
        let mut cmd = self.command("nft");
        cmd.args(["list", "table", "inet", self.config.table.as_str()]);
        let command = describe(&cmd);
        let out = run(cmd, None)?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NftError::Command { command, status: out.status.to_string(), stderr })
    }

    /// Addresses of the backend's namespace (flows to them are loopback).
    fn local_addresses(&self) -> Result<Vec<IpAddr>, String> {
        let mut cmd = self.command("ip");
        cmd.args(["-j", "addr", "show"]);
        let out = check(cmd, None).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j addr: {e}"))?;
        let mut addrs = Vec::new();
        for link in json.as_array().into_iter().flatten() {
            for info in link["addr_info"].as_array().into_iter().flatten() {
                if let Some(ip) = info["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                    addrs.push(ip);
                }
            }
        }
        Ok(addrs)
    }

    /// `ss -K` of every established TCP socket of the namespace that is not
    /// loopback (when loopback is allowed) and not to an exception endpoint.
    /// An exception endpoint's flows are all kept, whichever process owns
    /// them (ss cannot filter by uid or cgroup); the rule set cuts those of
    /// other processes on their next segment.
    fn cut_idle_flows(&self, policy: &NftPolicy) -> CutReport {
        let mut keep: Vec<String> = Vec::new();
        if policy.allow_loopback {
            match self.local_addresses() {
                Ok(addrs) => keep.extend(addrs.iter().map(|ip| match ip {
                    IpAddr::V4(v4) => format!("dst {v4}"),
                    IpAddr::V6(v6) => format!("dst [{v6}]"),
                })),
                Err(reason) => return CutReport::Failed { reason },
            }
        }
        for ex in &policy.exceptions {
            for ep in ex.remote.iter().filter(|e| e.protocol == super::L4::Tcp) {
                keep.push(match ep.ip() {
                    IpAddr::V4(v4) => format!("dst {v4}:{}", ep.addr.port()),
                    IpAddr::V6(v6) => format!("dst [{v6}]:{}", ep.addr.port()),
                });
            }
        }
        let mut cmd = self.command("ss");
        cmd.args(["-K", "-t", "-n", "-H", "state", "established"]);
        if !keep.is_empty() {
            cmd.arg(format!("not ( {} )", keep.join(" or ")));
        }
        match check(cmd, None) {
            Ok(out) => CutReport::Killed {
                sockets: String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count(),
            },
            Err(e) => CutReport::Failed { reason: e.to_string() },
        }
    }
}

impl Firewall for NftFirewall {
    fn engage_lockdown(&mut self, policy: &LockdownPolicy) -> Result<(), FirewallError> {
        let policy = self.policy_for(policy)?;
        Ok(self.apply_lockdown(&policy)?)
    }

    fn lift_lockdown(&mut self) -> Result<(), FirewallError> {
        Ok(self.apply_open()?)
    }
}
