//! Gateway translation: selection, servers, VirtualService binding and
//! merging, TLS modes, conflicts.

use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, common_tls_context::ValidationContextType, secret,
};

use crate::diagnostics::DiagnosticKind;
use crate::mesh::TlsCredential;
use crate::protobuf;
use crate::test_support::*;
use crate::{MeshState, ProxyView, Translation};

const BOOKINFO_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    route:
    - destination: {host: productpage, port: {number: 9080}}
"#;

fn ingress() -> ProxyView {
    gateway_proxy("default", &[("istio", "ingressgateway"), ("app", "gw")])
}

fn listener_names(t: &Translation) -> Vec<&str> {
    t.resources
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect()
}

fn route_names(t: &Translation) -> Vec<&str> {
    t.resources.routes.iter().map(|r| r.name.as_str()).collect()
}

fn tls_context(
    chain: &envoy_types::pb::envoy::config::listener::v3::FilterChain,
) -> DownstreamTlsContext {
    let socket = chain.transport_socket.as_ref().expect("transport socket");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &socket.config_type
    else {
        panic!("no typed config")
    };
    protobuf::unpack(any).expect("DownstreamTlsContext")
}

#[test]
fn bookinfo_gateway_gets_a_real_listener_and_http_route_config() {
    let t = translate_for(&bookinfo(BOOKINFO_GATEWAY), &ingress());
    assert_eq!(listener_names(&t), ["0.0.0.0_8080"]);
    let listener = listener_named(&t, "0.0.0.0_8080");
    assert_eq!(listener.bind_to_port, None, "gateways bind real sockets");
    let manager = hcm(&listener.filter_chains[0]);
    assert_eq!(manager.use_remote_address, Some(protobuf::bool_value(true)));
    assert_eq!(route_names(&t), ["http.8080"]);
    let vh = virtual_host_named(route_config_named(&t, "http.8080"), "*:8080");
    assert_eq!(vh.domains, ["*"]);
    assert_eq!(vh.routes.len(), 2, "one route per match");
    assert!(
        vh.routes
            .iter()
            .all(|r| route_cluster(r) == "outbound|9080||productpage.default.svc.cluster.local")
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
}

#[test]
fn sidecars_ignore_gateway_bound_virtual_services_and_gateways() {
    let t = translate_for(&bookinfo(BOOKINFO_GATEWAY), &sidecar("default"));
    assert!(!listener_names(&t).contains(&"0.0.0.0_8080"));
    let productpage = virtual_host_named(
        route_config_named(&t, "9080"),
        "productpage.default.svc.cluster.local:9080",
    );
    assert_eq!(productpage.routes.len(), 1, "default route only");
}

#[test]
fn a_gateway_whose_selector_matches_no_proxy_changes_nothing() {
    let other = BOOKINFO_GATEWAY.replace("istio: ingressgateway", "istio: other");
    let t = translate_for(&bookinfo(&other), &ingress());
    assert!(t.resources.listeners.is_empty());
    assert!(t.resources.routes.is_empty());
    let plain = translate_for(&bookinfo(""), &ingress());
    assert_eq!(t.resources, plain.resources);
}

#[test]
fn empty_selectors_select_every_gateway_and_scoping_limits_to_the_namespace() {
    let open = BOOKINFO_GATEWAY.replace("selector: {istio: ingressgateway}", "selector: {}");
    let mut m = bookinfo(&open);
    let elsewhere = gateway_proxy("edge", &[]);
    assert_eq!(
        listener_names(&translate_for(&m, &elsewhere)),
        ["0.0.0.0_8080"]
    );
    m.mesh.scope_gateway_to_namespace = true;
    assert!(translate_for(&m, &elsewhere).resources.listeners.is_empty());
    assert_eq!(
        listener_names(&translate_for(&m, &gateway_proxy("default", &[]))),
        ["0.0.0.0_8080"]
    );
}

#[test]
fn virtual_services_on_one_gateway_host_merge_oldest_first() {
    let extra = format!(
        "{BOOKINFO_GATEWAY}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [default/bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: details}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: late, namespace: default, creationTimestamp: "2024-03-01T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /late}}]
    route: [{destination: {host: ratings}}]
"#
    );
    let t = translate_for(&bookinfo(&extra), &ingress());
    let vh = virtual_host_named(route_config_named(&t, "http.8080"), "*:8080");
    let clusters: Vec<&str> = vh.routes.iter().map(route_cluster).collect();
    assert_eq!(
        clusters,
        [
            "outbound|9080||productpage.default.svc.cluster.local",
            "outbound|9080||productpage.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080||details.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local",
        ]
    );
    assert_one_diagnostic(
        &t,
        DiagnosticKind::ShadowedVirtualService,
        "VirtualService default/late",
        "spec.http",
    );
    assert_envoy_invariants(&t);
}

#[test]
fn gateway_hosts_intersect_virtual_service_hosts_and_namespaces() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["default/*.example.com", "./edge.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, "*"]
  gateways: [edge/gw]
  http: [{route: [{destination: {host: productpage}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sneaky, namespace: other}
spec:
  hosts: [sneaky.example.com]
  gateways: [edge/gw]
  http: [{route: [{destination: {host: productpage.default.svc.cluster.local}}]}]
"#;
    let t = translate_for(&bookinfo(yaml), &ingress());
    let rc = route_config_named(&t, "http.80");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    // `*` narrows to the server's `*.example.com`; edge.example.com admits only namespace edge.
    assert_eq!(names, ["*.example.com:80", "shop.example.com:80"]);
    assert_one_diagnostic(
        &t,
        DiagnosticKind::UnboundVirtualService,
        "VirtualService other/sneaky",
        "spec.hosts",
    );
}

#[test]
fn match_level_gateways_split_mesh_and_gateway_routes() {
    let yaml = format!(
        "{BOOKINFO_GATEWAY}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: default}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway, mesh]
  http:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{gateways: [bookinfo-gateway]}]
    route: [{destination: {host: reviews, subset: v3}}]
"#
    );
    let m = bookinfo(&yaml);
    let t = translate_for(&m, &ingress());
    let vh = virtual_host_named(
        route_config_named(&t, "http.8080"),
        "reviews.default.svc.cluster.local:8080",
    );
    assert_eq!(vh.routes.len(), 1);
    assert_eq!(route_cluster(&vh.routes[0]), reviews_cluster("v3"));
    let t = translate_for(&m, &sidecar("default"));
    let routes = reviews_routes(&t);
    assert_eq!(routes.len(), 1);
    assert_eq!(route_cluster(&routes[0]), reviews_cluster("v1"));
}

#[test]
fn https_redirect_answers_with_require_tls() {
    let yaml = BOOKINFO_GATEWAY.replace(
        "    hosts: [\"*\"]\n",
        "    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n",
    );
    let t = translate_for(&bookinfo(&yaml), &ingress());
    let vh = virtual_host_named(route_config_named(&t, "http.8080"), "*:8080");
    assert_eq!(vh.require_tls, TlsRequirementType::All as i32);
}

fn https_gateway(tls: &str, hosts: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: {hosts}
    tls: {tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [secure]
  http: [{{route: [{{destination: {{host: productpage}}}}]}}]
"#
    )
}

#[test]
fn https_simple_terminates_with_file_certificates_on_its_sni() {
    let yaml = https_gateway(
        "{mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}",
        "[shop.example.com]",
    );
    let t = translate_for(&bookinfo(&yaml), &ingress());
    let listener = listener_named(&t, "0.0.0.0_443");
    assert_eq!(listener.filter_chains.len(), 1);
    let chain = &listener.filter_chains[0];
    let sni = &chain.filter_chain_match.as_ref().unwrap().server_names;
    assert_eq!(sni, &["shop.example.com"]);
    let route_config = "https.443.https.secure.default";
    let rds = hcm(chain);
    let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::Rds(rds)) = rds.route_specifier else {
        panic!("not RDS")
    };
    assert_eq!(rds.route_config_name, route_config);
    let tls = tls_context(chain);
    let common = tls.common_tls_context.unwrap();
    assert_eq!(common.tls_certificates.len(), 1);
    assert_eq!(
        tls.require_client_certificate,
        Some(protobuf::bool_value(false))
    );
    assert!(common.validation_context_type.is_none());
    assert_eq!(route_names(&t), [route_config]);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
}

#[test]
fn https_mutual_requires_client_certificates_and_a_ca() {
    let without_ca = https_gateway(
        "{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}",
        "[\"*\"]",
    );
    let t = translate_for(&bookinfo(&without_ca), &ingress());
    assert!(t.resources.listeners.is_empty());
    assert_one_diagnostic(
        &t,
        DiagnosticKind::InvalidField,
        "Gateway default/secure",
        "spec.servers[0].tls.caCertificates",
    );

    let with_ca = https_gateway(
        "{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, subjectAltNames: [client.example.com]}",
        "[\"*\"]",
    );
    let t = translate_for(&bookinfo(&with_ca), &ingress());
    let chain = &listener_named(&t, "0.0.0.0_443").filter_chains[0];
    assert!(
        chain
            .filter_chain_match
            .as_ref()
            .unwrap()
            .server_names
            .is_empty(),
        "host * takes any SNI"
    );
    let tls = tls_context(chain);
    assert_eq!(
        tls.require_client_certificate,
        Some(protobuf::bool_value(true))
    );
    let Some(ValidationContextType::ValidationContext(v)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("no validation context")
    };
    assert!(v.trusted_ca.is_some());
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);
}

fn credential(with_ca: bool) -> TlsCredential {
    TlsCredential {
        certificate_chain: b"CERT".to_vec(),
        private_key: b"KEY".to_vec(),
        ca_certificates: with_ca.then(|| b"CA".to_vec()),
    }
}

fn with_credential(mut m: MeshState, namespace: &str, name: &str, with_ca: bool) -> MeshState {
    m.credentials
        .insert((namespace.into(), name.into()), credential(with_ca));
    m
}

#[test]
fn credential_names_are_served_over_sds_from_the_proxy_namespace() {
    let yaml = https_gateway(
        "{mode: MUTUAL, credentialName: shop-cert}",
        "[shop.example.com]",
    );
    let m = with_credential(bookinfo(&yaml), "default", "shop-cert", true);
    let t = translate_for(&m, &ingress());
    let names: Vec<&str> = t
        .resources
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["kubernetes://shop-cert", "kubernetes://shop-cert-cacert"]
    );
    let Some(secret::Type::TlsCertificate(cert)) = &t.resources.secrets[0].r#type else {
        panic!("not a certificate")
    };
    assert!(cert.private_key.is_some());
    let common = tls_context(&listener_named(&t, "0.0.0.0_443").filter_chains[0])
        .common_tls_context
        .unwrap();
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "kubernetes://shop-cert"
    );
    assert!(matches!(
        common.validation_context_type,
        Some(ValidationContextType::CombinedValidationContext(_))
    ));
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);

    // Sidecars never get secrets; another namespace's Secret is not used.
    assert!(
        translate_for(&m, &sidecar("default"))
            .resources
            .secrets
            .is_empty()
    );
    let elsewhere = with_credential(bookinfo(&yaml), "other", "shop-cert", true);
    let t = translate_for(&elsewhere, &ingress());
    assert!(t.resources.secrets.is_empty() && t.resources.listeners.is_empty());
    assert_one_diagnostic(
        &t,
        DiagnosticKind::MissingCredential,
        "Gateway default/secure",
        "spec.servers[0].tls.credentialName",
    );
}

#[test]
fn conflicting_servers_are_reported_not_shadowed() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: first, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com, b.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: second, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c2.pem, privateKey: /k2.pem}
  - port: {number: 9000, name: web, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 15021, name: status, protocol: HTTP}
    hosts: ["*"]
"#;
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
    let fields: Vec<_> = conflicts
        .iter()
        .map(|d| (d.object.as_str(), d.field.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        fields.contains(&("Gateway default/second", "spec.servers[0]")),
        "{conflicts:#?}"
    );
    assert!(
        fields.contains(&("Gateway default/second", "spec.servers[1]")),
        "{conflicts:#?}"
    );
    assert_one_diagnostic(
        &t,
        DiagnosticKind::InvalidField,
        "Gateway default/second",
        "spec.servers[2].port.number",
    );
    let listener = listener_named(&t, "0.0.0.0_443");
    assert_eq!(
        listener.filter_chains.len(),
        1,
        "b.example.com stays with the older server"
    );
    assert_eq!(route_names(&t), ["https.443.https.first.default"]);
    assert_envoy_invariants(&t);
}

#[test]
fn passthrough_routes_by_sni_and_tcp_servers_forward() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 5432, name: db, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com], port: 443}]
    route: [{destination: {host: details, port: {number: 9080}}}]
  - match: [{sniHosts: [b.example.com, other.org]}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - route:
    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 80}
    - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 20}
"#;
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    let tls = listener_named(&t, "0.0.0.0_443");
    let routes: Vec<(Vec<String>, Option<String>)> = tls
        .filter_chains
        .iter()
        .map(|c| {
            (
                c.filter_chain_match.clone().unwrap().server_names,
                tcp_proxy_cluster(c),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            (
                vec!["a.example.com".to_string()],
                Some("outbound|9080||details.default.svc.cluster.local".to_string())
            ),
            (
                vec!["b.example.com".to_string()],
                Some("outbound|9080||ratings.default.svc.cluster.local".to_string())
            ),
        ]
    );
    assert_eq!(
        tcp_proxy_cluster(tls.default_filter_chain.as_ref().unwrap()).as_deref(),
        Some("BlackHoleCluster")
    );
    let tcp = listener_named(&t, "0.0.0.0_5432");
    assert_eq!(
        tcp_proxy_targets(&tcp.filter_chains[0]),
        Some(vec![
            (reviews_cluster("v1"), 80),
            (reviews_cluster("v2"), 20)
        ])
    );
    assert!(t.resources.routes.is_empty());
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
}

#[test]
fn virtual_services_naming_missing_gateways_are_reported() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orphan, namespace: default}
spec:
  hosts: ["*"]
  gateways: [nowhere]
  http: [{route: [{destination: {host: productpage}}]}]
"#;
    let t = translate_for(
        &bookinfo(&format!("{BOOKINFO_GATEWAY}---\n{yaml}")),
        &ingress(),
    );
    assert_one_diagnostic(
        &t,
        DiagnosticKind::UnboundVirtualService,
        "VirtualService default/orphan",
        "spec.gateways[0]",
    );
}

#[test]
fn istio_bookinfo_gateway_sample_binds_its_virtual_service() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/istio-samples/bookinfo-networking/bookinfo-gateway.yaml");
    let text = std::fs::read_to_string(&path).expect("Istio's bookinfo-gateway.yaml");
    let t = translate_for(&bookinfo(&text), &ingress());
    assert_eq!(listener_names(&t), ["0.0.0.0_8080"]);
    let vh = virtual_host_named(route_config_named(&t, "http.8080"), "*:8080");
    assert_eq!(vh.routes.len(), 5, "one route per match of the sample");
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
}

#[test]
fn removing_a_gateway_reports_the_virtual_services_bound_to_it() {
    let vs_only: String = BOOKINFO_GATEWAY
        .split("---")
        .filter(|doc| doc.contains("kind: VirtualService"))
        .collect();
    let t = translate_for(&bookinfo(&vs_only), &ingress());
    assert!(t.resources.listeners.is_empty());
    assert_one_diagnostic(
        &t,
        DiagnosticKind::UnboundVirtualService,
        "VirtualService default/bookinfo",
        "spec.gateways[0]",
    );
}

#[test]
fn passthrough_for_any_sni_is_one_catch_all_chain() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: ["*"]}]
    route: [{destination: {host: details, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: again, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: ["*"]}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
"#;
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    let chains = &listener_named(&t, "0.0.0.0_443").filter_chains;
    assert_eq!(chains.len(), 1);
    assert!(
        chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .server_names
            .is_empty()
    );
    assert_one_diagnostic(
        &t,
        DiagnosticKind::ListenerConflict,
        "VirtualService default/again",
        "spec.tls[0]",
    );
    assert_envoy_invariants(&t);
}

#[test]
fn gateways_sharing_a_plaintext_port_merge_into_one_route_config() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: blog, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  servers: [{port: {number: 8080, name: web, protocol: HTTP}, hosts: [blog.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, blog.example.com]
  gateways: [shop]
  http: [{route: [{destination: {host: productpage}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: blog, namespace: default}
spec:
  hosts: [blog.example.com]
  gateways: [blog]
  http: [{route: [{destination: {host: details}}]}]
"#;
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    assert_eq!(listener_names(&t), ["0.0.0.0_8080"]);
    assert_eq!(route_names(&t), ["http.8080"]);
    let rc = route_config_named(&t, "http.8080");
    let shop = virtual_host_named(rc, "shop.example.com:8080");
    assert_eq!(
        route_cluster(&shop.routes[0]),
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    // blog.example.com is the blog Gateway's: only the VirtualService bound
    // to that Gateway routes it.
    let blog = virtual_host_named(rc, "blog.example.com:8080");
    assert_eq!(blog.routes.len(), 1);
    assert_eq!(
        route_cluster(&blog.routes[0]),
        "outbound|9080||details.default.svc.cluster.local"
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
}

#[test]
fn tls_servers_terminate_and_forward_tcp() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tcp: [{route: [{destination: {host: ratings, port: {number: 9080}}}]}]
"#;
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    let chain = &listener_named(&t, "0.0.0.0_9443").filter_chains[0];
    assert_eq!(
        chain.filter_chain_match.as_ref().unwrap().server_names,
        ["db.example.com"]
    );
    assert_eq!(
        tcp_proxy_cluster(chain).as_deref(),
        Some("outbound|9080||ratings.default.svc.cluster.local")
    );
    let tls = tls_context(chain);
    assert_eq!(
        tls.require_client_certificate,
        Some(protobuf::bool_value(true))
    );
    assert!(
        tls.common_tls_context.unwrap().alpn_protocols.is_empty(),
        "opaque: no HTTP ALPN"
    );
    assert!(t.resources.routes.is_empty());
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    assert_envoy_invariants(&t);
}

/// Two Gateway objects of the same namespace/name (a file loaded twice)
/// rank equal: the one selected first keeps the port, whatever the index
/// of its server, and the other is reported.
#[test]
fn gateways_of_equal_precedence_keep_a_port_in_the_order_they_are_selected() {
    let gateway = |servers: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec: {{servers: [{servers}]}}\n---\n"
        )
    };
    let server = |port: u16, protocol: &str| {
        format!("{{port: {{number: {port}, name: p{port}, protocol: {protocol}}}, hosts: ['*']}}")
    };
    let first = gateway(&format!("{}, {}", server(80, "HTTP"), server(5432, "HTTP")));
    let yaml = &format!("{first}{}", gateway(&server(5432, "TCP")));
    let t = translate_for(&bookinfo(yaml), &gateway_proxy("default", &[]));
    let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    assert_eq!(conflicts[0].field.as_deref(), Some("spec.servers[0]"));
    assert!(
        conflicts[0].message.contains(
            "port 5432 already serves Http for Gateway default/gw spec.servers[1] (older)"
        ),
        "{}",
        conflicts[0].message
    );
    let listener = listener_named(&t, "0.0.0.0_5432");
    assert_eq!(listener.filter_chains[0].name, "http.5432");
    assert_envoy_invariants(&t);
}
