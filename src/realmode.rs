//! Real mode: the lab's server components on real loopback sockets.
//!
//! The identity provider, the gateway, the origins and the web site run
//! unchanged (the same code as in the simulation) over the tokio side of the
//! seam, with the system clock. Every lab host name resolves to the bind
//! address and each component gets its own port, so URLs are rewritten from
//! `https://idp.lab.test` to `http://idp.lab.test:PORT` (no TLS).
//!
//! The simulated device is not started: its firewall is a model of Windows.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use indexmap::IndexMap;
use tokio::task::JoinSet;
use url::Url;

use crate::config::LabConfig;
use crate::gateway::Gateway;
use crate::http::HttpClient;
use crate::idp::Idp;
use crate::mfa::MfaService;
use crate::net::real::{SystemClock, TokioListener, TokioNet};
use crate::net::{BoxListener, Directory, SharedClock};
use crate::origin::Origin;
use crate::rng::SeededRng;
use crate::trace::Recorder;

/// Why real mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum RealModeError {
    /// A port could not be bound.
    #[error("cannot bind {addr} for {component}: {source}")]
    Bind {
        /// Which component.
        component: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A component could not be built.
    #[error("{0}")]
    Component(String),
}

/// Where to listen.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// Address every component binds (use a loopback address).
    pub ip: IpAddr,
    /// First port; components take consecutive ports. `None`: ephemeral ports.
    pub base_port: Option<u16>,
    /// Seed of the components' randomness; `None`: OS entropy.
    pub seed: Option<u64>,
}

/// The running components.
pub struct RealLab {
    /// The lab with its URLs rewritten to the real ports.
    pub config: LabConfig,
    /// Every lab name, resolving to the bind address.
    pub directory: Directory,
    /// Component name -> listening address.
    pub endpoints: IndexMap<String, SocketAddr>,
    /// The gateway, for administrator actions.
    pub gateway: Arc<Gateway>,
    /// The MFA service, for administrator actions.
    pub mfa: Arc<MfaService>,
    tasks: JoinSet<(String, io::Result<()>)>,
}

impl RealLab {
    /// Binds every port, then starts the components.
    pub async fn start(lab: &LabConfig, options: &RealOptions, recorder: Recorder) -> Result<RealLab, RealModeError> {
        // 1. Bind, so that ports are known before URLs are rewritten.
        let mut listeners: IndexMap<String, TokioListener> = IndexMap::new();
        let mut next = options.base_port;
        let mut components: Vec<(String, String)> = vec![
            ("idp".into(), lab.idp.host.clone()),
            ("gateway".into(), lab.gateway.host.clone()),
            ("mfa".into(), lab.mfa.host.clone()),
        ];
        components.extend(lab.origins.iter().map(|(app, o)| (format!("origin:{app}"), o.host.clone())));
        components.push(("web".into(), lab.web.host.clone()));
        components.push(("web:stream".into(), lab.web.host.clone()));
        let mut host_port: IndexMap<String, u16> = IndexMap::new();
        let mut endpoints: IndexMap<String, SocketAddr> = IndexMap::new();
        for (component, host) in &components {
            let addr = SocketAddr::new(options.ip, next.unwrap_or(0));
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| RealModeError::Bind {
                component: component.clone(),
                addr,
                source,
            })?;
            let bound = listener.local_addr().map_err(|source| RealModeError::Bind {
                component: component.clone(),
                addr,
                source,
            })?;
            host_port.entry(host.clone()).or_insert(bound.port());
            endpoints.insert(component.clone(), bound);
            listeners.insert(component.clone(), TokioListener(listener));
            next = next.map(|p| p.saturating_add(1));
        }

        // 2. Rewrite URLs: every lab name resolves to the bind address, and
        // a name's port is that of the component on its host.
        let mut directory = Directory::default();
        let mut name_port: IndexMap<String, u16> = IndexMap::new();
        for (name, host) in &lab.dns {
            directory.insert(name, options.ip);
            if let Some(port) = host_port.get(host) {
                name_port.insert(name.to_ascii_lowercase(), *port);
            }
        }
        let rewrite = |url: &str| -> String {
            let Ok(mut u) = Url::parse(url) else { return url.to_string() };
            let port = u.host_str().and_then(|h| name_port.get(&h.to_ascii_lowercase()).copied());
            if let Some(port) = port {
                let _ = u.set_scheme("http");
                let _ = u.set_port(Some(port));
            }
            let s = u.to_string();
            // Keep URLs without a path as written (issuers are compared exactly).
            if !url.ends_with('/') && u.path() == "/" { s.trim_end_matches('/').to_string() } else { s }
        };
        let mut config = lab.clone();
        config.idp.issuer = rewrite(&config.idp.issuer);
        for c in &mut config.idp.clients {
            c.redirect_uris = c.redirect_uris.iter().map(|u| rewrite(u)).collect();
        }
        config.gateway.auth_url = rewrite(&config.gateway.auth_url);
        config.gateway.idp_issuer = rewrite(&config.gateway.idp_issuer);
        for app in &mut config.gateway.apps {
            app.origin = rewrite(&app.origin);
        }
        config.agent.gateway_url = rewrite(&config.agent.gateway_url);
        config.mfa.url = rewrite(&config.mfa.url);

        // 3. Start the components.
        let clock: SharedClock = Arc::new(SystemClock);
        let rng = match options.seed {
            Some(seed) => SeededRng::from_seed(seed),
            None => SeededRng::from_os_entropy(),
        };
        let net = TokioNet::shared();
        let http = HttpClient::new(net.clone(), directory.clone());
        let mut take = |name: &str| -> BoxListener {
            // Every component above was bound; a missing one is a bug here.
            Box::new(listeners.shift_remove(name).expect("listener bound above"))
        };
        let mut tasks = JoinSet::new();

        let idp = Idp::new(config.idp.clone(), clock.clone(), rng.child("idp"), recorder.for_host(&config.idp.host))
            .map_err(|e| RealModeError::Component(e.to_string()))?;
        let listener = take("idp");
        let router = Arc::new(idp).router();
        tasks.spawn(async move { ("idp".to_string(), crate::http::serve(listener, router).await) });

        let gateway = Arc::new(
            Gateway::new(
                config.gateway.clone(),
                &config.mfa,
                clock.clone(),
                rng.child("gateway"),
                recorder.for_host(&config.gateway.host),
                http.clone(),
            )
            .map_err(|e| RealModeError::Component(e.to_string()))?,
        );
        let listener = take("gateway");
        let router = gateway.clone().router();
        tasks.spawn(async move { ("gateway".to_string(), crate::http::serve(listener, router).await) });

        let mfa = Arc::new(
            MfaService::new(
                config.mfa.clone(),
                &config.gateway.auth_url,
                clock.clone(),
                rng.child("mfa"),
                recorder.for_host(&config.mfa.host),
                http.clone(),
            )
            .map_err(|e| RealModeError::Component(e.to_string()))?,
        );
        let listener = take("mfa");
        let router = mfa.clone().router();
        tasks.spawn(async move { ("mfa".to_string(), crate::http::serve(listener, router).await) });

        for (app, origin) in &config.origins {
            let name = format!("origin:{app}");
            let listener = take(&name);
            let origin = Arc::new(Origin::new(
                app,
                &config.gateway.auth_url,
                clock.clone(),
                recorder.for_host(&origin.host),
                http.clone(),
            ));
            tasks.spawn(async move { (name, origin.serve(listener).await) });
        }

        let http_listener = take("web");
        let stream_listener = take("web:stream");
        tasks.spawn(async move { ("web".to_string(), crate::web::serve(http_listener, stream_listener).await) });

        Ok(RealLab { config, directory, endpoints, gateway, mfa, tasks })
    }

    /// Waits until a component stops (they normally run forever); returns
    /// which and why.
    pub async fn wait(mut self) -> (String, io::Result<()>) {
        match self.tasks.join_next().await {
            Some(Ok(done)) => done,
            Some(Err(e)) => ("?".into(), Err(io::Error::other(e.to_string()))),
            None => ("none".into(), Ok(())),
        }
    }
}
