//! `pilotfish explain URL [-H 'name: value']...`: the path a request takes
//! through one proxy (listener, filter chain, routes, clusters, endpoints,
//! and the Istio objects behind each step), either from files, translated
//! as the server would (`--config`, `--registry-file`, `--proxy-*`), or
//! from a running server's resources for a connected proxy (`--proxy`).
//! Exits 0 when the request reaches a destination, 1 when it would fail.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pilotfish_translate::explain::{ExplainRequest, explain_in_mesh};
use serde_json::Value;

use super::Output;
use super::debug_client::{self, DEFAULT_ADDRESS, encode_query_value};
use super::offline::{MeshFiles, ViewArgs};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The request: `http://host[:port]/path?query` or `tcp://ip:port`.
    pub url: String,
    /// A request header, `name: value` (or `name:value`); repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
    /// Offline: files or directories of Istio YAML; repeatable.
    #[arg(long)]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub mesh: MeshFiles,
    #[command(flatten)]
    pub view: ViewArgs,
    /// Online: the server's debug address (default 127.0.0.1:15014).
    #[arg(long)]
    pub server: Option<String>,
    /// Online: a connected proxy's node id, or its pod (`name` or
    /// `name.namespace`).
    #[arg(long)]
    pub proxy: Option<String>,
}

impl ExplainArgs {
    fn offline(&self) -> bool {
        !self.config.is_empty() || !self.mesh.registry_files.is_empty()
    }
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let explanation = match (args.offline(), &args.proxy) {
        (true, None) if args.server.is_none() => offline(&args)?,
        (false, Some(proxy)) => online(&args, proxy)?,
        (true, _) => bail!(
            "--config/--registry-file explain offline; --server/--proxy ask a server: not both"
        ),
        (false, None) => bail!(
            "say which proxy: --proxy <node id or pod> (a running server), or --config/--registry-file with --proxy-namespace/--proxy-label (offline)"
        ),
    };
    let succeeded = explanation["succeeded"].as_bool().unwrap_or(false);
    if !args.output.print_structured(&explanation["explanation"])? {
        match explanation["text"].as_str() {
            Some(text) => print!("{text}"),
            None => bail!("the server's answer has no text: {explanation}"),
        }
    }
    Ok(match succeeded {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

fn offline(args: &ExplainArgs) -> anyhow::Result<Value> {
    let request = ExplainRequest::parse(&args.url, &args.headers)?;
    let generation = args.mesh.load(&args.config)?;
    for problem in &generation.problems {
        eprintln!("warning: {}: {}", problem.source, problem.message);
    }
    let named = args.view.view(&generation, &args.mesh.default_namespace);
    let translation = pilotfish_translate::translate(&generation.mesh, &named.view);
    let explanation = explain_in_mesh(
        &translation.resources,
        &generation.mesh,
        &named.view.namespace,
        request,
    );
    Ok(crate::explain_endpoint::envelope(&explanation)?)
}

fn online(args: &ExplainArgs, proxy: &str) -> anyhow::Result<Value> {
    if args.view.given() {
        bail!(
            "--proxy-namespace/--proxy-label/--proxy-ip describe an offline proxy; online, --proxy names it"
        );
    }
    // Checked here too, so a bad URL fails before the server is asked.
    ExplainRequest::parse(&args.url, &args.headers)?;
    let mut query = format!(
        "/debug/explain?proxy={}&url={}",
        encode_query_value(proxy),
        encode_query_value(&args.url)
    );
    for header in &args.headers {
        query.push_str(&format!("&header={}", encode_query_value(header)));
    }
    let server = args.server.as_deref().unwrap_or(DEFAULT_ADDRESS);
    debug_client::get_json(server, &query).with_context(|| format!("explaining {}", args.url))
}
