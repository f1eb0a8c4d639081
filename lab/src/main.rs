//! `lab`: the Lockstep command line.
//!
//! Exit codes (a contract other tooling relies on): 0 when everything
//! passes, 1 on any failed expectation, invariant violation or lab error,
//! 2 on usage or input errors.

mod bench;
mod bench_fleet;
mod bench_gateway;
mod certify;
mod conformance;
mod container;
mod doctor;
mod explore;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Lockstep: replay zero-trust enforcement scenarios in a deterministic
/// simulation and check that enforcement never lapsed.
#[derive(Parser)]
#[command(name = "lab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files or folders (default: ./scenarios, or the embedded
    /// scenarios when there is no such folder) and write reports.
    Run(run::RunArgs),
    /// Run one scenario and print its trace (JSON Lines) on stdout.
    Replay(run::ReplayArgs),
    /// Explore: run a swarm of generated scenarios (all drawn from the seed),
    /// report failures with their replay line and minimize them.
    Explore(explore::ExploreArgs),
    /// Measure scenario throughput against a bare turmoil baseline
    /// (`lab bench gateway`: the gateway in real mode under load).
    Bench(bench_gateway::BenchCmd),
    /// Serve the lab's identity provider, gateway and apps on real loopback
    /// sockets (real mode), for poking with a browser or curl.
    Serve(serve::ServeArgs),
    /// Certify a live OpenID Connect provider over real sockets (a verdict
    /// per check and per profile; JSON, JUnit, Markdown and HTML reports).
    Certify(Box<certify::CertifyArgs>),
    /// Which real peers the test suite runs against are installed, their
    /// versions, and the command that installs the missing ones (exit 0).
    Doctor(doctor::DoctorArgs),
    /// Run firewall conformance cases (default: tests/conformance/cases) on
    /// the WFP model or on real nftables.
    Conformance(conformance::ConformanceArgs),
}

/// mimalloc rather than glibc's malloc, whose arena locks were the hottest
/// lock under `lab bench gateway`; it also speeds up simulations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Replay(args) => run::replay(args),
        Command::Explore(args) => explore::explore(args),
        Command::Bench(args) => bench_gateway::dispatch(args),
        Command::Serve(args) => serve::serve(args),
        Command::Certify(args) => certify::certify_cmd(*args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Conformance(args) => conformance::conformance(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::from(2)
        }
    }
}
