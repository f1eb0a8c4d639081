//! Reading case files: TOML in, a checked [`Case`] out, every error located as
//! `file:line:col: message`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::case::{
    AgentDef, AgentEndpoint, AgentException, AgentSettings, AgentState, Case, Conditions, ErrorKind, Expect,
    FilterAction, FilterDef, LayerName, Op, PacketOutcome, ProcessDef, Step, SublayerDef, Traffic, Verdict, WeightSpec,
};
use crate::config::FilterLifetime;
use crate::input::{InputError, Source, line_col};
use crate::wfp::{
    ALL_ROUTERS, DEFAULT_HOP_LIMIT, DHCPV6_ALL_SERVERS_LINK, Direction, HostModel, IpPrefix, Layer, NDP_HOP_LIMIT,
    NdpMessage, Packet, Protocol,
};

/// The device's default local addresses and ephemeral port in generated tuples.
const LOCAL_V4: &str = "10.0.0.2";
const LOCAL_V6: &str = "fd00::2";
const LINK_LOCAL: &str = "fe80::2";
const ROUTER_LINK_LOCAL: &str = "fe80::1";
const DHCPV4_SERVER: &str = "10.0.0.1";
const DNS_SERVER: &str = "9.9.9.9";
const EPHEMERAL_PORT: u16 = 49152;

/// The traffic classes a step may name with `class`.
pub const TRAFFIC_CLASSES: &[&str] = &[
    "dhcpv4_request",
    "dhcpv4_response",
    "dhcpv6_request",
    "dhcpv6_response",
    "ndp_rs",
    "ndp_ra",
    "ndp_ns_out",
    "ndp_ns_in",
    "ndp_na_out",
    "ndp_na_in",
    "ndp_redirect",
    "dns_udp",
    "dns_tcp",
    "doh",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

type Field<T> = Option<Spanned<T>>;
type Many<T> = Option<Spanned<OneOrMany<T>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    id: Spanned<String>,
    title: Spanned<String>,
    source: Spanned<String>,
    description: Spanned<String>,
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    #[serde(default, rename = "process")]
    processes: Vec<Spanned<RawProcess>>,
    #[serde(default)]
    sublayers: Vec<Spanned<RawSublayer>>,
    #[serde(default, rename = "filter")]
    filters: Vec<Spanned<RawFilter>>,
    agent: Option<Spanned<RawAgent>>,
    script: Option<Spanned<RawScript>>,
}

/// `[agent]`: the Lockstep agent's own lockdown, in the lab's terms.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    process: Spanned<String>,
    filter_lifetime: Field<String>,
    boot_time_filters: Option<bool>,
    sublayer_weight: Option<u16>,
    allow_loopback: Option<bool>,
    allow_lan: Option<bool>,
    allow_dhcp: Option<bool>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    process: Spanned<String>,
    service_sid: Field<String>,
    to: Spanned<Vec<Spanned<String>>>,
}

/// `[script]`: a table, so that it can follow the `[[process]]` and `[[filter]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    name: Spanned<String>,
    image: Spanned<String>,
    user: Spanned<String>,
    service_sid: Field<String>,
    interface: Field<String>,
    parent: Field<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSublayer {
    key: Spanned<String>,
    weight: u16,
    #[serde(default)]
    persistent: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawWeight {
    Range(u8),
    Exact(u64),
    Auto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    name: Spanned<String>,
    layers: Spanned<Vec<Spanned<String>>>,
    sublayer: Spanned<String>,
    weight: Field<RawWeight>,
    action: Spanned<String>,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    persistent: bool,
    #[serde(default)]
    boot_time: bool,
    #[serde(default, rename = "match")]
    conditions: Option<Spanned<RawConditions>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    app: Many<String>,
    user: Many<String>,
    remote_addr: Many<String>,
    local_addr: Many<String>,
    remote_port: Many<u16>,
    local_port: Many<u16>,
    icmp_type: Many<u16>,
    icmp_code: Many<u16>,
    protocol: Many<String>,
    loopback: Field<bool>,
    interface: Many<String>,
    vm2vm: Field<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "do")]
    action: Spanned<String>,
    session: Field<String>,
    process: Field<String>,
    dynamic: Field<bool>,
    txn_wait_ms: Field<u32>,
    sublayer: Many<String>,
    filter: Many<String>,
    interface: Field<String>,
    flow: Field<String>,
    class: Field<String>,
    proto: Field<String>,
    local: Field<String>,
    remote: Field<String>,
    loopback: Field<bool>,
    icmp_type: Field<u16>,
    icmp_code: Field<u16>,
    hop_limit: Field<u8>,
    dir: Field<String>,
    via: Field<String>,
    host_model: Field<String>,
    vm2vm: Field<bool>,
    name: Field<String>,
    expect: Field<String>,
    decided_by: Field<String>,
    no_match: Field<bool>,
    expect_error: Field<String>,
    waited_ms: Field<u32>,
    state: Field<String>,
    allow_loopback: Field<bool>,
    allow_lan: Field<bool>,
    allow_dhcp: Field<bool>,
    #[allow(dead_code)]
    note: Option<String>,
}

fn span_of<T>(f: &Field<T>) -> Option<Range<usize>> {
    f.as_ref().map(Spanned::span)
}

impl RawStep {
    /// The action-specific fields present, with their spans.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let fields = [
            ("session", span_of(&self.session)),
            ("process", span_of(&self.process)),
            ("dynamic", span_of(&self.dynamic)),
            ("txn_wait_ms", span_of(&self.txn_wait_ms)),
            ("sublayer", span_of(&self.sublayer)),
            ("filter", span_of(&self.filter)),
            ("interface", span_of(&self.interface)),
            ("flow", span_of(&self.flow)),
            ("class", span_of(&self.class)),
            ("proto", span_of(&self.proto)),
            ("local", span_of(&self.local)),
            ("remote", span_of(&self.remote)),
            ("loopback", span_of(&self.loopback)),
            ("icmp_type", span_of(&self.icmp_type)),
            ("icmp_code", span_of(&self.icmp_code)),
            ("hop_limit", span_of(&self.hop_limit)),
            ("dir", span_of(&self.dir)),
            ("via", span_of(&self.via)),
            ("host_model", span_of(&self.host_model)),
            ("vm2vm", span_of(&self.vm2vm)),
            ("name", span_of(&self.name)),
            ("expect", span_of(&self.expect)),
            ("decided_by", span_of(&self.decided_by)),
            ("no_match", span_of(&self.no_match)),
            ("expect_error", span_of(&self.expect_error)),
            ("waited_ms", span_of(&self.waited_ms)),
            ("state", span_of(&self.state)),
            ("allow_loopback", span_of(&self.allow_loopback)),
            ("allow_lan", span_of(&self.allow_lan)),
            ("allow_dhcp", span_of(&self.allow_dhcp)),
        ];
        fields.into_iter().filter_map(|(n, s)| s.map(|s| (n, s))).collect()
    }
}

const MANAGEMENT: &[&str] = &["expect_error", "waited_ms"];
const TRAFFIC: &[&str] =
    &["process", "class", "proto", "local", "remote", "loopback", "icmp_type", "icmp_code", "hop_limit", "interface"];
const VERDICT: &[&str] = &["expect", "decided_by", "no_match"];

/// `(action, required fields, optional fields, takes the management expectations)`.
const ACTIONS: &[(&str, &[&str], &[&str], bool)] = &[
    ("open_session", &["session", "process"], &["dynamic", "txn_wait_ms"], true),
    ("close_session", &["session"], &[], true),
    ("add_sublayer", &["session", "sublayer"], &[], true),
    ("add_filter", &["session", "filter"], &[], true),
    ("delete_filter", &["session", "filter"], &[], true),
    ("begin", &["session"], &[], true),
    ("commit", &["session"], &[], true),
    ("abort", &["session"], &[], true),
    ("kill", &["process"], &[], true),
    ("bfe_stop", &[], &[], true),
    ("bfe_start", &[], &[], true),
    ("bfe_restart", &[], &[], true),
    ("reboot", &[], &[], true),
    ("power_on", &[], &[], true),
    ("sleep_resume", &[], &[], true),
    ("recreate_interface", &["interface"], &[], true),
    ("connect", &["expect"], &["flow"], false),
    ("accept", &["expect"], &["flow"], false),
    ("packet", &["flow", "dir", "expect"], &["via", "host_model", "decided_by"], false),
    ("close_flow", &["flow"], &[], false),
    ("vm_frame", &["dir", "expect"], &["interface", "vm2vm", "decided_by", "no_match"], false),
    ("watch", &["name", "dir", "expect"], &[], false),
    ("unwatch", &["name"], &[], false),
    ("agent", &["state"], &["allow_loopback", "allow_lan", "allow_dhcp"], true),
];

/// Parses and checks the case in `path`; errors name the path as given.
pub fn load_case(path: &Path) -> Result<Case, InputError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Source::new(name.clone(), "").error(None, e.to_string()))?;
    parse_case(&name, &text)
}

/// Parses and checks a case file's text.
pub fn parse_case(file: &str, text: &str) -> Result<Case, InputError> {
    let source = Source::new(file, text);
    let raw: RawCase = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    Parser { source: &source, sessions: BTreeSet::new(), flows: BTreeSet::new(), watches: BTreeSet::new() }.case(raw)
}

struct Parser<'a> {
    source: &'a Source,
    sessions: BTreeSet<String>,
    flows: BTreeSet<String>,
    watches: BTreeSet<String>,
}

fn section_of(number: u32) -> Option<char> {
    match number {
        1..=9 => Some('A'),
        10..=12 => Some('B'),
        13..=15 => Some('C'),
        16..=21 => Some('D'),
        22..=30 => Some('E'),
        _ => None,
    }
}

impl Parser<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> InputError {
        self.source.error(Some(span), message)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(&self.source.text, span.start).0
    }

    fn non_empty(&self, s: &Spanned<String>, what: &str) -> Result<String, InputError> {
        if s.get_ref().trim().is_empty() {
            return Err(self.err(s.span(), format!("{what} must not be empty")));
        }
        Ok(s.get_ref().clone())
    }

    fn case(mut self, raw: RawCase) -> Result<Case, InputError> {
        let (id, number) = self.id(&raw.id)?;
        let title = self.non_empty(&raw.title, "`title`")?;
        let source = self.non_empty(&raw.source, "`source`")?;
        let description = self.non_empty(&raw.description, "`description`")?;
        let mut interfaces = Vec::new();
        for i in &raw.interfaces {
            let name = self.non_empty(i, "an interface name")?;
            if interfaces.contains(&name) {
                return Err(self.err(i.span(), format!("interface `{name}` is declared twice")));
            }
            interfaces.push(name);
        }
        let iface = |p: &Self, s: &Spanned<String>| -> Result<String, InputError> {
            if interfaces.contains(s.get_ref()) {
                Ok(s.get_ref().clone())
            } else {
                Err(p.err(s.span(), format!("unknown interface `{}` (declared: {:?})", s.get_ref(), interfaces)))
            }
        };
        let mut processes: Vec<ProcessDef> = Vec::new();
        for p in &raw.processes {
            let r = p.get_ref();
            let name = self.non_empty(&r.name, "a process name")?;
            if processes.iter().any(|q| q.name == name) {
                return Err(self.err(r.name.span(), format!("process `{name}` is declared twice")));
            }
            let parent = match &r.parent {
                Some(par) if !processes.iter().any(|q| &q.name == par.get_ref()) => {
                    return Err(self.err(par.span(), format!("parent `{}` must be declared before", par.get_ref())));
                }
                par => par.as_ref().map(|s| s.get_ref().clone()),
            };
            processes.push(ProcessDef {
                name,
                image: self.non_empty(&r.image, "`image`")?,
                user: self.non_empty(&r.user, "`user`")?,
                service_sid: r.service_sid.as_ref().map(|s| self.non_empty(s, "`service_sid`")).transpose()?,
                interface: r.interface.as_ref().map(|s| iface(&self, s)).transpose()?,
                parent,
            });
        }
        let mut sublayers: Vec<SublayerDef> = Vec::new();
        for s in &raw.sublayers {
            let r = s.get_ref();
            let key = self.non_empty(&r.key, "a sublayer key")?;
            if sublayers.iter().any(|q| q.key == key) {
                return Err(self.err(r.key.span(), format!("sublayer `{key}` is declared twice")));
            }
            sublayers.push(SublayerDef { key, weight: r.weight, persistent: r.persistent });
        }
        let mut filters: Vec<FilterDef> = Vec::new();
        for f in raw.filters {
            let def = self.filter(f.into_inner(), &sublayers, &|s| iface(&self, s))?;
            filters.push(def);
        }
        // A filter name must be unique: expectations name the deciding filter.
        let mut seen = BTreeSet::new();
        for (i, f) in filters.iter().enumerate() {
            if !seen.insert(f.name.clone()) {
                let span = self.source.locate(&["filter".into(), i.to_string(), "name".into()]).unwrap_or(0..0);
                return Err(self.err(span, format!("filter `{}` is declared twice", f.name)));
            }
        }
        let agent = match &raw.agent {
            Some(a) => Some(self.agent(a.get_ref(), &processes)?),
            None => None,
        };
        let mut case = Case {
            id,
            number,
            title,
            source,
            description,
            file: self.source.name.clone(),
            interfaces: interfaces.clone(),
            processes,
            sublayers,
            filters,
            agent,
            steps: Vec::new(),
        };
        let steps = match raw.script {
            Some(script) if script.get_ref().steps.is_empty() => {
                return Err(self.err(script.span(), "`[script]` needs at least one step in `steps`"));
            }
            Some(script) => script.into_inner().steps,
            None => return Err(self.source.error(None, "a case needs a `[script]` table with `steps = [...]`")),
        };
        for s in steps {
            let span = s.span();
            let line = self.line(&span);
            for (op, expect) in self.step(&case, s.into_inner(), span)? {
                case.steps.push(Step { index: case.steps.len() + 1, line, op, expect });
            }
        }
        Ok(case)
    }

    fn id(&self, id: &Spanned<String>) -> Result<(String, u32), InputError> {
        let s = id.get_ref();
        let bad = || {
            self.err(
                id.span(),
                format!("case id `{s}` must be a section letter A-E and the check's number, e.g. `B11`"),
            )
        };
        let mut chars = s.chars();
        let letter = chars.next().ok_or_else(bad)?;
        let digits = chars.as_str();
        if !('A'..='E').contains(&letter) || digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let number: u32 = digits.parse().map_err(|_| bad())?;
        if let Some(section) = section_of(number)
            && section != letter
        {
            return Err(
                self.err(id.span(), format!("check {number} is in section {section}: the id is `{section}{number}`"))
            );
        }
        Ok((s.clone(), number))
    }

    fn filter(
        &self,
        r: RawFilter,
        sublayers: &[SublayerDef],
        iface: &dyn Fn(&Spanned<String>) -> Result<String, InputError>,
    ) -> Result<FilterDef, InputError> {
        let name = self.non_empty(&r.name, "a filter name")?;
        let mut layers = Vec::new();
        if r.layers.get_ref().is_empty() {
            return Err(self.err(r.layers.span(), format!("filter `{name}` needs at least one layer")));
        }
        for l in r.layers.get_ref() {
            for layer in self.layer(l)? {
                if layers.contains(&layer) {
                    return Err(self.err(l.span(), format!("layer `{layer}` is listed twice")));
                }
                layers.push(layer);
            }
        }
        if !sublayers.iter().any(|s| &s.key == r.sublayer.get_ref()) {
            let keys: Vec<&str> = sublayers.iter().map(|s| s.key.as_str()).collect();
            let msg = format!("unknown sublayer `{}` (declared: {keys:?})", r.sublayer.get_ref());
            return Err(self.err(r.sublayer.span(), msg));
        }
        let weight = match r.weight.as_ref().map(Spanned::get_ref) {
            None | Some(RawWeight::Auto) => WeightSpec::Auto,
            Some(RawWeight::Range(n)) if *n > 15 => {
                let span = r.weight.as_ref().map(Spanned::span).unwrap_or(0..0);
                return Err(self.err(span, format!("weight range {n} is outside 0..=15")));
            }
            Some(RawWeight::Range(n)) => WeightSpec::Range(*n),
            Some(RawWeight::Exact(n)) => WeightSpec::Exact(*n),
        };
        let action = match r.action.get_ref().as_str() {
            "permit" => FilterAction::Permit,
            "block" => FilterAction::Block,
            "veto" => FilterAction::Veto,
            other => {
                return Err(self.err(r.action.span(), format!("unknown action `{other}` (permit, block or veto)")));
            }
        };
        let conditions = match r.conditions {
            Some(c) => self.conditions(c.into_inner(), iface)?,
            None => Conditions::default(),
        };
        if conditions.vm2vm && layers.iter().any(LayerName::is_flow_layer) {
            let msg = format!("filter `{name}`: `vm2vm` only exists at the mac_frame layers");
            return Err(self.err(r.name.span(), msg));
        }
        Ok(FilterDef {
            name,
            layers,
            sublayer: r.sublayer.into_inner(),
            weight,
            action,
            hard: r.hard,
            persistent: r.persistent,
            boot_time: r.boot_time,
            conditions,
        })
    }

    fn layer(&self, l: &Spanned<String>) -> Result<Vec<LayerName>, InputError> {
        use LayerName::*;
        Ok(match l.get_ref().as_str() {
            "connect_v4" => vec![ConnectV4],
            "connect_v6" => vec![ConnectV6],
            "recv_accept_v4" => vec![RecvAcceptV4],
            "recv_accept_v6" => vec![RecvAcceptV6],
            "mac_frame_in" => vec![MacFrameIn],
            "mac_frame_out" => vec![MacFrameOut],
            "connect" => vec![ConnectV4, ConnectV6],
            "recv_accept" => vec![RecvAcceptV4, RecvAcceptV6],
            "ale" => vec![ConnectV4, ConnectV6, RecvAcceptV4, RecvAcceptV6],
            "mac_frame" => vec![MacFrameIn, MacFrameOut],
            other => {
                let msg = format!(
                    "unknown layer `{other}` (connect_v4, connect_v6, recv_accept_v4, recv_accept_v6, \
                     mac_frame_in, mac_frame_out, or the groups connect, recv_accept, ale, mac_frame)"
                );
                return Err(self.err(l.span(), msg));
            }
        })
    }

    fn conditions(
        &self,
        r: RawConditions,
        iface: &dyn Fn(&Spanned<String>) -> Result<String, InputError>,
    ) -> Result<Conditions, InputError> {
        fn list<T>(m: Many<T>) -> (Vec<T>, Range<usize>) {
            match m {
                Some(s) => {
                    let span = s.span();
                    (s.into_inner().into_vec(), span)
                }
                None => (Vec::new(), 0..0),
            }
        }
        let prefixes = |m: Many<String>| -> Result<Vec<IpPrefix>, InputError> {
            let (v, span) = list(m);
            v.iter().map(|s| s.parse::<IpPrefix>().map_err(|e| self.err(span.clone(), e.to_string()))).collect()
        };
        let flag = |f: Field<bool>, what: &str| -> Result<bool, InputError> {
            match f {
                Some(b) if !*b.get_ref() => {
                    Err(self.err(b.span(), format!("`{what} = false` matches nothing special: omit it")))
                }
                Some(_) => Ok(true),
                None => Ok(false),
            }
        };
        let (protocol, pspan) = list(r.protocol);
        let protocol = protocol
            .iter()
            .map(|p| protocol_of(p).ok_or_else(|| self.err(pspan.clone(), unknown_proto(p))))
            .collect::<Result<_, _>>()?;
        let (interface, ispan) = list(r.interface);
        let interface =
            interface.into_iter().map(|i| iface(&Spanned::new(ispan.clone(), i))).collect::<Result<Vec<_>, _>>()?;
        Ok(Conditions {
            app: list(r.app).0,
            user: list(r.user).0,
            remote_addr: prefixes(r.remote_addr)?,
            local_addr: prefixes(r.local_addr)?,
            remote_port: list(r.remote_port).0,
            local_port: list(r.local_port).0,
            icmp_type: list(r.icmp_type).0,
            icmp_code: list(r.icmp_code).0,
            protocol,
            loopback: flag(r.loopback, "loopback")?,
            interface,
            vm2vm: flag(r.vm2vm, "vm2vm")?,
        })
    }

    fn step(&mut self, case: &Case, r: RawStep, span: Range<usize>) -> Result<Vec<(Op, Expect)>, InputError> {
        let action = r.action.get_ref().as_str();
        let Some(&(_, required, optional, management)) = ACTIONS.iter().find(|a| a.0 == action) else {
            let names: Vec<&str> = ACTIONS.iter().map(|a| a.0).collect();
            return Err(self.err(r.action.span(), format!("unknown step `{action}` (one of: {})", names.join(", "))));
        };
        let traffic_step = matches!(action, "connect" | "accept" | "watch");
        for (field, fspan) in r.present() {
            let allowed = required.contains(&field)
                || optional.contains(&field)
                || (management && MANAGEMENT.contains(&field))
                || (traffic_step && (TRAFFIC.contains(&field) || VERDICT.contains(&field)));
            if !allowed {
                return Err(self.err(fspan, format!("`{field}` does not apply to a `{action}` step")));
            }
        }
        let present: Vec<&str> = r.present().into_iter().map(|p| p.0).collect();
        if let Some(missing) = required.iter().find(|f| !present.contains(f)) {
            return Err(self.err(r.action.span(), format!("a `{action}` step needs `{missing}`")));
        }
        let expect = if management { self.management_expect(&r)? } else { Expect::Nothing };
        let session = || r.session.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default();
        let known_session = |p: &Self| -> Result<String, InputError> {
            let s = r.session.as_ref().expect("required");
            if p.sessions.contains(s.get_ref()) {
                Ok(s.get_ref().clone())
            } else {
                Err(p.err(s.span(), format!("session `{}` is not opened by an earlier step", s.get_ref())))
            }
        };
        let process = |p: &Self, f: &Field<String>| -> Result<Option<String>, InputError> {
            match f {
                Some(s) if case.process(s.get_ref()).is_none() => {
                    Err(p.err(s.span(), format!("unknown process `{}`", s.get_ref())))
                }
                f => Ok(f.as_ref().map(|s| s.get_ref().clone())),
            }
        };
        let iface = |p: &Self, f: &Field<String>| -> Result<Option<String>, InputError> {
            match f {
                Some(s) if !case.interfaces.contains(s.get_ref()) => {
                    Err(p.err(s.span(), format!("unknown interface `{}`", s.get_ref())))
                }
                f => Ok(f.as_ref().map(|s| s.get_ref().clone())),
            }
        };
        let one = |op: Op| Ok(vec![(op, expect.clone())]);
        match action {
            "open_session" => {
                let s = r.session.as_ref().expect("required");
                let process = process(self, &r.process)?.unwrap_or_default();
                self.sessions.insert(s.get_ref().clone());
                one(Op::OpenSession {
                    session: session(),
                    process,
                    dynamic: r.dynamic.as_ref().is_some_and(|d| *d.get_ref()),
                    txn_wait_ms: r.txn_wait_ms.as_ref().map(|w| *w.get_ref()),
                })
            }
            "close_session" => one(Op::CloseSession { session: known_session(self)? }),
            "begin" => one(Op::Begin { session: known_session(self)? }),
            "commit" => one(Op::Commit { session: known_session(self)? }),
            "abort" => one(Op::Abort { session: known_session(self)? }),
            "add_sublayer" => {
                let session = known_session(self)?;
                let keys = r.sublayer.expect("required");
                let kspan = keys.span();
                let keys = keys.into_inner().into_vec();
                if let Some(k) = keys.iter().find(|k| case.sublayer(k).is_none()) {
                    return Err(self.err(kspan, format!("unknown sublayer `{k}`")));
                }
                Ok(keys
                    .into_iter()
                    .map(|k| (Op::AddSublayer { session: session.clone(), sublayer: k }, expect.clone()))
                    .collect())
            }
            "add_filter" | "delete_filter" => {
                let session = known_session(self)?;
                let names = r.filter.expect("required");
                let nspan = names.span();
                let names = names.into_inner().into_vec();
                if let Some(n) = names.iter().find(|n| case.filter(n).is_none()) {
                    return Err(self.err(nspan, format!("unknown filter `{n}`")));
                }
                if names.len() > 1 && expect != Expect::Success {
                    return Err(self.err(nspan, "an expected error needs a single filter"));
                }
                let add = action == "add_filter";
                Ok(names
                    .into_iter()
                    .map(|filter| {
                        let session = session.clone();
                        let op =
                            if add { Op::AddFilter { session, filter } } else { Op::DeleteFilter { session, filter } };
                        (op, expect.clone())
                    })
                    .collect())
            }
            "kill" => one(Op::Kill { process: process(self, &r.process)?.unwrap_or_default() }),
            "bfe_stop" => one(Op::BfeStop),
            "bfe_start" => one(Op::BfeStart),
            "bfe_restart" => one(Op::BfeRestart),
            "reboot" => one(Op::Reboot),
            "power_on" => one(Op::PowerOn),
            "sleep_resume" => one(Op::SleepResume),
            "recreate_interface" => {
                one(Op::RecreateInterface { interface: iface(self, &r.interface)?.unwrap_or_default() })
            }
            "connect" | "accept" => {
                let direction = if action == "connect" { Direction::Outbound } else { Direction::Inbound };
                let traffic = self.traffic(case, &r, direction, &span)?;
                if let Some(f) = &r.flow {
                    self.flows.insert(f.get_ref().clone());
                }
                let expect = self.verdict_expect(&r)?;
                Ok(vec![(Op::NewFlow { flow: r.flow.map(Spanned::into_inner), traffic }, expect)])
            }
            "watch" => {
                let direction = self.dir(r.dir.as_ref().expect("required"))?;
                let traffic = self.traffic(case, &r, direction, &span)?;
                let name = r.name.as_ref().expect("required").get_ref().clone();
                let Expect::Verdict { verdict, decided_by: None, no_match: false } = self.verdict_expect(&r)? else {
                    let fspan = span_of(&r.decided_by).or(span_of(&r.no_match)).unwrap_or(span.clone());
                    return Err(self.err(fspan, "a watch checks the verdict only"));
                };
                self.watches.insert(name.clone());
                Ok(vec![(Op::Watch { name, traffic, verdict }, Expect::Nothing)])
            }
            "unwatch" => {
                let n = r.name.as_ref().expect("required");
                if !self.watches.remove(n.get_ref()) {
                    return Err(self.err(n.span(), format!("no watch `{}` is active", n.get_ref())));
                }
                one(Op::Unwatch { name: n.get_ref().clone() })
            }
            "packet" | "close_flow" => {
                let f = r.flow.as_ref().expect("required");
                if !self.flows.contains(f.get_ref()) {
                    return Err(self.err(f.span(), format!("flow `{}` is not created by an earlier step", f.get_ref())));
                }
                let flow = f.get_ref().clone();
                if action == "close_flow" {
                    return one(Op::CloseFlow { flow });
                }
                let host_model = match r.host_model.as_ref() {
                    None => HostModel::Strong,
                    Some(h) => match h.get_ref().as_str() {
                        "strong" => HostModel::Strong,
                        "weak" => HostModel::Weak,
                        other => {
                            return Err(self.err(h.span(), format!("unknown host model `{other}` (strong or weak)")));
                        }
                    },
                };
                let op = Op::Packet {
                    flow,
                    direction: self.dir(r.dir.as_ref().expect("required"))?,
                    via: iface(self, &r.via)?,
                    host_model,
                };
                let e = r.expect.as_ref().expect("required");
                let outcome = match e.get_ref().as_str() {
                    "pass" => PacketOutcome::Pass,
                    "reauthorized" => PacketOutcome::Reauthorized,
                    "torn_down" => PacketOutcome::TornDown,
                    "closed" => PacketOutcome::Closed,
                    other => {
                        let msg = format!("unknown packet outcome `{other}` (pass, reauthorized, torn_down, closed)");
                        return Err(self.err(e.span(), msg));
                    }
                };
                let decided_by = r.decided_by.map(Spanned::into_inner);
                Ok(vec![(op, Expect::Packet { outcome, decided_by })])
            }
            "vm_frame" => {
                let op = Op::VmFrame {
                    direction: self.dir(r.dir.as_ref().expect("required"))?,
                    interface: iface(self, &r.interface)?,
                    vm2vm: r.vm2vm.as_ref().is_some_and(|v| *v.get_ref()),
                };
                let expect = self.verdict_expect(&r)?;
                Ok(vec![(op, expect)])
            }
            "agent" => {
                let Some(agent) = &case.agent else {
                    return Err(self.err(r.action.span(), "an `agent` step needs the case's `[agent]` table"));
                };
                let st = r.state.as_ref().expect("required");
                let state = match st.get_ref().as_str() {
                    "locked" => AgentState::Locked,
                    "connected" => AgentState::Connected,
                    other => {
                        return Err(self.err(st.span(), format!("unknown agent state `{other}` (locked or connected)")));
                    }
                };
                let d = agent.settings;
                let settings = AgentSettings {
                    allow_loopback: r.allow_loopback.as_ref().map_or(d.allow_loopback, |v| *v.get_ref()),
                    allow_lan: r.allow_lan.as_ref().map_or(d.allow_lan, |v| *v.get_ref()),
                    allow_dhcp: r.allow_dhcp.as_ref().map_or(d.allow_dhcp, |v| *v.get_ref()),
                };
                one(Op::Agent { state, settings })
            }
            _ => unreachable!("every action in ACTIONS is handled"),
        }
    }

    fn agent(&self, r: &RawAgent, processes: &[ProcessDef]) -> Result<AgentDef, InputError> {
        let declared = |p: &Spanned<String>| -> Result<String, InputError> {
            match processes.iter().find(|q| &q.name == p.get_ref()) {
                None => {
                    Err(self.err(p.span(), format!("unknown process `{}` (declare it in [[process]])", p.get_ref())))
                }
                Some(q) => match crate::wfp::AppId::from_image_path(&q.image) {
                    Ok(_) => Ok(q.name.clone()),
                    Err(e) => Err(self.err(p.span(), format!("process `{}`: {e}", q.name))),
                },
            }
        };
        let process = declared(&r.process)?;
        let filter_lifetime = match &r.filter_lifetime {
            None => FilterLifetime::Persistent,
            Some(l) => match l.get_ref().as_str() {
                "dynamic" => FilterLifetime::Dynamic,
                "static" => FilterLifetime::Static,
                "persistent" => FilterLifetime::Persistent,
                other => {
                    let msg = format!("unknown filter lifetime `{other}` (dynamic, static or persistent)");
                    return Err(self.err(l.span(), msg));
                }
            },
        };
        let defaults = AgentSettings::default();
        let settings = AgentSettings {
            allow_loopback: r.allow_loopback.unwrap_or(defaults.allow_loopback),
            allow_lan: r.allow_lan.unwrap_or(defaults.allow_lan),
            allow_dhcp: r.allow_dhcp.unwrap_or(defaults.allow_dhcp),
        };
        let mut allow = Vec::new();
        for a in &r.allow {
            let a = a.get_ref();
            let mut to = Vec::new();
            for t in a.to.get_ref() {
                to.push(self.agent_endpoint(t)?);
            }
            if to.is_empty() {
                return Err(self.err(a.to.span(), "an exception needs at least one destination in `to`"));
            }
            allow.push(AgentException {
                process: declared(&a.process)?,
                service_sid: a.service_sid.as_ref().map(|s| self.non_empty(s, "`service_sid`")).transpose()?,
                to,
            });
        }
        Ok(AgentDef {
            process,
            filter_lifetime,
            boot_time_filters: r.boot_time_filters.unwrap_or(true),
            sublayer_weight: r.sublayer_weight.unwrap_or(0xFFFF),
            settings,
            allow,
        })
    }

    /// `203.0.113.20:443`, `[2001:db8::20]:443` (a host and port) or `203.0.113.0/24` (any port).
    fn agent_endpoint(&self, t: &Spanned<String>) -> Result<AgentEndpoint, InputError> {
        if let Ok(sa) = t.get_ref().parse::<SocketAddr>() {
            return Ok(AgentEndpoint { prefix: IpPrefix::host(sa.ip()), port: Some(sa.port()) });
        }
        match t.get_ref().parse::<IpPrefix>() {
            Ok(prefix) => Ok(AgentEndpoint { prefix, port: None }),
            Err(_) => Err(self.err(
                t.span(),
                format!("`{}` is not a destination: write `ip:port`, `[ipv6]:port` or an address prefix", t.get_ref()),
            )),
        }
    }

    fn dir(&self, d: &Spanned<String>) -> Result<Direction, InputError> {
        match d.get_ref().as_str() {
            "out" => Ok(Direction::Outbound),
            "in" => Ok(Direction::Inbound),
            other => Err(self.err(d.span(), format!("unknown direction `{other}` (in or out)"))),
        }
    }

    fn management_expect(&self, r: &RawStep) -> Result<Expect, InputError> {
        let Some(e) = &r.expect_error else {
            if let Some(w) = &r.waited_ms {
                return Err(self.err(w.span(), "`waited_ms` goes with `expect_error = \"transaction_locked\"`"));
            }
            return Ok(Expect::Success);
        };
        let kind = ErrorKind::ALL.into_iter().find(|k| k.as_str() == e.get_ref()).ok_or_else(|| {
            let names: Vec<&str> = ErrorKind::ALL.iter().map(ErrorKind::as_str).collect();
            self.err(e.span(), format!("unknown error kind `{}` (one of: {})", e.get_ref(), names.join(", ")))
        })?;
        if let Some(w) = &r.waited_ms
            && kind != ErrorKind::TransactionLocked
        {
            return Err(self.err(w.span(), "`waited_ms` goes with `expect_error = \"transaction_locked\"`"));
        }
        Ok(Expect::Error { kind, waited_ms: r.waited_ms.as_ref().map(|w| *w.get_ref()) })
    }

    fn verdict_expect(&self, r: &RawStep) -> Result<Expect, InputError> {
        let e = r.expect.as_ref().expect("required");
        let verdict = match e.get_ref().as_str() {
            "permit" => Verdict::Permit,
            "block" => Verdict::Block,
            "dropped" => Verdict::Dropped,
            other => return Err(self.err(e.span(), format!("unknown verdict `{other}` (permit, block or dropped)"))),
        };
        let no_match = r.no_match.as_ref().is_some_and(|n| *n.get_ref());
        if no_match && (verdict != Verdict::Permit || r.decided_by.is_some()) {
            let span = span_of(&r.no_match).unwrap_or(e.span());
            return Err(self.err(span, "`no_match` means the default permit: `expect = \"permit\"`, no `decided_by`"));
        }
        if let Some(d) = &r.decided_by
            && verdict == Verdict::Dropped
        {
            return Err(self.err(d.span(), "a packet dropped by the stack is decided by no filter"));
        }
        Ok(Expect::Verdict { verdict, decided_by: r.decided_by.as_ref().map(|d| d.get_ref().clone()), no_match })
    }

    /// Builds the tuple of a `connect`, `accept` or `watch` step.
    fn traffic(
        &self,
        case: &Case,
        r: &RawStep,
        direction: Direction,
        span: &Range<usize>,
    ) -> Result<Traffic, InputError> {
        let process = match &r.process {
            Some(p) if case.process(p.get_ref()).is_none() => {
                return Err(self.err(p.span(), format!("unknown process `{}`", p.get_ref())));
            }
            p => p.as_ref().map(|s| s.get_ref().clone()),
        };
        let interface = match &r.interface {
            Some(i) if !case.interfaces.contains(i.get_ref()) => {
                return Err(self.err(i.span(), format!("unknown interface `{}`", i.get_ref())));
            }
            Some(i) => Some(i.get_ref().clone()),
            None => process.as_deref().and_then(|p| case.process(p)).and_then(|p| p.interface.clone()),
        };
        let mut t = match &r.class {
            Some(c) => self.class_traffic(c, r, direction)?,
            None => self.plain_traffic(r, direction, span)?,
        };
        t.process = process;
        t.interface = interface;
        if let Some(l) = &r.loopback {
            t.loopback = *l.get_ref();
        }
        if let Some(h) = &r.hop_limit {
            t.hop_limit = *h.get_ref();
        }
        Ok(t)
    }

    fn plain_traffic(&self, r: &RawStep, direction: Direction, span: &Range<usize>) -> Result<Traffic, InputError> {
        let Some(p) = &r.proto else {
            return Err(self.err(span.clone(), "traffic needs `proto` (tcp, udp, icmp, icmpv6) or a `class`"));
        };
        let protocol = protocol_of(p.get_ref()).ok_or_else(|| self.err(p.span(), unknown_proto(p.get_ref())))?;
        let icmp = matches!(protocol, Protocol::Icmp | Protocol::IcmpV6);
        for (f, s) in [("icmp_type", span_of(&r.icmp_type)), ("icmp_code", span_of(&r.icmp_code))] {
            if let Some(s) = s
                && !icmp
            {
                return Err(self.err(s, format!("`{f}` needs `proto = \"icmp\"` or `\"icmpv6\"`")));
            }
        }
        let Some(remote) = &r.remote else {
            return Err(self.err(span.clone(), "traffic needs `remote` (`ip:port`, or an ip for ICMP)"));
        };
        let mut remote_sa = self.endpoint(remote, !icmp)?;
        let mut local = match &r.local {
            Some(l) => self.endpoint(l, false)?,
            None => default_local(remote_sa.ip()),
        };
        if local.is_ipv6() != remote_sa.is_ipv6() {
            let s = span_of(&r.local).unwrap_or(remote.span());
            return Err(self.err(s, "`local` and `remote` must be of one address family"));
        }
        if icmp {
            local.set_port(r.icmp_type.as_ref().map(|t| *t.get_ref()).unwrap_or(0));
            remote_sa.set_port(r.icmp_code.as_ref().map(|c| *c.get_ref()).unwrap_or(0));
        } else if r.local.as_ref().is_some_and(|l| l.get_ref().parse::<SocketAddr>().is_err()) {
            local.set_port(EPHEMERAL_PORT);
        }
        Ok(Traffic {
            direction,
            process: None,
            protocol,
            local,
            remote: remote_sa,
            loopback: remote_sa.ip().is_loopback(),
            interface: None,
            hop_limit: DEFAULT_HOP_LIMIT,
            class: None,
        })
    }

    /// `ip:port`, or a bare ip (port 0, or the ephemeral port for a local address);
    /// `need_port` rejects the bare form.
    fn endpoint(&self, s: &Spanned<String>, need_port: bool) -> Result<SocketAddr, InputError> {
        if let Ok(sa) = s.get_ref().parse::<SocketAddr>() {
            return Ok(sa);
        }
        match s.get_ref().parse::<IpAddr>() {
            Ok(_) if need_port => {
                Err(self.err(s.span(), format!("`{}` needs a port (`ip:port`, `[v6]:port`)", s.get_ref())))
            }
            Ok(ip) => Ok(SocketAddr::new(ip, 0)),
            Err(_) => Err(self.err(s.span(), format!("`{}` is not an address", s.get_ref()))),
        }
    }

    fn class_traffic(&self, c: &Spanned<String>, r: &RawStep, direction: Direction) -> Result<Traffic, InputError> {
        for (f, s) in [
            ("proto", span_of(&r.proto)),
            ("local", span_of(&r.local)),
            ("icmp_type", span_of(&r.icmp_type)),
            ("icmp_code", span_of(&r.icmp_code)),
        ] {
            if let Some(s) = s {
                return Err(self.err(s, format!("`{f}` is set by the traffic class")));
            }
        }
        let remote_ip = match &r.remote {
            Some(s) => Some(s.get_ref().parse::<IpAddr>().map_err(|_| {
                self.err(s.span(), format!("with a class, `remote` is a bare address (`{}`)", s.get_ref()))
            })?),
            None => None,
        };
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("constant");
        let ll = v6(LINK_LOCAL);
        let remote_v6 = |default: Ipv6Addr| -> Result<Ipv6Addr, InputError> {
            match remote_ip {
                None => Ok(default),
                Some(IpAddr::V6(a)) => Ok(a),
                Some(IpAddr::V4(_)) => Err(self.err(r.remote.as_ref().expect("set").span(), "this class is IPv6")),
            }
        };
        let remote_v4 = |default: &str| -> Result<std::net::Ipv4Addr, InputError> {
            match remote_ip {
                None => Ok(default.parse().expect("constant")),
                Some(IpAddr::V4(a)) => Ok(a),
                Some(IpAddr::V6(_)) => Err(self.err(r.remote.as_ref().expect("set").span(), "this class is IPv4")),
            }
        };
        let router = v6(ROUTER_LINK_LOCAL);
        let ndp = |m: NdpMessage, d: Direction, remote: Ipv6Addr| Packet::ndp(m, d, ll, remote, NDP_HOP_LIMIT);
        let local_for = |ip: IpAddr| default_local(ip);
        let dns_server = remote_ip.unwrap_or(DNS_SERVER.parse().expect("constant"));
        let packet = match c.get_ref().as_str() {
            "dhcpv4_request" => {
                if remote_ip.is_some() {
                    return Err(self.err(r.remote.as_ref().expect("set").span(), "a DHCPv4 request is broadcast"));
                }
                Packet::dhcpv4_request()
            }
            "dhcpv4_response" => {
                Packet::dhcpv4_response(LOCAL_V4.parse().expect("constant"), remote_v4(DHCPV4_SERVER)?)
            }
            "dhcpv6_request" => Packet::dhcpv6_request(ll, remote_v6(DHCPV6_ALL_SERVERS_LINK)?),
            "dhcpv6_response" => Packet::dhcpv6_response(ll, remote_v6(router)?),
            "ndp_rs" => ndp(NdpMessage::RouterSolicitation, Direction::Outbound, remote_v6(ALL_ROUTERS)?),
            "ndp_ra" => ndp(NdpMessage::RouterAdvertisement, Direction::Inbound, remote_v6(router)?),
            "ndp_ns_out" => {
                ndp(NdpMessage::NeighborSolicitation, Direction::Outbound, remote_v6(v6("ff02::1:ff00:1"))?)
            }
            "ndp_ns_in" => ndp(NdpMessage::NeighborSolicitation, Direction::Inbound, remote_v6(router)?),
            "ndp_na_out" => ndp(NdpMessage::NeighborAdvertisement, Direction::Outbound, remote_v6(router)?),
            "ndp_na_in" => ndp(NdpMessage::NeighborAdvertisement, Direction::Inbound, remote_v6(router)?),
            "ndp_redirect" => ndp(NdpMessage::Redirect, Direction::Inbound, remote_v6(router)?),
            "dns_udp" => Packet::dns(Protocol::Udp, local_for(dns_server), dns_server),
            "dns_tcp" => Packet::dns(Protocol::Tcp, local_for(dns_server), dns_server),
            "doh" => Packet::doh(local_for(dns_server), dns_server),
            other => {
                let msg = format!("unknown traffic class `{other}` (one of: {})", TRAFFIC_CLASSES.join(", "));
                return Err(self.err(c.span(), msg));
            }
        };
        let class_dir = match packet.context.layer {
            Layer::AleAuthRecvAcceptV4 | Layer::AleAuthRecvAcceptV6 => Direction::Inbound,
            _ => Direction::Outbound,
        };
        if class_dir != direction {
            let (word, dir) = match class_dir {
                Direction::Inbound => ("accept", "in"),
                Direction::Outbound => ("connect", "out"),
            };
            let msg =
                format!("class `{}` is {class_dir:?}: use `{word}` (or `dir = \"{dir}\"` in a watch)", c.get_ref());
            return Err(self.err(c.span(), msg));
        }
        let ctx = packet.context;
        Ok(Traffic {
            direction,
            process: None,
            protocol: ctx.protocol,
            local: ctx.local,
            remote: ctx.remote,
            loopback: ctx.loopback,
            interface: None,
            hop_limit: packet.hop_limit,
            class: Some(c.get_ref().clone()),
        })
    }
}

fn default_local(remote: IpAddr) -> SocketAddr {
    let ip: IpAddr = match (remote.is_loopback(), remote.is_ipv6()) {
        (true, false) => "127.0.0.1".parse().expect("constant"),
        (true, true) => "::1".parse().expect("constant"),
        (false, false) => LOCAL_V4.parse().expect("constant"),
        (false, true) => LOCAL_V6.parse().expect("constant"),
    };
    SocketAddr::new(ip, EPHEMERAL_PORT)
}

fn protocol_of(s: &str) -> Option<Protocol> {
    match s {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "icmp" => Some(Protocol::Icmp),
        "icmpv6" => Some(Protocol::IcmpV6),
        _ => None,
    }
}

fn unknown_proto(s: &str) -> String {
    format!("unknown protocol `{s}` (tcp, udp, icmp, icmpv6)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"id = "B11"
title = "t"
source = "s"
description = "d"
interfaces = ["eth0", "tun0"]
sublayers = [{ key = "agent", weight = 0xFFFF }]

[[process]]
name = "agent"
image = 'C:\Program Files\Lockstep\agent.exe'
user = "S-1-5-18"
service_sid = "S-1-5-80-1"

[[filter]]
name = "permit-agent"
layers = ["ale"]
sublayer = "agent"
weight = { range = 15 }
action = "permit"
hard = true
match = { app = 'C:\Program Files\Lockstep\agent.exe', remote_port = [80, 443], interface = "tun0" }

[[filter]]
name = "block-all"
layers = ["connect", "mac_frame_in"]
sublayer = "agent"
action = "block"
"#;

    const OPEN: &str = r#"  { do = "open_session", session = "s", process = "agent" },"#;

    fn case_with(steps: &str) -> Result<Case, InputError> {
        parse_case("c.toml", &format!("{HEAD}\n[script]\nsteps = [\n{OPEN}\n{steps}\n]\n"))
    }

    /// The error message for `steps`, with its position.
    fn error(steps: &str) -> String {
        case_with(steps).unwrap_err().to_string()
    }

    /// Line of the first step after `open_session` in `case_with`.
    const FIRST: usize = 32;

    #[test]
    fn a_case_parses_with_defaults_and_expansions() {
        let steps = r#"  { do = "add_filter", session = "s", filter = ["permit-agent", "block-all"] },
  { do = "connect", flow = "web", process = "agent", proto = "tcp", remote = "203.0.113.10:443", expect = "permit", decided_by = "permit-agent" },
  { do = "accept", class = "ndp_ra", hop_limit = 64, expect = "dropped" },
  { do = "connect", proto = "tcp", remote = "127.0.0.1:8080", expect = "permit", no_match = true },
  { do = "packet", flow = "web", dir = "in", via = "eth0", host_model = "weak", expect = "torn_down" },
  { do = "begin", session = "s", expect_error = "transaction_locked", waited_ms = 15000 },"#;
        let case = case_with(steps).unwrap();
        assert_eq!((case.id.as_str(), case.number, case.file.as_str()), ("B11", 11, "c.toml"));
        let f = case.filter("permit-agent").unwrap();
        assert_eq!(f.layers.len(), 4);
        assert_eq!((f.weight, f.action, f.hard), (WeightSpec::Range(15), FilterAction::Permit, true));
        assert_eq!(f.conditions.remote_port, vec![80, 443]);
        assert_eq!(f.conditions.interface, vec!["tun0".to_string()]);
        let b = case.filter("block-all").unwrap();
        assert_eq!(b.layers, vec![LayerName::ConnectV4, LayerName::ConnectV6, LayerName::MacFrameIn]);
        assert_eq!(b.weight, WeightSpec::Auto);
        // One step per filter, both on the line of the step that names them.
        let adds: Vec<(usize, usize)> = case.steps[1..3].iter().map(|s| (s.index, s.line)).collect();
        assert_eq!(adds, vec![(2, FIRST), (3, FIRST)]);
        let Op::NewFlow { flow, traffic } = &case.steps[3].op else { panic!("{:?}", case.steps[3]) };
        assert_eq!(flow.as_deref(), Some("web"));
        assert_eq!(
            (traffic.local.to_string(), traffic.loopback, traffic.hop_limit),
            ("10.0.0.2:49152".into(), false, 64)
        );
        let Op::NewFlow { traffic: ra, .. } = &case.steps[4].op else { panic!() };
        assert_eq!(
            (ra.direction, ra.protocol, ra.local.port(), ra.remote.to_string()),
            (Direction::Inbound, Protocol::IcmpV6, 134, "[fe80::1]:0".into())
        );
        assert_eq!((ra.hop_limit, ra.class.as_deref()), (64, Some("ndp_ra")));
        assert_eq!(
            case.steps[4].expect,
            Expect::Verdict { verdict: Verdict::Dropped, decided_by: None, no_match: false }
        );
        let Op::NewFlow { traffic: lo, .. } = &case.steps[5].op else { panic!() };
        assert_eq!((lo.local.to_string(), lo.loopback), ("127.0.0.1:49152".into(), true));
        assert!(
            matches!(&case.steps[6].op, Op::Packet { host_model: HostModel::Weak, via: Some(v), .. } if v == "eth0")
        );
        let locked = Expect::Error { kind: ErrorKind::TransactionLocked, waited_ms: Some(15000) };
        assert_eq!(case.steps[7].expect, locked);
        assert_eq!(case.steps[0].expect, Expect::Success);
    }

    #[test]
    fn class_tuples_follow_the_wfp_constructors() {
        let steps = r#"  { do = "connect", class = "dhcpv4_request", expect = "permit" },
  { do = "connect", class = "dns_tcp", remote = "::1", expect = "permit" },
  { do = "watch", name = "w", dir = "in", class = "dhcpv6_response", expect = "block" },"#;
        let case = case_with(steps).unwrap();
        let Op::NewFlow { traffic: d, .. } = &case.steps[1].op else { panic!() };
        assert_eq!(
            (d.local.to_string(), d.remote.to_string(), d.protocol),
            ("0.0.0.0:68".into(), "255.255.255.255:67".into(), Protocol::Udp)
        );
        let Op::NewFlow { traffic: dns, .. } = &case.steps[2].op else { panic!() };
        assert_eq!(
            (dns.remote.to_string(), dns.local.to_string(), dns.loopback),
            ("[::1]:53".into(), "[::1]:49152".into(), true)
        );
        let Op::Watch { traffic: w, verdict, .. } = &case.steps[3].op else { panic!() };
        assert_eq!((w.local.port(), w.remote.port(), *verdict), (546, 547, Verdict::Block));
    }

    #[test]
    fn step_errors_are_located() {
        let at = |col: usize, msg: &str| format!("c.toml:{FIRST}:{col}: {msg}");
        assert_eq!(
            error(r#"  { do = "connect", expct = "permit" },"#),
            at(
                21,
                "unknown field `expct`, expected one of `do`, `session`, `process`, `dynamic`, `txn_wait_ms`, `sublayer`, `filter`, `interface`, `flow`, `class`, `proto`, `local`, `remote`, `loopback`, `icmp_type`, `icmp_code`, `hop_limit`, `dir`, `via`, `host_model`, `vm2vm`, `name`, `expect`, `decided_by`, `no_match`, `expect_error`, `waited_ms`, `state`, `allow_loopback`, `allow_lan`, `allow_dhcp`, `note`"
            )
        );
        let cases = [
            (
                r#"  { do = "jump" },"#,
                10,
                "unknown step `jump` (one of: open_session, close_session, add_sublayer, add_filter, delete_filter, begin, commit, abort, kill, bfe_stop, bfe_start, bfe_restart, reboot, power_on, sleep_resume, recreate_interface, connect, accept, packet, close_flow, vm_frame, watch, unwatch, agent)",
            ),
            (r#"  { do = "begin", session = "s", flow = "x" },"#, 41, "`flow` does not apply to a `begin` step"),
            (r#"  { do = "begin" },"#, 10, "a `begin` step needs `session`"),
            (r#"  { do = "begin", session = "t" },"#, 29, "session `t` is not opened by an earlier step"),
            (r#"  { do = "add_filter", session = "s", filter = "nope" },"#, 48, "unknown filter `nope`"),
            (
                r#"  { do = "packet", flow = "web", dir = "in", expect = "pass" },"#,
                27,
                "flow `web` is not created by an earlier step",
            ),
            (
                r#"  { do = "connect", proto = "tcp", remote = "1.2.3.4:5", expect = "allow" },"#,
                67,
                "unknown verdict `allow` (permit, block or dropped)",
            ),
            (
                r#"  { do = "connect", proto = "tcp", remote = "1.2.3.4", expect = "permit" },"#,
                45,
                "`1.2.3.4` needs a port (`ip:port`, `[v6]:port`)",
            ),
            (
                r#"  { do = "connect", proto = "tcp", remote = "1.2.3.4:5", icmp_type = 8, expect = "permit" },"#,
                70,
                "`icmp_type` needs `proto = \"icmp\"` or `\"icmpv6\"`",
            ),
            (
                r#"  { do = "connect", class = "ndp_ra", expect = "permit" },"#,
                29,
                "class `ndp_ra` is Inbound: use `accept` (or `dir = \"in\"` in a watch)",
            ),
            (
                r#"  { do = "accept", class = "ndp_ra", proto = "udp", expect = "permit" },"#,
                46,
                "`proto` is set by the traffic class",
            ),
            (
                r#"  { do = "connect", proto = "tcp", remote = "1.2.3.4:5", expect = "dropped", decided_by = "x" },"#,
                91,
                "a packet dropped by the stack is decided by no filter",
            ),
            (
                r#"  { do = "connect", proto = "tcp", remote = "1.2.3.4:5", expect = "block", no_match = true },"#,
                87,
                "`no_match` means the default permit: `expect = \"permit\"`, no `decided_by`",
            ),
            (
                r#"  { do = "watch", name = "w", dir = "out", proto = "tcp", remote = "1.2.3.4:5", expect = "block", decided_by = "x" },"#,
                112,
                "a watch checks the verdict only",
            ),
            (r#"  { do = "unwatch", name = "w" },"#, 28, "no watch `w` is active"),
            (
                r#"  { do = "begin", session = "s", expect_error = "oops" },"#,
                49,
                "unknown error kind `oops` (one of: transaction_locked, bfe_not_running, unknown_session, unknown_filter, unknown_sublayer, already_exists, no_transaction, invalid_flags, invalid_condition, rejected)",
            ),
            (
                r#"  { do = "begin", session = "s", waited_ms = 5 },"#,
                46,
                "`waited_ms` goes with `expect_error = \"transaction_locked\"`",
            ),
            (r#"  { do = "recreate_interface", interface = "wlan9" },"#, 44, "unknown interface `wlan9`"),
        ];
        for (step, col, msg) in cases {
            assert_eq!(error(step), at(col, msg), "{step}");
        }
    }

    #[test]
    fn case_level_errors_are_located() {
        let with = |from: &str, to: &str| {
            let text = format!("{HEAD}\n[script]\nsteps = [\n{OPEN}\n]\n").replacen(from, to, 1);
            parse_case("c.toml", &text).unwrap_err().to_string()
        };
        assert_eq!(with(r#"id = "B11""#, r#"id = "A11""#), "c.toml:1:6: check 11 is in section B: the id is `B11`");
        assert!(with(r#"id = "B11""#, r#"id = "11""#).starts_with("c.toml:1:6: case id `11` must be"));
        assert_eq!(with("{ range = 15 }", "{ range = 16 }"), "c.toml:18:10: weight range 16 is outside 0..=15");
        assert_eq!(
            with(r#"layers = ["ale"]"#, r#"layers = ["ale", "connect_v4"]"#),
            "c.toml:16:18: layer `connect_v4` is listed twice"
        );
        assert!(with(r#"layers = ["ale"]"#, r#"layers = ["alee"]"#).starts_with("c.toml:16:11: unknown layer `alee`"));
        assert_eq!(
            with(
                r#"sublayer = "agent"
weight"#,
                r#"sublayer = "agnet"
weight"#
            ),
            "c.toml:17:12: unknown sublayer `agnet` (declared: [\"agent\"])"
        );
        assert_eq!(
            with(r#"action = "block""#, r#"action = "deny""#),
            "c.toml:27:10: unknown action `deny` (permit, block or veto)"
        );
        assert_eq!(
            with(r#"interface = "tun0" }"#, r#"interface = "tun1" }"#),
            "c.toml:21:93: unknown interface `tun1` (declared: [\"eth0\", \"tun0\"])"
        );
        assert_eq!(
            with(r#"action = "block""#, "action = \"block\"\nmatch = { vm2vm = true }"),
            "c.toml:24:8: filter `block-all`: `vm2vm` only exists at the mac_frame layers"
        );
        assert_eq!(with("hard = true", "hard = true\nmatch = { loopback = false }"), "c.toml:22:1: duplicate key");
        assert_eq!(
            with(r#"name = "block-all""#, r#"name = "permit-agent""#),
            "c.toml:24:1: filter `permit-agent` is declared twice"
        );
        let no_script = parse_case("c.toml", HEAD).unwrap_err().to_string();
        assert_eq!(no_script, "c.toml: a case needs a `[script]` table with `steps = [...]`");
        let empty = parse_case("c.toml", &format!("{HEAD}\n[script]\nsteps = []\n")).unwrap_err().to_string();
        assert_eq!(empty, "c.toml:29:1: `[script]` needs at least one step in `steps`");
    }
}
