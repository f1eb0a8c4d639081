use std::process::ExitCode;
#[derive(clap::Args)]
pub struct ServeArgs {}
pub fn serve(_: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
