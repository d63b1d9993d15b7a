//! Checks against real inputs and a real Envoy. Each test packs a
//! translation into a static bootstrap (route configurations inlined in
//! place of RDS, load assignments as static clusters) and runs it through
//! `envoy --mode validate`, which fails on anything Envoy would NACK. The
//! Envoy binary is `$ENVOY_BIN`, else the one `scripts/setup.sh` installs,
//! else `envoy` on PATH.

use std::process::Command;

use pilotfish_model::Protocol;

use envoy_types::pb::envoy::config::bootstrap::v3::{
    Bootstrap, LayeredRuntime, RuntimeLayer, bootstrap, runtime_layer,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, DataSource, GrpcService, Node, TransportSocket,
    api_config_source::ApiType, data_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, Secret, TlsCertificate,
    UpstreamTlsContext, common_tls_context::ValidationContextType, secret,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use prost::Message;

use crate::protobuf;
use crate::resources::Translation;
use crate::test_support::*;

const XDS_CLUSTER: &str = "xds-grpc";

fn bootstrap(t: &Translation) -> Bootstrap {
    let routes = &t.resources.routes;
    let listeners = t
        .resources
        .listeners
        .iter()
        .map(|l| static_listener_secrets(inline_routes(l.clone(), routes)))
        .collect();
    let mut clusters: Vec<Cluster> = t
        .resources
        .clusters
        .iter()
        .cloned()
        .map(static_secrets)
        .collect();
    clusters.push(static_cluster(XDS_CLUSTER.into(), None));
    for (i, cla) in t.resources.endpoints.iter().enumerate() {
        clusters.push(static_cluster(format!("eds-check-{i}"), Some(cla.clone())));
    }
    let ads = ApiConfigSource {
        api_type: ApiType::Grpc as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Bootstrap {
        node: Some(Node {
            id: "sidecar~10.0.0.99~test.default~default.svc.cluster.local".into(),
            cluster: "test".into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            secrets: t
                .resources
                .secrets
                .iter()
                .cloned()
                .chain(mesh_secrets())
                .collect(),
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ads),
            ..Default::default()
        }),
        layered_runtime: Some(runtime()),
        ..Default::default()
    }
}

/// Points a cluster's SDS references at the bootstrap's static secrets (the
/// translation's own): validate mode has no ADS to fetch them from, and
/// Envoy 1.40 crashes validating an upstream context that waits on one.
fn static_secrets(mut cluster: Cluster) -> Cluster {
    let matches = cluster
        .transport_socket_matches
        .iter_mut()
        .filter_map(|m| m.transport_socket.as_mut());
    for socket in cluster.transport_socket.iter_mut().chain(matches) {
        static_socket(socket);
    }
    cluster
}

/// The same for a listener's TLS chains (mesh mTLS inbound).
fn static_listener_secrets(mut listener: Listener) -> Listener {
    for chain in listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut())
    {
        if let Some(socket) = chain.transport_socket.as_mut() {
            static_socket(socket);
        }
    }
    listener
}

fn static_socket(socket: &mut TransportSocket) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = socket.config_type.as_mut() else {
        return;
    };
    if let Some(mut context) = protobuf::unpack::<UpstreamTlsContext>(any) {
        context
            .common_tls_context
            .iter_mut()
            .for_each(static_common);
        *any = protobuf::any(context);
    } else if let Some(mut context) = protobuf::unpack::<DownstreamTlsContext>(any) {
        context
            .common_tls_context
            .iter_mut()
            .for_each(static_common);
        *any = protobuf::any(context);
    }
}

fn static_common(common: &mut CommonTlsContext) {
    for sds in &mut common.tls_certificate_sds_secret_configs {
        sds.sds_config = None;
    }
    match common.validation_context_type.as_mut() {
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(sds) = combined.validation_context_sds_secret_config.as_mut() {
                sds.sds_config = None;
            }
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            sds.sds_config = None;
        }
        _ => {}
    }
}

/// What the server sends a proxy with a workload certificate (`default`,
/// `ROOTCA`), from the test fixtures; unused static secrets are harmless.
fn mesh_secrets() -> Vec<Secret> {
    let inline = |name: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            std::fs::read(tls_fixture(name)).expect("fixture"),
        )),
        ..Default::default()
    };
    vec![
        Secret {
            name: "default".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline("client.pem")),
                private_key: Some(inline("client-key.pem")),
                ..Default::default()
            })),
        },
        Secret {
            name: "ROOTCA".into(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline("ca.pem")),
                    ..Default::default()
                },
            )),
        },
    ]
}

/// What the sidecar bootstrap must carry too: RE2's default program size
/// limit (100) rejects ordinary VirtualService regexes.
fn runtime() -> LayeredRuntime {
    let limit = Value {
        kind: Some(value::Kind::StringValue("32768".into())),
    };
    LayeredRuntime {
        layers: vec![RuntimeLayer {
            name: "pilotfish".into(),
            layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(Struct {
                fields: [("re2.max_program_size.error_level".to_string(), limit)].into(),
            })),
        }],
    }
}

fn static_cluster(
    name: String,
    assignment: Option<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>,
) -> Cluster {
    Cluster {
        name,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(protobuf::seconds(1)),
        load_assignment: assignment,
        ..Default::default()
    }
}

fn inline_routes(mut listener: Listener, routes: &[RouteConfiguration]) -> Listener {
    for chain in listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut())
    {
        inline_chain(chain, routes);
    }
    listener
}

fn inline_chain(chain: &mut FilterChain, routes: &[RouteConfiguration]) {
    for f in &mut chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        let Some(mut hcm) = protobuf::unpack::<HttpConnectionManager>(any) else {
            continue;
        };
        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
            continue;
        };
        let rc = routes
            .iter()
            .find(|r| r.name == rds.route_config_name)
            .cloned();
        let rc = rc.unwrap_or_else(|| {
            panic!(
                "listener refers to missing route configuration {}",
                rds.route_config_name
            )
        });
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
        *any = protobuf::any(hcm);
    }
}

/// The Envoy to check with: `$ENVOY_BIN`, else the one `scripts/setup.sh`
/// installs, else `envoy` on PATH.
fn envoy_binary() -> String {
    let installed = "/opt/pilotfish-test/bin/envoy";
    std::env::var("ENVOY_BIN").unwrap_or_else(|_| {
        if std::path::Path::new(installed).exists() {
            installed.into()
        } else {
            "envoy".into()
        }
    })
}

/// Runs `t` through `envoy --mode validate`; `Err` holds Envoy's output.
pub(crate) fn envoy_check(t: &Translation, label: &str) -> Result<(), String> {
    let envoy = envoy_binary();
    let path = std::env::temp_dir().join(format!(
        "pilotfish-validate-{}-{label}.pb",
        std::process::id()
    ));
    std::fs::write(&path, bootstrap(t).encode_to_vec()).expect("write bootstrap");
    let output = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {envoy}: {e} (run scripts/setup.sh to install Envoy)")
        });
    let _ = std::fs::remove_file(&path);
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(envoy_error(&text))
}

/// Envoy's reason, without the configuration it echoes before it (the
/// whole bootstrap in protobuf text for a constraint violation).
fn envoy_error(output: &str) -> String {
    let reason = output.rsplit_once("\n}\n").map_or(output, |(_, tail)| tail);
    reason.trim().to_string()
}

fn envoy_validates(t: &Translation, label: &str) {
    if let Err(output) = envoy_check(t, label) {
        panic!("Envoy rejected the {label} translation:\n{output}");
    }
}

#[test]
fn envoy_accepts_the_translation_of_a_busy_mesh() {
    let m = busy_mesh();
    envoy_validates(&translate_for(&m, &sidecar("default")), "busy");
    envoy_validates(
        &translate_for(&m, &sidecar_without_interception("default")),
        "busy-none",
    );
    let with_inbound = with_inbound(&[
        (9080, Protocol::Http),
        (9090, Protocol::Tcp),
        (9091, Protocol::Unknown),
        (9092, Protocol::Grpc),
    ]);
    envoy_validates(&translate_for(&m, &with_inbound), "busy-inbound");
    // A proxy with a workload certificate: mesh TLS chains on every kind
    // of inbound port, auto mTLS on every outbound cluster.
    let certified = crate::ProxyView {
        workload_certificate: true,
        ..with_inbound
    };
    envoy_validates(&translate_for(&m, &certified), "busy-mesh-mtls");
}

#[test]
fn envoy_accepts_istio_mutual_and_auto_mtls_with_sds_workload_certificates() {
    let mut m = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/ratings"]}
"#,
    );
    let labelled = (1..=3)
        .map(|v| {
            let version = format!("v{v}");
            endpoint(
                &format!("10.1.0.{v}"),
                9080,
                9080,
                &[
                    ("version", version.as_str()),
                    ("security.istio.io/tlsMode", "istio"),
                ],
            )
        })
        .collect();
    m.endpoints
        .insert(REVIEWS.into(), std::sync::Arc::new(labelled));
    let certified = crate::ProxyView {
        workload_certificate: true,
        ..with_inbound(&[
            (9080, Protocol::Http),
            (9090, Protocol::Tcp),
            (9091, Protocol::Unknown),
        ])
    };
    envoy_validates(&translate_for(&m, &certified), "mesh-mtls");
}

/// PeerAuthentication modes (mesh STRICT, namespace PERMISSIVE, workload
/// DISABLE with port-level overrides) and AuthorizationPolicies using
/// every field, on certified and uncertified sidecars with HTTP, TCP and
/// sniffed ports.
#[test]
fn envoy_accepts_peer_authentication_and_authorization_policy_rbac() {
    let m = bookinfo(SECURITY_POLICIES);
    let ports = [
        (9080, Protocol::Http),
        (9090, Protocol::Tcp),
        (9091, Protocol::Unknown),
    ];
    let labelled = |certified| crate::ProxyView {
        workload_certificate: certified,
        labels: [("app".to_string(), "reviews".to_string())].into(),
        ..with_inbound(&ports)
    };
    envoy_validates(&translate_for(&m, &labelled(true)), "security-certified");
    envoy_validates(&translate_for(&m, &labelled(false)), "security-uncertified");
    let other = crate::ProxyView {
        workload_certificate: true,
        ..with_inbound(&ports)
    };
    envoy_validates(&translate_for(&m, &other), "security-namespace");
}

const SECURITY_POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: DISABLE}
  portLevelMtls:
    9080: {mode: STRICT}
    9091: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all-fields, namespace: default}
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/evil/sa/x", "*/sa/bad", "evil.local/*", "*"]
        notPrincipals: ["cluster.local/ns/default/sa/good"]
        namespaces: ["evil", "test-*", "*-dev"]
        notNamespaces: ["default"]
        ipBlocks: ["10.9.0.0/16", "192.168.1.1"]
        notIpBlocks: ["10.9.1.0/24"]
        remoteIpBlocks: ["172.16.0.0/12"]
        notRemoteIpBlocks: ["172.16.1.1"]
    - source: {serviceAccounts: ["evil/x", "local"], notServiceAccounts: ["evil/y"]}
    - source: {trustDomains: ["other.local", "*"], notTrustDomains: ["cluster.local"]}
    to:
    - operation:
        hosts: ["evil.example.com", "*.evil.com", "evil.*", "*"]
        notHosts: ["ok.evil.com"]
        methods: ["DELETE"]
        notMethods: ["GET"]
        paths: ["/admin", "/admin/*", "*.php", "*"]
        notPaths: ["/admin/ok"]
        ports: ["9080"]
        notPorts: ["9999"]
    when:
    - {key: "request.headers[x-evil]", values: ["yes", "*", "a*", "*b"], notValues: ["no"]}
    - {key: source.principal, values: ["cluster.local/ns/evil/sa/x"], notValues: ["*"]}
    - {key: source.namespace, values: ["evil"], notValues: ["default"]}
    - {key: source.ip, values: ["10.9.0.1"], notValues: ["10.9.0.2/32"]}
    - {key: remote.ip, values: ["10.9.0.0/24"]}
    - {key: destination.ip, values: ["10.1.0.1"], notValues: ["10.1.0.2"]}
    - {key: destination.port, values: ["9080"], notValues: ["9090"]}
    - {key: connection.sni, values: ["*.local"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-some, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reviews/*"]}}]
  - to: [{operation: {ports: ["9090"]}}]
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: experimental, namespace: default}
spec:
  rules: [{when: [{key: experimental.envoy.filters.x, values: ["y"]}]}]
"#;

#[test]
fn envoy_accepts_access_logs_and_zipkin_tracing_on_sidecars_and_gateways() {
    let m = with_access_log_and_tracing(busy_mesh());
    let with_inbound = with_inbound(&[(9080, Protocol::Http), (9090, Protocol::Tcp)]);
    envoy_validates(&translate_for(&m, &with_inbound), "observed");
    let gateway = crate::ProxyView {
        kind: crate::ProxyKind::Router,
        ..sidecar("default")
    };
    envoy_validates(&translate_for(&m, &gateway), "observed-gateway");
}

#[test]
fn envoy_accepts_the_translation_of_random_meshes() {
    for seed in 0..40 {
        envoy_validates(
            &translate_for(&random_mesh(seed), &sidecar("default")),
            &format!("random-{seed}"),
        );
    }
}

#[test]
fn envoy_accepts_the_translation_of_odd_input() {
    envoy_validates(&translate_for(&odd_mesh(), &sidecar("default")), "odd");
}

/// The repository's Bookinfo (testdata/bookinfo) as the discovery server
/// would load it; `None` when the files are not there.
fn testdata_bookinfo() -> Option<crate::MeshState> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bookinfo");
    let registry = std::fs::read_to_string(root.join("registry.yaml")).ok()?;
    let snapshot = pilotfish_registries::file::parse_registry_file("registry.yaml", &registry)
        .expect("testdata registry parses")
        .snapshot;
    let mut objects = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root.join("config"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read testdata config");
        let outcome = pilotfish_crds::load_yaml(&path.display().to_string(), &text, "default");
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        objects.extend(outcome.objects);
    }
    Some(crate::MeshState::of(
        snapshot.services,
        snapshot.endpoints,
        objects,
    ))
}

#[test]
fn testdata_bookinfo_translates_without_diagnostics() {
    let Some(m) = testdata_bookinfo() else {
        eprintln!("testdata/bookinfo not found; skipped");
        return;
    };
    let t = translate_for(&m, &sidecar("default"));
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
    let routes = reviews_routes(&t);
    assert_eq!(routes.len(), 2, "jason → v2, everyone else → v1");
}

#[test]
fn envoy_accepts_the_translation_of_testdata_bookinfo() {
    if let Some(m) = testdata_bookinfo() {
        envoy_validates(&translate_for(&m, &sidecar("default")), "bookinfo");
    }
}

/// Regexes beyond RE2 program size 100 need the bootstrap's runtime
/// `re2.max_program_size.error_level` raised (as Istio's bootstrap does).
#[test]
fn envoy_accepts_large_regexes_and_direct_response_bodies() {
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "/api/(users|orders|products|payments)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.*"}}]
    directResponse: {status: 200, body: {string: "BODY"}}
"#;
    let vs = vs.replace("BODY", &"x".repeat(5000));
    let t = translate_for(&bookinfo(&vs), &sidecar("default"));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    envoy_validates(&t, "large");
}

/// A file of translate/testdata/tls, by absolute path (Envoy loads it).
pub(crate) fn tls_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tls")
        .join(name);
    assert!(path.exists(), "missing fixture {}", path.display());
    path.display().to_string()
}

/// VirtualService `tcp`/`tls` rules in every shape, DestinationRule `tls`
/// in every mode, and a passthrough ServiceEntry port.
fn l4_mesh() -> crate::MeshState {
    let (ca, crl) = (tls_fixture("ca.pem"), tls_fixture("crl.pem"));
    let (cert, key) = (tls_fixture("client.pem"), tls_fixture("client-key.pem"));
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db]
  tcp:
  - match: [{{port: 5432, sourceLabels: {{app: batch}}}}]
    route: [{{destination: {{host: db, subset: v2}}}}]
  - match: [{{port: 5432, destinationSubnets: [10.0.0.6, 10.20.0.0/16]}}]
    route: [{{destination: {{host: db, subset: nope}}}}]
  - match: [{{port: 5432}}]
    route:
    - {{destination: {{host: db, subset: v1}}, weight: 80}}
    - {{destination: {{host: db, subset: v2}}, weight: 20}}
  - route: [{{destination: {{host: unknown.example.com, port: {{number: 6432}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy]
  tcp:
  - route: [{{destination: {{host: db, port: {{number: 5432}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: front, namespace: default}}
spec:
  hosts: [front.example.com]
  tls:
  - match: [{{sniHosts: [a.example.com, "*.a.example.com"]}}]
    route: [{{destination: {{host: a.example.com}}}}]
  - match: [{{sniHosts: [b.example.com], destinationSubnets: [10.0.0.0/24]}}]
    route:
    - {{destination: {{host: b.example.com}}, weight: 50}}
    - {{destination: {{host: a.example.com}}, weight: 50}}
  tcp:
  - route: [{{destination: {{host: b.example.com}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: default}}
spec:
  hosts: [c.example.com]
  tls:
  - match: [{{sniHosts: [c.example.com, c2.example.com]}}]
    route: [{{destination: {{host: a.example.com}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}, caCrl: {crl}, sni: db.internal, subjectAltNames: [db.internal, "spiffe://cluster.local/ns/default/sa/db", 10.0.0.5]}}
    portLevelSettings:
    - port: {{number: 6432}}
      tls: {{mode: DISABLE}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy: {{tls: {{mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, caCertificates: {ca}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {ca}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: grpc, namespace: default}}
spec:
  host: grpc
  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [grpc.internal]}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: legacy, namespace: default}}
spec:
  host: legacy
  trafficPolicy: {{tls: {{mode: SIMPLE, insecureSkipVerify: true}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: front, namespace: default}}
spec:
  host: front.example.com
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: default}}
spec:
  host: a.example.com
  trafficPolicy: {{tls: {{mode: MUTUAL, credentialName: a-cert}}}}
"#
    );
    let svc = |host: &str, vips: &[&str], ports: &[(u16, Protocol)]| {
        service(&format!("{host}.default.svc.cluster.local"), vips, ports)
    };
    let mut c = service("c.example.com", &[], &[(443, Protocol::Tls)]);
    c.resolution = pilotfish_model::Resolution::Dns;
    let mut mongo = service("mongo.example.com", &[], &[(27017, Protocol::Tcp)]);
    mongo.resolution = pilotfish_model::Resolution::Passthrough;
    let eps =
        |version: &str, ip: &str, port: u16| endpoint(ip, port, port, &[("version", version)]);
    mesh(
        vec![
            svc(
                "db",
                &["10.0.0.5", "10.0.0.6"],
                &[(5432, Protocol::Tcp), (6432, Protocol::Tcp)],
            ),
            svc(
                "web",
                &["10.0.0.7"],
                &[(5432, Protocol::Http), (80, Protocol::Http)],
            ),
            svc("grpc", &["10.0.0.8"], &[(50051, Protocol::Grpc)]),
            svc("legacy", &["10.0.0.9"], &[(7000, Protocol::Unknown)]),
            service("front.example.com", &["10.0.0.60"], &[(443, Protocol::Tls)]),
            service("a.example.com", &["10.0.0.61"], &[(443, Protocol::Tls)]),
            service("b.example.com", &["10.0.0.62"], &[(443, Protocol::Tls)]),
            c,
            mongo,
        ],
        vec![
            (
                "db.default.svc.cluster.local",
                vec![eps("v1", "10.1.0.1", 5432), eps("v2", "10.1.0.2", 5432)],
            ),
            (
                "c.example.com",
                vec![endpoint("c.example.com", 443, 443, &[])],
            ),
        ],
        &config(&yaml),
    )
}

#[test]
fn envoy_accepts_l4_routes_and_tls_origination() {
    let m = l4_mesh();
    let t = translate_for(&m, &sidecar("default"));
    assert_envoy_invariants(&t);
    // Every shape is there.
    let l5432 = t
        .resources
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_5432")
        .unwrap();
    let weighted = l5432
        .filter_chains
        .iter()
        .filter_map(tcp_proxy_targets)
        .any(|targets| targets.len() == 2);
    assert!(weighted, "a weighted tcp_proxy on 5432");
    let tls = t
        .resources
        .clusters
        .iter()
        .filter(|c| c.transport_socket.is_some())
        .count();
    assert!(tls >= 5, "{tls} clusters originate TLS");
    envoy_validates(&t, "l4");
    let batch = sidecar_with_labels("default", &[("app", "batch")]);
    envoy_validates(&translate_for(&m, &batch), "l4-batch");
    envoy_validates(
        &translate_for(&m, &sidecar_without_interception("default")),
        "l4-none",
    );
}

/// Locality priorities and weights, and `simple: PASSTHROUGH` (top level,
/// with subset and port-level overrides). Besides the usual check, each EDS
/// cluster is also validated with its load assignment inlined, so that
/// Envoy sees priorities together with outlier detection and weights
/// together with `locality_weighted_lb_config`.
#[test]
fn envoy_accepts_locality_load_balancing_and_passthrough() {
    use crate::emit::policy::locality::Locality;
    let host = "reviews.default.svc.cluster.local";
    let mut eps = Vec::new();
    for (i, (locality, version)) in [
        ("us-east/zone-a/rack1", "v1"),
        ("us-east/zone-a", "v1"),
        ("us-east/zone-b", "v2"),
        ("us-west/zone-a", "v2"),
        ("eu-west/zone-c", "v1"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ep = endpoint(
            &format!("10.1.0.{}", i + 1),
            9080,
            9080,
            &[("version", version)],
        );
        ep.locality = Some(locality.into());
        eps.push(ep.clone());
        ep.port = 9090;
        ep.service_port = 9090;
        eps.push(ep);
    }
    let ratings = "ratings.default.svc.cluster.local";
    let details = "details.default.svc.cluster.local";
    let config = config(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting: {failover: [{from: us-east, to: eu-west}]}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer:
        localityLbSetting:
          distribute: [{from: "us-east/*", to: {"us-east/zone-a/*": 70, "us-west/*": 30}}]
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
    outlierDetection: {consecutive5xxErrors: 2}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    loadBalancer: {localityLbSetting: {distribute: [{from: "us-east/zone-a", to: {"us-east/zone-a": 50, "eu-west": 50}}]}}
"#,
    );
    let ports = [(9080, Protocol::Http), (9090, Protocol::Grpc)];
    let m = mesh(
        vec![
            service(host, &["10.0.0.9"], &ports),
            service(ratings, &["10.0.0.10"], &ports),
            service(details, &["10.0.0.11"], &ports),
        ],
        vec![(host, eps.clone()), (ratings, eps.clone()), (details, eps)],
        &config,
    );
    let proxy = crate::ProxyView {
        locality: Locality::parse("us-east/zone-a/rack1"),
        ..sidecar("default")
    };
    let t = translate_for(&m, &proxy);
    assert_envoy_invariants(&t);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let priorities = t
        .resources
        .endpoints
        .iter()
        .flat_map(|c| &c.endpoints)
        .map(|g| g.priority)
        .max();
    // rack1, zone-a, zone-b, eu-west (the failover target), us-west.
    assert_eq!(priorities, Some(4), "us-west below eu-west");
    let weighted = t
        .resources
        .endpoints
        .iter()
        .flat_map(|c| &c.endpoints)
        .filter(|g| g.load_balancing_weight.is_some())
        .count();
    assert!(weighted >= 4, "{weighted} weighted localities");
    let original_dst = t
        .resources
        .clusters
        .iter()
        .filter(|c| c.name.starts_with("outbound|"))
        .filter(|c| {
            c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32,
                ))
        })
        .count();
    assert_eq!(
        original_dst, 4,
        "reviews v2 x2 ports, ratings 9080 x2 subsets"
    );
    envoy_validates(&t, "locality");

    let mut inlined = t.clone();
    for cluster in &mut inlined.resources.clusters {
        if let Some(cla) = t
            .resources
            .endpoints
            .iter()
            .find(|c| c.cluster_name == cluster.name)
        {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            cluster.eds_cluster_config = None;
            cluster.load_assignment = Some(cla.clone());
        }
    }
    inlined.resources.endpoints.clear();
    envoy_validates(&inlined, "locality-inlined");
}

/// Gateway servers of every kind: plaintext with merged VirtualServices and
/// an HTTPS redirect, SIMPLE and MUTUAL termination from files (with CRL
/// and SANs) and from a credential over SDS, passthrough by SNI, and TCP
/// with a weighted split; and a DestinationRule originating mutual TLS with
/// a credential over SDS.
#[test]
fn envoy_accepts_gateway_servers_of_every_kind() {
    let (ca, crl) = (tls_fixture("ca.pem"), tls_fixture("crl.pem"));
    let (cert, key) = (tls_fixture("client.pem"), tls_fixture("client-key.pem"));
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 8081, name: redirect, protocol: HTTP}}
    hosts: [shop.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}, minProtocolVersion: TLSV1_2}}
  - port: {{number: 8443, name: mtls, protocol: HTTPS}}
    hosts: [partner.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {ca}, caCrl: {crl}, subjectAltNames: [client.example.com]}}
  - port: {{number: 8443, name: sds, protocol: HTTPS}}
    hosts: [vault.example.com]
    tls: {{mode: MUTUAL, credentialName: vault-cert}}
  - port: {{number: 8443, name: passthrough, protocol: TLS}}
    hosts: ["*.internal.example.com"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: 9443, name: tls-term, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - match: [{{uri: {{prefix: /reviews}}}}]
    route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 90}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 10}}
  - route: [{{destination: {{host: productpage}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: internal, namespace: default}}
spec:
  hosts: ["*.internal.example.com"]
  gateways: [edge]
  tls:
  - match: [{{sniHosts: [a.internal.example.com]}}]
    route: [{{destination: {{host: details}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: details-mtls, namespace: default}}
spec:
  host: details
  trafficPolicy: {{tls: {{mode: MUTUAL, credentialName: vault-cert, sni: details.internal}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: raw, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - route:
    - {{destination: {{host: ratings}}, weight: 50}}
    - {{destination: {{host: details}}, weight: 50}}
"#
    );
    let mut m = bookinfo(&yaml);
    let pem = |name: &str| std::fs::read(tls_fixture(name)).expect("fixture");
    m.credentials.insert(
        ("default".into(), "vault-cert".into()),
        crate::TlsCredential {
            certificate_chain: pem("client.pem"),
            private_key: pem("client-key.pem"),
            ca_certificates: Some(pem("ca.pem")),
        },
    );
    let proxy = gateway_proxy("default", &[("istio", "ingressgateway")]);
    let t = translate_for(&m, &proxy);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
    assert_eq!(t.resources.listeners.len(), 5);
    assert_eq!(t.resources.secrets.len(), 2);
    envoy_validates(&t, "gateway");
}
