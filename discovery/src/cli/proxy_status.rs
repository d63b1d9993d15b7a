//! `pilotfish proxy-status`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ProxyStatusArgs {}

pub fn run(_args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
