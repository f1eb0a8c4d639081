//! Filter objects: layers, actions, weights, lifetimes, identities and conditions.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Number of low-order bits the BFE fills in automatically (`FWPM_AUTO_WEIGHT_BITS`).
pub const AUTO_WEIGHT_BITS: u32 = 60;
/// Largest auto-generated weight (`FWPM_AUTO_WEIGHT_MAX`).
pub const AUTO_WEIGHT_MAX: u64 = u64::MAX >> 4;
/// Largest weight range index (`FWPM_WEIGHT_RANGE_MAX`).
pub const WEIGHT_RANGE_MAX: u8 = 15;

/// The layers the model implements: the four ALE authorization layers, where flows are
/// authorized with process identity, and the two native MAC-frame (L2) layers that traffic
/// of a Hyper-V guest crosses on its way through the host's virtual switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Layer {
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V4`: outbound connect / first outbound datagram.
    AleAuthConnectV4,
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V6`.
    AleAuthConnectV6,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4`: inbound accept / first inbound datagram.
    AleAuthRecvAcceptV4,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6`.
    AleAuthRecvAcceptV6,
    /// `FWPM_LAYER_INBOUND_MAC_FRAME_NATIVE`: a frame entering the host's network stack
    /// or virtual switch at L2. Carries no process identity and no IP fields.
    InboundMacFrameNative,
    /// `FWPM_LAYER_OUTBOUND_MAC_FRAME_NATIVE`: a frame leaving at L2.
    OutboundMacFrameNative,
}

impl Layer {
    /// The four ALE authorization layers, in a fixed order (what VPN and zero-trust
    /// clients install their rule sets at).
    pub const ALL: [Layer; 4] =
        [Layer::AleAuthConnectV4, Layer::AleAuthConnectV6, Layer::AleAuthRecvAcceptV4, Layer::AleAuthRecvAcceptV6];

    /// The two native MAC-frame layers (inbound, outbound).
    pub const MAC_FRAME: [Layer; 2] = [Layer::InboundMacFrameNative, Layer::OutboundMacFrameNative];

    /// The native MAC-frame layer a frame of this direction crosses.
    pub fn mac_frame(direction: Direction) -> Layer {
        match direction {
            Direction::Inbound => Layer::InboundMacFrameNative,
            Direction::Outbound => Layer::OutboundMacFrameNative,
        }
    }

    /// Whether this is an ALE layer (flows, process identity, IP fields).
    pub fn is_ale(&self) -> bool {
        !matches!(self, Layer::InboundMacFrameNative | Layer::OutboundMacFrameNative)
    }

    /// The layer at which a flow of this direction and family is authorized.
    pub fn for_direction(direction: Direction, ipv6: bool) -> Layer {
        match (direction, ipv6) {
            (Direction::Outbound, false) => Layer::AleAuthConnectV4,
            (Direction::Outbound, true) => Layer::AleAuthConnectV6,
            (Direction::Inbound, false) => Layer::AleAuthRecvAcceptV4,
            (Direction::Inbound, true) => Layer::AleAuthRecvAcceptV6,
        }
    }

    /// The real WFP layer identifier name.
    pub fn name(&self) -> &'static str {
        match self {
            Layer::AleAuthConnectV4 => "FWPM_LAYER_ALE_AUTH_CONNECT_V4",
            Layer::AleAuthConnectV6 => "FWPM_LAYER_ALE_AUTH_CONNECT_V6",
            Layer::AleAuthRecvAcceptV4 => "FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4",
            Layer::AleAuthRecvAcceptV6 => "FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6",
            Layer::InboundMacFrameNative => "FWPM_LAYER_INBOUND_MAC_FRAME_NATIVE",
            Layer::OutboundMacFrameNative => "FWPM_LAYER_OUTBOUND_MAC_FRAME_NATIVE",
        }
    }

    /// Whether this is an IPv6 layer (the L2 layers are neither family).
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Layer::AleAuthConnectV6 | Layer::AleAuthRecvAcceptV6)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Direction of an ALE flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Direction {
    /// Locally initiated (connect / first send).
    Outbound,
    /// Remotely initiated (accept / first receive).
    Inbound,
}

/// What a filter does when it matches. Every action is terminating (the model has no
/// `Continue`: a callout that would continue is modelled as a filter that does not match).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    /// `FWP_ACTION_PERMIT`.
    Permit,
    /// `FWP_ACTION_BLOCK`; final once it wins a sublayer.
    Block,
    /// A callout returning Block with a veto: blocks even a hard permit from another sublayer.
    CalloutVeto,
}

/// `FWPM_FILTER0.weight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Weight {
    /// `FWP_UINT8` weight range index 0..=15: sets the 4 high-order bits.
    Range(u8),
    /// `FWP_UINT64`: used as is.
    Exact(u64),
    /// `FWP_EMPTY`: BFE-assigned weight in `[0, 2^60)`, i.e. range 0.
    Auto,
}

impl Weight {
    /// The 64-bit effective weight. `tiebreak` stands for the low 60 bits the BFE
    /// auto-generates (masked to 60 bits); it is ignored for `Exact`. A range above 15
    /// is rejected by the engine at add time and saturates to 15 here.
    pub fn effective(&self, tiebreak: u64) -> u64 {
        let low = tiebreak & AUTO_WEIGHT_MAX;
        match *self {
            Weight::Range(r) => (u64::from(r.min(WEIGHT_RANGE_MAX)) << AUTO_WEIGHT_BITS) | low,
            Weight::Exact(w) => w,
            Weight::Auto => low,
        }
    }

    /// Whether the weight is acceptable to the BFE.
    pub fn is_valid(&self) -> bool {
        !matches!(self, Weight::Range(r) if *r > WEIGHT_RANGE_MAX)
    }
}

/// Requested lifetime of a filter. `Persistent` and `BootTime` are distinct values, so the
/// two flags can never be set together (as WFP requires).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Lifetime {
    /// Lives until deleted or its session ends.
    Dynamic,
    /// Lives until deleted, BFE stops, or the system shuts down (the WFP default).
    Static,
    /// `FWPM_*_FLAG_PERSISTENT`: lives until deleted; reloaded when BFE starts.
    Persistent,
    /// `FWPM_FILTER_FLAG_BOOTTIME`: stored until deleted, active only from the TCP/IP
    /// driver's start until BFE finishes initializing, at every boot.
    BootTime,
}

impl Lifetime {
    /// The lifetime a filter added from a non-dynamic session gets from its flags.
    /// `FWPM_FILTER_FLAG_PERSISTENT` and `FWPM_FILTER_FLAG_BOOTTIME` "cannot be set
    /// together": that combination is `None`.
    pub fn from_flags(persistent: bool, boot_time: bool) -> Option<Lifetime> {
        match (persistent, boot_time) {
            (false, false) => Some(Lifetime::Static),
            (true, false) => Some(Lifetime::Persistent),
            (false, true) => Some(Lifetime::BootTime),
            (true, true) => None,
        }
    }
}

/// Errors from [`AppId::from_image_path`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    /// The path is empty or blank.
    #[error("image path is empty")]
    Empty,
    /// The path is not fully qualified (`foo.exe`, `\foo.exe`, `C:foo.exe`).
    #[error("image path `{0}` is not an absolute drive path")]
    Relative(String),
    /// UNC paths (`\\server\share\...`) have no local volume.
    #[error("image path `{0}` is a UNC path; only local drive paths are supported")]
    Unc(String),
    /// The drive designator is not a letter A-Z.
    #[error("image path `{0}` has an invalid drive letter")]
    BadDrive(String),
    /// The path names a directory root, not a file.
    #[error("image path `{0}` has no file name")]
    NoFileName(String),
    /// A component contains a character Windows forbids in file names.
    #[error("image path `{path}` contains invalid character {ch:?}")]
    InvalidCharacter {
        /// The offending path.
        path: String,
        /// The forbidden character.
        ch: char,
    },
}

/// `FWPM_CONDITION_ALE_APP_ID`: the normalized, lowercase NT device path of an image,
/// as `FwpmGetAppIdFromFileName0` produces it. Matching is by exact path only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// Normalizes a DOS path (`C:\Program Files\X\y.exe`) to
    /// `\device\harddiskvolume3\program files\x\y.exe`. Drive letters map to volume
    /// `letter index + 1` (A=1, B=2, C=3, D=4, ...). Forward slashes, repeated
    /// separators, `.` and `..` are resolved (`..` stops at the root); a `\\?\` prefix
    /// before a drive path is accepted.
    pub fn from_image_path(path: &str) -> Result<AppId, AppIdError> {
        if path.trim().is_empty() {
            return Err(AppIdError::Empty);
        }
        let unified = path.replace('/', "\\");
        let rest = match unified.strip_prefix(r"\\?\") {
            Some(r) if r.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(r"unc\")) => {
                return Err(AppIdError::Unc(path.to_string()));
            }
            Some(r) => r,
            None if unified.starts_with(r"\\") => return Err(AppIdError::Unc(path.to_string())),
            None => unified.as_str(),
        };
        let mut chars = rest.chars();
        let (drive, colon) = (chars.next(), chars.next());
        if colon != Some(':') {
            return Err(AppIdError::Relative(path.to_string()));
        }
        let drive = match drive {
            Some(d) if d.is_ascii_alphabetic() => d.to_ascii_lowercase(),
            _ => return Err(AppIdError::BadDrive(path.to_string())),
        };
        let tail = chars.as_str();
        let Some(tail) = tail.strip_prefix('\\') else {
            return Err(AppIdError::Relative(path.to_string()));
        };
        let mut parts: Vec<String> = Vec::new();
        for comp in tail.split('\\') {
            match comp {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => {
                    if let Some(ch) =
                        c.chars().find(|ch| matches!(ch, '<' | '>' | ':' | '"' | '|' | '?' | '*') || ch.is_control())
                    {
                        return Err(AppIdError::InvalidCharacter { path: path.to_string(), ch });
                    }
                    parts.push(c.to_lowercase());
                }
            }
        }
        if parts.is_empty() {
            return Err(AppIdError::NoFileName(path.to_string()));
        }
        let volume = u32::from(drive as u8 - b'a') + 1;
        Ok(AppId(format!(r"\device\harddiskvolume{volume}\{}", parts.join("\\"))))
    }

    /// The normalized NT device path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// IP protocol (`FWPM_CONDITION_IP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    IcmpV6,
}

impl Protocol {
    /// IANA protocol number.
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::IcmpV6 => 58,
        }
    }
}

/// Errors parsing or building an [`IpPrefix`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part does not parse.
    #[error("invalid address in prefix `{0}`")]
    Address(String),
    /// The length part does not parse or exceeds the family's width.
    #[error("invalid prefix length in `{0}`")]
    Length(String),
}

/// An address with a prefix length (`FWP_V4_ADDR_MASK` / `FWP_V6_ADDR_MASK`). The address
/// is stored with host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Builds a prefix; `len` must not exceed 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::Length(format!("{addr}/{len}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & v4_mask(len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & v6_mask(len)).into()),
        };
        Ok(IpPrefix { addr, len })
    }

    /// A single-host prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> IpPrefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `ip` lies in the prefix; addresses of the other family never do.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & v4_mask(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => u128::from(a) & v6_mask(self.len) == u128::from(net),
            _ => false,
        }
    }
}

fn v4_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn v6_mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// Parses `"10.0.0.0/8"`, `"fd00::/8"` or a plain address (host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| PrefixError::Address(s.to_string()))?;
        match l {
            None => Ok(IpPrefix::host(addr)),
            Some(l) => {
                let len: u8 = l.trim().parse().map_err(|_| PrefixError::Length(s.to_string()))?;
                IpPrefix::new(addr, len).map_err(|_| PrefixError::Length(s.to_string()))
            }
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A filter condition (`FWPM_FILTER_CONDITION0`, match type EQUAL or prefix).
///
/// ICMP type and code travel in the port fields, as in WFP
/// (`FWPM_CONDITION_ICMP_TYPE` is `IP_LOCAL_PORT`, `ICMP_CODE` is `IP_REMOTE_PORT`):
/// use `LocalPort(type)` / `RemotePort(code)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Condition {
    /// `FWPM_CONDITION_ALE_APP_ID`: exact image path.
    AppId(AppId),
    /// `FWPM_CONDITION_ALE_USER_ID` with a security descriptor granting
    /// `FWP_ACTRL_MATCH_FILTER` to this SID only: matches when the token holds it
    /// (SIDs compare ASCII case-insensitively).
    UserSid(String),
    /// `FWPM_CONDITION_IP_REMOTE_ADDRESS` within a prefix.
    RemoteAddr(IpPrefix),
    /// `FWPM_CONDITION_IP_LOCAL_ADDRESS` within a prefix.
    LocalAddr(IpPrefix),
    /// `FWPM_CONDITION_IP_REMOTE_PORT` (ICMP code for ICMP).
    RemotePort(u16),
    /// `FWPM_CONDITION_IP_LOCAL_PORT` (ICMP type for ICMP).
    LocalPort(u16),
    /// `FWPM_CONDITION_IP_PROTOCOL`.
    Protocol(Protocol),
    /// `FWPM_CONDITION_FLAGS` with `FWP_CONDITION_FLAG_IS_LOOPBACK` all set.
    Loopback,
    /// `FWPM_CONDITION_IP_LOCAL_INTERFACE` (ALE) / `FWPM_CONDITION_INTERFACE` (L2):
    /// interface LUID equality.
    InterfaceLuid(u64),
    /// `FWPM_CONDITION_L2_FLAGS` with `FWP_CONDITION_L2_IS_VM2VM` all set: a frame between
    /// two virtual machines on the same virtual switch. Only at the MAC-frame layers.
    Vm2Vm,
}

/// The field a condition tests: same-field conditions are OR'ed, different fields AND'ed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ConditionField {
    /// `ALE_APP_ID`.
    AppId,
    /// `ALE_USER_ID`.
    UserId,
    /// `IP_REMOTE_ADDRESS`.
    RemoteAddr,
    /// `IP_LOCAL_ADDRESS`.
    LocalAddr,
    /// `IP_REMOTE_PORT` (= `ICMP_CODE`).
    RemotePort,
    /// `IP_LOCAL_PORT` (= `ICMP_TYPE`).
    LocalPort,
    /// `IP_PROTOCOL`.
    Protocol,
    /// `FLAGS`.
    Flags,
    /// `IP_LOCAL_INTERFACE` / `INTERFACE`.
    InterfaceLuid,
    /// `L2_FLAGS`.
    L2Flags,
}

impl Condition {
    /// The field this condition tests.
    pub fn field(&self) -> ConditionField {
        match self {
            Condition::AppId(_) => ConditionField::AppId,
            Condition::UserSid(_) => ConditionField::UserId,
            Condition::RemoteAddr(_) => ConditionField::RemoteAddr,
            Condition::LocalAddr(_) => ConditionField::LocalAddr,
            Condition::RemotePort(_) => ConditionField::RemotePort,
            Condition::LocalPort(_) => ConditionField::LocalPort,
            Condition::Protocol(_) => ConditionField::Protocol,
            Condition::Loopback => ConditionField::Flags,
            Condition::InterfaceLuid(_) => ConditionField::InterfaceLuid,
            Condition::Vm2Vm => ConditionField::L2Flags,
        }
    }

    /// Whether the condition's field exists at `layer`: the MAC-frame layers carry no
    /// process identity and no IP/transport fields; the ALE layers carry no L2 flags.
    pub fn fits(&self, layer: Layer) -> bool {
        match self.field() {
            ConditionField::InterfaceLuid => true,
            ConditionField::L2Flags => !layer.is_ale(),
            _ => layer.is_ale(),
        }
    }
}

/// Runtime filter identifier (`FWPM_FILTER0.filterId`), assigned by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FilterId(pub u64);

impl fmt::Display for FilterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Engine session handle. [`SessionId::BFE`] owns objects loaded from the persistent store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The BFE itself: owner of persistent objects reloaded at BFE start.
    pub const BFE: SessionId = SessionId(0);
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a caller passes to `FwpmFilterAdd0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilterSpec {
    /// Display name (not required to be unique).
    pub name: String,
    /// Layer the filter lives in.
    pub layer: Layer,
    /// Key of the sublayer; it must exist when the filter is added.
    pub sublayer: String,
    /// Key of the owning provider, if any; it must exist.
    pub provider: Option<String>,
    /// Weight within the sublayer.
    pub weight: Weight,
    /// Action on match.
    pub action: Action,
    /// `FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT`: makes a Permit hard.
    pub clear_action_right: bool,
    /// Requested lifetime (see the engine docs for how sessions affect it).
    pub lifetime: Lifetime,
    /// Conditions; empty matches everything.
    pub conditions: Vec<Condition>,
}

impl FilterSpec {
    /// A spec with no conditions, `Weight::Auto`, static lifetime, no provider and a soft action.
    pub fn new(name: &str, layer: Layer, sublayer: &str, action: Action) -> FilterSpec {
        FilterSpec {
            name: name.to_string(),
            layer,
            sublayer: sublayer.to_string(),
            provider: None,
            weight: Weight::Auto,
            action,
            clear_action_right: false,
            lifetime: Lifetime::Static,
            conditions: Vec::new(),
        }
    }

    /// The same spec at another layer (rule sets repeat one filter at several layers).
    pub fn with_layer(&self, layer: Layer) -> FilterSpec {
        FilterSpec { layer, ..self.clone() }
    }
}

/// A filter as installed in the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// Runtime id.
    pub id: FilterId,
    /// The spec as added, with `lifetime` replaced by the effective lifetime.
    pub spec: FilterSpec,
    /// `FWPM_FILTER0.effectiveWeight`.
    pub effective_weight: u64,
    /// Session that added it ([`SessionId::BFE`] when loaded from the persistent store).
    pub session: SessionId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_and_directions() {
        let dirs = [(Direction::Outbound, false), (Direction::Outbound, true)];
        let dirs = dirs.into_iter().chain([(Direction::Inbound, false), (Direction::Inbound, true)]);
        let layers: Vec<Layer> = dirs.map(|(d, v6)| Layer::for_direction(d, v6)).collect();
        assert_eq!(layers, Layer::ALL);
        assert!(Layer::ALL.iter().map(|l| l.is_ipv6()).eq([false, true, false, true]));
        assert_eq!(Layer::AleAuthRecvAcceptV6.name(), "FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6");
        assert_eq!(Layer::AleAuthConnectV4.to_string(), "FWPM_LAYER_ALE_AUTH_CONNECT_V4");
        assert_eq!((Protocol::Tcp.number(), Protocol::Udp.number()), (6, 17));
        assert_eq!((Protocol::Icmp.number(), Protocol::IcmpV6.number()), (1, 58));
    }

    #[test]
    fn weight_encodings_order() {
        let (r, max) = (|r: u8, t: u64| Weight::Range(r).effective(t), AUTO_WEIGHT_MAX);
        // The range index is the top 4 bits: range r beats anything in range r-1.
        assert!(r(1, 0) > r(0, max) && r(15, 0) > r(14, u64::MAX));
        assert_eq!((r(15, 0), r(2, 7)), (15 << 60, (2 << 60) | 7));
        assert_eq!(r(0, u64::MAX), max, "the tiebreak never leaks into the range bits");
        // Auto (FWP_EMPTY) is BFE-assigned inside range 0.
        assert_eq!(Weight::Auto.effective(5), r(0, 5));
        assert!(Weight::Auto.effective(max) < r(1, 0));
        // Exact is used as is and can sit anywhere.
        assert_eq!(Weight::Exact(42).effective(999), 42);
        assert_eq!(Weight::Exact(3 << 60).effective(0), r(3, 0));
        assert!(Weight::Exact(u64::MAX).effective(0) > r(15, 0));
        assert!(!Weight::Range(16).is_valid() && Weight::Range(15).is_valid());
    }

    #[test]
    fn app_id_normalization() {
        let want = r"\device\harddiskvolume3\program files\x\y.exe";
        for p in [
            r"C:\Program Files\X\y.exe",
            r"c:\PROGRAM FILES\x\Y.EXE",
            "C:/Program Files/X/y.exe",
            r"C:\Program Files\Z\..\X\.\y.exe",
            r"C:\\Program Files\\X\y.exe",
            r"C:\..\Program Files\X\y.exe",
            r"\\?\C:\Program Files\X\y.exe",
        ] {
            assert_eq!(AppId::from_image_path(p).unwrap().as_str(), want, "{p}");
        }
        let id = |p: &str| AppId::from_image_path(p).unwrap().to_string();
        assert_eq!(id(r"D:\a.exe"), r"\device\harddiskvolume4\a.exe");
        assert_eq!(id(r"A:\a.exe"), r"\device\harddiskvolume1\a.exe");
        assert_eq!(id(r"z:\a.exe"), r"\device\harddiskvolume26\a.exe");
        // The same binary at a different path or on another drive is another identity.
        assert_ne!(id(r"C:\Program Files\X\y.exe"), id(r"C:\Users\eve\y.exe"));
        assert_ne!(id(r"C:\Program Files\X\y.exe"), id(r"D:\Program Files\X\y.exe"));
        let a = AppId::from_image_path(r"C:\Program Files\X\y.exe").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("{want:?}"));
    }

    #[test]
    fn app_id_rejections() {
        use AppIdError::*;
        let err = |p: &str| AppId::from_image_path(p).unwrap_err();
        assert_eq!((err(""), err("   ")), (Empty, Empty));
        for p in ["y.exe", r"\Windows\y.exe", "C:y.exe"] {
            assert!(matches!(err(p), Relative(_)), "{p}");
        }
        for p in [r"\\server\share\y.exe", "//server/share/y.exe", r"\\?\UNC\srv\s\y.exe"] {
            assert!(matches!(err(p), Unc(_)), "{p}");
        }
        assert!(matches!(err(r"1:\y.exe"), BadDrive(_)) && matches!(err(r"é:\y.exe"), BadDrive(_)));
        assert!(matches!(err(r"C:\"), NoFileName(_)) && matches!(err(r"C:\a\.."), NoFileName(_)));
        assert!(matches!(err(r"C:\a\y.exe:ads"), InvalidCharacter { ch: ':', .. }));
        assert!(matches!(err(r"C:\a\y?.exe"), InvalidCharacter { ch: '?', .. }));
        let msg = r"image path `\\srv\s\y.exe` is a UNC path; only local drive paths are supported";
        assert_eq!(err(r"\\srv\s\y.exe").to_string(), msg);
    }

    #[test]
    fn prefixes() {
        let pfx = |s: &str| s.parse::<IpPrefix>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = pfx("10.1.2.3/8");
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert!(p.contains(ip("10.255.0.1")) && !p.contains(ip("11.0.0.1")));
        assert!(!p.contains(ip("::ffff:10.0.0.1")), "families never mix");
        let h = pfx("192.0.2.7");
        assert_eq!((h.prefix_len(), h.to_string()), (32, "192.0.2.7/32".to_string()));
        assert!(h.contains(ip("192.0.2.7")) && !h.contains(ip("192.0.2.8")));
        assert!(pfx("0.0.0.0/0").contains(ip("203.0.113.9")));
        let v6 = pfx("fd00::1/8");
        assert_eq!(v6.to_string(), "fd00::/8");
        assert!(v6.contains(ip("fdff::2")) && !v6.contains(ip("fe80::1")));
        assert!(pfx("::/0").contains(ip("2001:db8::1")) && !pfx("::/0").contains(ip("10.0.0.1")));
        assert!(matches!("10.0.0.0/33".parse::<IpPrefix>(), Err(PrefixError::Length(_))));
        assert!(matches!("10.0.0/8".parse::<IpPrefix>(), Err(PrefixError::Address(_))));
        assert!(matches!("::/x".parse::<IpPrefix>(), Err(PrefixError::Length(_))));
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"10.0.0.0/8\"");
    }
}
