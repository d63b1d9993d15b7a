//! Benchmark: translation and encoding of one sidecar view, and of one
//! gateway view, for meshes of growing size; and a whole generation for many
//! proxies of distinct deployments through the server's snapshot cache.
//! Run with `cargo bench -p pilotfish-discovery --bench translate_snapshot`
//! (`-- views` for the last table alone). Prints tables; the written report
//! is `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use pilotfish_crds::load_yaml;
use pilotfish_discovery::cache::SnapshotCache;
use pilotfish_discovery::mesh_store::MeshGeneration;
use pilotfish_discovery::metrics::Metrics;
use pilotfish_discovery::snapshot::Snapshot;
use pilotfish_discovery::xds_types::XdsType;
use pilotfish_registries::{
    Endpoint, Health, Protocol, RegistryKind, Resolution, Service, ServicePort,
};
use pilotfish_translate::{InboundPort, MeshState, ProxyKind, ProxyView, translate};

fn mesh(services: usize, endpoints_per_service: usize) -> MeshState {
    let mut svcs = Vec::new();
    let mut eps = BTreeMap::new();
    let mut yaml = String::new();
    for i in 0..services {
        let host = format!("svc-{i}.ns-{}.svc.cluster.local", i % 10);
        // Every fifth service is TCP on the shared port, to exercise filter chains.
        let protocol = if i % 5 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Http
        };
        svcs.push(Service {
            hostname: host.clone(),
            namespace: format!("ns-{}", i % 10),
            vips: vec![
                format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
                    .parse()
                    .expect("ip"),
            ],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 9080,
                protocol,
            }],
            registry: RegistryKind::File,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: vec![],
        });
        let endpoints = (0..endpoints_per_service)
            .map(|e| Endpoint {
                address: format!("172.{}.{}.{}", (i >> 8) & 255, i & 255, e & 255),
                port: 9080,
                service_port: 9080,
                labels: BTreeMap::from([("version".to_string(), format!("v{}", e % 2 + 1))]),
                locality: None,
                health: Health::Healthy,
                weight: None,
            })
            .collect::<Vec<_>>();
        eps.insert(host.clone(), endpoints);
        if i % 5 == 1 {
            yaml.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr-{i}, namespace: ns-{ns}}}\nspec:\n  host: {host}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: ns-{ns}}}\nspec:\n  hosts: [{host}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: {host}, subset: v2}}}}]\n  - route: [{{destination: {{host: {host}, subset: v1}}, weight: 80}}, {{destination: {{host: {host}, subset: v2}}, weight: 20}}]\n",
                ns = i % 10
            ));
        }
    }
    let config = load_yaml("bench", &yaml, "default").objects;
    MeshState::of(svcs, eps, config)
}

fn time<T>(iterations: u32, mut f: impl FnMut() -> T) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    started.elapsed() / iterations
}

/// A Gateway for every host on 8080 and one VirtualService per gateway host
/// (`shop-<i>.example.com`), each with a header match and an 80/20 split to
/// one of the mesh's services.
fn gateway_mesh(services: usize, virtual_services: usize) -> MeshState {
    let mut state = mesh(services, 3);
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: ns-1}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    );
    for i in 0..virtual_services {
        let target = format!(
            "svc-{n}.ns-{ns}.svc.cluster.local",
            n = i % services,
            ns = i % services % 10
        );
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: edge-{i}, namespace: ns-1}}\nspec:\n  hosts: [shop-{i}.example.com]\n  gateways: [edge]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: {target}}}}}]\n  - route: [{{destination: {{host: {target}}}, weight: 80}}, {{destination: {{host: {target}}}, weight: 20}}]\n"
        ));
    }
    std::sync::Arc::make_mut(&mut state.config)
        .extend(load_yaml("bench-gateway", &yaml, "default").objects);
    state
}

fn gateway_table() {
    let view = ProxyView {
        kind: ProxyKind::Router,
        namespace: "ns-1".into(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        ..Default::default()
    };
    println!();
    println!(
        "| services | gateway hosts | translate | translate+encode | virtual hosts | encoded bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (services, hosts) in [(100, 10), (1000, 100), (1000, 1000), (5000, 2000)] {
        let state = gateway_mesh(services, hosts);
        let iterations = if services >= 5000 { 3 } else { 10 };
        let translate_time = time(iterations, || translate(&state, &view));
        let full_time = time(iterations, || {
            Snapshot::build(1, translate(&state, &view).resources, None)
        });
        let out = translate(&state, &view);
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics.first());
        let snapshot = Snapshot::build(1, out.resources.clone(), None);
        println!(
            "| {services} | {hosts} | {:.2} ms | {:.2} ms | {} | {} |",
            translate_time.as_secs_f64() * 1e3,
            full_time.as_secs_f64() * 1e3,
            out.resources
                .routes
                .iter()
                .map(|r| r.virtual_hosts.len())
                .sum::<usize>(),
            encoded_bytes(&snapshot)
        );
    }
}

fn encoded_bytes(snapshot: &Snapshot) -> usize {
    [
        &snapshot.clusters,
        &snapshot.endpoints,
        &snapshot.listeners,
        &snapshot.routes,
        &snapshot.secrets,
    ]
    .iter()
    .flat_map(|t| t.resources.values())
    .map(|a| a.value_len())
    .sum()
}

/// Sidecars of `deployments` deployments in namespace ns-0, each with its
/// own `app` label, all serving HTTP on 9080.
fn deployment_views(deployments: usize) -> Vec<ProxyView> {
    (0..deployments)
        .map(|i| ProxyView {
            namespace: "ns-0".into(),
            labels: BTreeMap::from([
                ("app".to_string(), format!("dep-{i}")),
                ("version".to_string(), "v1".to_string()),
            ]),
            inbound: vec![InboundPort {
                port: 9080,
                protocol: Protocol::Http,
            }],
            ..Default::default()
        })
        .collect()
}

/// `state` plus a VirtualService for each of the first `selected`
/// deployments, matching its sidecars by `sourceLabels` (a route of its own
/// to one service, with a timeout).
fn with_source_label_rules(mut state: MeshState, selected: usize) -> MeshState {
    let mut yaml = String::new();
    for k in 0..selected {
        let host = format!(
            "svc-{n}.ns-{ns}.svc.cluster.local",
            n = 5 * k + 3,
            ns = (5 * k + 3) % 10
        );
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: pick-{k}, namespace: ns-0}}\nspec:\n  hosts: [{host}]\n  http:\n  - match: [{{sourceLabels: {{app: dep-{k}}}}}]\n    timeout: 3s\n    route: [{{destination: {{host: {host}}}}}]\n  - route: [{{destination: {{host: {host}}}}}]\n"
        ));
    }
    std::sync::Arc::make_mut(&mut state.config)
        .extend(load_yaml("bench-source-labels", &yaml, "default").objects);
    state
}

/// Builds every proxy's snapshot through a fresh cache, as the server does
/// for a new generation: (time, distinct views, retained encoded bytes).
fn generation(state: &MeshState, proxies: &[ProxyView]) -> (Duration, usize, usize) {
    let generation = MeshGeneration {
        version: 1,
        mesh: std::sync::Arc::new(state.clone()),
        ..Default::default()
    };
    let cache = SnapshotCache::new(std::sync::Arc::new(Metrics::new()));
    let started = Instant::now();
    let snapshots: Vec<_> = proxies
        .iter()
        .map(|proxy| cache.snapshot(&generation, proxy))
        .collect();
    let elapsed = started.elapsed();
    // Bytes held once however many snapshots share them: resources'
    // encodings and their response entries, each shared piece once.
    let (mut sets, mut pieces) = (std::collections::HashSet::new(), Default::default());
    let retained = snapshots
        .iter()
        .flat_map(|s| XdsType::ALL.map(|ty| s.of_shared(ty).clone()))
        .filter(|set| sets.insert(std::sync::Arc::as_ptr(set)))
        .map(|set| set.held_bytes(&mut pieces))
        .sum();
    (elapsed, cache.views(), retained)
}

/// Where one sidecar view's time goes: resolving the generation (shared by
/// every view), the per-view context, each type's emission, and the encoding
/// of what a view builds for itself.
fn per_type_table() {
    use pilotfish_discovery::snapshot::{ViewResources, encode_clusters, encode_endpoints};
    use pilotfish_translate::{Context, emit, resolve};
    let state = with_source_label_rules(mesh(1000, 3), 20);
    let view = &deployment_views(1)[0];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let resolve_time = time(10, || resolve(state.clone()));
    let resolved = resolve(state.clone());
    let ctx = Context::new(&resolved, view);
    let context = time(10, || Context::new(&resolved, view));
    let clusters_time = time(10, || emit::clusters(&ctx, &mut Vec::new()));
    let endpoints_time = time(10, || emit::endpoints(&ctx));
    let listeners_time = time(10, || emit::listeners(&ctx, &mut Vec::new()));
    let routes_time = time(10, || emit::route_parts(&ctx, &mut Vec::new()));
    let built = (emit::clusters(&ctx, &mut Vec::new()), emit::endpoints(&ctx));
    let encode_shared = time(10, || {
        (
            encode_clusters(built.0.clone(), None),
            encode_endpoints(built.1.clone(), None),
        )
    });
    let encode_own = time(10, || {
        let own = ViewResources {
            listeners: emit::listeners(&ctx, &mut Vec::new()),
            routes: emit::route_parts(&ctx, &mut Vec::new()),
            secrets: emit::secrets(&ctx, &mut Vec::new()),
        };
        Snapshot::assemble(1, Default::default(), own, None, &Default::default())
    });
    println!();
    println!(
        "| 1,000 services, one sidecar view | resolve (per generation) | context | clusters | endpoints | listeners | routes | encode clusters+endpoints | build+encode listeners+routes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| ms | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        ms(resolve_time),
        ms(context),
        ms(clusters_time),
        ms(endpoints_time),
        ms(listeners_time),
        ms(routes_time),
        ms(encode_shared),
        ms(encode_own)
    );
}

fn views_table() {
    println!();
    println!(
        "| scenario | proxies | views built | generation | × one view | retained bytes | × one view |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let proxies = deployment_views(200);
    let plain = mesh(1000, 3);
    let selected = with_source_label_rules(mesh(1000, 3), 20);
    for (name, state) in [
        ("200 deployments, no rule selects them", &plain),
        ("200 deployments, 20 selected by sourceLabels", &selected),
    ] {
        let best = |proxies: &[ProxyView]| {
            (0..3)
                .map(|_| generation(state, proxies))
                .min_by_key(|(t, _, _)| *t)
                .expect("three runs")
        };
        let (one_time, _, one_bytes) = best(&proxies[..1]);
        let (time, views, bytes) = best(&proxies);
        println!(
            "| {name} | {} | {views} | {:.1} ms | {:.2} | {bytes} | {:.2} |",
            proxies.len(),
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / one_time.as_secs_f64(),
            bytes as f64 / one_bytes as f64,
        );
        println!(
            "| (one view of it) | 1 | 1 | {:.1} ms | 1 | {one_bytes} | 1 |",
            one_time.as_secs_f64() * 1e3
        );
    }
}

/// One view's generation as the server builds it (resolve, emit through
/// the shared parts, encode), by mesh size.
fn served_view_table() {
    println!();
    println!("| services | one view's generation, served path | bytes held |");
    println!("|---:|---:|---:|");
    let proxy = &deployment_views(1);
    for services in [1000, 5000] {
        let state = mesh(services, 3);
        let (time, _, bytes) = (0..3)
            .map(|_| generation(&state, proxy))
            .min_by_key(|(t, _, _)| *t)
            .expect("three runs");
        println!(
            "| {services} | {:.1} ms | {bytes} |",
            time.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "views") {
        per_type_table();
        views_table();
        served_view_table();
        return;
    }
    let view = ProxyView {
        namespace: "ns-1".into(),
        ..Default::default()
    };
    println!(
        "| services | endpoints | translate | translate+encode | clusters | listeners | routes | encoded bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (services, endpoints) in [(10, 3), (100, 3), (1000, 3), (5000, 3), (1000, 20)] {
        let state = mesh(services, endpoints);
        let iterations = if services >= 5000 { 3 } else { 10 };
        let translate_time = time(iterations, || translate(&state, &view));
        let full_time = time(iterations, || {
            Snapshot::build(1, translate(&state, &view).resources, None)
        });
        let out = translate(&state, &view);
        let snapshot = Snapshot::build(1, out.resources.clone(), None);
        let bytes = encoded_bytes(&snapshot);
        println!(
            "| {services} | {} | {:.2} ms | {:.2} ms | {} | {} | {} | {} |",
            services * endpoints,
            translate_time.as_secs_f64() * 1e3,
            full_time.as_secs_f64() * 1e3,
            out.resources.clusters.len(),
            out.resources.listeners.len(),
            out.resources.routes.len(),
            bytes
        );
    }
    gateway_table();
    per_type_table();
    views_table();
}
