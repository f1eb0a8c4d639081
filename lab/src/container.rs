//! `lab certify idp --container PROVIDER[:TAG]`: start the provider in a
//! container with testcontainers (the `containers` feature), certify it
//! with the client and user its configuration registers, and remove it.
//!
//! What needs no engine (the image, its command and files, the realm, the
//! engine probe) is `lockstep::certify::container`; this file only starts
//! and stops the container.

use std::process::ExitCode;
use std::time::Duration;

use lockstep::certify::container::{self, ContainerSpec};

use crate::certify::IdpArgs;

/// Checks everything that can be checked before a container starts: the
/// provider is known, this binary can start containers, and a Docker
/// engine answers. The error is the message for the user.
pub fn prepare(given: &str) -> Result<ContainerSpec, String> {
    let spec = container::provider(given).map_err(|e| e.to_string())?;
    if !cfg!(feature = "containers") {
        return Err(not_built(given));
    }
    let endpoint = container::endpoint(std::env::var("DOCKER_HOST").ok().as_deref()).map_err(|e| e.to_string())?;
    container::probe(&endpoint, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn not_built(given: &str) -> String {
    format!(
        "--container {given}: this `lab` was built without the `containers` feature; rebuild it with \
         `cargo build --release -p lab --features containers` (it also needs a running Docker engine), or start \
         the provider yourself and pass --issuer"
    )
}

/// Starts the container, certifies it, removes it.
#[cfg(feature = "containers")]
pub fn certify_in_container(spec: ContainerSpec, mut args: IdpArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    eprintln!("starting {}:{} (the first start pulls the image) ...", spec.image, spec.tag);
    let started = runtime.block_on(async {
        let mut request = GenericImage::new(spec.image.as_str(), spec.tag.as_str())
            .with_exposed_port(spec.port.tcp())
            .with_wait_for(WaitFor::message_on_stdout(spec.ready_line.as_str()))
            .with_cmd(spec.cmd.clone())
            .with_startup_timeout(spec.startup_timeout);
        for (name, value) in &spec.env {
            request = request.with_env_var(name.as_str(), value.as_str());
        }
        for (path, contents) in &spec.files {
            request = request.with_copy_to(path.as_str(), contents.clone());
        }
        let running = request.start().await.with_context(|| format!("starting {}:{}", spec.image, spec.tag))?;
        let port = running.get_host_port_ipv4(spec.port.tcp()).await.context("reading the published port")?;
        anyhow::Ok((running, port))
    });
    let (running, port) = match started {
        Ok(v) => v,
        Err(e) => return crate::certify::usage(format!("--container {}: {e:#}", spec.provider)),
    };
    let issuer = spec.issuer(port);
    eprintln!("{} is up: issuer {issuer}", spec.provider);
    args.client_secret = Some(spec.login.client_secret.clone());
    args.username = spec.login.username.clone();
    args.password = spec.login.password.clone();
    args.login_driver = spec.login.driver.clone();
    let outcome = crate::certify::certify_provider(args, &issuer, &spec.login.client_id, &spec.login.redirect_uri);
    if let Err(e) = runtime.block_on(running.rm()) {
        eprintln!("warning: could not remove the {} container: {e}", spec.provider);
    }
    outcome
}

/// Without the feature, `prepare` has already refused.
#[cfg(not(feature = "containers"))]
pub fn certify_in_container(spec: ContainerSpec, _args: IdpArgs) -> anyhow::Result<ExitCode> {
    crate::certify::usage(not_built(&spec.provider))
}
