//! The fleet behind `lab bench fleet`: many devices of the lab booting at
//! once against one gateway, IdP and MFA service; sessions expire, agents
//! re-lock, users sign in again. The benchmark times it; these tests check
//! that it really does that work, and deterministically.

use std::time::Duration;

use lockstep::config::LabConfig;
use lockstep::world::fleet::{FleetError, FleetOptions, run_fleet};

fn options(devices: usize, seed: u64) -> FleetOptions {
    FleetOptions {
        devices,
        duration: Duration::from_secs(3600),
        tick: Duration::from_millis(100),
        notice: Duration::from_secs(60),
        seed,
    }
}

#[test]
fn every_device_boots_signs_in_and_signs_in_again_after_each_expiry() {
    let (mut lab, resolved) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    lab.gateway.session_duration = Duration::from_secs(20 * 60);
    let run = run_fleet(&lab, &resolved, &options(3, 1)).unwrap();
    assert_eq!((run.devices, run.hosts, run.booted), (3, 6, 3), "{run:?}");
    assert_eq!(run.sim_ms, 3_600_000);
    assert_eq!(run.failed_sign_ins, 0, "{run:?}");
    // 20-minute sessions over an hour: signed in at boot, then again after
    // the expiries at about 20 and 40 minutes (the one at 60 falls at the end).
    assert!(run.relocks_seen >= 6, "{run:?}");
    assert_eq!(run.sign_ins, 3 + run.relocks_seen, "{run:?}");
    // Each agent polls its session every 10 s: hundreds of exchanges.
    assert!(run.segments > 3 * 300, "{run:?}");

    let again = run_fleet(&lab, &resolved, &options(3, 1)).unwrap();
    assert_eq!(run, again, "the same seed gave another fleet run");
    assert_ne!(run.digest, run_fleet(&lab, &resolved, &options(3, 2)).unwrap().digest);
}

#[test]
fn a_fleet_without_users_is_refused() {
    let (mut lab, resolved) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    lab.idp.users.clear();
    assert!(matches!(run_fleet(&lab, &resolved, &options(1, 1)), Err(FleetError::NoUsers)));
}
