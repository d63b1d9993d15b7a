//! Loading Istio config objects from YAML text: multi-document files and
//! kubectl-style lists, any of the served API versions, strict field checking.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ConfigError;
use crate::object::{
    ConfigKey, ConfigMeta, ConfigObject, ConfigSpec, GROUPS, Kind, Origin, versions_of,
};

/// What one YAML text yielded.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub objects: Vec<ConfigObject>,
    pub errors: Vec<ConfigError>,
    /// Objects that are not Istio config of a group Pilotfish reads (a
    /// Deployment in the same file, say), described for debug logs.
    pub ignored: Vec<String>,
}

/// Istio kinds of our API groups that Pilotfish does not serve (yet).
const NOT_SERVED: &[&str] = &[
    "Sidecar",
    "EnvoyFilter",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
    "RequestAuthentication",
];

/// Parses every document of `text`. `source` names the file in errors;
/// objects without a namespace get `default_namespace`.
pub fn load_yaml(source: &str, text: &str, default_namespace: &str) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let documents: Vec<Value> = match parse_documents(text) {
        Ok(docs) => docs,
        Err(err) => {
            let origin = Origin {
                source: source.to_string(),
                document: None,
            };
            outcome
                .errors
                .push(ConfigError::new(origin, format!("invalid YAML: {err}")));
            return outcome;
        }
    };
    for (index, doc) in documents.into_iter().enumerate() {
        let origin = Origin {
            source: source.to_string(),
            document: Some(index),
        };
        load_document(&origin, doc, default_namespace, &mut outcome);
    }
    outcome
}

/// Parses every YAML document of `text` into JSON values. serde-saphyr's
/// default budget (1,024 documents, 250,000 nodes) guards against hostile
/// input; mesh config is operator-written and large meshes keep thousands of
/// objects in one file, so the limits are raised while the depth and alias
/// limits that stop YAML bombs stay.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, serde_saphyr::Error> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_multiple_with_options(text, options)
}

fn load_document(origin: &Origin, doc: Value, default_namespace: &str, out: &mut LoadOutcome) {
    match doc {
        Value::Null => {}
        Value::Object(ref map) if is_list(map) => {
            let Some(Value::Array(items)) = map.get("items").cloned() else {
                out.errors.push(
                    ConfigError::new(origin.clone(), "a List needs an `items` array")
                        .at_field("items"),
                );
                return;
            };
            for (i, item) in items.into_iter().enumerate() {
                match load_object(origin, item, default_namespace, &format!("items[{i}].")) {
                    Ok(Some(obj)) => out.objects.push(obj),
                    Ok(None) => out
                        .ignored
                        .push(format!("{origin}: items[{i}] is not Istio config")),
                    Err(err) => out.errors.push(err),
                }
            }
        }
        other => match load_object(origin, other, default_namespace, "") {
            Ok(Some(obj)) => out.objects.push(obj),
            Ok(None) => out.ignored.push(format!("{origin}: not Istio config")),
            Err(err) => out.errors.push(err),
        },
    }
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && map.contains_key("items")
}

/// Converts one Kubernetes-shaped object. `Ok(None)` means "not ours".
/// `prefix` is prepended to field paths (for items of a List).
// Errors are rare and collected, so their size does not matter; a boxed
// error would change this public signature for callers.
#[allow(clippy::result_large_err)]
pub fn load_object(
    origin: &Origin,
    value: Value,
    default_namespace: &str,
    prefix: &str,
) -> Result<Option<ConfigObject>, ConfigError> {
    let Value::Object(mut map) = value else {
        return Err(ConfigError::new(
            origin.clone(),
            "a document must be a mapping with apiVersion and kind",
        ));
    };
    let api_version = match map.get("apiVersion") {
        Some(Value::String(s)) => s.clone(),
        // Neither apiVersion nor kind: not a Kubernetes object at all (say a
        // docker-compose file next to the config), so not ours to judge.
        None if !map.contains_key("kind") => return Ok(None),
        _ => {
            return Err(
                ConfigError::new(origin.clone(), "missing or non-string apiVersion")
                    .at_field(format!("{prefix}apiVersion")),
            );
        }
    };
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    if !GROUPS.contains(&group) {
        return Ok(None);
    }
    let kind_name = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(kind) = Kind::in_group(group, &kind_name) else {
        // Never silently dropped: a typo, or an Istio kind not served yet.
        let message = if NOT_SERVED.contains(&kind_name.as_str()) {
            format!("{kind_name} ({group}) is not supported by Pilotfish; the object is ignored")
        } else {
            format!("unknown kind {kind_name:?} in {group}")
        };
        return Err(ConfigError::new(origin.clone(), message).at_field(format!("{prefix}kind")));
    };

    let meta = read_meta(
        origin,
        map.remove("metadata"),
        default_namespace,
        kind,
        prefix,
    )?;
    let key = ConfigKey {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    };
    let err = |field: String, message: String| {
        ConfigError::new(origin.clone(), message)
            .for_object(key.clone())
            .at_field(field)
    };
    let versions = versions_of(group);
    if !versions.contains(&version) {
        return Err(err(
            format!("{prefix}apiVersion"),
            format!(
                "unsupported version {version:?} of {group}; served versions are {}",
                versions.join(", ")
            ),
        ));
    }
    for field in map.keys() {
        if !matches!(
            field.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            return Err(err(
                format!("{prefix}{field}"),
                "unknown top-level field".to_string(),
            ));
        }
    }
    let spec_value = map
        .remove("spec")
        .unwrap_or(Value::Object(Default::default()));
    let spec_prefix = format!("{prefix}spec");
    let spec = match kind {
        Kind::VirtualService => typed(spec_value).map(ConfigSpec::VirtualService),
        Kind::DestinationRule => typed(spec_value).map(ConfigSpec::DestinationRule),
        Kind::Gateway => typed(spec_value).map(ConfigSpec::Gateway),
        Kind::ServiceEntry => typed(spec_value).map(ConfigSpec::ServiceEntry),
        Kind::PeerAuthentication => typed(spec_value).map(ConfigSpec::PeerAuthentication),
        Kind::AuthorizationPolicy => typed(spec_value).map(ConfigSpec::AuthorizationPolicy),
    }
    .map_err(|(path, message)| err(join_path(&spec_prefix, &path), message))?;

    Ok(Some(ConfigObject {
        api_version,
        meta,
        spec,
        origin: origin.clone(),
    }))
}

/// Deserializes with the failing field's path kept.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}

fn join_path(prefix: &str, path: &str) -> String {
    if path.is_empty() || path == "." {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

#[allow(clippy::result_large_err)] // as for `load_object`
fn read_meta(
    origin: &Origin,
    value: Option<Value>,
    default_namespace: &str,
    kind: Kind,
    prefix: &str,
) -> Result<ConfigMeta, ConfigError> {
    let missing_name = || {
        ConfigError::new(origin.clone(), format!("{kind} has no metadata.name"))
            .at_field(format!("{prefix}metadata.name"))
    };
    let Some(Value::Object(meta)) = value else {
        return Err(missing_name());
    };
    let string = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_string);
    let map = |field: &str| -> std::collections::BTreeMap<String, String> {
        meta.get(field)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let name = string("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(missing_name)?;
    // Precedence compares creation times as times: one that is not a time
    // is refused rather than ranked by guesswork.
    let creation_timestamp = string("creationTimestamp");
    if let Some(text) = &creation_timestamp
        && let Err(message) = crate::creation_time::parse(text)
    {
        return Err(
            ConfigError::new(origin.clone(), format!("{kind} {name}: {message}"))
                .at_field(format!("{prefix}metadata.creationTimestamp")),
        );
    }
    Ok(ConfigMeta {
        name,
        namespace: string("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_namespace.to_string()),
        creation_timestamp,
        resource_version: string("resourceVersion"),
        generation: meta.get("generation").and_then(Value::as_i64),
        labels: map("labels"),
        annotations: map("annotations"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
"#;

    #[test]
    fn a_creation_timestamp_that_is_not_a_time_is_refused_with_its_field() {
        let text = VS.replace(
            "name: reviews\n",
            "name: reviews\n  creationTimestamp: yesterday\n",
        );
        let out = load_yaml("vs.yaml", &text, "default");
        assert!(out.objects.is_empty());
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        let error = out.errors[0].to_string();
        assert!(
            error.contains("metadata.creationTimestamp") && error.contains("yesterday"),
            "{error}"
        );
        let offset = VS.replace(
            "name: reviews\n",
            "name: reviews\n  creationTimestamp: 2024-01-01T01:00:00.5+02:00\n",
        );
        assert!(load_yaml("vs.yaml", &offset, "default").errors.is_empty());
    }

    #[test]
    fn unknown_and_unserved_kinds_are_reported_not_dropped() {
        let typo = VS.replace("kind: VirtualService", "kind: VirtualServce");
        let out = load_yaml("vs.yaml", &typo, "default");
        assert!(out.objects.is_empty());
        let error = out.errors[0].to_string();
        assert!(
            error.contains("unknown kind") && error.contains("kind"),
            "{error}"
        );
        let sidecar = VS.replace("kind: VirtualService", "kind: Sidecar");
        let error = load_yaml("s.yaml", &sidecar, "default").errors[0].to_string();
        assert!(error.contains("not supported"), "{error}");
        // Other groups are not ours to judge.
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        assert!(load_yaml("d.yaml", deployment, "default").errors.is_empty());
    }

    #[test]
    fn large_files_with_thousands_of_documents_load() {
        let text = (0..3000)
            .map(|i| VS.replace("name: reviews", &format!("name: r{i}")))
            .collect::<Vec<_>>()
            .join("---\n");
        let out = load_yaml("big.yaml", &text, "default");
        assert!(out.errors.is_empty(), "{:?}", out.errors.first());
        assert_eq!(out.objects.len(), 3000);
    }

    #[test]
    fn loads_all_served_versions() {
        for version in crate::object::VERSIONS {
            let text = VS.replace("v1alpha3", version);
            let out = load_yaml("vs.yaml", &text, "default");
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            assert_eq!(out.objects.len(), 1);
            assert_eq!(
                out.objects[0].key().to_string(),
                "VirtualService default/reviews"
            );
        }
    }

    #[test]
    fn loads_security_kinds_at_v1_and_v1beta1_only() {
        let pa = "apiVersion: security.istio.io/VERSION\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/VERSION\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec: {action: DENY, rules: [{}]}\n";
        for version in crate::object::SECURITY_VERSIONS {
            let out = load_yaml("sec.yaml", &pa.replace("VERSION", version), "default");
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            let keys: Vec<String> = out.objects.iter().map(|o| o.key().to_string()).collect();
            assert_eq!(
                keys,
                [
                    "PeerAuthentication istio-system/default",
                    "AuthorizationPolicy default/deny-all"
                ]
            );
        }
        let old = load_yaml("sec.yaml", &pa.replace("VERSION", "v1alpha3"), "default");
        let error = old.errors[0].to_string();
        assert!(
            error.contains("apiVersion") && error.contains("v1, v1beta1"),
            "{error}"
        );
        // A kind of the other group is not ours under this group's name.
        let wrong_group = VS.replace("networking.istio.io/v1alpha3", "security.istio.io/v1");
        let error = load_yaml("x.yaml", &wrong_group, "default").errors[0].to_string();
        assert!(error.contains("unknown kind"), "{error}");
        let jwt = pa
            .replace("VERSION", "v1")
            .replace("kind: PeerAuthentication", "kind: RequestAuthentication");
        let error = load_yaml("j.yaml", &jwt, "default").errors[0].to_string();
        assert!(
            error.contains("RequestAuthentication (security.istio.io) is not supported"),
            "{error}"
        );
    }

    #[test]
    fn loads_multi_document_and_lists() {
        let text = format!(
            "{VS}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n  metadata: {{name: reviews, namespace: shop}}\n  spec: {{host: reviews}}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {{name: x}}\n"
        );
        let out = load_yaml("many.yaml", &text, "default");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let keys: Vec<String> = out.objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(
            keys,
            [
                "VirtualService default/reviews",
                "DestinationRule shop/reviews"
            ]
        );
        assert_eq!(out.ignored.len(), 1);
    }

    #[test]
    fn unknown_field_names_file_document_object_and_path() {
        let text = format!(
            "{VS}---\n{}",
            VS.replace("subset: v1", "subsett: v1")
                .replace("name: reviews", "name: broken")
        );
        let out = load_yaml("bad.yaml", &text, "default");
        assert_eq!(out.objects.len(), 1);
        assert_eq!(out.errors.len(), 1);
        let msg = out.errors[0].to_string();
        assert!(msg.starts_with("bad.yaml (document 1): VirtualService default/broken: field spec.http[0].route[0].destination"), "{msg}");
        assert!(msg.contains("unknown field `subsett`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = VS.replace("hosts: [reviews]", "hosts: [reviews]\n  exportTo: 7");
        let out = load_yaml("t.yaml", &text, "default");
        let msg = out.errors[0].to_string();
        assert!(msg.contains("field spec.exportTo"), "{msg}");
    }

    #[test]
    fn malformed_yaml_reports_line_and_column() {
        let out = load_yaml("broken.yaml", "kind: [unclosed\n  - x: y\n", "default");
        assert_eq!(out.errors.len(), 1);
        let msg = out.errors[0].to_string();
        assert!(msg.starts_with("broken.yaml: invalid YAML"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn documents_that_are_not_kubernetes_objects_are_ignored() {
        let out = load_yaml(
            "compose.yaml",
            "version: '2'\nservices: {web: {image: nginx}}\n",
            "default",
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.ignored.len(), 1);
        let out = load_yaml(
            "k.yaml",
            "kind: VirtualService\nmetadata: {name: x}\n",
            "default",
        );
        assert!(
            out.errors[0].to_string().contains("apiVersion"),
            "{:?}",
            out.errors
        );
    }

    #[test]
    fn unsupported_version_and_missing_name_are_errors() {
        let out = load_yaml("v.yaml", &VS.replace("v1alpha3", "v1alpha2"), "default");
        assert!(out.errors[0].to_string().contains("unsupported version"));
        let out = load_yaml(
            "n.yaml",
            &VS.replace("name: reviews\nspec", "labels: {}\nspec"),
            "default",
        );
        assert!(
            out.errors[0].to_string().contains("metadata.name"),
            "{}",
            out.errors[0]
        );
    }
}
