//! Placing the lab's components on simulated hosts.
//!
//! Each host's software is a factory: turmoil calls it again when the host
//! restarts, which starts the component afresh (its memory is lost; the
//! device's disk is not).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use url::Url;

use super::Control;
use crate::config::{LabConfig, Resolved};
use crate::device::{DeviceCommand, DeviceSetup, Disk, Windows, install_agent};
use crate::gateway::Gateway;
use crate::http::{Browser, FetchError, HttpClient, Landing, Navigation};
use crate::idp::{Idp, IdpCommand};
use crate::mfa::MfaService;
use crate::net::SharedClock;
use crate::net::sim::{HostError, SimWorld};
use crate::origin::Origin;
use crate::rng::SeededRng;
use crate::trace::Recorder;

/// What the administrator can do at the gateway's console.
#[derive(Debug)]
pub enum GatewayCommand {
    /// Revoke every live session of a user; replies with how many.
    Revoke {
        /// The user.
        user: String,
        /// Number of sessions revoked.
        reply: oneshot::Sender<usize>,
    },
    /// Run ID tokens (an attacker's) through the gateway's ID-token check;
    /// replies with how many it accepted.
    VerifyIdTokens {
        /// The tokens.
        tokens: Vec<String>,
        /// How many were accepted.
        reply: oneshot::Sender<usize>,
    },
}

/// A scenario's command to the identity provider, with its reply.
#[derive(Debug)]
pub struct IdpControl {
    /// What to do.
    pub command: IdpCommand,
    /// What it did, or why not.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What an administrator can do at the MFA service's console.
#[derive(Debug)]
pub enum MfaCommand {
    /// Issue a one-time enrollment code to a user; replies with it.
    IssueEnrollmentCode {
        /// The user.
        user: String,
        /// The code.
        reply: oneshot::Sender<String>,
    },
}

/// What the attacker does from their host.
#[derive(Debug)]
pub enum AttackerCommand {
    /// Load a URL (possibly with a stolen cookie).
    Navigate {
        /// Where.
        url: Url,
        /// How.
        nav: Navigation,
        /// What came of it.
        reply: oneshot::Sender<Result<Landing, FetchError>>,
    },
}

/// The driver's channels into the hosts.
pub struct Controls {
    pub device: Control<DeviceCommand>,
    pub gateway: Control<GatewayCommand>,
    pub attacker: Control<AttackerCommand>,
    pub mfa: Control<MfaCommand>,
    pub idp: Control<IdpControl>,
}

fn err(e: impl std::error::Error + 'static) -> HostError {
    Box::new(e)
}

fn port_of(url: &str) -> u16 {
    Url::parse(url).ok().and_then(|u| u.port_or_known_default()).unwrap_or(443)
}

/// What every host's software is built from.
pub(super) struct Site<'a> {
    pub lab: &'a LabConfig,
    pub resolved: &'a Resolved,
    pub clock: SharedClock,
    pub recorder: &'a Recorder,
    pub rng: &'a SeededRng,
}

impl Site<'_> {
    fn ip(&self, name: &str) -> IpAddr {
        // Validation guarantees every referenced host exists.
        self.resolved.hosts.get(name).copied().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

/// Adds the identity provider; returns its console.
pub(super) fn add_idp(world: &mut SimWorld<'_>, site: &Site<'_>) -> Control<IdpControl> {
    let lab = site.lab;
    let idp_control = Control::default();
    let ip = site.ip(&lab.idp.host);
    let addr = SocketAddr::new(ip, port_of(&lab.idp.issuer));
    let (config, clock, rng, rec, net, control) = (
        lab.idp.clone(),
        site.clock.clone(),
        site.rng.child("idp"),
        site.recorder.for_host(&lab.idp.host),
        world.network(),
        idp_control.clone(),
    );
    world.host(ip, move || {
        let idp = Idp::new(config.clone(), clock.clone(), rng.clone(), rec.clone());
        let net = net.clone();
        let mut commands = control.publish();
        async move {
            let idp = Arc::new(idp.map_err(err)?);
            let console = async {
                while let Some(IdpControl { command, reply }) = commands.recv().await {
                    let _ = reply.send(idp.command(command));
                }
            };
            tokio::select! {
                biased;
                served = idp.clone().run(net, addr) => served.map_err(err)?,
                _ = console => {}
            }
            Ok(())
        }
    });
    idp_control
}

/// Adds the access gateway; returns its administrator's console.
pub(super) fn add_gateway(world: &mut SimWorld<'_>, site: &Site<'_>) -> Control<GatewayCommand> {
    let lab = site.lab;
    let gateway_control = Control::default();
    let ip = site.ip(&lab.gateway.host);
    let addr = SocketAddr::new(ip, port_of(&lab.gateway.auth_url));
    let (config, mfa, clock, rng, rec, net, directory, control) = (
        lab.gateway.clone(),
        lab.mfa.clone(),
        site.clock.clone(),
        site.rng.child("gateway"),
        site.recorder.for_host(&lab.gateway.host),
        world.network(),
        site.resolved.directory.clone(),
        gateway_control.clone(),
    );
    world.host(ip, move || {
        let http = HttpClient::new(net.clone(), directory.clone());
        let gateway = Gateway::new(config.clone(), &mfa, clock.clone(), rng.clone(), rec.clone(), http);
        let net = net.clone();
        let mut commands = control.publish();
        async move {
            let gateway = Arc::new(gateway.map_err(err)?);
            let console = async {
                while let Some(command) = commands.recv().await {
                    match command {
                        GatewayCommand::Revoke { user, reply } => {
                            let _ = reply.send(gateway.revoke_user(&user).len());
                        }
                        GatewayCommand::VerifyIdTokens { tokens, reply } => {
                            let _ = reply.send(gateway.verify_id_tokens(&tokens).await);
                        }
                    }
                }
            };
            tokio::select! {
                biased;
                served = gateway.clone().run(net, addr) => served.map_err(err)?,
                _ = console => {}
            }
            Ok(())
        }
    });
    gateway_control
}

/// Adds the independent MFA service; returns its administrator's console.
pub(super) fn add_mfa(world: &mut SimWorld<'_>, site: &Site<'_>) -> Control<MfaCommand> {
    let lab = site.lab;
    let mfa_control = Control::default();
    let ip = site.ip(&lab.mfa.host);
    let addr = SocketAddr::new(ip, port_of(&lab.mfa.url));
    let (config, gateway_url, clock, rng, rec, net, directory, control) = (
        lab.mfa.clone(),
        lab.gateway.auth_url.clone(),
        site.clock.clone(),
        site.rng.child("mfa"),
        site.recorder.for_host(&lab.mfa.host),
        world.network(),
        site.resolved.directory.clone(),
        mfa_control.clone(),
    );
    world.host(ip, move || {
        let http = HttpClient::new(net.clone(), directory.clone());
        let mfa = MfaService::new(config.clone(), &gateway_url, clock.clone(), rng.clone(), rec.clone(), http);
        let net = net.clone();
        let mut commands = control.publish();
        async move {
            let mfa = Arc::new(mfa.map_err(err)?);
            let console = async {
                while let Some(MfaCommand::IssueEnrollmentCode { user, reply }) = commands.recv().await {
                    let _ = reply.send(mfa.issue_enrollment_code(&user));
                }
            };
            tokio::select! {
                biased;
                served = mfa.clone().run(net, addr) => served.map_err(err)?,
                _ = console => {}
            }
            Ok(())
        }
    });
    mfa_control
}

/// Adds every host of `lab` to `world`.
pub fn build(
    world: &mut SimWorld<'_>,
    lab: &LabConfig,
    resolved: &Resolved,
    clock: SharedClock,
    recorder: &Recorder,
    rng: &SeededRng,
) -> Controls {
    let site = Site { lab, resolved, clock: clock.clone(), recorder, rng };
    let net = world.network();
    let directory = resolved.directory.clone();
    let idp_control = add_idp(world, &site);
    let gateway_control = add_gateway(world, &site);
    let mfa_control = add_mfa(world, &site);

    // Origins.
    for (app, origin) in &lab.origins {
        let ip = site.ip(&origin.host);
        let addr = SocketAddr::new(ip, origin.port);
        let (app, gateway_url, clock, rec, net, directory) = (
            app.clone(),
            lab.gateway.auth_url.clone(),
            clock.clone(),
            recorder.for_host(&origin.host),
            net.clone(),
            directory.clone(),
        );
        world.host(ip, move || {
            let http = HttpClient::new(net.clone(), directory.clone());
            let origin = Arc::new(Origin::new(&app, &gateway_url, clock.clone(), rec.clone(), http));
            let net = net.clone();
            async move {
                origin.run(net, addr).await.map_err(err)?;
                Ok(())
            }
        });
    }

    // The rest of the internet.
    let mirrors = lab.web.also.iter().map(|m| {
        (m.host.as_str(), m.http_port.unwrap_or(lab.web.http_port), m.stream_port.unwrap_or(lab.web.stream_port))
    });
    for (host, http_port, stream_port) in
        [(lab.web.host.as_str(), lab.web.http_port, lab.web.stream_port)].into_iter().chain(mirrors)
    {
        let ip = site.ip(host);
        let (http, stream, net) = (SocketAddr::new(ip, http_port), SocketAddr::new(ip, stream_port), net.clone());
        world.host(ip, move || {
            let net = net.clone();
            async move {
                crate::web::run(net, http, stream).await.map_err(err)?;
                Ok(())
            }
        });
    }

    // The attacker.
    let attacker_control = Control::default();
    {
        let ip = site.ip(&lab.attacker.host);
        let (clock, net, directory, control) =
            (clock.clone(), net.clone(), directory.clone(), attacker_control.clone());
        world.host(ip, move || {
            let browser = Browser::new(HttpClient::new(net.clone(), directory.clone()), clock.clone());
            let mut commands = control.publish();
            async move {
                while let Some(AttackerCommand::Navigate { url, nav, reply }) = commands.recv().await {
                    let _ = reply.send(browser.navigate(url, &nav).await);
                }
                Ok(())
            }
        });
    }

    // The device.
    let device_control = Control::default();
    {
        let ip = site.ip(&lab.device.host);
        let setup = DeviceSetup::new(lab, resolved);
        // The agent was installed before the run: its persistent and boot-time
        // filters are on the disk at the first power-on.
        let disk: Disk = Arc::new(Mutex::new(install_agent(&setup)));
        let (clock, rec, net, control) = (clock, recorder.for_host(&lab.device.host), net, device_control.clone());
        world.host(ip, move || {
            let (setup, clock, rec, net, disk) = (setup.clone(), clock.clone(), rec.clone(), net.clone(), disk.clone());
            let mut commands = control.publish();
            async move {
                // Powered off until the driver presses the button.
                let mut powered = loop {
                    match commands.recv().await {
                        Some(DeviceCommand::PowerOn { reply }) => break reply,
                        Some(other) => other.refuse("the device is powered off"),
                        None => return Ok(()),
                    }
                };
                loop {
                    let os = Windows::power_on(setup.clone(), net.clone(), clock.clone(), rec.clone(), disk.clone());
                    os.run_boot().await;
                    os.handle(DeviceCommand::AgentStatus { reply: powered });
                    let reboot = loop {
                        match commands.recv().await {
                            Some(DeviceCommand::Reboot { reply }) => break reply,
                            Some(DeviceCommand::PowerOn { reply }) => {
                                let _ = reply.send(Err("already running".into()));
                            }
                            Some(command) => os.handle(command),
                            None => return Ok(()),
                        }
                    };
                    os.shutdown("reboot");
                    powered = reboot;
                }
            }
        });
    }

    Controls {
        device: device_control,
        gateway: gateway_control,
        attacker: attacker_control,
        mfa: mfa_control,
        idp: idp_control,
    }
}
