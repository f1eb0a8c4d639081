//! Semantic checks of a lab, and the values derived from it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use indexmap::IndexMap;

use super::{AGENT_PROCESS, AUTH_PROCESS, DHCP_IMAGE, DHCP_PROCESS, LabConfig, StartStage};
use crate::net::{Directory, UnixMillis};
use crate::policy::{parse_aaguid, validate_setting};
use crate::trace::{AllowRule, EnforcementSpec, MfaSpec};
use crate::wfp::AppId;

/// A semantic error: the path of the offending field and what is wrong.
#[derive(Debug)]
pub struct ValidationError {
    /// Field path, e.g. `["lockdown", "allow", "0", "process"]`.
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
}

fn err(path: &[&str], message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.iter().map(|s| s.to_string()).collect(),
        message: format!("{}: {}", dotted(path), message.into()),
    }
}

fn dotted(path: &[&str]) -> String {
    let mut s = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            s.push_str(&format!("[{p}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

/// A process of the device, with its identity resolved.
#[derive(Clone, Debug)]
pub struct DeviceProcess {
    /// Lab name.
    pub name: String,
    /// Image path as configured.
    pub image: String,
    /// Normalized app id.
    pub app_id: AppId,
    /// Account.
    pub user: String,
    /// When it starts.
    pub start: StartStage,
    /// The service it runs as (its token holds the service SID).
    pub service: Option<String>,
    /// URLs it fetches as soon as it starts.
    pub on_start: Vec<url::Url>,
}

/// What a valid lab resolves to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Simulated time at t = 0.
    pub epoch: UnixMillis,
    /// Host name -> address.
    pub hosts: IndexMap<String, IpAddr>,
    /// The lab's DNS.
    pub directory: Directory,
    /// Every process that can run on the device, the agent's two included.
    pub processes: IndexMap<String, DeviceProcess>,
    /// The lockdown policy, resolved: what the oracle checks.
    pub lockdown: EnforcementSpec,
}

impl LabConfig {
    /// Checks cross-references and derives addresses and identities.
    pub fn validate(&self) -> Result<Resolved, ValidationError> {
        let epoch = UnixMillis::parse_rfc3339(&self.epoch).map_err(|e| err(&["epoch"], e))?;
        if self.sim.tick.is_zero() || !self.sim.tick.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(err(&["sim", "tick"], "must be a positive whole number of milliseconds"));
        }
        if self.sim.step_timeout.is_zero() {
            return Err(err(&["sim", "step_timeout"], "must be positive"));
        }

        let leeway = self.gateway.leeway;
        if leeway.subsec_nanos() != 0 {
            return Err(err(&["gateway", "leeway"], "must be a whole number of seconds (ID token times are seconds)"));
        }
        if leeway > super::MAX_LEEWAY {
            return Err(err(
                &["gateway", "leeway"],
                format!(
                    "{} is more than the largest clock leeway, {} (a leeway covers clock skew; a longer one keeps \
                     expired ID tokens valid)",
                    humantime::format_duration(leeway),
                    humantime::format_duration(super::MAX_LEEWAY)
                ),
            ));
        }

        let mut hosts = IndexMap::new();
        let mut ips = BTreeSet::new();
        for (name, host) in &self.hosts {
            if !ips.insert(host.ip) {
                return Err(err(&["hosts", name, "ip"], format!("address {} is used twice", host.ip)));
            }
            hosts.insert(name.clone(), host.ip);
        }

        let mut directory = Directory::default();
        for (name, host) in &self.dns {
            let ip = hosts.get(host).ok_or_else(|| err(&["dns", name], format!("unknown host `{host}`")))?;
            directory.insert(name, *ip);
        }

        // Each component runs on its own host.
        let mut used: IndexMap<&str, String> = IndexMap::new();
        let mut claim = |host: &str, path: &[&str]| -> Result<(), ValidationError> {
            if !hosts.contains_key(host) {
                return Err(err(path, format!("unknown host `{host}` (declare it under [hosts])")));
            }
            if let Some(other) = used.insert(self.host_key(host), dotted(path)) {
                return Err(err(path, format!("host `{host}` already runs {other}")));
            }
            Ok(())
        };
        claim(&self.idp.host, &["idp", "host"])?;
        claim(&self.gateway.host, &["gateway", "host"])?;
        claim(&self.mfa.host, &["mfa", "host"])?;
        for (app, origin) in &self.origins {
            claim(&origin.host, &["origins", app, "host"])?;
        }
        claim(&self.web.host, &["web", "host"])?;
        for (i, m) in self.web.also.iter().enumerate() {
            claim(&m.host, &["web", "also", &i.to_string(), "host"])?;
        }
        claim(&self.attacker.host, &["attacker", "host"])?;
        claim(&self.device.host, &["device", "host"])?;

        for (path, url) in [
            (&["idp", "issuer"][..], &self.idp.issuer),
            (&["gateway", "auth_url"][..], &self.gateway.auth_url),
            (&["gateway", "idp_issuer"][..], &self.gateway.idp_issuer),
            (&["agent", "gateway_url"][..], &self.agent.gateway_url),
            (&["mfa", "url"][..], &self.mfa.url),
        ] {
            directory.socket_addr_of(url).map_err(|e| err(path, e))?;
        }

        let mut app_names = BTreeSet::new();
        for (i, app) in self.gateway.apps.iter().enumerate() {
            let idx = i.to_string();
            if !app_names.insert(app.name.as_str()) {
                return Err(err(&["gateway", "apps", &idx, "name"], format!("app `{}` is declared twice", app.name)));
            }
            let domain_ip = directory.resolve(&app.domain).ok_or_else(|| {
                err(&["gateway", "apps", &idx, "domain"], format!("`{}` is not in [dns]", app.domain))
            })?;
            if Some(&domain_ip) != hosts.get(&self.gateway.host) {
                return Err(err(
                    &["gateway", "apps", &idx, "domain"],
                    format!("`{}` must resolve to the gateway host `{}`", app.domain, self.gateway.host),
                ));
            }
            directory.socket_addr_of(&app.origin).map_err(|e| err(&["gateway", "apps", &idx, "origin"], e))?;
            validate_setting(&dotted(&["gateway", "apps", &idx, "mfa"]), &app.mfa)
                .map_err(|e| err(&["gateway", "apps", &idx, "mfa"], e.to_string()))?;
            for (j, p) in app.policies.iter().enumerate() {
                let path = ["gateway", "apps", &idx, "policies", &j.to_string(), "mfa"];
                validate_setting(&dotted(&path), &p.mfa).map_err(|e| err(&path, e.to_string()))?;
            }
            if !self.origins.contains_key(&app.name) {
                return Err(err(
                    &["gateway", "apps", &idx, "name"],
                    format!("no [origins.{}] runs this app", app.name),
                ));
            }
        }
        for app in self.origins.keys() {
            if !app_names.contains(app.as_str()) {
                return Err(err(&["origins", app], format!("no gateway app is named `{app}`")));
            }
        }

        self.validate_mfa()?;

        let mut processes = IndexMap::new();
        let service = Some(self.agent.service_name.clone());
        let system = [
            // The agent service, and its sign-in window (started by the service with a token
            // that carries the service's SID).
            (AGENT_PROCESS, self.agent.service_image.as_str(), "SYSTEM", StartStage::Service, service.clone()),
            (AUTH_PROCESS, &self.agent.auth_image, &self.device.interactive_user, StartStage::Manual, service),
            // Windows' DHCP client (a service hosted in svchost).
            (DHCP_PROCESS, DHCP_IMAGE, "LOCAL SERVICE", StartStage::Manual, Some("Dhcp".to_string())),
        ];
        for (name, image, user, start, service) in system {
            let path: &[&str] = match name {
                AGENT_PROCESS => &["agent", "service_image"],
                _ => &["agent", "auth_image"],
            };
            let app_id = AppId::from_image_path(image).map_err(|e| err(path, e.to_string()))?;
            processes.insert(
                name.to_string(),
                DeviceProcess {
                    name: name.to_string(),
                    image: image.to_string(),
                    app_id,
                    user: user.to_string(),
                    start,
                    service,
                    on_start: Vec::new(),
                },
            );
        }
        for (i, p) in self.device.processes.iter().enumerate() {
            let idx = i.to_string();
            let app_id = AppId::from_image_path(&p.image)
                .map_err(|e| err(&["device", "processes", &idx, "image"], e.to_string()))?;
            if processes.contains_key(&p.name) {
                return Err(err(&["device", "processes", &idx, "name"], format!("process name `{}` is taken", p.name)));
            }
            let mut on_start = Vec::new();
            for (j, u) in p.on_start.iter().enumerate() {
                let url = url::Url::parse(u)
                    .map_err(|e| err(&["device", "processes", &idx, "on_start", &j.to_string()], e.to_string()))?;
                on_start.push(url);
            }
            processes.insert(
                p.name.clone(),
                DeviceProcess {
                    name: p.name.clone(),
                    image: p.image.clone(),
                    app_id,
                    user: p.user.clone(),
                    start: p.start,
                    service: p.service.clone(),
                    on_start,
                },
            );
        }

        if let Some(o) = &self.lockdown.admin_override {
            crate::totp::decode_base32(&o.secret)
                .map_err(|e| err(&["lockdown", "admin_override", "secret"], e.to_string()))?;
            if o.duration.is_zero() || o.code_step.as_secs() == 0 {
                return Err(err(&["lockdown", "admin_override"], "duration and code_step must be positive"));
            }
        }

        let mut allow = Vec::new();
        for (i, ex) in self.lockdown.allow.iter().enumerate() {
            let idx = i.to_string();
            let process = processes.get(&ex.process).ok_or_else(|| {
                err(&["lockdown", "allow", &idx, "process"], format!("unknown process `{}`", ex.process))
            })?;
            let mut remote: Vec<SocketAddr> = Vec::new();
            for (j, to) in ex.to.iter().enumerate() {
                let addr = directory
                    .socket_addr_of_endpoint(to)
                    .map_err(|e| err(&["lockdown", "allow", &idx, "to", &j.to_string()], e))?;
                remote.push(addr);
            }
            allow.push(AllowRule {
                process: ex.process.clone(),
                app_id: process.app_id.to_string(),
                remote,
                service: ex.service.clone(),
            });
        }

        let lockdown = EnforcementSpec {
            device_host: self.device.host.clone(),
            device_id: self.device.id.clone(),
            allow,
            allow_loopback: self.lockdown.allow_loopback,
            allow_lan: self.lockdown.allow_lan,
            allow_dhcp: self.lockdown.allow_dhcp,
            interactive_user: self.device.interactive_user.clone(),
            captive_portal_ms: crate::net::millis(self.lockdown.captive_portal),
            captive_portal_process: super::PORTAL_BROWSER.to_string(),
            admin_override_ms: self.lockdown.admin_override.as_ref().map_or(0, |o| crate::net::millis(o.duration)),
            expiry_grace_ms: crate::net::millis(self.oracle.expiry_grace),
            revocation_grace_ms: crate::net::millis(self.oracle.revocation_grace),
            jwks_max_ttl_ms: crate::net::millis(self.gateway.jwks_max_ttl),
            mfa: MfaSpec {
                host: self.mfa.host.clone(),
                origin: self.mfa_origin(),
                organization: self.mfa.organization.clone(),
                apps: self.gateway.apps.iter().map(|a| (a.name.clone(), a.access())).collect(),
            },
        };

        Ok(Resolved { epoch, hosts, directory, processes, lockdown })
    }

    /// The WebAuthn origin of the MFA service (scheme, host and port of its URL).
    pub fn mfa_origin(&self) -> String {
        url::Url::parse(&self.mfa.url).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
    }

    fn validate_mfa(&self) -> Result<(), ValidationError> {
        let mfa = &self.mfa;
        let url = url::Url::parse(&mfa.url).map_err(|e| err(&["mfa", "url"], e.to_string()))?;
        let host = url.host_str().unwrap_or("");
        if !(host == mfa.rp_id || host.ends_with(&format!(".{}", mfa.rp_id))) {
            return Err(err(&["mfa", "rp_id"], format!("`{}` is neither `{host}` nor a suffix of it", mfa.rp_id)));
        }
        for (i, a) in mfa.organization.required_aaguids.iter().enumerate() {
            parse_aaguid(a)
                .map_err(|e| err(&["mfa", "organization", "required_aaguids", &i.to_string()], e.to_string()))?;
        }
        if !(6..=8).contains(&mfa.totp.digits) {
            return Err(err(&["mfa", "totp", "digits"], "must be 6, 7 or 8"));
        }
        if mfa.totp.step.as_secs() == 0 || mfa.totp.step.subsec_nanos() != 0 {
            return Err(err(&["mfa", "totp", "step"], "must be a positive whole number of seconds"));
        }
        if mfa.max_failures == 0 {
            return Err(err(&["mfa", "max_failures"], "must be at least 1"));
        }
        Ok(())
    }

    fn host_key<'a>(&'a self, host: &str) -> &'a str {
        self.hosts.get_key_value(host).map(|(k, _)| k.as_str()).unwrap_or("")
    }
}
