//! Classification: condition matching and MS "Filter Arbitration".

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::Serialize;

use super::filter::{Action, AppId, Condition, ConditionField, Direction, Filter, FilterId, Layer, Protocol};

/// The incoming values a layer classifies (the subset of `FWPS_FIELDS_ALE_AUTH_*` modelled).
///
/// For ICMP, put the ICMP type in `local`'s port and the code in `remote`'s port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassifyContext {
    /// Layer being classified.
    pub layer: Layer,
    /// `ALE_APP_ID` of the socket's process, if known.
    pub app_id: Option<AppId>,
    /// SIDs in the process token (user, groups, service SID).
    pub user_sids: Vec<String>,
    /// IP protocol.
    pub protocol: Protocol,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// `FWP_CONDITION_FLAG_IS_LOOPBACK`.
    pub loopback: bool,
    /// Local interface LUID, if known.
    pub interface_luid: Option<u64>,
    /// `FWP_CONDITION_FLAG_IS_REAUTHORIZE` (informational; no condition tests it).
    pub reauthorize: bool,
    /// `FWP_CONDITION_L2_IS_VM2VM` (MAC-frame layers only): the frame goes from one
    /// virtual machine to another on the same virtual switch.
    pub vm2vm: bool,
}

impl ClassifyContext {
    /// A context with no app, no SIDs, not loopback, no interface, not a reauthorization.
    pub fn new(layer: Layer, protocol: Protocol, local: SocketAddr, remote: SocketAddr) -> Self {
        ClassifyContext {
            layer,
            app_id: None,
            user_sids: Vec::new(),
            protocol,
            local,
            remote,
            loopback: false,
            interface_luid: None,
            reauthorize: false,
            vm2vm: false,
        }
    }

    /// A frame at the native MAC-frame layer of `direction`, e.g. one a Hyper-V guest
    /// sends through the host's virtual switch. L2 carries no IP fields: the addresses are
    /// `0.0.0.0:0` and the protocol is a placeholder no L2 filter can test (conditions on
    /// IP fields are rejected at the MAC-frame layers, see [`Condition::fits`]).
    pub fn mac_frame(direction: Direction, interface_luid: Option<u64>, vm2vm: bool) -> Self {
        let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        ClassifyContext {
            interface_luid,
            vm2vm,
            ..ClassifyContext::new(Layer::mac_frame(direction), Protocol::Udp, none, none)
        }
    }
}

/// Result of classifying one context at one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `Permit` or `Block` (a winning `CalloutVeto` is reported as `Block`).
    pub action: Action,
    /// The filter whose action won; `None` means nothing matched: default Permit.
    pub filter: Option<FilterId>,
    /// Name of that filter.
    pub filter_name: Option<String>,
    /// Sublayer of that filter.
    pub sublayer: Option<String>,
    /// Whether no other sublayer could have overridden it (any block, or a hard permit).
    pub hard: bool,
}

impl Decision {
    /// The result when no filter matched in any sublayer.
    pub fn default_permit() -> Decision {
        Decision { action: Action::Permit, filter: None, filter_name: None, sublayer: None, hard: false }
    }

    /// Whether traffic is allowed.
    pub fn is_permit(&self) -> bool {
        self.action == Action::Permit
    }

    fn from_filter(f: &Filter, action: Action, hard: bool) -> Decision {
        Decision {
            action,
            filter: Some(f.id),
            filter_name: Some(f.spec.name.clone()),
            sublayer: Some(f.spec.sublayer.clone()),
            hard,
        }
    }
}

impl Condition {
    /// Whether this single condition holds for `ctx`.
    pub fn matches(&self, ctx: &ClassifyContext) -> bool {
        match self {
            Condition::AppId(a) => ctx.app_id.as_ref() == Some(a),
            Condition::UserSid(sid) => ctx.user_sids.iter().any(|s| s.eq_ignore_ascii_case(sid)),
            Condition::RemoteAddr(p) => p.contains(ctx.remote.ip()),
            Condition::LocalAddr(p) => p.contains(ctx.local.ip()),
            Condition::RemotePort(port) => ctx.remote.port() == *port,
            Condition::LocalPort(port) => ctx.local.port() == *port,
            Condition::Protocol(p) => ctx.protocol == *p,
            Condition::Loopback => ctx.loopback,
            Condition::InterfaceLuid(l) => ctx.interface_luid == Some(*l),
            Condition::Vm2Vm => ctx.vm2vm,
        }
    }
}

/// Whether a condition list matches: OR within a field, AND across fields; empty matches all.
pub fn conditions_match(conditions: &[Condition], ctx: &ClassifyContext) -> bool {
    let mut fields: BTreeMap<ConditionField, bool> = BTreeMap::new();
    for c in conditions {
        *fields.entry(c.field()).or_insert(false) |= c.matches(ctx);
    }
    fields.values().all(|ok| *ok)
}

/// Whether `a` is evaluated before `b` inside one sublayer: higher effective weight
/// first; equal weights put the lower `FilterId` (the earlier-added filter) first.
fn outranks(a: &Filter, b: &Filter) -> bool {
    a.effective_weight > b.effective_weight || (a.effective_weight == b.effective_weight && a.id < b.id)
}

/// The running verdict across sublayers.
enum Verdict<'a> {
    SoftPermit(&'a Filter),
    HardPermit(&'a Filter),
    Block(&'a Filter),
}

impl<'a> Verdict<'a> {
    fn of(f: &'a Filter) -> Verdict<'a> {
        match f.spec.action {
            Action::Permit if f.spec.clear_action_right => Verdict::HardPermit(f),
            Action::Permit => Verdict::SoftPermit(f),
            Action::Block | Action::CalloutVeto => Verdict::Block(f),
        }
    }
}

/// MS "Filter Arbitration" at `ctx.layer`.
///
/// `sublayers` lists `(key, weight)`; filters of other layers, or whose sublayer is not
/// listed, are ignored. Sublayers are visited from highest to lowest weight (equal weights:
/// key order). In each sublayer the first matching filter by weight decides for it (every
/// modelled action is terminating, so lower filters, blocks included, are never consulted).
/// Across sublayers:
/// - the first decision is taken as is;
/// - a soft permit is overridden by a Block or veto, and upgraded by a later hard permit
///   (which then becomes the decider); a later soft permit keeps the earlier decider;
/// - a hard permit is overridden only by a `CalloutVeto`;
/// - a Block is final and stops evaluation.
///
/// Nothing matched in any sublayer: [`Decision::default_permit`].
pub fn arbitrate<'a>(
    sublayers: &[(&str, u16)],
    filters: impl IntoIterator<Item = &'a Filter>,
    ctx: &ClassifyContext,
) -> Decision {
    let mut winners: BTreeMap<&str, &'a Filter> = BTreeMap::new();
    for f in filters {
        if f.spec.layer != ctx.layer || !conditions_match(&f.spec.conditions, ctx) {
            continue;
        }
        let slot = winners.entry(f.spec.sublayer.as_str()).or_insert(f);
        if outranks(f, slot) {
            *slot = f;
        }
    }
    let mut order: Vec<&(&str, u16)> = sublayers.iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));

    let mut current: Option<Verdict<'a>> = None;
    for (key, _) in order {
        let Some(&f) = winners.get(key) else { continue };
        let next = Verdict::of(f);
        current = Some(match current {
            None => next,
            Some(Verdict::Block(b)) => Verdict::Block(b),
            Some(Verdict::HardPermit(p)) => {
                if f.spec.action == Action::CalloutVeto {
                    next
                } else {
                    Verdict::HardPermit(p)
                }
            }
            Some(Verdict::SoftPermit(p)) => match next {
                Verdict::SoftPermit(_) => Verdict::SoftPermit(p),
                other => other,
            },
        });
        if matches!(current, Some(Verdict::Block(_))) {
            break;
        }
    }
    match current {
        None => Decision::default_permit(),
        Some(Verdict::SoftPermit(f)) => Decision::from_filter(f, Action::Permit, false),
        Some(Verdict::HardPermit(f)) => Decision::from_filter(f, Action::Permit, true),
        Some(Verdict::Block(f)) => Decision::from_filter(f, Action::Block, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wfp::filter::{FilterSpec, IpPrefix, Lifetime, SessionId, Weight};

    fn ctx() -> ClassifyContext {
        ClassifyContext::new(
            Layer::AleAuthConnectV4,
            Protocol::Tcp,
            "10.0.0.2:50000".parse().unwrap(),
            "203.0.113.10:443".parse().unwrap(),
        )
    }

    fn filter(id: u64, sublayer: &str, weight: Weight, action: Action, conds: Vec<Condition>) -> Filter {
        let mut spec = FilterSpec::new(&format!("f{id}"), Layer::AleAuthConnectV4, sublayer, action);
        spec.weight = weight;
        spec.conditions = conds;
        spec.lifetime = Lifetime::Static;
        Filter { id: FilterId(id), effective_weight: weight.effective(0), spec, session: SessionId(1) }
    }

    fn hard(mut f: Filter) -> Filter {
        f.spec.clear_action_right = true;
        f
    }

    const SUBS: [(&str, u16); 3] = [("low", 0), ("high", 0xFFFF), ("mid", 0x8000)];

    fn decide(filters: &[Filter]) -> Decision {
        arbitrate(&SUBS, filters, &ctx())
    }

    #[test]
    fn highest_weight_match_decides_in_sublayer() {
        let fs = vec![
            filter(1, "high", Weight::Range(0), Action::Block, vec![]),
            filter(2, "high", Weight::Range(15), Action::Permit, vec![]),
            filter(3, "high", Weight::Range(14), Action::CalloutVeto, vec![]),
        ];
        let d = decide(&fs);
        assert_eq!((d.action, d.filter, d.hard), (Action::Permit, Some(FilterId(2)), false));
        assert_eq!(d.filter_name.as_deref(), Some("f2"));
        assert_eq!(d.sublayer.as_deref(), Some("high"));
        // A non-matching higher filter is skipped, the next one decides.
        let fs = vec![
            filter(1, "high", Weight::Range(0), Action::Block, vec![]),
            filter(2, "high", Weight::Range(15), Action::Permit, vec![Condition::RemotePort(80)]),
        ];
        assert_eq!(decide(&fs).filter, Some(FilterId(1)));
    }

    #[test]
    fn equal_weight_lower_id_first() {
        let fs = vec![
            filter(7, "high", Weight::Range(3), Action::Block, vec![]),
            filter(5, "high", Weight::Range(3), Action::Permit, vec![]),
            filter(9, "high", Weight::Exact(3 << 60), Action::Block, vec![]),
        ];
        assert_eq!(decide(&fs).filter, Some(FilterId(5)));
    }

    #[test]
    fn soft_permit_overridden_by_block_in_other_sublayer() {
        for block_in in ["mid", "low"] {
            let fs = vec![
                filter(1, "high", Weight::Range(15), Action::Permit, vec![]),
                filter(2, block_in, Weight::Range(0), Action::Block, vec![]),
            ];
            let d = decide(&fs);
            assert_eq!((d.action, d.filter, d.hard), (Action::Block, Some(FilterId(2)), true));
            assert_eq!(d.sublayer.as_deref(), Some(block_in));
        }
        // Two soft permits: the higher sublayer's remains the decider.
        let fs = vec![
            filter(1, "low", Weight::Range(15), Action::Permit, vec![]),
            filter(2, "high", Weight::Range(0), Action::Permit, vec![]),
        ];
        assert_eq!(decide(&fs).filter, Some(FilterId(2)));
    }

    #[test]
    fn block_is_final() {
        let fs = vec![
            filter(1, "high", Weight::Range(0), Action::Block, vec![]),
            hard(filter(2, "mid", Weight::Range(15), Action::Permit, vec![])),
            filter(3, "low", Weight::Range(15), Action::CalloutVeto, vec![]),
        ];
        let d = decide(&fs);
        assert_eq!((d.action, d.filter, d.hard), (Action::Block, Some(FilterId(1)), true));
    }

    #[test]
    fn hard_permit_survives_block_but_not_veto() {
        let fs = vec![
            hard(filter(1, "high", Weight::Range(0), Action::Permit, vec![])),
            filter(2, "low", Weight::Range(15), Action::Block, vec![]),
        ];
        let d = decide(&fs);
        assert_eq!((d.action, d.filter, d.hard), (Action::Permit, Some(FilterId(1)), true));
        let fs = vec![
            hard(filter(1, "high", Weight::Range(0), Action::Permit, vec![])),
            filter(2, "mid", Weight::Range(15), Action::Block, vec![]),
            filter(3, "low", Weight::Range(0), Action::CalloutVeto, vec![]),
        ];
        let d = decide(&fs);
        assert_eq!((d.action, d.filter), (Action::Block, Some(FilterId(3))));
        // A soft permit followed by a hard permit: the hard one decides and protects.
        let fs = vec![
            filter(1, "high", Weight::Range(0), Action::Permit, vec![]),
            hard(filter(2, "mid", Weight::Range(0), Action::Permit, vec![])),
            filter(3, "low", Weight::Range(0), Action::Block, vec![]),
        ];
        let d = decide(&fs);
        assert_eq!((d.action, d.filter, d.hard), (Action::Permit, Some(FilterId(2)), true));
        // A hard permit only wins its own sublayer if it is that sublayer's first match.
        let fs = vec![
            hard(filter(1, "high", Weight::Range(1), Action::Permit, vec![])),
            filter(2, "high", Weight::Range(2), Action::Block, vec![]),
        ];
        assert_eq!(decide(&fs).filter, Some(FilterId(2)));
    }

    #[test]
    fn nothing_matched_is_permit() {
        assert_eq!(decide(&[]), Decision::default_permit());
        let fs = vec![
            filter(1, "high", Weight::Range(0), Action::Block, vec![Condition::RemotePort(22)]),
            // Another layer's block-all is not consulted.
            Filter {
                spec: FilterSpec::new("v6", Layer::AleAuthConnectV6, "high", Action::Block),
                ..filter(2, "high", Weight::Auto, Action::Block, vec![])
            },
            // A filter in an unlisted sublayer is ignored.
            filter(3, "ghost", Weight::Range(0), Action::Block, vec![]),
        ];
        let d = decide(&fs);
        assert!(d.is_permit() && d.filter.is_none() && !d.hard);
    }

    #[test]
    fn sublayer_order_uses_weight_not_listing() {
        // "high" (0xFFFF) is visited before "low" (0) although listed later.
        let fs = vec![
            filter(1, "low", Weight::Range(0), Action::CalloutVeto, vec![]),
            filter(2, "high", Weight::Range(0), Action::Block, vec![]),
        ];
        assert_eq!(decide(&fs).filter, Some(FilterId(2)));
    }

    #[test]
    fn condition_logic() {
        let c = ctx();
        let port = |p| Condition::RemotePort(p);
        let addr = |s: &str| Condition::RemoteAddr(s.parse::<IpPrefix>().unwrap());
        assert!(conditions_match(&[], &c));
        // OR within the same field.
        assert!(conditions_match(&[port(80), port(443)], &c));
        assert!(!conditions_match(&[port(80), port(8080)], &c));
        // AND across fields.
        assert!(conditions_match(&[port(443), addr("203.0.113.0/24")], &c));
        assert!(!conditions_match(&[port(443), addr("198.51.100.0/24")], &c));
        assert!(conditions_match(&[port(443), port(1), addr("10.0.0.0/8"), addr("203.0.113.10")], &c));
        assert!(!conditions_match(&[port(443), Condition::Protocol(Protocol::Udp)], &c));
        assert!(conditions_match(
            &[Condition::LocalAddr("10.0.0.0/8".parse().unwrap()), Condition::LocalPort(50000)],
            &c
        ));
        assert!(!conditions_match(&[Condition::Loopback], &c));
        assert!(!conditions_match(&[Condition::InterfaceLuid(7)], &c));
        let mut c2 = c.clone();
        c2.loopback = true;
        c2.interface_luid = Some(7);
        assert!(conditions_match(&[Condition::Loopback, Condition::InterfaceLuid(7)], &c2));
        assert!(!conditions_match(&[Condition::InterfaceLuid(8)], &c2));
    }

    #[test]
    fn app_id_and_user_sid_conditions() {
        let svc = AppId::from_image_path(r"C:\Program Files\Agent\agent.exe").unwrap();
        let copy = AppId::from_image_path(r"C:\Users\eve\Downloads\agent.exe").unwrap();
        let svc_sid = "S-1-5-80-1234";
        let app = Condition::AppId(svc.clone());
        let sid = Condition::UserSid(svc_sid.to_string());
        let mut c = ctx();
        assert!(!conditions_match(std::slice::from_ref(&app), &c));
        c.app_id = Some(copy);
        assert!(!conditions_match(std::slice::from_ref(&app), &c), "copy at another path must not match");
        c.app_id = Some(svc);
        // A different process from the same image matches on APP_ID alone...
        c.user_sids = vec!["S-1-5-21-1-2-3-1001".into()];
        assert!(conditions_match(std::slice::from_ref(&app), &c));
        // ...but not once the service SID is also required.
        assert!(!conditions_match(&[app.clone(), sid.clone()], &c));
        c.user_sids.push(svc_sid.to_lowercase());
        assert!(conditions_match(&[app, sid], &c));
    }

    #[test]
    fn mac_frame_contexts_and_the_vm2vm_flag() {
        let out = ClassifyContext::mac_frame(Direction::Outbound, Some(9), true);
        assert_eq!((out.layer, out.vm2vm, out.interface_luid), (Layer::OutboundMacFrameNative, true, Some(9)));
        assert!(conditions_match(&[Condition::Vm2Vm, Condition::InterfaceLuid(9)], &out));
        let inbound = ClassifyContext::mac_frame(Direction::Inbound, None, false);
        assert_eq!(inbound.layer, Layer::InboundMacFrameNative);
        assert!(!conditions_match(&[Condition::Vm2Vm], &inbound));
        // Which fields exist where.
        assert!(
            Condition::Vm2Vm.fits(Layer::OutboundMacFrameNative) && !Condition::Vm2Vm.fits(Layer::AleAuthConnectV4)
        );
        assert!(!Condition::Loopback.fits(Layer::InboundMacFrameNative));
        assert!(Condition::InterfaceLuid(1).fits(Layer::InboundMacFrameNative));
        assert!(Condition::RemotePort(1).fits(Layer::AleAuthRecvAcceptV6));
    }

    #[test]
    fn icmp_type_and_code_use_port_fields() {
        let mut c = ClassifyContext::new(
            Layer::AleAuthConnectV6,
            Protocol::IcmpV6,
            "[fe80::1]:135".parse().unwrap(),
            "[ff02::1]:0".parse().unwrap(),
        );
        let ns = [Condition::Protocol(Protocol::IcmpV6), Condition::LocalPort(135), Condition::RemotePort(0)];
        assert!(conditions_match(&ns, &c));
        c.local.set_port(128);
        assert!(!conditions_match(&ns, &c));
    }
}
