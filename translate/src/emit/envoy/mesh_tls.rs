//! Mesh mutual TLS between proxies, as Istio does it: each side presents
//! its workload certificate (SDS secret `default`) and verifies the other
//! against the mesh root (SDS `ROOTCA`) and a SPIFFE id of the mesh's trust
//! domain. Only for proxies that hold a workload certificate
//! (`ProxyView::workload_certificate`): a reference to a secret the server
//! would never send keeps a cluster or listener warming forever.
//!
//! ALPN tells a mesh connection from an application's own TLS: clients
//! offer Istio's `istio-*` protocols, and inbound chains for mesh TLS match
//! on them.

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Struct, Value, value};

use crate::emit::envoy::sds;
use crate::names;
use crate::protobuf;

const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";

/// Istio's SDS name of a proxy's own workload certificate and key.
pub const WORKLOAD_CERTIFICATE: &str = "default";
/// Istio's SDS name of the mesh root certificate.
pub const ROOT_CA: &str = "ROOTCA";

/// What a mesh client offers for TCP (Istio's names).
pub const TCP_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
/// What a mesh client offers for HTTP/1.1 and HTTP/2 upstreams.
pub const HTTP11_ALPN: [&str; 2] = ["istio-http/1.1", "istio"];
pub const H2_ALPN: [&str; 2] = ["istio-h2", "istio"];
/// Every ALPN a mesh client may offer: what inbound mesh chains match.
pub const MESH_ALPNS: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// Of those, the ones that say the stream inside is HTTP.
pub const MESH_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// The endpoint label saying a workload has a sidecar that accepts mesh
/// mTLS (Istio's injector sets it on pods).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Where endpoint metadata carries it for transport socket matches.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
const TLS_MODE_KEY: &str = "tlsMode";
const TLS_MODE_ISTIO: &str = "istio";

/// Endpoint metadata for a workload labelled `tlsMode: istio`, which auto
/// mTLS clusters match on; `None` for the rest.
pub fn endpoint_metadata(labels: &std::collections::BTreeMap<String, String>) -> Option<Metadata> {
    (labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO)).then(|| Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_istio())].into(),
        ..Default::default()
    })
}

fn tls_mode_istio() -> Struct {
    Struct {
        fields: [(
            TLS_MODE_KEY.to_string(),
            Value {
                kind: Some(value::Kind::StringValue(TLS_MODE_ISTIO.to_string())),
            },
        )]
        .into(),
    }
}

/// The mesh a proxy with a workload certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshTls {
    pub trust_domain: String,
}

impl MeshTls {
    /// Any workload of the trust domain: `spiffe://<td>/` as a URI SAN prefix.
    fn any_workload(&self) -> SubjectAltNameMatcher {
        uri_san(MatchPattern::Prefix(format!(
            "spiffe://{}/",
            self.trust_domain
        )))
    }

    /// Own certificate from `default`; peers verified against `ROOTCA` and
    /// `sans` (exact), or any workload of the trust domain.
    fn common(&self, alpn: &[&str], sans: &[String]) -> CommonTlsContext {
        let matchers = match sans.iter().any(|s| !s.is_empty()) {
            true => sans
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| uri_san(MatchPattern::Exact(s.clone())))
                .collect(),
            false => vec![self.any_workload()],
        };
        CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds::secret_config(
                WORKLOAD_CERTIFICATE.to_string(),
            )],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: matchers,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds::secret_config(
                            ROOT_CA.to_string(),
                        )),
                        ..Default::default()
                    },
                ),
            ),
            alpn_protocols: alpn.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A client's mTLS to another proxy of the mesh. `sni` as Istio sends
    /// it (the cluster name, see [`sni_for_cluster`]) unless given.
    pub fn upstream(&self, alpn: &[&str], sni: String, sans: &[String]) -> TransportSocket {
        tls_socket(protobuf::any(UpstreamTlsContext {
            common_tls_context: Some(self.common(alpn, sans)),
            sni,
            ..Default::default()
        }))
    }

    /// Istio's auto mTLS for a cluster without TLS settings: mesh mTLS to
    /// endpoints labelled `tlsMode: istio` (they have a sidecar), plaintext
    /// to the others.
    pub fn auto(&self, alpn: &[&str], sni: String) -> Vec<TransportSocketMatch> {
        vec![
            TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(tls_mode_istio()),
                transport_socket: Some(self.upstream(alpn, sni, &[])),
            },
            TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(TransportSocket {
                    name: RAW_BUFFER.to_string(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(protobuf::any(
                        RawBuffer::default(),
                    ))),
                }),
            },
        ]
    }

    /// A server's side: a client certificate of the mesh is required.
    pub fn downstream(&self) -> TransportSocket {
        tls_socket(protobuf::any(DownstreamTlsContext {
            common_tls_context: Some(self.common(&[], &[])),
            require_client_certificate: Some(protobuf::bool_value(true)),
            ..Default::default()
        }))
    }
}

/// Envoy's limit for an SNI value.
const MAX_SNI_BYTES: usize = 255;

/// Istio's SNI for mesh mTLS to a cluster: `outbound_.9080_.v1_.reviews...`,
/// cut to Envoy's limit (mesh servers do not match on it; it only names
/// the cluster in their logs).
pub fn sni_for_cluster(cluster: &str) -> String {
    let mut sni = cluster.replace('|', "_.");
    if sni.len() > MAX_SNI_BYTES {
        let mut end = MAX_SNI_BYTES;
        while !sni.is_char_boundary(end) {
            end -= 1;
        }
        sni.truncate(end);
    }
    sni
}

fn uri_san(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: names::TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_sni_replaces_the_bars_of_the_cluster_name() {
        assert_eq!(
            sni_for_cluster("outbound|9080|v1|reviews.default.svc.cluster.local"),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        // Found by the generated meshes: a long subset name.
        let long = format!("outbound|443|{}|api.example.com", "v3".repeat(200));
        assert_eq!(sni_for_cluster(&long).len(), 255);
    }
}

#[cfg(test)]
mod translation_tests {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        DownstreamTlsContext, UpstreamTlsContext,
    };
    use pilotfish_model::Protocol;

    use super::*;
    use crate::DiagnosticKind;
    use crate::test_support::*;

    fn certified(namespace: &str) -> crate::ProxyView {
        crate::ProxyView {
            workload_certificate: true,
            ..with_inbound(&[(9080, Protocol::Http)])
        }
        .in_namespace(namespace)
    }

    trait InNamespace {
        fn in_namespace(self, namespace: &str) -> Self;
    }

    impl InNamespace for crate::ProxyView {
        fn in_namespace(mut self, namespace: &str) -> Self {
            self.namespace = namespace.into();
            self
        }
    }

    fn upstream_context(socket: &TransportSocket) -> UpstreamTlsContext {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("no typed config")
        };
        protobuf::unpack(any).expect("an UpstreamTlsContext")
    }

    /// (secret of the own certificate, secret of the CA, SAN matchers).
    fn mesh_parts(common: &CommonTlsContext) -> (String, String, Vec<String>) {
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
            &common.validation_context_type
        else {
            panic!("no combined validation context: {common:?}")
        };
        let sans = combined
            .default_validation_context
            .as_ref()
            .map(|v| {
                v.match_typed_subject_alt_names
                    .iter()
                    .map(|m| {
                        format!(
                            "{:?}",
                            m.matcher.as_ref().and_then(|m| m.match_pattern.clone())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            common.tls_certificate_sds_secret_configs[0].name.clone(),
            combined
                .validation_context_sds_secret_config
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            sans,
        )
    }

    const ISTIO_MUTUAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-mtls, namespace: default}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;

    #[test]
    fn istio_mutual_presents_the_workload_certificate_and_verifies_the_mesh_root_and_trust_domain()
    {
        let m = bookinfo(ISTIO_MUTUAL);
        let t = translate_for(&m, &certified("default"));
        let cluster = cluster_named(&t, "outbound|9080||ratings.default.svc.cluster.local");
        let context = upstream_context(cluster.transport_socket.as_ref().expect("mTLS"));
        assert_eq!(
            context.sni,
            "outbound_.9080_._.ratings.default.svc.cluster.local"
        );
        let common = context.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, HTTP11_ALPN);
        let (own, ca, sans) = mesh_parts(&common);
        assert_eq!((own.as_str(), ca.as_str()), (WORKLOAD_CERTIFICATE, ROOT_CA));
        assert_eq!(sans, [r#"Some(Prefix("spiffe://cluster.local/"))"#]);
        assert!(diagnostics_of(&t, DiagnosticKind::Unsupported).is_empty());
        assert_envoy_invariants(&t);
    }

    #[test]
    fn without_a_workload_certificate_istio_mutual_stays_plaintext_and_says_why() {
        let m = bookinfo(ISTIO_MUTUAL);
        let t = translate_for(&m, &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||ratings.default.svc.cluster.local");
        assert!(cluster.transport_socket.is_none());
        let reported = diagnostics_of(&t, DiagnosticKind::Unsupported);
        assert!(
            reported
                .iter()
                .any(|d| d.message.contains("workload certificate")),
            "{reported:?}"
        );
    }

    #[test]
    fn auto_mtls_to_endpoints_labelled_tls_mode_istio_and_plaintext_to_the_rest() {
        let mut m = bookinfo("");
        let eps = vec![
            endpoint(
                "10.1.0.1",
                9080,
                9080,
                &[("version", "v1"), (TLS_MODE_LABEL, "istio")],
            ),
            endpoint("10.1.0.2", 9080, 9080, &[("version", "v2")]),
        ];
        m.endpoints.insert(REVIEWS.into(), std::sync::Arc::new(eps));
        let t = translate_for(&m, &certified("default"));
        let cluster = cluster_named(&t, &reviews_cluster(""));
        let names: Vec<&str> = cluster
            .transport_socket_matches
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
        let assignment = load_assignment_named(&t, &reviews_cluster(""));
        let tagged: Vec<(String, bool)> = assignment.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|lb| {
                (
                    endpoint_address(lb),
                    lb.metadata
                        .as_ref()
                        .is_some_and(|m| m.filter_metadata.contains_key(TRANSPORT_SOCKET_MATCH)),
                )
            })
            .collect();
        assert_eq!(
            tagged,
            [
                ("10.1.0.1:9080".into(), true),
                ("10.1.0.2:9080".into(), false)
            ]
        );
        // A proxy without a certificate keeps plaintext everywhere.
        let plain = translate_for(&m, &sidecar("default"));
        assert!(
            cluster_named(&plain, &reviews_cluster(""))
                .transport_socket_matches
                .is_empty()
        );
        assert_envoy_invariants(&t);
    }

    fn inbound_tls_chains(listener: &Listener) -> Vec<(String, Vec<String>, bool)> {
        listener
            .filter_chains
            .iter()
            .filter(|c| c.transport_socket.is_some())
            .map(|c| {
                let m = c.filter_chain_match.clone().unwrap_or_default();
                let socket = c.transport_socket.as_ref().expect("socket");
                let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type
                else {
                    panic!("no typed config")
                };
                let context: DownstreamTlsContext = protobuf::unpack(any).expect("downstream");
                (
                    m.transport_protocol,
                    m.application_protocols,
                    context.require_client_certificate.is_some_and(|v| v.value),
                )
            })
            .collect()
    }

    #[test]
    fn inbound_accepts_mesh_mtls_beside_plaintext_when_the_proxy_holds_a_certificate() {
        let m = bookinfo("");
        let t = translate_for(&m, &certified("default"));
        let inbound = listener_named(&t, "virtualInbound");
        let tls = inbound_tls_chains(inbound);
        assert_eq!(
            tls,
            [(
                "tls".to_string(),
                MESH_ALPNS.iter().map(|s| s.to_string()).collect(),
                true
            )]
        );
        let filters: Vec<&str> = inbound
            .listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert!(
            filters.contains(&"envoy.filters.listener.tls_inspector"),
            "{filters:?}"
        );
        // The plaintext chain stays (PERMISSIVE).
        assert!(
            inbound
                .filter_chains
                .iter()
                .any(|c| c.name == "http|inbound|9080||"),
            "{:?}",
            inbound
                .filter_chains
                .iter()
                .map(|c| &c.name)
                .collect::<Vec<_>>()
        );
        let without = translate_for(&m, &with_inbound(&[(9080, Protocol::Http)]));
        assert!(inbound_tls_chains(listener_named(&without, "virtualInbound")).is_empty());
        assert_envoy_invariants(&t);
    }
}
