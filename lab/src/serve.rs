//! `lab serve`: the lab's server components on real loopback sockets.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use lockstep::config::LabConfig;
use lockstep::input::read_source;
use lockstep::net::Clock;
use lockstep::net::real::SystemClock;
use lockstep::realmode::{RealLab, RealOptions};
use lockstep::trace::Recorder;

#[derive(Args)]
pub struct ServeArgs {
    /// Lab file (default: the embedded default lab).
    #[arg(long)]
    lab: Option<PathBuf>,
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// First port; components take consecutive ports (0: any free ports).
    #[arg(long, default_value_t = 8400)]
    port: u16,
    /// Seed for keys and identifiers (default: OS entropy).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the trace (JSON Lines) here as it happens.
    #[arg(long, default_value = "reports/serve-trace.jsonl")]
    trace: PathBuf,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.ip.is_loopback() {
        eprintln!("lab serve: {} is not a loopback address; real mode listens on loopback only", args.ip);
        return Ok(ExitCode::from(2));
    }
    let source = match &args.lab {
        Some(path) => {
            let name = path.display().to_string();
            match read_source(path, &name) {
                Ok(source) => source,
                Err(e) => {
                    eprintln!("{}", lockstep::text::visible(&e.into_input_error(&name).to_string()));
                    return Ok(ExitCode::from(2));
                }
            }
        }
        None => LabConfig::default_source(),
    };
    let (lab, _resolved) = match LabConfig::parse(&source) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(dir) = args.trace.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = File::create(&args.trace).with_context(|| format!("creating {}", args.trace.display()))?;
    let recorder = Recorder::streaming(SystemClock.now(), Arc::new(SystemClock), Box::new(out));
    let options = RealOptions { ip: args.ip, base_port: (args.port != 0).then_some(args.port), seed: args.seed };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let real = match RealLab::start(&lab, &options, recorder).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("lab serve: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "Lockstep real mode: lab `{}` on {}", real.config.name, args.ip)?;
        for (component, addr) in &real.endpoints {
            writeln!(out, "  {component:<14} {addr}")?;
        }
        let gateway_port = real.endpoints.get("gateway").map(|a| a.port()).unwrap_or(0);
        writeln!(out, "Every lab name resolves to {}; try:", args.ip)?;
        writeln!(
            out,
            "  curl -i --resolve chat.lab.test:{gateway_port}:{} http://chat.lab.test:{gateway_port}/",
            args.ip
        )?;
        writeln!(
            out,
            "  (or add the lab names to /etc/hosts and open http://chat.lab.test:{gateway_port}/ in a browser)"
        )?;
        writeln!(out, "trace: {} (JSON Lines, as it happens); Ctrl-C stops", args.trace.display())?;
        drop(out);
        tokio::select! {
            (component, result) = real.wait() => {
                eprintln!("lab serve: {component} stopped: {result:?}");
                Ok(ExitCode::from(1))
            }
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        }
    })
}
