//! Message -> JSON -> message gives back the original, including maps of
//! `Any` and nested `Any` (what golden files and `-o json` rely on).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, SdsSecretConfig, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;
use pilotfish_xds_json::{json_to_message, message_to_json};
use serde_json::json;

fn cluster_with_protocol_options_and_tls() -> Cluster {
    let http2 = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions {
                                max_concurrent_streams: Some(UInt32Value { value: 100 }),
                                ..Default::default()
                            },
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    let tls = UpstreamTlsContext {
        sni: "outbound_.9080_._.reviews.default.svc.cluster.local".into(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".into(),
                ..Default::default()
            }],
            alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    Cluster {
        name: "outbound|9080||reviews.default.svc.cluster.local".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        typed_extension_protocol_options: HashMap::from([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(http2),
        )]),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        ..Default::default()
    }
}

#[test]
fn a_cluster_with_protocol_options_and_a_tls_socket_survives_a_json_round_trip() {
    let original = cluster_with_protocol_options_and_tls();
    let json = message_to_json(&original).expect("cluster converts");
    let back: Cluster = json_to_message(&json).expect("JSON reads back");
    assert_eq!(back, original);
}

#[test]
fn the_map_of_any_and_the_socket_config_come_out_expanded() {
    let json = message_to_json(&cluster_with_protocol_options_and_tls()).expect("cluster converts");
    let options = &json["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["@type"],
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    assert_eq!(
        options["explicitHttpConfig"]["http2ProtocolOptions"]["maxConcurrentStreams"],
        100
    );
    let tls = &json["transportSocket"]["typedConfig"];
    assert_eq!(
        tls["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    assert_eq!(
        tls["commonTlsContext"]["alpnProtocols"],
        json!(["istio-peer-exchange", "istio"])
    );
    assert_eq!(json["type"], "EDS");
    assert_eq!(json["lbPolicy"], "LEAST_REQUEST");
    assert_eq!(json["connectTimeout"], "10s");
}

#[test]
fn json_with_a_field_the_message_lacks_is_rejected() {
    let json = json!({"name": "c", "connectTimeoutt": "1s"});
    let error = json_to_message::<Cluster>(&json).expect_err("unknown field");
    assert!(
        error
            .to_string()
            .contains("envoy.config.cluster.v3.Cluster"),
        "{error}"
    );
}
