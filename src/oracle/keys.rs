//! **E2 (ID tokens only under published keys)**: every ID token the
//! gateway accepts is signed under a key id the IdP published, at a time
//! no earlier than the key's publication and no later than its withdrawal
//! plus the longest time the gateway may trust a fetched key set
//! (`run_started.spec.jwks_max_ttl_ms`).
//!
//! The ground truth is the IdP's `idp_keys_published` events (the set it
//! serves, at start and at each rotation, removal or retirement); the
//! gateway's `token_accepted` events (recorded by its traced key cache,
//! the IdP's JWKS only) are what is checked. A forged token the gateway
//! accepts (an unpublished key, a key withdrawn beyond the TTL, no `kid`)
//! breaks E2.

use std::collections::{BTreeMap, BTreeSet};

use super::Oracle;
use crate::trace::{Event, EventBody, format_offset};

/// When each key id was published: `[from, until)` intervals.
#[derive(Debug, Default)]
pub(super) struct KeyHistory {
    intervals: BTreeMap<String, Vec<(u64, Option<u64>)>>,
}

impl KeyHistory {
    fn publish(&mut self, t: u64, kids: &[String]) {
        let now: BTreeSet<&String> = kids.iter().collect();
        for (kid, spans) in self.intervals.iter_mut() {
            if let Some(last) = spans.last_mut()
                && last.1.is_none()
                && !now.contains(kid)
            {
                last.1 = Some(t);
            }
        }
        for kid in kids {
            let spans = self.intervals.entry(kid.clone()).or_default();
            if spans.last().is_none_or(|l| l.1.is_some()) {
                spans.push((t, None));
            }
        }
    }

    /// Why accepting `kid` at `t` breaks E2, if it does.
    fn problem(&self, kid: Option<&str>, t: u64, ttl: u64) -> Option<String> {
        let Some(kid) = kid else {
            return Some("an ID token without a `kid` cannot be tied to a key the IdP published".into());
        };
        let Some(spans) = self.intervals.get(kid) else {
            return Some(format!("key `{kid}` was never published by the IdP"));
        };
        if spans.iter().any(|(from, until)| *from <= t && until.is_none_or(|u| t < u.saturating_add(ttl))) {
            return None;
        }
        let withdrawn = spans.iter().filter_map(|(_, u)| *u).filter(|u| *u <= t).max();
        Some(match withdrawn {
            Some(u) => format!(
                "key `{kid}` was withdrawn at {}, more than the JWKS TTL bound ({} ms) before",
                format_offset(u),
                ttl
            ),
            None => format!("key `{kid}` was not published at that time"),
        })
    }
}

impl Oracle {
    pub(super) fn observe_keys(&mut self, e: &Event) {
        match &e.body {
            EventBody::IdpKeysPublished { kids, .. } => self.keys.publish(e.t, kids),
            EventBody::TokenAccepted { kid, alg, .. } => {
                if let Some(why) = self.keys.problem(kid.as_deref(), e.t, self.spec.jwks_max_ttl_ms) {
                    self.violation("E2", e, format!("the gateway accepted an ID token ({alg}): {why}"));
                }
            }
            _ => {}
        }
    }
}
