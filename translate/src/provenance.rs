//! Which config objects fed a resource, recorded in the resource itself as
//! Istio does: metadata `istio` / `config` =
//! `/apis/networking.istio.io/<version>/namespaces/<ns>/<kind>/<name>` on
//! routes (their VirtualService), clusters (their DestinationRules) and
//! filter chains (their Gateway or VirtualService). Istio's tools read it,
//! and a server that gets a resource rejected by a proxy reads it back to
//! know which objects to look at. Several objects (merged
//! DestinationRules, Gateways sharing a port) are listed.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind as ValueKind};
use pilotfish_crds::{ConfigKey, ConfigObject, Kind};

/// The filter metadata namespace Istio records config in.
pub const FILTER: &str = "istio";
/// Its key naming the config objects.
pub const CONFIG: &str = "config";

const PREFIX: &str = "/apis/";

/// Istio's path of an object, e.g.
/// `/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews`.
pub fn path(object: &ConfigObject) -> String {
    let key = object.key();
    format!(
        "{PREFIX}{}/namespaces/{}/{}/{}",
        object.api_version,
        key.namespace,
        kebab_kind(key.kind),
        key.name
    )
}

/// The object a [`path`] names, whatever its API version.
pub fn parse(path: &str) -> Option<ConfigKey> {
    let rest = path.strip_prefix(PREFIX)?;
    // group/version/namespaces/<ns>/<kind>/<name>
    let parts: Vec<&str> = rest.split('/').collect();
    let [_group, _version, "namespaces", namespace, kind, name] = parts.as_slice() else {
        return None;
    };
    let kind = Kind::ALL.into_iter().find(|k| kebab_kind(*k) == *kind)?;
    Some(ConfigKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn kebab_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::VirtualService => "virtual-service",
        Kind::DestinationRule => "destination-rule",
        Kind::Gateway => "gateway",
        Kind::ServiceEntry => "service-entry",
        Kind::PeerAuthentication => "peer-authentication",
        Kind::AuthorizationPolicy => "authorization-policy",
    }
}

/// Metadata naming `objects` (a string for one, as Istio writes it, a
/// list for several); `None` for no object. Duplicates are named once.
pub fn metadata<'a>(objects: impl IntoIterator<Item = &'a ConfigObject>) -> Option<Metadata> {
    let paths: BTreeSet<String> = objects.into_iter().map(path).collect();
    let string = |s: String| Value {
        kind: Some(ValueKind::StringValue(s)),
    };
    let value = match paths.len() {
        0 => return None,
        1 => string(paths.into_iter().next()?),
        _ => Value {
            kind: Some(ValueKind::ListValue(ListValue {
                values: paths.into_iter().map(string).collect(),
            })),
        },
    };
    let config = Struct {
        fields: [(CONFIG.to_string(), value)].into(),
    };
    Some(Metadata {
        filter_metadata: [(FILTER.to_string(), config)].into(),
        ..Default::default()
    })
}

/// The objects `metadata` names, added to `out`.
pub fn read(metadata: Option<&Metadata>, out: &mut BTreeSet<ConfigKey>) {
    let Some(config) = metadata
        .and_then(|m| m.filter_metadata.get(FILTER))
        .and_then(|s| s.fields.get(CONFIG))
    else {
        return;
    };
    let paths: Vec<&Value> = match &config.kind {
        Some(ValueKind::ListValue(list)) => list.values.iter().collect(),
        _ => vec![config],
    };
    for value in paths {
        if let Some(ValueKind::StringValue(path)) = &value.kind
            && let Some(key) = parse(path)
        {
            out.insert(key);
        }
    }
}

/// The objects that fed a route configuration: its routes' VirtualServices.
pub fn of_route_configuration(config: &RouteConfiguration) -> BTreeSet<ConfigKey> {
    let mut out = BTreeSet::new();
    for route in config.virtual_hosts.iter().flat_map(|v| &v.routes) {
        read(route.metadata.as_ref(), &mut out);
    }
    out
}

/// The objects that fed a cluster: its DestinationRules.
pub fn of_cluster(cluster: &Cluster) -> BTreeSet<ConfigKey> {
    let mut out = BTreeSet::new();
    read(cluster.metadata.as_ref(), &mut out);
    out
}

/// The objects that fed a listener: those of its filter chains.
pub fn of_listener(listener: &Listener) -> BTreeSet<ConfigKey> {
    let mut out = BTreeSet::new();
    read(listener.metadata.as_ref(), &mut out);
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    for chain in chains {
        read(chain.metadata.as_ref(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str) -> ConfigObject {
        let spec = match kind {
            "VirtualService" => "{hosts: [a]}",
            _ => "{host: a}",
        };
        let yaml = format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
        );
        let mut loaded = pilotfish_crds::load_yaml("test.yaml", &yaml, "default");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        loaded.objects.remove(0)
    }

    #[test]
    fn paths_are_istios_and_read_back_as_the_object() {
        let vs = object("VirtualService", "reviews");
        assert_eq!(
            path(&vs),
            "/apis/networking.istio.io/v1alpha3/namespaces/shop/virtual-service/reviews"
        );
        assert_eq!(parse(&path(&vs)), Some(vs.key()));
        assert_eq!(parse("/apis/x/v1/namespaces/a/sidecar/b"), None);
        assert_eq!(parse("reviews"), None);
    }

    #[test]
    fn routes_and_clusters_name_the_objects_they_come_from() {
        use crate::test_support::*;
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n";
        let t = translate_for(&bookinfo(vs), &sidecar("default"));
        let key = |kind, name: &str| ConfigKey {
            kind,
            namespace: "default".into(),
            name: name.into(),
        };
        assert_eq!(
            of_route_configuration(route_config_named(&t, "9080")),
            BTreeSet::from([key(Kind::VirtualService, "reviews")])
        );
        assert_eq!(
            of_cluster(cluster_named(&t, &reviews_cluster("v2"))),
            BTreeSet::from([key(Kind::DestinationRule, "reviews")])
        );
        let plain = "outbound|9080||details.default.svc.cluster.local";
        assert!(of_cluster(cluster_named(&t, plain)).is_empty());
    }

    #[test]
    fn one_object_is_a_string_several_a_list_none_no_metadata() {
        let (a, b) = (
            object("DestinationRule", "a"),
            object("DestinationRule", "b"),
        );
        assert_eq!(metadata([]), None);
        let one = metadata([&a, &a]).expect("metadata");
        let value = &one.filter_metadata[FILTER].fields[CONFIG];
        assert!(matches!(value.kind, Some(ValueKind::StringValue(_))));
        let mut keys = BTreeSet::new();
        read(metadata([&b, &a]).as_ref(), &mut keys);
        assert_eq!(keys, BTreeSet::from([a.key(), b.key()]));
    }
}
