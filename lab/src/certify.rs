//! `lab certify idp`: certify a live OpenID Connect provider over real
//! sockets, and write `certification.json`, `junit.xml`,
//! `certification.md` and `certification.html`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use lockstep::certify::driver::{self, DriverSettings, LoginDriver, default_directory};
use lockstep::certify::{CertifyOptions, Profile, Verdict, certify, report};
use lockstep::http::HttpClient;
use lockstep::net::Directory;
use lockstep::net::real::{SystemClock, TokioNet};
use lockstep::rng::SeededRng;
use url::Url;

#[derive(Args)]
pub struct CertifyArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Certify an OpenID Connect provider for use behind the gateway.
    Idp(IdpArgs),
}

#[derive(Args)]
pub(crate) struct IdpArgs {
    /// The issuer identifier, exactly as the gateway is configured with it.
    #[arg(long, required_unless_present = "container")]
    pub(crate) issuer: Option<String>,
    /// Start the provider in a container and certify it: keycloak[:TAG]
    /// (needs a Docker engine and a `lab` built with `--features
    /// containers`). The container's issuer, client and user are used.
    #[arg(long, value_name = "PROVIDER[:TAG]", conflicts_with_all = ["issuer", "client_id", "redirect_uri", "login_command"])]
    pub(crate) container: Option<String>,
    /// The client registered for the gateway.
    #[arg(long, required_unless_present = "container")]
    pub(crate) client_id: Option<String>,
    /// The client's secret (omit for a public client).
    #[arg(long, env = "LAB_CLIENT_SECRET", hide_env_values = true)]
    pub(crate) client_secret: Option<String>,
    /// The client's registered redirect URI (nothing needs to listen there).
    #[arg(long, required_unless_present = "container")]
    pub(crate) redirect_uri: Option<String>,
    /// Built-in login driver: redirect, form, glewlwyd.
    #[arg(long, default_value = "form", conflicts_with = "login_command")]
    pub(crate) login_driver: String,
    /// Run CMD with the authorization URL as its last argument; it prints
    /// the final redirect URL (with code and state) on stdout.
    #[arg(long, value_name = "CMD")]
    pub(crate) login_command: Option<String>,
    /// The user who signs in.
    #[arg(long, default_value = "alice")]
    pub(crate) username: String,
    /// Their password.
    #[arg(long, env = "LAB_PASSWORD", hide_env_values = true, default_value = "alicepass")]
    pub(crate) password: String,
    /// Profiles to judge (repeat or comma-separate): basic, mfa-evidence,
    /// session-semantics, key-management. Default: all.
    #[arg(long = "profile", value_delimiter = ',')]
    pub(crate) profiles: Vec<String>,
    /// The gateway's policy allows PKCE `plain` (do not require its refusal).
    #[arg(long)]
    pub(crate) allow_pkce_plain: bool,
    /// `acr_values` to request (default: the first advertised).
    #[arg(long)]
    pub(crate) acr_values: Option<String>,
    /// A command that makes the provider rotate its signing key.
    #[arg(long, value_name = "CMD")]
    pub(crate) rotate_command: Option<String>,
    /// Clock skew tolerated between this machine and the provider.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) leeway: Duration,
    /// Where the reports go.
    #[arg(long, default_value = "reports/certify")]
    pub(crate) report_dir: PathBuf,
}

pub fn certify_cmd(args: CertifyArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        Target::Idp(a) => idp(a),
    }
}

pub(crate) fn usage(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("lab certify idp: {message}");
    Ok(ExitCode::from(2))
}

fn idp(args: IdpArgs) -> anyhow::Result<ExitCode> {
    if let Some(given) = args.container.clone() {
        return match crate::container::prepare(&given) {
            Ok(spec) => crate::container::certify_in_container(spec, args),
            Err(message) => usage(message),
        };
    }
    let (Some(issuer), Some(client_id), Some(redirect_uri)) =
        (args.issuer.clone(), args.client_id.clone(), args.redirect_uri.clone())
    else {
        return usage("--issuer, --client-id and --redirect-uri are required (or --container)".into());
    };
    certify_provider(args, &issuer, &client_id, &redirect_uri)
}

/// Certifies the provider at `issuer`, writes the reports and prints the
/// summary.
pub(crate) fn certify_provider(
    args: IdpArgs,
    issuer_arg: &str,
    client_id: &str,
    redirect_arg: &str,
) -> anyhow::Result<ExitCode> {
    let issuer = match Url::parse(issuer_arg) {
        Ok(u) => u,
        Err(e) => return usage(format!("--issuer `{issuer_arg}` is not a URL: {e}")),
    };
    let redirect_uri = match Url::parse(redirect_arg) {
        Ok(u) => u,
        Err(e) => return usage(format!("--redirect-uri `{redirect_arg}` is not a URL: {e}")),
    };
    if issuer.scheme() != "http" {
        return usage(format!(
            "--issuer `{issuer}`: only http:// issuers are supported (the certifier has no TLS client yet); \
             reach an https provider through a local TLS-terminating proxy"
        ));
    }
    let mut profiles = Vec::new();
    for name in &args.profiles {
        match Profile::parse(name.trim()) {
            Some(p) => profiles.push(p),
            None => {
                let known: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                return usage(format!("--profile `{name}` is not one of {}", known.join(", ")));
            }
        }
    }
    if profiles.is_empty() {
        profiles = Profile::ALL.to_vec();
    }
    let options = CertifyOptions {
        issuer: issuer_arg.to_string(),
        client_id: client_id.to_string(),
        client_secret: args.client_secret.clone(),
        redirect_uri,
        profiles,
        allow_pkce_plain: args.allow_pkce_plain,
        acr_values: args.acr_values.clone(),
        rotate_command: args.rotate_command.clone(),
        leeway: args.leeway,
    };
    let settings = DriverSettings {
        username: args.username.clone(),
        password: args.password.clone(),
        client_id: client_id.to_string(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cert = runtime.block_on(async {
        let directory = resolve(&issuer).await?;
        let mut login: Box<dyn LoginDriver> = match &args.login_command {
            Some(cmd) => driver::command_driver(cmd, &settings),
            None => driver::driver(&args.login_driver, &settings),
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let http = HttpClient::new(TokioNet::shared(), directory);
        let rng = SeededRng::from_os_entropy();
        anyhow::Ok(certify(&options, login.as_mut(), http, Arc::new(SystemClock), rng).await)
    });
    let cert = match cert {
        Ok(c) => c,
        Err(e) => return usage(format!("{e:#}")),
    };
    let written = report::write_all(&args.report_dir, &cert).map_err(|e| anyhow::anyhow!("{e}"))?;
    print_summary(&cert);
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(if cert.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The lab's directory plus the issuer's host name, resolved by the system.
async fn resolve(issuer: &Url) -> anyhow::Result<Directory> {
    let mut directory = default_directory();
    let host = issuer.host_str().unwrap_or_default();
    if directory.resolve(host).is_none() {
        let port = issuer.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving `{host}` (from --issuer)"))?
            .next()
            .with_context(|| format!("`{host}` (from --issuer) has no address"))?;
        directory.insert(host, addr.ip());
    }
    Ok(directory)
}

fn print_summary(cert: &lockstep::certify::Certification) {
    let mut profiles = Table::new();
    profiles.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["profile", "verdict", "pass", "warn", "fail", "skip"]);
    for p in &cert.profiles {
        profiles.add_row(vec![
            p.profile.title().to_string(),
            p.verdict.as_str().to_string(),
            p.passed.to_string(),
            p.warnings.to_string(),
            p.failed.to_string(),
            p.skipped.to_string(),
        ]);
    }
    println!("{} (client {}, driver {}, {} ms)", cert.issuer, cert.client_id, cert.driver, cert.duration_ms);
    println!("{profiles}");
    for c in cert.checks.iter().filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Warning | Verdict::NotRun)) {
        println!("{:>8} {}: {}", c.verdict.as_str(), c.id, c.detail);
    }
    println!("{}", if cert.passed() { "CERTIFIED" } else { "NOT CERTIFIED" });
}
