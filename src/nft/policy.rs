//! The Linux-side lockdown policy and its validated names.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::NftError;

/// Name of the nftables table the backend owns (`table inet <name>`).
///
/// ASCII letters, digits and `_`, starting with a letter, at most 64
/// characters, so it never needs quoting in a batch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    /// Validates a table name; the error names the field `table`.
    pub fn new(name: &str) -> Result<TableName, NftError> {
        let bad =
            |reason: &str| NftError::InvalidField { field: "table".into(), value: name.into(), reason: reason.into() };
        if name.is_empty() || name.len() > 64 {
            return Err(bad("must be 1 to 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(bad("must start with an ASCII letter"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("only ASCII letters, digits and '_' are allowed"));
        }
        Ok(TableName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cgroup v2 path relative to the cgroup2 root (`lockstep/auth`), as
/// `socket cgroupv2 level N "<path>"` takes it. nft resolves the path to the
/// cgroup's id when the rule is loaded, so the cgroup must exist then, and
/// a re-created cgroup needs the rule set loaded again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CgroupPath(String);

impl CgroupPath {
    /// Validates a relative cgroup path: `/`-separated non-empty components,
    /// no `.` or `..`, printable ASCII without `"` or `\`, at most 255 levels.
    /// A leading `/` is accepted and dropped. `field` names the field in the
    /// error.
    pub fn new(field: &str, path: &str) -> Result<CgroupPath, NftError> {
        let bad =
            |reason: &str| NftError::InvalidField { field: field.into(), value: path.into(), reason: reason.into() };
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Err(bad("empty (the root cgroup would match every process)"));
        }
        if !trimmed.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\') {
            return Err(bad("only printable ASCII without '\"' or '\\' is allowed"));
        }
        let parts: Vec<&str> = trimmed.split('/').collect();
        if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return Err(bad("components must be non-empty and not '.' or '..'"));
        }
        if parts.len() > 255 {
            return Err(bad("deeper than 255 levels"));
        }
        Ok(CgroupPath(trimmed.to_string()))
    }

    /// The path, without a leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its depth below the root (`a/b` is level 2): `socket cgroupv2 level`
    /// matches sockets of this cgroup and of every cgroup below it.
    pub fn level(&self) -> usize {
        self.0.split('/').count()
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a Linux process is, as a firewall rule can see it on its sockets.
/// With both set, a socket must match both (like WireGuard's app id AND
/// service SID on Windows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinuxIdentity {
    /// Owner uid of the socket at creation (`meta skuid`).
    pub uid: Option<u32>,
    /// cgroup v2 the socket was created in, or one below it
    /// (`socket cgroupv2`). Children of a process inherit it.
    pub cgroup: Option<CgroupPath>,
}

impl LinuxIdentity {
    /// Identity by socket owner uid.
    pub fn uid(uid: u32) -> LinuxIdentity {
        LinuxIdentity { uid: Some(uid), cgroup: None }
    }

    /// Identity by cgroup v2 membership.
    pub fn cgroup(path: CgroupPath) -> LinuxIdentity {
        LinuxIdentity { uid: None, cgroup: Some(path) }
    }
}

/// Transport protocol of an exception endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4 {
    /// nft's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// A destination an exception may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address and port (an IPv4-mapped IPv6 address is treated as IPv4;
    /// an IPv6 scope id is ignored).
    pub addr: SocketAddr,
    /// Protocol.
    pub protocol: L4,
}

impl Endpoint {
    /// A TCP endpoint.
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, protocol: L4::Tcp }
    }

    /// The address with IPv4-mapped IPv6 turned into IPv4.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip().to_canonical()
    }
}

/// One process exception: this identity may reach these endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftException {
    /// Lab name of the process (used in rule comments only).
    pub process: String,
    /// How its sockets are recognized.
    pub identity: LinuxIdentity,
    /// Where it may connect.
    pub remote: Vec<Endpoint>,
}

/// Default conntrack mark of flows an exception authorized ("lk" = 0x6c6b,
/// in the high half so small marks of other software stay distinct).
pub const DEFAULT_CT_MARK: u32 = 0x6c6b_0001;

/// The lockdown as nftables sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftPolicy {
    /// The table the rule set lives in (replaced as a whole).
    pub table: TableName,
    /// Process exceptions.
    pub exceptions: Vec<NftException>,
    /// Accept traffic on `lo`.
    pub allow_loopback: bool,
    /// Accept the DHCPv4 and DHCPv6 client tuples.
    pub allow_dhcp: bool,
    /// Accept IPv6 neighbour discovery (types 133 to 137, hop limit 255).
    pub allow_ndp: bool,
    /// Conntrack mark set on flows an exception authorized; replies are
    /// accepted on input only for flows carrying it. Must not be 0 (every
    /// unmarked flow has mark 0).
    pub ct_mark: u32,
}

impl NftPolicy {
    /// A policy with no exceptions: loopback, DHCP and NDP allowed, the
    /// default mark.
    pub fn new(table: TableName) -> NftPolicy {
        NftPolicy {
            table,
            exceptions: Vec::new(),
            allow_loopback: true,
            allow_dhcp: true,
            allow_ndp: true,
            ct_mark: DEFAULT_CT_MARK,
        }
    }
}
