//! The JSON has Envoy's canonical shape: `Any` expanded with `"@type"`,
//! durations as "5s", enums by name, wrappers as plain values, 64-bit
//! integers as strings, lowerCamel field names.

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, TrafficDirection, address, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value, UInt64Value};
use envoy_types::util::pack_any;
use pilotfish_xds_json::{Error, any_to_json, message_to_json};
use prost::Name;
use serde_json::json;

fn route_configuration() -> RouteConfiguration {
    RouteConfiguration {
        name: "8080".into(),
        virtual_hosts: vec![VirtualHost {
            name: "reviews.default.svc.cluster.local:8080".into(),
            domains: vec!["reviews".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        "outbound|8080||reviews.default.svc.cluster.local".into(),
                    )),
                    timeout: Some(Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                    idle_timeout: Some(Duration {
                        seconds: 0,
                        nanos: 250_000_000,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        max_direct_response_body_size_bytes: Some(UInt32Value { value: 4096 }),
        ..Default::default()
    }
}

fn listener_with_hcm() -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "outbound_0.0.0.0_8080".into(),
        codec_type: http_connection_manager::CodecType::Http1 as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_configuration(),
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: "0.0.0.0_8080".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                ..Default::default()
            })),
        }),
        traffic_direction: TrafficDirection::Outbound as i32,
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 32768 }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn a_listener_shows_its_hcm_filter_expanded_with_type_enums_by_name_and_wrappers_as_numbers() {
    let json = message_to_json(&listener_with_hcm()).expect("listener converts");
    assert_eq!(json["name"], "0.0.0.0_8080");
    assert_eq!(json["trafficDirection"], "OUTBOUND");
    assert_eq!(json["perConnectionBufferLimitBytes"], 32768);
    assert_eq!(json["address"]["socketAddress"]["portValue"], 8080);
    let filter = &json["filterChains"][0]["filters"][0];
    let hcm = &filter["typedConfig"];
    assert_eq!(
        hcm["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert_eq!(hcm["codecType"], "HTTP1");
    assert_eq!(hcm["statPrefix"], "outbound_0.0.0.0_8080");
    assert_eq!(
        hcm["httpFilters"][0]["typedConfig"],
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"})
    );
    let action = &hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["route"];
    assert_eq!(action["timeout"], "5s");
    assert_eq!(action["idleTimeout"], "0.250s");
    assert_eq!(
        action["cluster"],
        "outbound|8080||reviews.default.svc.cluster.local"
    );
}

#[test]
fn default_values_are_left_out_as_in_envoys_own_dump() {
    let json = message_to_json(&route_configuration()).expect("route configuration converts");
    let object = json.as_object().expect("an object");
    assert!(!object.contains_key("validateClusters"), "{json}");
    assert!(
        !object.contains_key("virtual_hosts"),
        "lowerCamel only: {json}"
    );
    assert_eq!(json["maxDirectResponseBodySizeBytes"], 4096);
}

#[test]
fn sixty_four_bit_integers_are_strings() {
    let json = message_to_json(&UInt64Value { value: 1 << 40 }).expect("wrapper converts");
    assert_eq!(json, json!("1099511627776"));
}

#[test]
fn an_any_converts_to_its_message_fields_plus_type() {
    let json = any_to_json(&pack_any(Router {
        suppress_envoy_headers: true,
        ..Default::default()
    }))
    .expect("router converts");
    assert_eq!(
        json,
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppressEnvoyHeaders": true,
        })
    );
}

#[test]
fn an_any_of_a_type_outside_the_envoy_protos_is_an_error_not_a_panic() {
    let unknown = Any {
        type_url: "type.googleapis.com/example.NotAnEnvoyType".into(),
        value: vec![8, 1],
    };
    assert!(any_to_json(&unknown).is_err());
}

#[test]
fn an_any_whose_bytes_are_not_its_named_message_is_an_error() {
    let garbage = Any {
        type_url: Router::type_url(),
        value: vec![0xff, 0xff, 0xff],
    };
    assert!(matches!(any_to_json(&garbage), Err(Error::ToJson { .. })));
}
