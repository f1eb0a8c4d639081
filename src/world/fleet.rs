//! A fleet: many devices booting at once against one gateway, identity
//! provider and MFA service, then a long simulated stretch in which sessions
//! expire, each agent re-locks, and its user signs in again.
//!
//! Every device is the lab's own: the Windows model with its WFP engine,
//! boot sequence and processes, and the real agent, each on its own
//! simulated host (`fleet-N`, from 100.64.0.1 up). Users alternate between
//! the lab's IdP accounts. A user looks at the tray every `notice` and signs
//! in again when it shows the lockdown.
//!
//! The trace is streamed into a digest rather than kept (a day of a large
//! fleet would not fit in memory); the same seed gives the same digest.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::hosts::{Site, add_gateway, add_idp, add_mfa};
use crate::agent::AgentState;
use crate::config::{LabConfig, Resolved};
use crate::device::{DeviceCommand, DeviceSetup, Disk, Windows, install_agent};
use crate::http::Credentials;
use crate::net::SharedClock;
use crate::net::sim::{DEFAULT_TCP_CAPACITY, SimFailure, SimParams, SimWorld};
use crate::rng::SeededRng;
use crate::trace::{EventBody, Recorder};

/// What a fleet run is made of.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Devices booting at once.
    pub devices: usize,
    /// Simulated time the run lasts.
    pub duration: Duration,
    /// turmoil's tick for this run (the lab's own is for scenarios).
    pub tick: Duration,
    /// How often a user looks at the tray for the lockdown.
    pub notice: Duration,
    /// The seed.
    pub seed: u64,
}

/// What happened in a fleet run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetRun {
    /// Devices.
    pub devices: usize,
    /// Simulated hosts (devices, gateway, IdP, MFA service).
    pub hosts: usize,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Ticks stepped.
    pub ticks: u64,
    /// Devices whose boot finished with the agent running.
    pub booted: u64,
    /// Sign-ins that connected the device.
    pub sign_ins: u64,
    /// Sign-ins that did not.
    pub failed_sign_ins: u64,
    /// Times a user found a connected device locked again (a session expired).
    pub relocks_seen: u64,
    /// TCP connections opened.
    pub connections: u64,
    /// Stream segments carried.
    pub segments: u64,
    /// Trace events recorded (streamed, not kept).
    pub events: u64,
    /// SHA-256 of the streamed trace.
    pub digest: String,
}

/// Why a fleet could not run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// More devices than the address block holds.
    #[error("a fleet holds at most {max} devices, not {asked}")]
    TooMany {
        /// Devices asked for.
        asked: usize,
        /// The most allowed.
        max: usize,
    },
    /// The lab has no IdP user to sign in with.
    #[error("the lab's IdP has no users to sign in with")]
    NoUsers,
    /// The simulation failed.
    #[error(transparent)]
    Sim(#[from] SimFailure),
}

/// The most devices a fleet holds (100.64.0.0/10).
pub const MAX_DEVICES: usize = (1 << 22) - 2;

#[derive(Default)]
struct Counters {
    booted: AtomicU64,
    sign_ins: AtomicU64,
    failed_sign_ins: AtomicU64,
    relocks_seen: AtomicU64,
}

/// The streamed trace: hashed and counted, never kept.
#[derive(Clone, Default)]
struct Digest256(Arc<Mutex<Sha256>>);

impl Write for Digest256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The address of fleet device `index` (0-based).
pub fn device_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + index as u32 + 1))
}

/// Runs a fleet of the lab's devices for `options.duration`.
pub fn run_fleet(lab: &LabConfig, resolved: &Resolved, options: &FleetOptions) -> Result<FleetRun, FleetError> {
    if options.devices > MAX_DEVICES {
        return Err(FleetError::TooMany { asked: options.devices, max: MAX_DEVICES });
    }
    let users: Vec<Credentials> = lab
        .idp
        .users
        .iter()
        .map(|u| Credentials { username: u.username.clone(), password: u.password.clone() })
        .collect();
    if users.is_empty() {
        return Err(FleetError::NoUsers);
    }
    let params = SimParams {
        seed: options.seed,
        epoch: resolved.epoch,
        tick: options.tick,
        latency: lab.sim.latency,
        tcp_capacity: DEFAULT_TCP_CAPACITY + options.devices,
    };
    let mut world = SimWorld::new(&params);
    let clock: SharedClock = Arc::new(world.clock());
    let stats = world.stats();
    let digest = Digest256::default();
    let recorder = Recorder::streaming(resolved.epoch, clock.clone(), Box::new(digest.clone()));
    recorder.record(EventBody::RunStarted {
        scenario: format!("fleet of {}", options.devices),
        seed: options.seed,
        epoch: resolved.epoch,
        lab: lab.name.clone(),
        spec: Box::new(resolved.lockdown.clone()),
    });
    let root = SeededRng::from_seed(options.seed);
    let site = Site { lab, resolved, clock: clock.clone(), recorder: &recorder, rng: &root };
    add_idp(&mut world, &site);
    add_gateway(&mut world, &site);
    add_mfa(&mut world, &site);

    let counters = Arc::new(Counters::default());
    let template = DeviceSetup::new(lab, resolved);
    for index in 0..options.devices {
        let name = format!("fleet-{index}");
        let mut setup = template.clone();
        setup.device_id = name.clone();
        setup.agent.device_id = name.clone();
        setup.ip = device_ip(index);
        // The fleet's network carries IPv4 only.
        setup.ipv6 = None;
        let disk: Disk = Arc::new(Mutex::new(install_agent(&setup)));
        let user = users[index % users.len()].clone();
        let (clock, rec, net, counters, notice) =
            (clock.clone(), recorder.for_host(&name), world.network(), counters.clone(), options.notice);
        world.host(setup.ip, move || {
            let (setup, clock, rec, net, disk, user, counters) =
                (setup.clone(), clock.clone(), rec.clone(), net.clone(), disk.clone(), user.clone(), counters.clone());
            async move {
                let os = Windows::power_on(setup, net, clock, rec, disk);
                os.run_boot().await;
                let mut state = ask(&os, |reply| DeviceCommand::AgentStatus { reply }).await;
                if state.is_some() {
                    counters.booted.fetch_add(1, Ordering::Relaxed);
                }
                let mut was_connected = false;
                loop {
                    if state != Some(AgentState::Connected) {
                        if was_connected {
                            counters.relocks_seen.fetch_add(1, Ordering::Relaxed);
                        }
                        let credentials = user.clone();
                        // The answer is the agent's state once the attempt is over.
                        state = ask(&os, |reply| DeviceCommand::SignIn { credentials, reply }).await;
                        match state {
                            Some(AgentState::Connected) => counters.sign_ins.fetch_add(1, Ordering::Relaxed),
                            _ => counters.failed_sign_ins.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    was_connected = state == Some(AgentState::Connected);
                    tokio::time::sleep(notice).await;
                    state = ask(&os, |reply| DeviceCommand::AgentStatus { reply }).await;
                }
            }
        });
    }

    let mut ticks = 0u64;
    while world.elapsed() < options.duration {
        world.step()?;
        ticks += 1;
    }
    let events = recorder.recorded();
    drop(recorder);
    let digest = hex::encode(digest.0.lock().unwrap_or_else(PoisonError::into_inner).clone().finalize());
    Ok(FleetRun {
        devices: options.devices,
        hosts: options.devices + 3,
        sim_ms: crate::net::millis(world.elapsed()),
        ticks,
        booted: counters.booted.load(Ordering::Relaxed),
        sign_ins: counters.sign_ins.load(Ordering::Relaxed),
        failed_sign_ins: counters.failed_sign_ins.load(Ordering::Relaxed),
        relocks_seen: counters.relocks_seen.load(Ordering::Relaxed),
        connections: stats.connections(),
        segments: stats.segments(),
        events,
        digest,
    })
}

/// Asks the device and waits for its answer (`None` if it has none).
async fn ask(
    os: &Windows,
    command: impl FnOnce(oneshot::Sender<Result<AgentState, String>>) -> DeviceCommand,
) -> Option<AgentState> {
    let (tx, rx) = oneshot::channel();
    os.handle(command(tx));
    rx.await.ok()?.ok()
}
