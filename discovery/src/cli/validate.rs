//! `pilotfish validate`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ValidateArgs {}

pub fn run(_args: ValidateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
