//! The device's network stack: inbound accepts pass ALE_AUTH_RECV_ACCEPT,
//! loopback traffic is classified too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep::config::LabConfig;
use lockstep::device::{DeviceSetup, Windows, install_agent};
use lockstep::net::sim::{DEFAULT_TCP_CAPACITY, SimParams, SimWorld};
use lockstep::net::{Network, SharedClock};
use lockstep::trace::{EventBody, Recorder, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_locked_device_refuses_inbound_connections_and_allows_loopback() {
    let (lab, resolved) = LabConfig::parse(&LabConfig::default_source()).unwrap();
    let params = SimParams {
        seed: 1,
        epoch: resolved.epoch,
        tick: lab.sim.tick,
        latency: lab.sim.latency,
        tcp_capacity: DEFAULT_TCP_CAPACITY,
    };
    let mut world = SimWorld::new(&params);
    let clock: SharedClock = Arc::new(world.clock());
    let recorder = Recorder::new(resolved.epoch, clock.clone());
    let device_ip = resolved.hosts["device"];
    let attacker_ip = resolved.hosts["attacker"];
    let results: Arc<Mutex<Vec<String>>> = Arc::default();

    let setup = DeviceSetup::new(&lab, &resolved);
    let (net, rec, out) = (world.network(), recorder.for_host("device"), results.clone());
    world.host(device_ip, move || {
        let disk = Arc::new(Mutex::new(install_agent(&setup)));
        let os = Windows::power_on(setup.clone(), net.clone(), clock.clone(), rec.clone(), disk);
        let out = out.clone();
        async move {
            // The whole boot: BFE, the agent (which locks), the user's logon.
            os.run_boot().await;
            // A listening app (say, a file-sharing client).
            let listener_out = out.clone();
            os.spawn_process("teams", move |ctx| async move {
                let Ok(mut listener) = ctx.net().bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5000))).await else {
                    return;
                };
                while let Ok((mut conn, peer)) = listener.accept().await {
                    listener_out.lock().unwrap().push(format!("accepted {}", peer.ip()));
                    let _ = conn.write_all(b"hello\n").await;
                }
            })?;
            // Another app talks to it over loopback.
            let loop_out = out.clone();
            os.spawn_process("browser", move |ctx| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let r = match ctx.net().connect(SocketAddr::from((Ipv4Addr::LOCALHOST, 5000))).await {
                    Ok(mut s) => {
                        let mut buf = [0u8; 6];
                        match s.read_exact(&mut buf).await {
                            Ok(_) => "loopback ok".to_string(),
                            Err(e) => format!("loopback read {e}"),
                        }
                    }
                    Err(e) => format!("loopback connect {e}"),
                };
                loop_out.lock().unwrap().push(r);
            })?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let out = results.clone();
    world.host(attacker_ip, move || {
        let out = out.clone();
        async move {
            // After the device's boot (6 s) and its apps' start.
            tokio::time::sleep(Duration::from_millis(6100)).await;
            let mut s = lockstep::net::sim::TurmoilNet::default().connect(SocketAddr::new(device_ip, 5000)).await?;
            let mut buf = [0u8; 6];
            let r = match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(Ok(0)) => "inbound closed".to_string(),
                Ok(Ok(_)) => "inbound data".to_string(),
                Ok(Err(e)) => format!("inbound error {e}"),
                Err(_) => "inbound silent".to_string(),
            };
            out.lock().unwrap().push(r);
            Ok(())
        }
    });
    while world.elapsed() < Duration::from_secs(9) {
        world.step().unwrap();
    }

    let results = results.lock().unwrap().clone();
    assert!(results.contains(&"loopback ok".to_string()), "{results:?}");
    assert!(results.contains(&"accepted 127.0.0.1".to_string()), "{results:?}");
    assert!(!results.iter().any(|r| r == &format!("accepted {attacker_ip}")), "{results:?}");
    assert!(results.iter().any(|r| r == "inbound closed" || r == "inbound silent"), "{results:?}");
    let decisions: Vec<(String, Verdict, String)> = recorder
        .snapshot()
        .events
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::FlowDecision { layer, verdict, remote, .. } => Some((layer, verdict, remote.ip().to_string())),
            _ => None,
        })
        .collect();
    assert!(
        decisions.contains(&("FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4".into(), Verdict::Block, attacker_ip.to_string())),
        "{decisions:?}"
    );
    assert!(
        decisions.iter().any(|(l, v, r)| l.contains("CONNECT") && *v == Verdict::Permit && r == "127.0.0.1"),
        "{decisions:?}"
    );
}
