use std::process::ExitCode;
#[derive(clap::Args)]
pub struct BenchArgs {}
pub fn bench(_: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
