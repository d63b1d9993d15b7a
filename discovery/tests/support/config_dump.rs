//! Reading Envoy's admin `/config_dump` and `/clusters?format=json`.

use serde_json::Value;

/// The section whose `@type` is `type.googleapis.com/envoy.admin.v3.<name>`
/// (an exact last segment: `RoutesConfigDump` is not `ScopedRoutesConfigDump`).
fn section<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump.get("configs")?.as_array()?.iter().find(|c| {
        c.get("@type")
            .and_then(Value::as_str)
            .and_then(|t| t.rsplit('.').next())
            == Some(name)
    })
}

fn strings<'a>(items: Option<&'a Value>, pointer: &str) -> Vec<&'a str> {
    items
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.pointer(pointer).and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of dynamic listeners that are active (not warming or draining).
pub fn active_listeners(dump: &Value) -> Vec<&str> {
    let listeners = section(dump, "ListenersConfigDump").and_then(|s| s.get("dynamic_listeners"));
    listeners
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter(|l| l.get("active_state").is_some())
                .filter_map(|l| l.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of dynamic clusters that finished warming.
pub fn active_clusters(dump: &Value) -> Vec<&str> {
    let section = section(dump, "ClustersConfigDump");
    strings(
        section.and_then(|s| s.get("dynamic_active_clusters")),
        "/cluster/name",
    )
}

/// What the control plane gave this Envoy: its dynamic listeners, clusters
/// and route configurations, each with its version, in Envoy's order,
/// without the times Envoy applied them. Equal for two Envoys exactly
/// when both hold the same resources at the same versions.
pub fn dynamic_config(dump: &Value) -> Value {
    let mut config = serde_json::json!({
        "listeners": section(dump, "ListenersConfigDump").and_then(|s| s.get("dynamic_listeners")),
        "clusters": section(dump, "ClustersConfigDump").and_then(|s| s.get("dynamic_active_clusters")),
        "warming_clusters": section(dump, "ClustersConfigDump").and_then(|s| s.get("dynamic_warming_clusters")),
        "routes": section(dump, "RoutesConfigDump").and_then(|s| s.get("dynamic_route_configs")),
    });
    remove_key(&mut config, "last_updated");
    config
}

fn remove_key(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| remove_key(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remove_key(v, key)),
        _ => {}
    }
}

/// A dynamic route configuration by name (`"9080"`).
pub fn route_config<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    section(dump, "RoutesConfigDump")?
        .get("dynamic_route_configs")?
        .as_array()?
        .iter()
        .filter_map(|r| r.get("route_config"))
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
}

/// Every domain of every virtual host of a route configuration.
pub fn domains(route_config: &Value) -> Vec<&str> {
    route_config
        .get("virtual_hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|vh| strings(vh.get("domains"), ""))
        .collect()
}

/// `ip:port` of each host Envoy knows for `cluster`, from `/clusters?format=json`.
pub fn cluster_hosts(clusters: &Value, cluster: &str) -> Option<Vec<String>> {
    let status = clusters
        .get("cluster_statuses")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(cluster))?;
    let hosts = status
        .get("host_statuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    Some(
        hosts
            .filter_map(|h| {
                let addr = h.pointer("/address/socket_address")?;
                Some(format!(
                    "{}:{}",
                    addr.get("address")?.as_str()?,
                    addr.get("port_value")?.as_u64()?
                ))
            })
            .collect(),
    )
}
