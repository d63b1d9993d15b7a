//! `pilotfish explain`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ExplainArgs {}

pub fn run(_args: ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
