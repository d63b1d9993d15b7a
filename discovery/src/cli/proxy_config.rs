//! `pilotfish proxy-config`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ProxyConfigArgs {}

pub fn run(_args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
