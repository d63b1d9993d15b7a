//! `pilotfish diff --config CURRENT... CHANGED...`: before anything is
//! applied, which proxies a config change would change, and how (clusters,
//! listeners, routes, endpoints, secrets added, removed or modified).
//! CHANGED is applied as `kubectl apply` would (objects added or replaced
//! by kind/namespace/name), or with `--replace` taken as the whole new
//! config. Exit code 1 when anything changes, as `diff(1)`, for CI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use envoy_types::pb::google::protobuf::Any;
use pilotfish_crds::ConfigKey;
use pilotfish_translate::{XdsResources, emit};
use prost::Name;
use serde::Serialize;
use serde_json::Value;

use super::Output;
use super::offline::{MeshFiles, NamedView, implied_views};
use crate::mesh_store::MeshGeneration;
use crate::sources::config_dir::ConfigDirs;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The changed files or directories.
    #[arg(required = true)]
    pub changed: Vec<PathBuf>,
    /// The current config: files or directories of Istio YAML.
    #[arg(long = "config")]
    pub config: Vec<PathBuf>,
    /// CHANGED is the whole new config, not objects applied over it.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub mesh: MeshFiles,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

/// How one resource changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Serialize)]
pub struct ResourceChange {
    /// `cluster`, `listener`, `route`, `endpoint`, `secret`.
    pub r#type: &'static str,
    pub name: String,
    pub change: Change,
    /// For a modified resource: the JSON paths that differ (a few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ProxyChange {
    pub proxy: String,
    pub resources: Vec<ResourceChange>,
}

#[derive(Debug, Default, Serialize)]
pub struct DiffReport {
    /// Objects the change adds, replaces or removes (`VirtualService ns/name`).
    pub objects: BTreeMap<String, Change>,
    pub proxies: Vec<ProxyChange>,
    /// Proxies the mesh implies, changed or not.
    pub proxies_checked: usize,
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let before = args.mesh.load(&args.config)?;
    let after = changed_generation(&args, &before)?;
    let report = diff(&before, &after);
    let structured = serde_json::to_value(&report)?;
    if !args.output.print_structured(&structured)? {
        print!("{}", render(&report));
    }
    Ok(
        match report.proxies.is_empty() && report.objects.is_empty() {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        },
    )
}

/// The current config with the changed objects applied (or replaced by
/// them), over the same registries.
fn changed_generation(args: &DiffArgs, before: &MeshGeneration) -> anyhow::Result<MeshGeneration> {
    let changed = ConfigDirs::new(args.changed.clone(), &args.mesh.default_namespace).load();
    if let Some(problem) = changed.problems.first() {
        anyhow::bail!("the changed config does not load: {problem}");
    }
    let mut objects = changed.objects;
    if !args.replace {
        let replaced: Vec<ConfigKey> = objects.iter().map(|o| o.key()).collect();
        objects.extend(
            before
                .mesh
                .config
                .iter()
                .filter(|o| !replaced.contains(&o.key()))
                .cloned(),
        );
    }
    let mut store = args.mesh.store(&[])?;
    store.add_dynamic_config("changed");
    store.set_dynamic_config("changed", objects, Vec::new());
    Ok(store.rebuild())
}

pub fn diff(before: &MeshGeneration, after: &MeshGeneration) -> DiffReport {
    let mut report = DiffReport {
        objects: object_changes(before, after),
        ..DiffReport::default()
    };
    // Every proxy either side implies, by name.
    let mut views: BTreeMap<String, NamedView> = BTreeMap::new();
    for v in implied_views(before)
        .into_iter()
        .chain(implied_views(after))
    {
        views.entry(v.name.clone()).or_insert(v);
    }
    report.proxies_checked = views.len();
    for (name, NamedView { view, .. }) in views {
        let old = emit(before.resolved(), &view).resources;
        let new = emit(after.resolved(), &view).resources;
        let resources = resource_changes(&old, &new);
        if !resources.is_empty() {
            report.proxies.push(ProxyChange {
                proxy: name,
                resources,
            });
        }
    }
    report
}

fn object_changes(before: &MeshGeneration, after: &MeshGeneration) -> BTreeMap<String, Change> {
    let index = |g: &MeshGeneration| -> BTreeMap<String, pilotfish_crds::ConfigSpec> {
        g.mesh
            .config
            .iter()
            .map(|o| (o.key().to_string(), o.spec.clone()))
            .collect()
    };
    let (old, new) = (index(before), index(after));
    let mut out = BTreeMap::new();
    for (key, spec) in &new {
        match old.get(key) {
            None => {
                out.insert(key.clone(), Change::Added);
            }
            Some(previous) if previous != spec => {
                out.insert(key.clone(), Change::Modified);
            }
            Some(_) => {}
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        out.insert(key.clone(), Change::Removed);
    }
    out
}

/// Resources by type and name, as `Any`s (for their JSON) keyed for
/// comparison with `==` on the messages (encodings may differ in map order).
fn resource_changes(old: &XdsResources, new: &XdsResources) -> Vec<ResourceChange> {
    let mut out = Vec::new();
    compare(
        "cluster",
        &old.clusters,
        &new.clusters,
        |c| &c.name,
        &mut out,
    );
    compare(
        "listener",
        &old.listeners,
        &new.listeners,
        |l| &l.name,
        &mut out,
    );
    compare("route", &old.routes, &new.routes, |r| &r.name, &mut out);
    compare(
        "endpoint",
        &old.endpoints,
        &new.endpoints,
        |e| &e.cluster_name,
        &mut out,
    );
    compare("secret", &old.secrets, &new.secrets, |s| &s.name, &mut out);
    out
}

fn compare<T: PartialEq + Name + prost::Message + Clone + Default>(
    ty: &'static str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    out: &mut Vec<ResourceChange>,
) {
    let old: BTreeMap<&String, &T> = old.iter().map(|r| (name(r), r)).collect();
    let new: BTreeMap<&String, &T> = new.iter().map(|r| (name(r), r)).collect();
    for (n, resource) in &new {
        let change = match old.get(n) {
            None => Change::Added,
            Some(previous) if previous != resource => Change::Modified,
            Some(_) => continue,
        };
        let fields = match (change, old.get(n)) {
            (Change::Modified, Some(previous)) => {
                changed_fields(&json(*previous), &json(*resource))
            }
            _ => Vec::new(),
        };
        out.push(ResourceChange {
            r#type: ty,
            name: (*n).clone(),
            change,
            fields,
        });
    }
    for n in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(ResourceChange {
            r#type: ty,
            name: (*n).clone(),
            change: Change::Removed,
            fields: Vec::new(),
        });
    }
}

fn json<T: Name + prost::Message + Clone + Default>(resource: &T) -> Value {
    let any: Any = envoy_types::util::pack_any(resource.clone());
    pilotfish_xds_json::any_to_json(&any).unwrap_or(Value::Null)
}

/// At most this many differing paths are listed per resource.
const MAX_FIELDS: usize = 5;

/// The JSON paths where `a` and `b` differ (`virtualHosts[1].routes[0]`).
fn changed_fields(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= MAX_FIELDS || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let child = match path.is_empty() {
                    true => k.clone(),
                    false => format!("{path}.{k}"),
                };
                walk(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    child,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(p, q, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(match path.is_empty() {
            true => "(all)".into(),
            false => path,
        }),
    }
}

pub fn render(report: &DiffReport) -> String {
    let mut out = String::new();
    let sign = |c: Change| match c {
        Change::Added => "+",
        Change::Removed => "-",
        Change::Modified => "~",
    };
    for (object, change) in &report.objects {
        out.push_str(&format!("{} {object}\n", sign(*change)));
    }
    if report.proxies.is_empty() {
        out.push_str(&format!(
            "no proxy changes ({} proxies checked)\n",
            report.proxies_checked
        ));
        return out;
    }
    out.push_str(&format!(
        "{} of {} proxies change:\n",
        report.proxies.len(),
        report.proxies_checked
    ));
    for p in &report.proxies {
        out.push_str(&format!("{}\n", p.proxy));
        for r in &p.resources {
            out.push_str(&format!("  {} {} {}", sign(r.change), r.r#type, r.name));
            if !r.fields.is_empty() {
                out.push_str(&format!("  ({})", r.fields.join(", ")));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_name_the_paths_that_differ() {
        let a =
            json!({"name": "9080", "virtualHosts": [{"routes": [{"route": {"cluster": "a"}}]}]});
        let b =
            json!({"name": "9080", "virtualHosts": [{"routes": [{"route": {"cluster": "b"}}]}]});
        assert_eq!(
            changed_fields(&a, &b),
            ["virtualHosts[0].routes[0].route.cluster"]
        );
        let c = json!({"name": "9080", "virtualHosts": []});
        assert_eq!(changed_fields(&a, &c), ["virtualHosts"]);
    }
}
