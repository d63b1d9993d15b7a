//! The JSON has Envoy's canonical shape: `Any` expanded with `"@type"`,
//! durations as "5s", enums by name, wrappers as plain values, 64-bit
//! integers as strings, lowerCamel field names.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteAction, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::google::protobuf::{Any, UInt32Value, UInt64Value};
use envoy_types::util::pack_any;
use pilotfish_xds_json::{Error, any_to_json, message_to_json};
use prost::Name;
use serde_json::json;

mod support;

use support::{connection_manager, listener, routes_to, seconds, socket};

fn route_configuration() -> RouteConfiguration {
    RouteConfiguration {
        max_direct_response_body_size_bytes: Some(UInt32Value { value: 4096 }),
        ..routes_to(
            "8080",
            ("reviews.default.svc.cluster.local:8080", "reviews"),
            "outbound|8080||reviews.default.svc.cluster.local",
            |action| RouteAction {
                timeout: seconds(5, 0),
                idle_timeout: seconds(0, 250_000_000),
                ..action
            },
        )
    }
}

fn listener_with_hcm() -> Listener {
    let hcm = connection_manager(
        "outbound_0.0.0.0_8080",
        http_connection_manager::CodecType::Http1,
        route_configuration(),
    );
    Listener {
        traffic_direction: TrafficDirection::Outbound as i32,
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 32768 }),
        ..listener("0.0.0.0_8080", socket("0.0.0.0", 8080), hcm)
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
