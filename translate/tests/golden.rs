//! Golden files at the boundary between the stages: for each case, the
//! resolved IR (`Resolved::dump`, stage 1) and what each view emits from it
//! (stage 2) in Envoy's own JSON, under `testdata/golden/<case>/`.
//!
//! Cases: the repository's Bookinfo (testdata/bookinfo), and every Istio
//! sample in `../shared/istio-samples` that holds networking objects, each
//! over the Bookinfo registry it was written for (Kubernetes names, or
//! Istio 1.1's Consul names). Views: a Bookinfo sidecar (productpage v1,
//! so sourceLabels rules apply) and, where the input has Gateways, an
//! ingress gateway.
//!
//! A difference fails the test with the case and file; after reviewing a
//! change, `PILOTFISH_UPDATE_GOLDEN=1 cargo test -p pilotfish-translate
//! --test golden` rewrites the files. Golden files check what is built;
//! the traffic tests in discovery/tests check that it routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pilotfish_translate::{
    InboundPort, MeshState, ProxyKind, ProxyView, XdsResources, emit, resolve,
};
use pilotfish_xds_json::message_to_json;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn samples() -> PathBuf {
    repo().join("../shared/istio-samples")
}

struct Case {
    name: String,
    registry: PathBuf,
    config: Vec<PathBuf>,
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn cases() -> Vec<Case> {
    let kubernetes = repo().join("testdata/bookinfo/registry.yaml");
    let consul = repo().join("testdata/golden/consul-registry.yaml");
    let mut cases = vec![Case {
        name: "bookinfo".into(),
        registry: kubernetes.clone(),
        config: yaml_files(&repo().join("testdata/bookinfo/config")),
    }];
    let sample_sets = [
        ("istio", samples().join("bookinfo-networking"), &kubernetes),
        (
            "istio-1.1-consul",
            samples().join("istio-1.1-consul/bookinfo/platform/consul"),
            &consul,
        ),
    ];
    for (prefix, dir, registry) in sample_sets {
        for file in yaml_files(&dir) {
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
            let Some(stem) = stem else { continue };
            cases.push(Case {
                name: format!("{prefix}-{stem}"),
                registry: registry.clone(),
                config: vec![file],
            });
        }
    }
    cases
}

/// The case's mesh as the discovery server loads it; `None` when its input
/// has no networking objects (a sample of other kinds).
fn mesh(case: &Case) -> Option<MeshState> {
    let text = std::fs::read_to_string(&case.registry).expect("read registry");
    let registry = pilotfish_registries::file::parse_registry_file("registry.yaml", &text)
        .expect("registry parses")
        .snapshot;
    let mut objects = Vec::new();
    for path in &case.config {
        let text = std::fs::read_to_string(path).expect("read config");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let outcome = pilotfish_crds::load_yaml(&name.unwrap_or_default(), &text, "default");
        assert!(
            outcome.errors.is_empty(),
            "{}: {:?}",
            case.name,
            outcome.errors
        );
        objects.extend(outcome.objects);
    }
    (!objects.is_empty() || case.name == "bookinfo")
        .then(|| MeshState::of(registry.services, registry.endpoints, objects))
}

fn views(mesh: &MeshState) -> Vec<(&'static str, ProxyView)> {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut views = vec![(
        "sidecar-productpage-v1",
        ProxyView {
            namespace: "default".into(),
            labels: labels(&[("app", "productpage"), ("version", "v1")]),
            inbound: vec![InboundPort {
                port: 9080,
                protocol: pilotfish_translate::Protocol::Http,
            }],
            ..Default::default()
        },
    )];
    // Where rules ask for mesh mTLS, also the view of a sidecar that holds
    // its workload certificate (authenticated on the secure port).
    let mesh_mtls = mesh
        .config
        .iter()
        .any(|o| format!("{:?}", o.spec).contains("IstioMutual"));
    if mesh_mtls {
        let certified = ProxyView {
            workload_certificate: true,
            ..views[0].1.clone()
        };
        views.push(("sidecar-productpage-v1-workload-certificate", certified));
    }
    let has_gateways = mesh
        .config
        .iter()
        .any(|o| o.kind() == pilotfish_crds::Kind::Gateway);
    if has_gateways {
        views.push((
            "ingressgateway",
            ProxyView {
                kind: ProxyKind::Router,
                namespace: "istio-system".into(),
                labels: labels(&[("istio", "ingressgateway"), ("app", "istio-ingressgateway")]),
                ..Default::default()
            },
        ));
    }
    views
}

fn to_json<M: prost::Message + prost::Name>(items: &[M]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|m| message_to_json(m).unwrap_or_else(|e| panic!("{}: {e}", M::full_name())))
            .collect(),
    )
}

fn envoy_json(resources: &XdsResources) -> Value {
    json!({
        "clusters": to_json(&resources.clusters),
        "endpoints": to_json(&resources.endpoints),
        "listeners": to_json(&resources.listeners),
        "routes": to_json(&resources.routes),
        "secrets": to_json(&resources.secrets),
    })
}

/// Compares `actual` with the golden file (or rewrites it when asked);
/// returns a description of the difference.
fn check(path: &Path, actual: &Value) -> Option<String> {
    let text = serde_json::to_string_pretty(actual).expect("JSON prints") + "\n";
    if std::env::var_os("PILOTFISH_UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden directory");
        }
        std::fs::write(path, &text).expect("write golden file");
        return None;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == text {
        return None;
    }
    let line = expected
        .lines()
        .zip(text.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| expected.lines().count().min(text.lines().count()));
    Some(format!(
        "{} differs from line {}: expected {:?}, got {:?}",
        path.display(),
        line + 1,
        expected.lines().nth(line).unwrap_or("<end>"),
        text.lines().nth(line).unwrap_or("<end>"),
    ))
}

#[test]
fn resolved_ir_and_emitted_envoy_json_match_the_golden_files() {
    if !samples().is_dir() {
        eprintln!(
            "note: {} not found; only the repository's cases run",
            samples().display()
        );
    }
    let golden = repo().join("testdata/golden");
    let mut differences = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let Some(mesh) = mesh(&case) else { continue };
        let views = views(&mesh);
        let resolved = resolve(mesh);
        let dir = golden.join(&case.name);
        differences.extend(check(&dir.join("ir.json"), &resolved.dump()));
        for (name, view) in views {
            let emitted = emit(&resolved, &view);
            let mut out = envoy_json(&emitted.resources);
            out["diagnostics"] = serde_json::to_value(&emitted.diagnostics).expect("serializes");
            differences.extend(check(&dir.join(format!("{name}.json")), &out));
        }
        checked += 1;
    }
    assert!(checked > 0, "no golden case ran");
    assert!(
        differences.is_empty(),
        "{} golden file(s) differ (review, then rerun with PILOTFISH_UPDATE_GOLDEN=1):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// The golden files are the emitted output, not a second source: a file
/// left for a case that no longer exists is reported.
#[test]
fn every_golden_directory_belongs_to_a_case() {
    if !samples().is_dir() {
        return;
    }
    let names: Vec<String> = cases()
        .iter()
        .filter(|c| mesh(c).is_some())
        .map(|c| c.name.clone())
        .collect();
    let stale: Vec<String> = std::fs::read_dir(repo().join("testdata/golden"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !names.contains(n))
        .collect();
    assert!(
        stale.is_empty(),
        "golden directories without a case: {stale:?}"
    );
}
