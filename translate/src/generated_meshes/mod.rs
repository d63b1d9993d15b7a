//! The guarantee "nothing Pilotfish accepts is rejected by Envoy", checked by
//! generation rather than by a list of examples.
//!
//! Each case is a seeded set of VirtualServices, DestinationRules, Gateways
//! and ServiceEntries generated from the CRD schemas ([`schema_values`]),
//! written as text and read by the same loader and validation the server
//! uses; the objects it accepts, over a small fixed registry, are translated
//! for one proxy (sidecar, sidecar with inbound ports and DNS proxying, sidecar without
//! interception, or ingress gateway) and the result is checked by a real
//! `envoy --mode validate`. A rejection is shrunk to the smallest objects
//! Envoy still rejects and printed as YAML.
//!
//! `PILOTFISH_GENERATED_MESHES` (default 1000) and `PILOTFISH_GENERATED_SEED`
//! (first seed, default 0) set the run; docs/correctness.md records the
//! longer runs.

mod schema_values;
mod shrink;
mod value_pools;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pilotfish_crds::Kind;
use pilotfish_model::{Endpoint, Protocol, Resolution, Service};
use serde_json::{Value, json};

use crate::envoy_validation::{envoy_check, tls_fixture};
use crate::mesh::{CredentialKey, MeshState, TlsCredential};
use crate::proxy::ProxyView;
use crate::test_support::*;
use schema_values::{Generator, Temper};
use value_pools::Pools;

/// The `spec` schema of each kind, at the storage version.
struct Schemas(Vec<(Kind, Value)>);

impl Schemas {
    fn load() -> Schemas {
        let specs = pilotfish_crds::manifests::crds()
            .into_iter()
            .map(|crd| {
                let kind = Kind::from_name(&crd.spec.names.kind).expect("known kind");
                let crd = serde_json::to_value(&crd).expect("CRD as JSON");
                let versions = crd["spec"]["versions"].as_array().expect("versions");
                let v1 = versions
                    .iter()
                    .find(|v| v["name"] == "v1")
                    .expect("a v1 version");
                let spec = v1["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
                (kind, spec)
            })
            .collect();
        Schemas(specs)
    }

    fn spec(&self, kind: Kind) -> &Value {
        let found = self.0.iter().find(|(k, _)| *k == kind);
        &found.expect("schema of every kind").1
    }
}

/// One generated mesh: its objects as documents and the proxy to check.
#[derive(Clone, Debug)]
pub struct Case {
    seed: u64,
    documents: Vec<Value>,
    proxy: usize,
}

const PROXIES: [&str; 4] = [
    "sidecar",
    "sidecar with inbound ports, DNS proxying and a workload certificate (mesh mTLS)",
    "sidecar without interception",
    "ingress gateway",
];

fn proxy_view(index: usize) -> ProxyView {
    match index {
        0 => sidecar("default"),
        1 => ProxyView {
            labels: sidecar_with_labels("default", &[("app", "reviews"), ("version", "v1")]).labels,
            dns: crate::proxy::DnsOptions {
                capture: true,
                auto_allocate: true,
            },
            workload_certificate: true,
            ..with_inbound(&[
                (9080, Protocol::Http),
                (5432, Protocol::Tcp),
                (7070, Protocol::Grpc),
                (9090, Protocol::Unknown),
            ])
        },
        2 => sidecar_without_interception("default"),
        _ => gateway_proxy("istio-system", &[("istio", "ingressgateway")]),
    }
}

const KINDS: [Kind; 6] = [
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::ServiceEntry,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
];

fn generate(schemas: &Schemas, pools: &Pools, seed: u64) -> Case {
    let mut g = Generator {
        rng: Rng::new(seed.wrapping_add(0x5EED)),
        temper: Temper::Plain,
        pools,
    };
    let count = 1 + g.rng.below(6);
    let documents = (0..count)
        .map(|i| {
            let kind = *g.rng.pick(&[
                KINDS[0], KINDS[0], KINDS[0], KINDS[1], KINDS[1], KINDS[2], KINDS[3], KINDS[4],
                KINDS[5],
            ]);
            g.temper = if g.rng.below(3) == 0 {
                Temper::Edgy
            } else {
                Temper::Plain
            };
            let spec = g.value(schemas.spec(kind), "spec", 0);
            document(&mut g, kind, i, spec)
        })
        .collect();
    let proxy = g.rng.below(PROXIES.len());
    Case {
        seed,
        documents,
        proxy,
    }
}

/// Wraps a generated spec in apiVersion, kind and metadata, nudged towards
/// objects that meet each other (Gateways named `gw` selecting the ingress
/// gateway), since unrelated objects translate to little.
fn document(g: &mut Generator, kind: Kind, index: usize, mut spec: Value) -> Value {
    let version = *g.rng.pick(kind.versions());
    let edgy = g.temper == Temper::Edgy;
    let name = match (kind, g.rng.below(10)) {
        (_, 0) if edgy => "Bad_Name".to_string(),
        (Kind::Gateway, 0..=6) => "gw".to_string(),
        _ => format!("{}-{index}", kind.as_str().to_lowercase()),
    };
    let namespace = *g
        .rng
        .pick(&["default", "default", "default", "istio-system", "other"]);
    if kind == Kind::Gateway && g.rng.below(5) != 0 {
        spec["selector"] = json!({"istio": "ingressgateway"});
    }
    // Policies select the certified sidecar (app: reviews) more often than not.
    let policy = matches!(kind, Kind::PeerAuthentication | Kind::AuthorizationPolicy);
    if policy && spec.get("selector").is_some() && g.rng.below(3) != 0 {
        spec["selector"] = json!({"matchLabels": {"app": "reviews"}});
    }
    if kind == Kind::AuthorizationPolicy && !edgy {
        enforceable_policy(&mut spec);
    }
    if kind == Kind::VirtualService && !edgy {
        sni_hosts_from_hosts(g, &mut spec);
    }
    if kind == Kind::Gateway && !edgy {
        terminating_servers_with_credentials(&mut spec);
    }
    if kind == Kind::ServiceEntry && !edgy {
        coherent_resolution(&mut spec);
    }
    let mut metadata = json!({"name": name, "namespace": namespace});
    let created = *g.rng.pick(&[
        "",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.5Z",
        "2024-01-01T05:00:00+05:00",
        "2024-02-01T00:00:00Z",
    ]);
    if !created.is_empty() {
        metadata["creationTimestamp"] = json!(created);
    }
    json!({
        "apiVersion": format!("{}/{version}", kind.group()),
        "kind": kind.as_str(),
        "metadata": metadata,
        "spec": spec,
    })
}

/// Leaves out of an AuthorizationPolicy what loading rejects as not
/// enforceable (attachments, CUSTOM and AUDIT), so most get through.
fn enforceable_policy(spec: &mut Value) {
    if let Some(fields) = spec.as_object_mut() {
        for field in ["targetRef", "targetRefs", "provider"] {
            fields.remove(field);
        }
        if matches!(
            fields.get("action").and_then(Value::as_str),
            Some("CUSTOM" | "AUDIT")
        ) {
            fields.insert("action".into(), json!("DENY"));
        }
    }
}

/// A VirtualService's SNI hosts must fall under its own hosts; draw them
/// from there, so that TLS routes get past validation.
fn sni_hosts_from_hosts(g: &mut Generator, spec: &mut Value) {
    plain_hosts(spec);
    let hosts: Vec<String> = spec["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|h| !h.contains('/'))
        .map(|h| h.replacen('*', "a", 1))
        .collect();
    if hosts.is_empty() {
        return;
    }
    let Some(rules) = spec.get_mut("tls").and_then(Value::as_array_mut) else {
        return;
    };
    for m in rules
        .iter_mut()
        .flat_map(|r| r.get_mut("match").and_then(Value::as_array_mut))
        .flatten()
    {
        if let Some(snis) = m.get_mut("sniHosts").and_then(Value::as_array_mut) {
            for sni in snis.iter_mut() {
                *sni = json!(g.rng.pick(&hosts));
            }
        }
    }
}

/// Gateway-style `namespace/host` entries come from the shared pool of the
/// `hosts` field name; VirtualServices and ServiceEntries have plain hosts.
fn plain_hosts(spec: &mut Value) {
    let hosts = spec.get_mut("hosts").and_then(Value::as_array_mut);
    for host in hosts.into_iter().flatten() {
        if let Some((_, name)) = host.as_str().and_then(|h| h.split_once('/')) {
            *host = json!(name);
        }
    }
}

/// Servers on HTTPS and TLS ports need TLS settings, and terminating ones a
/// certificate; give them the `gw-cert` credential when they have none.
fn terminating_servers_with_credentials(spec: &mut Value) {
    let servers = spec.get_mut("servers").and_then(Value::as_array_mut);
    for server in servers.into_iter().flatten() {
        let protocol = server["port"]["protocol"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase();
        if !matches!(
            protocol.as_str(),
            "HTTP" | "HTTPS" | "GRPC" | "HTTP2" | "TCP" | "TLS" | "MONGO"
        ) {
            server["port"]["protocol"] = json!("HTTP");
        }
        if matches!(protocol.as_str(), "HTTPS" | "TLS") && server.get("tls").is_none() {
            server["tls"] = json!({"mode": "SIMPLE"});
        }
        let Some(tls) = server.get_mut("tls").and_then(Value::as_object_mut) else {
            continue;
        };
        let terminates = matches!(
            tls.get("mode").and_then(Value::as_str),
            Some("SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL")
        );
        if terminates && !tls.contains_key("serverCertificate") {
            tls.insert("credentialName".into(), json!("gw-cert"));
        }
    }
}

/// Picks the resolution a ServiceEntry's endpoints and addresses allow
/// (validation ties them together), so entries reach translation.
fn coherent_resolution(spec: &mut Value) {
    plain_hosts(spec);
    let endpoints: Vec<String> = spec["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["address"].as_str().map(str::to_string))
        .collect();
    if !endpoints.is_empty() {
        let all_ips = endpoints
            .iter()
            .all(|a| a.parse::<std::net::IpAddr>().is_ok() || a.starts_with("unix://"));
        spec["resolution"] = json!(if all_ips { "STATIC" } else { "DNS" });
        spec.as_object_mut().map(|s| s.remove("workloadSelector"));
    }
    let ranges_allowed = spec["resolution"] == "STATIC" || spec["resolution"] == "NONE";
    if !ranges_allowed
        && let Some(addresses) = spec.get_mut("addresses").and_then(Value::as_array_mut)
    {
        addresses.retain(|a| a.as_str().is_some_and(|a| !a.contains('/')));
    }
    let endpoints = spec.get_mut("endpoints").and_then(Value::as_array_mut);
    for endpoint in endpoints.into_iter().flatten() {
        if endpoint["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("unix://"))
        {
            endpoint.as_object_mut().map(|e| e.remove("ports"));
        }
    }
}

/// The registry every case runs against: HTTP, TCP, unknown-protocol, gRPC
/// and TLS services, shared ports, a VIP-less TCP service and DNS hosts.
fn registry() -> (Vec<Service>, Vec<(&'static str, Vec<Endpoint>)>) {
    let fqdn = |s: &str| format!("{s}.default.svc.cluster.local");
    let versions = |host: &'static str, port: u16, base: &str| {
        let eps = ["v1", "v2", "v3"]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                endpoint(
                    &format!("{base}.{}", i + 1),
                    port,
                    port,
                    &[("version", v), ("app", "x")],
                )
            })
            .collect();
        (host, eps)
    };
    let mut external = service(
        "api.example.com",
        &[],
        &[(443, Protocol::Tls), (80, Protocol::Http2)],
    );
    external.resolution = Resolution::Dns;
    let services = vec![
        service(&fqdn("reviews"), &["10.0.0.10"], &[(9080, Protocol::Http)]),
        service(&fqdn("ratings"), &["10.0.0.11"], &[(9080, Protocol::Http)]),
        service(
            &fqdn("details"),
            &["10.0.0.12"],
            &[(9080, Protocol::Unknown)],
        ),
        service(&fqdn("db"), &["10.0.0.13"], &[(5432, Protocol::Tcp)]),
        service(
            "mongo.service.consul",
            &[],
            &[(27017, Protocol::Tcp), (9080, Protocol::Tcp)],
        ),
        service(&fqdn("grpc"), &["10.0.0.14"], &[(7070, Protocol::Grpc)]),
        service(&fqdn("secure"), &["10.0.0.15"], &[(443, Protocol::Tls)]),
        external,
    ];
    let endpoints = vec![
        versions("reviews.default.svc.cluster.local", 9080, "10.1.1"),
        versions("ratings.default.svc.cluster.local", 9080, "10.1.2"),
        versions("details.default.svc.cluster.local", 9080, "10.1.3"),
        versions("db.default.svc.cluster.local", 5432, "10.1.4"),
        versions("mongo.service.consul", 27017, "10.1.5"),
        versions("grpc.default.svc.cluster.local", 7070, "10.1.6"),
        versions("secure.default.svc.cluster.local", 443, "10.1.7"),
    ];
    (services, endpoints)
}

/// The `gw-cert` credential gateways and DestinationRules may name.
fn credentials() -> Vec<(CredentialKey, TlsCredential)> {
    let read = |name: &str| std::fs::read(tls_fixture(name)).expect("TLS fixture");
    ["default", "istio-system"]
        .into_iter()
        .map(|namespace| {
            let key: CredentialKey = (namespace.into(), "gw-cert".into());
            let credential = TlsCredential {
                certificate_chain: read("client.pem"),
                private_key: read("client-key.pem"),
                ca_certificates: Some(read("ca.pem")),
            };
            (key, credential)
        })
        .collect()
}

/// What loading and checking one case found.
struct Outcome {
    generated: usize,
    accepted: [usize; KINDS.len()],
    envoy: Result<(), String>,
}

fn yaml_text(documents: &[Value]) -> String {
    let docs: Vec<String> = documents.iter().map(Value::to_string).collect();
    docs.join("\n---\n")
}

fn check(case: &Case) -> Outcome {
    // What the server serves: objects the loader reads and validation passes.
    let loaded =
        pilotfish_crds::load_yaml("generated.yaml", &yaml_text(&case.documents), "default");
    let objects: Vec<_> = loaded
        .objects
        .into_iter()
        .filter(|obj| pilotfish_crds::validate::validate(obj).is_empty())
        .collect();
    let mut accepted = [0; KINDS.len()];
    for obj in &objects {
        let at = KINDS.iter().position(|k| *k == obj.kind());
        accepted[at.expect("a generated kind")] += 1;
    }
    let (services, endpoints) = registry();
    let mut mesh = mesh(services, endpoints, &objects);
    mesh.credentials = credentials().into_iter().collect();
    let envoy = accepted_by_envoy(&mesh, case);
    Outcome {
        generated: case.documents.len(),
        accepted,
        envoy,
    }
}

fn accepted_by_envoy(mesh: &MeshState, case: &Case) -> Result<(), String> {
    let t = translate_for(mesh, &proxy_view(case.proxy));
    envoy_check(&t, &format!("generated-{}", case.seed))
}

#[derive(Default)]
struct Totals {
    meshes: AtomicUsize,
    generated: AtomicUsize,
    accepted: [AtomicUsize; KINDS.len()],
    meshes_with_config: AtomicUsize,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn envoy_accepts_every_generated_mesh_that_validation_accepts() {
    let count = env_number("PILOTFISH_GENERATED_MESHES", 1000);
    let first = env_number("PILOTFISH_GENERATED_SEED", 0);
    let schemas = Schemas::load();
    let pools = Pools;
    let next = AtomicU64::new(first);
    let totals = Totals::default();
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        break;
                    }
                    let case = generate(&schemas, &pools, seed);
                    let outcome = check(&case);
                    totals.meshes.fetch_add(1, Ordering::Relaxed);
                    totals
                        .generated
                        .fetch_add(outcome.generated, Ordering::Relaxed);
                    for (total, n) in totals.accepted.iter().zip(outcome.accepted) {
                        total.fetch_add(n, Ordering::Relaxed);
                    }
                    if outcome.accepted.iter().sum::<usize>() > 0 {
                        totals.meshes_with_config.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(message) = outcome.envoy {
                        let report = shrink::report(&case, &message, |c| check(c).envoy.is_err());
                        failures.lock().expect("failures").push(report);
                    }
                }
            });
        }
    });
    let accepted: Vec<usize> = totals
        .accepted
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let generated = totals.generated.load(Ordering::Relaxed);
    let meshes = totals.meshes.load(Ordering::Relaxed);
    eprintln!(
        "generated meshes {first}..{}: {meshes} meshes, {generated} objects, accepted by validation: \
         {} VirtualServices, {} DestinationRules, {} Gateways, {} ServiceEntries, \
         {} PeerAuthentications, {} AuthorizationPolicies; \
         {} meshes translated with config",
        first + count,
        accepted[0],
        accepted[1],
        accepted[2],
        accepted[3],
        accepted[4],
        accepted[5],
        totals.meshes_with_config.load(Ordering::Relaxed),
    );
    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "Envoy rejected {} of {meshes} generated meshes:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // A generator that drifts into producing only refused objects would
    // check nothing; each kind must be accepted often.
    for (kind, n) in KINDS.iter().zip(&accepted) {
        assert!(
            *n as u64 >= count / 20,
            "only {n} {kind:?} objects accepted in {count} meshes: the generator no longer exercises them"
        );
    }
}
