//! `pilotfish diff`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct DiffArgs {}

pub fn run(_args: DiffArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
