//! `report.html`: one self-contained page per `lab run`.
//!
//! A summary table, then per scenario its description, why it failed, its
//! violations, findings and replay command, and a timeline: one lane
//! (column) per host the trace names, one row per event in simulated time,
//! grouped by step with the step's expectation and outcome. Violations are
//! highlighted in place with the oracle's explanation.
//!
//! The page fetches nothing (inline CSS, no script, no image, no font) and
//! says so to the browser with a Content-Security-Policy. Every string
//! from scenarios and traces is escaped, control and bidi characters shown
//! as `\u{..}`. The output depends only on the
//! runs: the same runs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::http::form;
use crate::oracle::Violation;
use crate::text::visible;
use crate::trace::{Direction, Event, EventBody, GatewayVerdict, Verdict, format_offset};
use crate::world::RunReport;

use super::{replay_command, status};

/// Text for the page: control and bidi characters shown escaped
/// ([`visible`]), then HTML-escaped. Every string of the page goes through it.
fn escape(s: &str) -> String {
    form::escape(&visible(s))
}

/// What the page may load: nothing but its own inline style.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// A run of this many routine rows (no violation, nothing notable) or more
/// is folded into a `<details>`, keeping its first and last rows in view.
const FOLD_AT: usize = 12;
/// Rows kept in view before a fold.
const FOLD_HEAD: usize = 3;
/// Rows kept in view after a fold.
const FOLD_TAIL: usize = 2;
/// A step with more rows than this (and no failure or violation) starts closed.
const OPEN_UP_TO: usize = 40;
/// A pause between two rows this long (ms) or longer gets a marker.
const GAP_MS: u64 = 1000;

const STYLE: &str = "\
:root{--ok:#1e7b34;--bad:#b3261e;--line:#d9dce1;--muted:#5f6368}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:1.5rem 2rem;color:#202124;background:#fff;line-height:1.35}
h1{margin:0 0 .3rem;font-size:1.6rem}h2{margin:0;font-size:1.25rem}h3{font-size:1rem;margin:1rem 0 .3rem}
code,pre,.mono{font-family:ui-monospace,'SFMono-Regular',Menlo,Consolas,monospace;font-size:.85em}
pre{margin:.2rem 0;white-space:pre-wrap;word-break:break-all}
a{color:#1a56c4}
.overall{font-size:1.05rem;margin:.2rem 0 1rem}.overall.pass b{color:var(--ok)}.overall.fail b{color:var(--bad)}
table.summary{border-collapse:collapse;width:100%;font-size:.9rem;margin-bottom:1rem}
table.summary th,table.summary td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
table.summary th{background:#f1f3f4;position:sticky;top:0}
table.summary tr.fail,table.summary tr.error{background:#fce8e6}
table.summary tr.fail td:first-child,table.summary tr.error td:first-child{border-left:5px solid var(--bad)}
table.summary tr.pass td:first-child{border-left:5px solid transparent}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;font-weight:600;color:#fff}
.badge.pass{background:var(--ok)}.badge.fail,.badge.error{background:var(--bad)}
.vlink{display:inline-block;margin-right:.3rem;color:var(--bad);font-weight:600}
.vlink.expected{color:#a05a00}
.legend{font-size:.8rem;color:var(--muted);margin:.5rem 0 1.5rem}.legend .ev{display:inline-block;margin-right:.6rem}
section.scenario{border-top:3px solid var(--line);margin-top:2rem;padding-top:1rem}
section.scenario.fail,section.scenario.error{border-top-color:var(--bad)}
.meta{color:var(--muted);font-size:.85rem;margin:.3rem 0}
.desc{max-width:60rem;margin:.5rem 0}
ul.failures li,ul.violations li{color:var(--bad)}
ul.findings li{color:#7a4b00}
li{margin:.15rem 0}
.replay{background:#f1f3f4;padding:.35rem .6rem;border-radius:4px;display:inline-block}
.timeline{margin-top:.8rem}
table.tl{border-collapse:collapse;width:100%;table-layout:fixed;font-size:.78rem}
table.tl td,table.tl th{padding:.12rem .35rem;vertical-align:top;border-left:1px solid var(--line);overflow-wrap:anywhere}
col.ct{width:8.2rem}col.wide{width:30%}
table.lanes{position:sticky;top:0;z-index:2;background:#fff}
table.lanes th{background:#e8eaed;text-align:left;font-size:.85rem;padding:.3rem .35rem;border-bottom:2px solid #9aa0a6}
td.t{color:var(--muted);white-space:nowrap;font-variant-numeric:tabular-nums}
td.t a{color:var(--muted);text-decoration:none}
details.step{margin:0;border-bottom:1px solid var(--line)}
details.step>summary{cursor:pointer;padding:.3rem .4rem;background:#f8f9fa;font-size:.85rem;list-style-position:inside}
details.step.ok>summary{border-left:5px solid var(--ok)}
details.step.bad>summary{border-left:5px solid var(--bad);background:#fce8e6}
details.step.info>summary{border-left:5px solid #9aa0a6}
.sn{font-weight:700;margin-right:.4rem}.st{color:var(--muted);margin-right:.4rem}.sl{color:var(--muted);font-size:.8em}
.verdict{margin-left:.5rem}.verdict.ok{color:var(--ok)}.verdict.bad{color:var(--bad);font-weight:700}
.ev{border-left:3px solid #9aa0a6;padding-left:.3rem}
.k{display:inline-block;min-width:2.8rem;margin-right:.25rem;font-size:.7rem;font-weight:700;text-transform:uppercase;color:var(--muted)}
.ev.permit{border-color:#34a853}.ev.block{border-color:#ea4335;background:#fdf0ef}.ev.deny{border-color:#f29900}
.ev.state{border-color:#1a73e8;background:#e8f0fe}.ev.fw{border-color:#9334e6}.ev.data{border-color:#dadce0;color:var(--muted)}
.n{font-weight:700;color:#202124;margin-left:.3rem}
tr.viol td{background:#f9d3cf}tr.viol td.t{box-shadow:inset 5px 0 var(--bad)}tr.viol .ev{border-color:var(--bad);background:transparent}
tr.vrow td{background:#b3261e;color:#fff;font-size:.8rem;padding:.25rem .4rem}
tr.vrow td a{color:#fff}
tr.gap td{color:var(--muted);font-style:italic;text-align:center;background:repeating-linear-gradient(90deg,#fff 0 6px,#f1f3f4 6px 12px)}
details.fold>summary{cursor:pointer;color:var(--muted);font-size:.78rem;padding:.1rem .4rem .1rem 8.6rem;background:#fafafa}
details.fw{display:inline-block;vertical-align:top}details.fw summary{cursor:pointer}
details.fw ul{margin:.1rem 0 .1rem 1rem;padding:0}
";

/// The HTML report for `runs`; `trace_names` are their trace files'
/// names (see [`super::trace_names`]), linked from each scenario.
pub fn html(runs: &[RunReport], trace_names: &[String]) -> String {
    let mut out = String::new();
    let passed = runs.iter().filter(|r| r.passed()).count();
    let failed = runs.len() - passed;
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Lockstep run: {passed} passed, {failed} failed</title><style>{STYLE}</style></head><body>\n"
    );
    out.push_str("<h1>Lockstep run</h1>");
    let events: usize = runs.iter().map(|r| r.trace.events.len()).sum();
    let _ = writeln!(
        out,
        "<p class=\"overall {}\" id=\"overall\"><b>{passed} passed, {failed} failed</b> · {} scenarios · {events} events \
         · lockstep {}</p>",
        if failed == 0 { "pass" } else { "fail" },
        runs.len(),
        env!("CARGO_PKG_VERSION")
    );
    summary_table(&mut out, runs);
    out.push_str(
        "<p class=\"legend\">Timeline: one column per host, simulated time on the left. \
         <span class=\"ev permit\">permitted flow / forwarded request</span>\
         <span class=\"ev block\">blocked flow</span><span class=\"ev deny\">denied request</span>\
         <span class=\"ev state\">session, agent and device state</span><span class=\"ev fw\">firewall change</span>\
         <span class=\"ev data\">data (consecutive packets counted)</span> \
         Long runs of routine events are folded; red rows are invariant violations.</p>\n",
    );
    for (i, run) in runs.iter().enumerate() {
        let name = trace_names.get(i).map(String::as_str).unwrap_or("");
        scenario_section(&mut out, i, run, name);
    }
    out.push_str("</body></html>\n");
    out
}

fn summary_table(out: &mut String, runs: &[RunReport]) {
    out.push_str(
        "<table class=\"summary\" id=\"summary\"><thead><tr><th>scenario</th><th>seed</th><th>steps</th>\
         <th>violations</th><th>sim time</th><th>events</th><th>result</th><th>replay</th></tr></thead><tbody>\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let st = status(r);
        let steps_ok = r.steps.iter().filter(|s| s.ok).count();
        let _ = write!(
            out,
            "<tr class=\"{st}\"><td><a href=\"#s{i}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{steps_ok}/{}</td><td>",
            escape(&r.scenario),
            r.seed,
            r.steps.len()
        );
        if r.violations.is_empty() {
            out.push('0');
        } else {
            let _ = write!(out, "{} ", r.violations.len());
            for (j, v) in r.violations.iter().enumerate() {
                let expected = r.expected_violations.contains(&v.invariant);
                let _ = write!(
                    out,
                    "<a class=\"vlink{}\" href=\"#s{i}-v{j}\" title=\"{}\">{}&nbsp;#{}</a>",
                    if expected { " expected" } else { "" },
                    escape(&v.to_string()),
                    escape(&v.invariant),
                    v.seq
                );
            }
            if !r.expected_violations.is_empty() {
                let _ = write!(out, "<br><small>expected: {}</small>", escape(&r.expected_violations.join(", ")));
            }
        }
        let _ = writeln!(
            out,
            "</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td><span class=\"badge {st}\">{}</span></td>\
             <td><code>{}</code></td></tr>",
            format_offset(r.sim_ms).trim_start_matches('+'),
            r.trace.events.len(),
            st.to_uppercase(),
            escape(&replay_command(&r.file, r.seed))
        );
    }
    out.push_str("</tbody></table>\n");
}

fn scenario_section(out: &mut String, i: usize, run: &RunReport, trace_name: &str) {
    let st = status(run);
    let _ = write!(
        out,
        "<section class=\"scenario {st}\" id=\"s{i}\"><h2>{} <span class=\"badge {st}\">{}</span></h2>",
        escape(&run.scenario),
        st.to_uppercase()
    );
    let lab = run.trace.events.iter().find_map(|e| match &e.body {
        EventBody::RunStarted { lab, .. } => Some(lab.as_str()),
        _ => None,
    });
    let _ = write!(
        out,
        "<p class=\"meta\">file <code>{}</code> · seed {}{} · {} steps · {} events · sim time {}",
        escape(&run.file),
        run.seed,
        lab.map(|l| format!(" · lab <code>{}</code>", escape(l))).unwrap_or_default(),
        run.steps.len(),
        run.trace.events.len(),
        format_offset(run.sim_ms)
    );
    if !trace_name.is_empty() {
        let _ = write!(out, " · trace <a href=\"traces/{0}.jsonl\">traces/{0}.jsonl</a>", escape(trace_name));
    }
    out.push_str("</p>");
    // The description's blank lines part paragraphs; its other line breaks are the file's wrapping.
    for para in run.description.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")) {
        if !para.is_empty() {
            let _ = write!(out, "<p class=\"desc\">{}</p>", escape(&para));
        }
    }
    let failures = run.failures();
    if !failures.is_empty() {
        out.push_str("<h3>Why it fails</h3><ul class=\"failures\">");
        for f in &failures {
            let _ = write!(out, "<li>{}</li>", escape(f));
        }
        out.push_str("</ul>");
    }
    // Violations are placed in the timeline when their event is there;
    // the list links to them.
    let placed: BTreeSet<u64> = run.trace.events.iter().map(|e| e.seq).collect();
    if !run.violations.is_empty() {
        let _ = write!(out, "<h3>Violations ({})</h3>", run.violations.len());
        if !run.expected_violations.is_empty() {
            let _ = write!(
                out,
                "<p class=\"meta\">The scenario expects violations of {}: it demonstrates a known-bad configuration.</p>",
                escape(&run.expected_violations.join(", "))
            );
        }
        out.push_str("<ul class=\"violations\">");
        for (j, v) in run.violations.iter().enumerate() {
            if placed.contains(&v.seq) {
                let _ = write!(out, "<li><a href=\"#s{i}-v{j}\">{}</a></li>", escape(&v.to_string()));
            } else {
                let _ = write!(out, "<li id=\"s{i}-v{j}\">{}</li>", escape(&v.to_string()));
            }
        }
        out.push_str("</ul>");
    }
    if !run.findings.is_empty() {
        out.push_str("<h3>Findings</h3><ul class=\"findings\">");
        for f in &run.findings {
            let _ = write!(out, "<li>{}</li>", escape(f));
        }
        out.push_str("</ul>");
    }
    let _ = write!(out, "<h3>Replay</h3><pre class=\"replay\">{}</pre>", escape(&replay_command(&run.file, run.seed)));
    timeline(out, i, run);
    out.push_str("</section>\n");
}

/// A step of the run, or what happens before the first.
struct Segment {
    /// `None`: before the first step.
    step: Option<usize>,
    action: String,
    started_t: u64,
    outcome: Option<(String, Option<String>, bool)>,
    rows: Vec<Row>,
}

/// One row of the timeline: an event, or consecutive alike events of one host.
struct Row {
    lane: usize,
    seq: u64,
    t0: u64,
    t1: u64,
    count: usize,
    desc: Desc,
    violations: Vec<usize>,
    data: Option<DataSum>,
}

#[derive(Default)]
struct DataSum {
    out: u64,
    inb: u64,
    flows: BTreeSet<u64>,
}

/// How an event shows in its lane.
struct Desc {
    /// Short label.
    kind: &'static str,
    /// CSS class.
    class: &'static str,
    /// Escaped HTML.
    html: String,
    /// Notable: never folded away, never merged.
    key: bool,
}

fn desc(kind: &'static str, class: &'static str, key: bool, html: String) -> Desc {
    Desc { kind, class, html, key }
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(escape).unwrap_or_else(|| "-".into())
}

fn describe(body: &EventBody) -> Desc {
    use EventBody as B;
    match body {
        B::RunStarted { scenario, seed, lab, .. } => {
            desc("run", "state", true, format!("run of {} started: lab {}, seed {seed}", escape(scenario), escape(lab)))
        }
        B::StepStarted { step, action } => desc("step", "state", true, format!("step {step}: {}", escape(action))),
        B::StepFinished { step, outcome, .. } => {
            desc("step", "state", true, format!("step {step} finished: {}", escape(outcome)))
        }
        B::RunFinished { sim_ms } => desc("run", "state", true, format!("run finished at {}", format_offset(*sim_ms))),
        B::DeviceBooted { device, persistent_filters, boot_time_filters } => desc(
            "boot",
            "state",
            true,
            format!(
                "device {} powered on: {persistent_filters} persistent, {boot_time_filters} boot-time filters",
                escape(device)
            ),
        ),
        B::BootStage { stage } => desc("boot", "", false, format!("boot stage <b>{}</b>", escape(stage))),
        B::TransitionBegan { kind, detail, user } => desc(
            "fault",
            "state",
            true,
            format!(
                "<b>{}</b> began: {}{}",
                escape(kind),
                escape(detail),
                user.as_deref().map(|u| format!(" (console user {})", escape(u))).unwrap_or_default()
            ),
        ),
        B::AppTraffic { process, url, outcome } => {
            desc("app", "", false, format!("{} fetched {}: {}", escape(process), escape(url), escape(outcome)))
        }
        B::LeverOpened { lever, scope, until_t } => desc(
            "lever",
            "state",
            true,
            format!(
                "lever <b>{}</b> opened until {}: {}",
                escape(lever),
                format_offset(*until_t),
                escape(&scope.join(", "))
            ),
        ),
        B::LeverClosed { lever, reason } => {
            desc("lever", "state", true, format!("lever <b>{}</b> closed: {}", escape(lever), escape(reason)))
        }
        B::LeverRefused { lever, reason } => {
            desc("lever", "deny", true, format!("lever <b>{}</b> refused: {}", escape(lever), escape(reason)))
        }
        B::ProcessStarted { pid, name, image, user } => desc(
            "proc",
            "",
            false,
            format!("<span title=\"{}\">{} started</span> (pid {pid}, {})", escape(image), escape(name), escape(user)),
        ),
        B::ProcessExited { pid, name, reason } => {
            desc("proc", "", false, format!("{} exited (pid {pid}): {}", escape(name), escape(reason)))
        }
        B::WfpSessionOpened { session, pid, name, dynamic } => desc(
            "bfe",
            "fw",
            false,
            format!(
                "BFE session {session} opened by pid {pid}: {}{}",
                escape(name),
                if *dynamic { " (dynamic)" } else { "" }
            ),
        ),
        B::WfpSessionClosed { session, reason } => {
            desc("bfe", "fw", true, format!("BFE session {session} closed: {}", escape(reason)))
        }
        B::WfpCommitted { session, added, deleted, reason } => {
            let mut html = format!(
                "<details class=\"fw\"><summary>firewall: <b>+{} −{}</b> filters (session {session}{})</summary><ul>",
                added.len(),
                deleted.len(),
                reason.as_deref().map(|r| format!("; {}", escape(r))).unwrap_or_default()
            );
            for (sign, list) in [("+", added), ("−", deleted)] {
                for f in list {
                    let _ = write!(
                        html,
                        "<li>{sign} {} <span class=\"sl\">{} · {} · {}</span></li>",
                        escape(&f.name),
                        escape(&f.action),
                        escape(&f.layer),
                        escape(&f.lifetime)
                    );
                }
            }
            html.push_str("</ul></details>");
            desc("fw", "fw", true, html)
        }
        B::FlowDecision { flow, layer, pid, process, protocol, remote, verdict, filter, reauth, .. } => {
            let (word, class) = match verdict {
                Verdict::Permit => ("PERMIT", "permit"),
                Verdict::Block => ("BLOCK", "block"),
            };
            desc(
                "flow",
                class,
                *verdict == Verdict::Block,
                format!(
                    "<b>{word}</b>{} {} → {} {}{} <span class=\"sl\">(pid {pid}; {}; {})</span>",
                    if *reauth { " re-auth" } else { "" },
                    escape(process),
                    escape(&remote.to_string()),
                    escape(protocol),
                    flow.map(|f| format!(", flow {f}")).unwrap_or_default(),
                    escape(layer),
                    filter.as_deref().map(|f| format!("filter {}", escape(f))).unwrap_or_else(|| "no filter".into())
                ),
            )
        }
        B::FlowData { flow, direction, bytes } => desc(
            "data",
            "data",
            false,
            format!(
                "{bytes} B {} on flow {flow}",
                match direction {
                    Direction::Out => "out",
                    Direction::In => "in",
                }
            ),
        ),
        B::FlowClosed { flow, reason } => desc("flow", "", false, format!("flow {flow} closed: {}", escape(reason))),
        B::AgentState { from, to, reason } => {
            desc("agent", "state", true, format!("agent {} → <b>{}</b>: {}", escape(from), escape(to), escape(reason)))
        }
        B::IdpLogin { user, result } => {
            desc("login", "", false, format!("login of {}: {}", escape(user), escape(result)))
        }
        B::IdpTokenIssued { sub, client_id, alg, kid, amr, forged } => desc(
            "token",
            if forged.is_some() { "deny" } else { "" },
            forged.is_some(),
            format!(
                "tokens for {} to {} ({}, kid {}, amr [{}]){}",
                escape(sub),
                escape(client_id),
                escape(alg),
                escape(kid),
                escape(&amr.join(", ")),
                forged.as_deref().map(|f| format!(" <b>FORGED: {}</b>", escape(f))).unwrap_or_default()
            ),
        ),
        B::IdpRejected { endpoint, reason } => {
            desc("idp", "deny", false, format!("refused {}: {}", escape(endpoint), escape(reason)))
        }
        B::IdpKeysPublished { kids, signing, why } => desc(
            "keys",
            "fw",
            true,
            format!(
                "keys published ({}): [{}], signing with {}",
                escape(why),
                escape(&kids.join(", ")),
                escape(signing)
            ),
        ),
        B::IdpMisbehaviour { what } => desc("knob", "deny", true, format!("misbehaviour: {}", escape(what))),
        B::JwksFetched { url, reason, result, kids, ttl_ms } => desc(
            "jwks",
            "",
            false,
            format!(
                "JWKS {} fetched ({}): {}, [{}], trusted {} ms",
                escape(url),
                escape(reason),
                escape(result),
                escape(&kids.join(", ")),
                ttl_ms
            ),
        ),
        B::TokenAccepted { kid, alg, .. } => {
            desc("token", "permit", false, format!("token accepted ({}, kid {})", escape(alg), opt(kid)))
        }
        B::TokenRejected { kid, alg, reason, .. } => desc(
            "token",
            "deny",
            false,
            format!("token rejected ({}, kid {}): {}", escape(alg), opt(kid), escape(reason)),
        ),
        B::SessionIssued { sid, user, device, expires_t, groups } => desc(
            "session",
            "state",
            true,
            format!(
                "session <b>{}</b> issued to {}{}{} until {}",
                escape(sid),
                escape(user),
                device.as_deref().map(|d| format!(" on device {}", escape(d))).unwrap_or_default(),
                if groups.is_empty() { String::new() } else { format!(" [{}]", escape(&groups.join(", "))) },
                format_offset(*expires_t)
            ),
        ),
        B::SessionRevoked { sid, reason } => {
            desc("session", "state", true, format!("session <b>{}</b> revoked: {}", escape(sid), escape(reason)))
        }
        B::GatewayDecision { app, method, path, peer, verdict, status, sid, user, reason, device, mfa } => {
            let (word, class, key) = match verdict {
                GatewayVerdict::Forward => ("FORWARD", "permit", true),
                GatewayVerdict::Redirect => ("REDIRECT", "", false),
                GatewayVerdict::Serve => ("SERVE", "", false),
                GatewayVerdict::Unauthorized => ("UNAUTHORIZED", "deny", true),
                GatewayVerdict::Forbidden => ("FORBIDDEN", "deny", true),
                GatewayVerdict::Reject => ("REJECT", "deny", true),
                GatewayVerdict::BadGateway => ("BAD GATEWAY", "deny", true),
            };
            let mut html = format!(
                "<b>{word}</b> {} {}{} → {status} <span class=\"sl\">from {}",
                escape(method),
                app.as_deref().map(|a| format!("{}:", escape(a))).unwrap_or_default(),
                escape(path),
                escape(&peer.to_string())
            );
            if let Some(u) = user {
                let _ = write!(html, ", {} ({})", escape(u), opt(sid));
            }
            if let Some(d) = device {
                let _ = write!(html, ", device {}", escape(d));
            }
            if let Some(m) = mfa {
                let _ = write!(html, ", mfa {}", escape(m));
            }
            let _ = write!(html, "; {}</span>", escape(reason));
            desc("req", class, key, html)
        }
        B::GatewayLoginRejected { reason } => {
            desc("login", "deny", false, format!("login rejected: {}", escape(reason)))
        }
        B::MfaEnrolled { user, factor, credential, aaguid, first, peer } => desc(
            "mfa",
            "state",
            true,
            format!(
                "{} enrolled {} {}{}{} from {}",
                escape(user),
                escape(&format!("{factor:?}").to_lowercase()),
                escape(credential),
                aaguid.as_deref().map(|a| format!(" (AAGUID {})", escape(a))).unwrap_or_default(),
                if *first { " (first factor)" } else { "" },
                escape(&peer.to_string())
            ),
        ),
        B::MfaRejected { user, factor, stage, reason, peer } => desc(
            "mfa",
            "deny",
            true,
            format!(
                "{} refused for {}{} from {}: {}",
                escape(stage),
                opt(user),
                factor.map(|f| format!(" ({})", escape(&format!("{f:?}").to_lowercase()))).unwrap_or_default(),
                escape(&peer.to_string()),
                escape(reason)
            ),
        ),
        B::MfaVerified { id, user, sid, factor, method, peer, .. } => desc(
            "mfa",
            "permit",
            true,
            format!(
                "<b>verified</b> {} by {} ({}) for session {} from {}: evidence {}",
                escape(user),
                escape(&format!("{factor:?}").to_lowercase()),
                escape(method),
                escape(sid),
                escape(&peer.to_string()),
                escape(id)
            ),
        ),
        B::OriginRequest { app, peer, status, user, reason, mfa, .. } => desc(
            "origin",
            if (200..300).contains(status) { "permit" } else { "deny" },
            false,
            format!(
                "{} answered {status} to {}{}{}: {}",
                escape(app),
                escape(&peer.to_string()),
                user.as_deref().map(|u| format!(", user {}", escape(u))).unwrap_or_default(),
                mfa.map(|m| format!(", mfa {}", escape(&format!("{m:?}").to_lowercase()))).unwrap_or_default(),
                escape(reason)
            ),
        ),
    }
}

/// Whether an event only marks the run's structure (shown as step headers).
fn structural(e: &Event) -> bool {
    e.host == "lab"
        && matches!(
            e.body,
            EventBody::RunStarted { .. }
                | EventBody::StepStarted { .. }
                | EventBody::StepFinished { .. }
                | EventBody::RunFinished { .. }
        )
}

/// The lanes: the device first, then every other host in order of first appearance.
fn lanes(run: &RunReport) -> Vec<String> {
    let device = run.trace.events.iter().find_map(|e| match &e.body {
        EventBody::RunStarted { spec, .. } => Some(spec.device_host.clone()),
        _ => None,
    });
    let mut out: Vec<String> = Vec::new();
    let hosts = run.trace.events.iter().filter(|e| !structural(e)).map(|e| &e.host);
    if let Some(d) = device.filter(|d| run.trace.events.iter().any(|e| !structural(e) && &e.host == d)) {
        out.push(d);
    }
    for h in hosts {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

fn segments(run: &RunReport, lanes: &[String], by_seq: &BTreeMap<u64, Vec<usize>>) -> Vec<Segment> {
    let lane_of: BTreeMap<&str, usize> = lanes.iter().enumerate().map(|(i, h)| (h.as_str(), i)).collect();
    let mut segs = vec![Segment { step: None, action: "setup".into(), started_t: 0, outcome: None, rows: Vec::new() }];
    for e in &run.trace.events {
        let violations = by_seq.get(&e.seq).cloned().unwrap_or_default();
        if structural(e) && violations.is_empty() {
            match &e.body {
                EventBody::StepStarted { step, action } => segs.push(Segment {
                    step: Some(*step),
                    action: action.clone(),
                    started_t: e.t,
                    outcome: None,
                    rows: Vec::new(),
                }),
                EventBody::StepFinished { outcome, expected, ok, .. } => {
                    if let Some(seg) = segs.last_mut() {
                        seg.outcome = Some((outcome.clone(), expected.clone(), *ok));
                    }
                }
                _ => {}
            }
            continue;
        }
        // A structural event the oracle blames gets the first lane.
        let lane = lane_of.get(e.host.as_str()).copied().unwrap_or(0);
        let Some(seg) = segs.last_mut() else { continue };
        let d = describe(&e.body);
        if let EventBody::FlowData { flow, direction, bytes } = &e.body {
            let bytes = *bytes as u64;
            if violations.is_empty()
                && let Some(last) = seg.rows.last_mut()
                && last.lane == lane
                && last.violations.is_empty()
                && let Some(sum) = last.data.as_mut()
            {
                match direction {
                    Direction::Out => sum.out += bytes,
                    Direction::In => sum.inb += bytes,
                }
                sum.flows.insert(*flow);
                last.count += 1;
                last.t1 = e.t;
                continue;
            }
            let mut sum = DataSum::default();
            match direction {
                Direction::Out => sum.out = bytes,
                Direction::In => sum.inb = bytes,
            }
            sum.flows.insert(*flow);
            seg.rows.push(Row { lane, seq: e.seq, t0: e.t, t1: e.t, count: 1, desc: d, violations, data: Some(sum) });
            continue;
        }
        if !d.key
            && violations.is_empty()
            && let Some(last) = seg.rows.last_mut()
            && last.lane == lane
            && last.violations.is_empty()
            && last.data.is_none()
            && last.desc.html == d.html
        {
            last.count += 1;
            last.t1 = e.t;
            continue;
        }
        seg.rows.push(Row { lane, seq: e.seq, t0: e.t, t1: e.t, count: 1, desc: d, violations, data: None });
    }
    if segs.first().is_some_and(|s| s.rows.is_empty()) {
        segs.remove(0);
    }
    segs
}

/// The columns: time, then the lanes; the first (the device, the busiest
/// host) is wider when there are more than two.
fn colgroup(out: &mut String, lanes: usize) {
    out.push_str("<colgroup><col class=\"ct\">");
    for lane in 0..lanes {
        out.push_str(if lane == 0 && lanes > 2 { "<col class=\"wide\">" } else { "<col>" });
    }
    out.push_str("</colgroup>");
}

fn timeline(out: &mut String, i: usize, run: &RunReport) {
    let lanes = lanes(run);
    let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (j, v) in run.violations.iter().enumerate() {
        by_seq.entry(v.seq).or_default().push(j);
    }
    let segs = segments(run, &lanes, &by_seq);
    let _ = write!(out, "<h3>Timeline</h3><div class=\"timeline\" id=\"s{i}-timeline\">");
    if lanes.is_empty() {
        out.push_str("<p class=\"meta\">The trace has no events.</p></div>");
        return;
    }
    let _ = write!(out, "<table class=\"tl lanes\">");
    colgroup(out, lanes.len());
    out.push_str("<thead><tr><th>time</th>");
    for h in &lanes {
        let _ = write!(out, "<th class=\"lane\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead></table>");
    for seg in &segs {
        segment(out, i, run, &lanes, seg);
    }
    out.push_str("</div>");
}

fn segment(out: &mut String, i: usize, run: &RunReport, lanes: &[String], seg: &Segment) {
    let bad = seg.rows.iter().any(|r| !r.violations.is_empty()) || seg.outcome.as_ref().is_some_and(|o| !o.2);
    let class = match &seg.outcome {
        _ if bad => "bad",
        Some((_, Some(_), true)) => "ok",
        _ => "info",
    };
    let open = bad || seg.rows.len() <= OPEN_UP_TO;
    let _ = write!(
        out,
        "<details class=\"step {class}\"{}{}><summary>",
        if open { " open" } else { "" },
        seg.step.map(|s| format!(" id=\"s{i}-step{s}\"")).unwrap_or_default()
    );
    match seg.step {
        Some(n) => {
            let line = run.steps.iter().find(|s| s.index == n).map(|s| s.line);
            let _ = write!(
                out,
                "<span class=\"sn\">Step {n}</span><span class=\"st\">{}</span>{}{}",
                format_offset(seg.started_t),
                escape(&seg.action),
                line.map(|l| format!(" <span class=\"sl\">(line {l})</span>")).unwrap_or_default()
            );
        }
        None => {
            let _ = write!(out, "<span class=\"sn\">Setup</span><span class=\"st\">{}</span>", format_offset(0));
        }
    }
    match &seg.outcome {
        Some((outcome, Some(expected), ok)) => {
            let _ = write!(
                out,
                "<span class=\"verdict {}\">expected <code>{}</code>, got <code>{}</code> {}</span>",
                if *ok { "ok" } else { "bad" },
                escape(expected),
                escape(outcome),
                if *ok { "✓" } else { "✗ FAILED" }
            );
        }
        Some((outcome, None, _)) => {
            let _ = write!(out, "<span class=\"verdict\">→ <code>{}</code></span>", escape(outcome));
        }
        None if seg.step.is_some() => out.push_str("<span class=\"verdict bad\">did not finish</span>"),
        None => {}
    }
    let _ = write!(out, " <span class=\"sl\">({} rows)</span></summary>", seg.rows.len());
    // Fold long runs of routine rows.
    let mut k = 0;
    let mut prev_t = seg.started_t;
    let mut table_open = false;
    let open_table = |out: &mut String, open: &mut bool| {
        if !*open {
            out.push_str("<table class=\"tl\">");
            colgroup(out, lanes.len());
            *open = true;
        }
    };
    while k < seg.rows.len() {
        let routine = |r: &Row| !r.desc.key && r.violations.is_empty();
        let mut end = k;
        while end < seg.rows.len() && routine(&seg.rows[end]) {
            end += 1;
        }
        if end - k >= FOLD_AT {
            open_table(out, &mut table_open);
            for r in &seg.rows[k..k + FOLD_HEAD] {
                row(out, i, run, lanes, r, &mut prev_t);
            }
            out.push_str("</table>");
            table_open = false;
            let hidden = &seg.rows[k + FOLD_HEAD..end - FOLD_TAIL];
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for r in hidden {
                *kinds.entry(r.desc.kind).or_default() += r.count;
            }
            let events: usize = hidden.iter().map(|r| r.count).sum();
            let first = hidden.first().map(|r| r.t0).unwrap_or(0);
            let last = hidden.last().map(|r| r.t1).unwrap_or(0);
            let _ = write!(
                out,
                "<details class=\"fold\"><summary>{} more rows ({events} events: {}) {} – {}</summary>",
                hidden.len(),
                kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
                format_offset(first),
                format_offset(last)
            );
            open_table(out, &mut table_open);
            for r in hidden {
                row(out, i, run, lanes, r, &mut prev_t);
            }
            out.push_str("</table></details>");
            table_open = false;
            open_table(out, &mut table_open);
            for r in &seg.rows[end - FOLD_TAIL..end] {
                row(out, i, run, lanes, r, &mut prev_t);
            }
            k = end;
        } else {
            open_table(out, &mut table_open);
            let stop = if end == k { k + 1 } else { end };
            for r in &seg.rows[k..stop] {
                row(out, i, run, lanes, r, &mut prev_t);
            }
            k = stop;
        }
    }
    if table_open {
        out.push_str("</table>");
    }
    out.push_str("</details>\n");
}

fn pause(ms: u64) -> String {
    let (h, m, s, milli) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s}.{} s", milli / 100)
    }
}

fn row(out: &mut String, i: usize, run: &RunReport, lanes: &[String], r: &Row, prev_t: &mut u64) {
    if r.t0 >= prev_t.saturating_add(GAP_MS) {
        let _ = write!(
            out,
            "<tr class=\"gap\"><td colspan=\"{}\">⋯ {} later ⋯</td></tr>",
            lanes.len() + 1,
            pause(r.t0 - *prev_t)
        );
    }
    *prev_t = r.t1;
    let viol = !r.violations.is_empty();
    let _ = write!(
        out,
        "<tr id=\"s{i}-e{}\"{}><td class=\"t\"><a href=\"#s{i}-e{}\">{}</a>",
        r.seq,
        if viol { " class=\"viol\"" } else { "" },
        r.seq,
        format_offset(r.t0)
    );
    if r.t1 != r.t0 {
        let _ = write!(out, "<br>–{}", format_offset(r.t1));
    }
    out.push_str("</td>");
    for lane in 0..lanes.len() {
        if lane != r.lane {
            out.push_str("<td></td>");
            continue;
        }
        let html = match &r.data {
            Some(sum) => format!(
                "{} B out, {} B in on flow{} {}",
                sum.out,
                sum.inb,
                if sum.flows.len() == 1 { "" } else { "s" },
                sum.flows.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ),
            None => r.desc.html.clone(),
        };
        let _ = write!(
            out,
            "<td><div class=\"ev {}\"><span class=\"k\">{}</span>{}{}</div></td>",
            r.desc.class,
            r.desc.kind,
            html,
            if r.count > 1 { format!("<span class=\"n\">×{}</span>", r.count) } else { String::new() }
        );
    }
    out.push_str("</tr>");
    for &j in &r.violations {
        if let Some(v) = run.violations.get(j) {
            violation_row(out, i, j, v, lanes.len(), run.expected_violations.contains(&v.invariant));
        }
    }
}

fn violation_row(out: &mut String, i: usize, j: usize, v: &Violation, lanes: usize, expected: bool) {
    let _ = write!(
        out,
        "<tr class=\"vrow\" id=\"s{i}-v{j}\"><td><b>{}</b> <a href=\"#summary\">↑</a></td><td colspan=\"{lanes}\">⚠ <b>{}</b> at {} \
         (event #{}, {}): {}{}</td></tr>",
        escape(&v.invariant),
        escape(&v.invariant),
        format_offset(v.t),
        v.seq,
        escape(&v.host),
        escape(&v.message),
        if expected { " <i>(expected by the scenario)</i>" } else { "" }
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trace::{EnforcementSpec, Trace};
    use crate::world::StepReport;

    const HOSTILE: &str = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>";

    fn ev(seq: u64, t: u64, host: &str, body: EventBody) -> Event {
        Event { seq, t, host: host.into(), body }
    }

    /// A small run: two steps, three hosts, one violation on a data event.
    pub(crate) fn sample(name: &str) -> RunReport {
        let spec = EnforcementSpec { device_host: "device".into(), ..Default::default() };
        let flow = |seq, t, verdict| {
            ev(
                seq,
                t,
                "device",
                EventBody::FlowDecision {
                    flow: Some(6),
                    layer: "ALE_AUTH_CONNECT_V4".into(),
                    pid: 40,
                    process: "teams".into(),
                    app_id: "\\device\\teams.exe".into(),
                    user: "alice".into(),
                    protocol: "tcp".into(),
                    local: "10.0.0.2:50000".parse().unwrap(),
                    remote: "198.51.100.80:7000".parse().unwrap(),
                    verdict,
                    filter: None,
                    reauth: false,
                },
            )
        };
        let data = |seq, t| ev(seq, t, "device", EventBody::FlowData { flow: 6, direction: Direction::Out, bytes: 5 });
        let events = vec![
            ev(
                0,
                0,
                "lab",
                EventBody::RunStarted {
                    scenario: name.into(),
                    seed: 7,
                    epoch: crate::net::UnixMillis(0),
                    lab: "default".into(),
                    spec: Box::new(spec),
                },
            ),
            ev(1, 0, "lab", EventBody::StepStarted { step: 1, action: format!("boot {name}") }),
            ev(
                2,
                5,
                "device",
                EventBody::AgentState { from: "off".into(), to: "locked".into(), reason: "start".into() },
            ),
            ev(3, 6, "idp", EventBody::IdpLogin { user: "alice".into(), result: "ok".into() }),
            ev(
                4,
                7,
                "lab",
                EventBody::StepFinished {
                    step: 1,
                    outcome: "agent locked".into(),
                    expected: Some("agent locked".into()),
                    ok: true,
                },
            ),
            ev(5, 10, "lab", EventBody::StepStarted { step: 2, action: "teams sends".into() }),
            flow(6, 600_010, Verdict::Permit),
            data(7, 600_011),
            data(8, 600_012),
            data(9, 600_013),
            ev(10, 600_014, "gateway", EventBody::SessionRevoked { sid: "s1".into(), reason: "admin".into() }),
            ev(
                11,
                600_020,
                "lab",
                EventBody::StepFinished { step: 2, outcome: "ok".into(), expected: Some("cut".into()), ok: false },
            ),
            ev(12, 600_020, "lab", EventBody::RunFinished { sim_ms: 600_020 }),
        ];
        RunReport {
            scenario: name.into(),
            description: format!("What {name} shows."),
            file: format!("scenarios/{name}.toml"),
            seed: 7,
            steps: vec![
                StepReport {
                    index: 1,
                    line: 4,
                    action: "boot".into(),
                    outcome: "agent locked".into(),
                    expected: Some("agent locked".into()),
                    ok: true,
                    t: 7,
                },
                StepReport {
                    index: 2,
                    line: 9,
                    action: "teams sends".into(),
                    outcome: "ok".into(),
                    expected: Some("cut".into()),
                    ok: false,
                    t: 600_020,
                },
            ],
            violations: vec![Violation {
                invariant: "E1".into(),
                seq: 8,
                t: 600_012,
                host: "device".into(),
                message: "5 bytes sent on flow 6 while the device is not authenticated".into(),
            }],
            expected_violations: vec![],
            error: None,
            findings: vec!["a finding".into()],
            trace: Trace { events },
            sim_ms: 600_020,
            connections: 0,
            segments: 0,
        }
    }

    fn page(runs: &[RunReport]) -> String {
        html(runs, &super::super::trace_names(runs))
    }

    #[test]
    fn every_user_string_is_escaped() {
        let mut run = sample(HOSTILE);
        run.description = HOSTILE.into();
        run.file = format!("scenarios/{HOSTILE}.toml");
        run.findings = vec![HOSTILE.into()];
        run.violations[0].message = HOSTILE.into();
        run.trace.events[3].host = HOSTILE.into();
        let p = page(&[run]);
        assert!(!p.contains("<script"), "no script element");
        assert!(!p.contains("<img"), "no image element");
        assert!(!p.contains("onerror=alert(2)>"), "attribute text stays text");
        assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&lt;img"));
        // The hostile host is a lane, escaped in its header.
        assert!(p.contains("<th class=\"lane\">&lt;script&gt;"));
    }

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        let nasty = "a\u{1b}[31mb\u{7}\r\u{202e}c\0";
        let mut run = sample(nasty);
        run.description = nasty.into();
        // No NUL in a file name.
        let file = format!("x/{}'$(touch PWNED)'.toml", nasty.replace('\0', ""));
        run.file = file.clone();
        run.findings = vec![nasty.into()];
        run.violations[0].message = nasty.into();
        run.trace.events[3].host = nasty.into();
        let p = page(&[run]);
        for raw in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\0'] {
            assert!(!p.contains(raw), "{raw:?} in the page");
        }
        assert!(p.contains("a\\u{1b}[31mb\\u{7}\\u{d}\\u{202e}c\\u{0}"));
        // The replay line is quoted for the shell, then escaped for HTML.
        let replay = replay_command(&file, 7);
        assert_eq!(shlex::split(&replay).unwrap()[2], file);
        assert!(p.contains(&format!("<pre class=\"replay\">{}</pre>", escape(&replay))), "{p}");
    }

    #[test]
    fn the_page_fetches_nothing() {
        let p = page(&[sample("a")]);
        assert!(p.contains(&format!("<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">")));
        assert!(CSP.starts_with("default-src 'none'"));
        for banned in ["<script", "<link", "<img", "src=", "@import", "url(", "http://", "https://"] {
            assert!(!p.contains(banned), "the page contains `{banned}`");
        }
    }

    #[test]
    fn a_violation_is_highlighted_in_place_with_its_explanation() {
        let p = page(&[sample("a")]);
        // The event's row is red, directly followed by the oracle's explanation.
        let at = p.find("<tr id=\"s0-e8\" class=\"viol\">").expect("violating row marked");
        let vrow = p.find("<tr class=\"vrow\" id=\"s0-v0\">").expect("explanation row");
        assert!(vrow > at && !p[at + 1..vrow].contains("<tr id="), "the explanation follows its event");
        assert!(p[vrow..].starts_with(
            "<tr class=\"vrow\" id=\"s0-v0\"><td><b>E1</b> <a href=\"#summary\">↑</a></td><td colspan=\"3\">⚠ <b>E1</b> at +00:10:00.012 (event #8, device): 5 bytes sent on flow 6 while the device is not authenticated</td></tr>"
        ));
        // The summary links to it, and the failing row is marked.
        assert!(p.contains("<tr class=\"fail\"><td><a href=\"#s0\">a</a>"));
        assert!(p.contains("href=\"#s0-v0\""));
        // The data packets around it are not merged with it.
        assert!(p.contains("<tr id=\"s0-e7\">"));
        assert!(p.contains("<tr id=\"s0-e9\">"));
        // The failed step says so.
        assert!(p.contains("expected <code>cut</code>, got <code>ok</code> ✗ FAILED"));
        assert!(p.contains("<details class=\"step bad\" open id=\"s0-step2\">"));
    }

    #[test]
    fn one_lane_per_host_device_first() {
        let run = sample("a");
        assert_eq!(lanes(&run), ["device", "idp", "gateway"]);
        let p = page(&[run]);
        assert!(p.contains(
            "<th>time</th><th class=\"lane\">device</th><th class=\"lane\">idp</th><th class=\"lane\">gateway</th></tr>"
        ));
        // The IdP's login sits in the second lane.
        assert!(p.contains(
            "<td></td><td><div class=\"ev \"><span class=\"k\">login</span>login of alice: ok</div></td><td></td>"
        ));
        // A ten-minute pause is marked.
        assert!(p.contains("⋯ 10 min 0 s later ⋯"));
    }

    #[test]
    fn consecutive_data_is_counted_and_long_routine_runs_are_folded() {
        let mut run = sample("a");
        run.violations.clear();
        let p = page(std::slice::from_ref(&run));
        assert!(p.contains("15 B out, 0 B in on flow 6<span class=\"n\">×3</span>"));
        // Fifty routine IdP logins in a row, alternating users (not merged): folded.
        let mut events: Vec<Event> = run.trace.events[..4].to_vec();
        for n in 0..50u64 {
            let user = if n % 2 == 0 { "alice" } else { "bob" };
            events.push(ev(4 + n, 10 + n, "idp", EventBody::IdpLogin { user: user.into(), result: "ok".into() }));
        }
        run.trace.events = events;
        let p = page(&[run]);
        // The first login merged with the sample's (same text): 50 rows, 3 in view, 45 folded, 2 in view.
        assert!(
            p.contains("<details class=\"fold\"><summary>45 more rows (45 events: 45 login) +00:00:00.013 – +00:00:00.057</summary>"),
            "{p}"
        );
        let fold = p.find("<details class=\"fold\">").unwrap_or(0);
        let end = p[fold..].find("</details>").map(|e| fold + e).unwrap_or(0);
        assert!(p[..fold].contains("id=\"s0-e5\"") && !p[fold..end].contains("id=\"s0-e5\""), "the head stays in view");
        assert!(p[end..].contains("id=\"s0-e53\"") && p[fold..end].contains("id=\"s0-e51\""), "the tail stays in view");
    }

    #[test]
    fn the_same_runs_give_the_same_bytes() {
        let runs = [sample("a"), sample("b")];
        let one = page(&runs);
        let two = page(&runs.clone());
        assert_eq!(one, two);
        assert!(one.contains("id=\"s1\""));
    }

    #[test]
    fn odd_runs_do_not_panic() {
        let mut empty = sample("empty");
        empty.trace.events.clear();
        empty.violations[0].seq = 99;
        empty.steps.clear();
        empty.error = Some("the lab crashed".into());
        let p = page(&[empty]);
        assert!(p.contains("The trace has no events."));
        assert!(p.contains("<li id=\"s0-v0\">"), "an unplaced violation is anchored in the list");
        assert!(p.contains("<span class=\"badge error\">ERROR</span>"));
        assert!(html(&[], &[]).contains("0 passed, 0 failed"));
    }
}
