//! Istio config from a Kubernetes API server: VirtualService,
//! DestinationRule, Gateway and ServiceEntry of `networking.istio.io` and
//! PeerAuthentication and AuthorizationPolicy of `security.istio.io`,
//! watched at `v1` (the API server converts whatever version they were
//! written in) as dynamic objects, in all namespaces or a configured set.
//!
//! Each object goes through the same loader and semantic checks as a file
//! (`load_object`, then `validate`). An invalid object is reported — log,
//! `/debug/diagnostics`, `pilotfish_config_errors` — naming its kind,
//! namespace/name and field, and skipped; the rest keeps flowing. When an
//! object that was valid becomes invalid, its last valid version stays
//! served (and that is reported too) until it is fixed or deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pilotfish_crds::load::load_object;
use pilotfish_crds::validate::validate;
use pilotfish_crds::{ConfigKey, ConfigObject, Kind, Origin};
use pilotfish_registries::kubernetes::kube::Api;
use pilotfish_registries::kubernetes::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use pilotfish_registries::kubernetes::watch::{Reflector, describe, reflect, strip_metadata};
use pilotfish_registries::kubernetes::{ApiServer, StatusTracker};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;
use crate::problems::InputProblem;
use crate::push::Change;
use crate::sources::kubernetes_source::{KubernetesSource, namespace_scopes, publish_on_change};

/// The config source's name in the mesh store, problems and status.
pub const SOURCE_NAME: &str = "kubernetes-config";
/// `Origin::source` of every object read from the API server.
pub const ORIGIN: &str = "kubernetes";
/// The served version Pilotfish reads.
pub const VERSION: &str = "v1";

pub fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::VirtualService => "virtualservices",
        Kind::DestinationRule => "destinationrules",
        Kind::Gateway => "gateways",
        Kind::ServiceEntry => "serviceentries",
        Kind::PeerAuthentication => "peerauthentications",
        Kind::AuthorizationPolicy => "authorizationpolicies",
    }
}

pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), VERSION, kind.as_str()),
        plural(kind),
    )
}

/// Starts watching; each full set of objects becomes a `Change::Config`.
/// The mesh store must have `add_dynamic_config(SOURCE_NAME)` first.
pub fn start(
    api: &ApiServer,
    namespaces: &BTreeSet<String>,
    changes: mpsc::UnboundedSender<Change>,
    metrics: Arc<Metrics>,
) -> KubernetesSource {
    let (tracker, status) = StatusTracker::new(SOURCE_NAME, &api.url);
    let changed = Arc::new(Notify::new());
    let scopes = namespace_scopes(namespaces);
    let mut reflectors = Vec::new();
    for kind in Kind::ALL {
        let resource = api_resource(kind);
        for ns in &scopes {
            let api = match ns {
                Some(ns) => {
                    Api::<DynamicObject>::namespaced_with(api.client.clone(), ns, &resource)
                }
                None => Api::<DynamicObject>::all_with(api.client.clone(), &resource),
            };
            reflectors.push((
                resource.clone(),
                reflect(
                    api,
                    resource.clone(),
                    describe(&format!("{kind} ({}/{VERSION})", kind.group()), *ns),
                    |o| strip_metadata(&mut o.metadata),
                    tracker.clone(),
                    changed.clone(),
                ),
            ));
        }
    }
    let publisher = run(reflectors, changed, changes, tracker.clone());
    KubernetesSource::spawn(SOURCE_NAME, api, tracker, status, publisher, metrics)
}

type DynReflector = (ApiResource, Reflector<DynamicObject>);

async fn run(
    reflectors: Vec<DynReflector>,
    changed: Arc<Notify>,
    changes: mpsc::UnboundedSender<Change>,
    tracker: StatusTracker,
) {
    for (_, r) in &reflectors {
        if !r.ready().await {
            return;
        }
    }
    let mut converter = ConfigConverter::default();
    let current = || {
        let values = reflectors.iter().flat_map(|(resource, r)| {
            r.store
                .state()
                .into_iter()
                .map(move |obj| object_value(resource, &obj))
        });
        let converted = converter.convert(values);
        let count = converted.0.len();
        (converted, count)
    };
    let to_change = |(objects, problems): &(Vec<ConfigObject>, Vec<InputProblem>)| Change::Config {
        name: SOURCE_NAME.to_string(),
        objects: objects.clone(),
        problems: problems.clone(),
    };
    publish_on_change(changed, changes, tracker, current, to_change).await;
}

/// The object as the loader expects it: apiVersion and kind set (list
/// items may come without them).
fn object_value(resource: &ApiResource, obj: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "apiVersion".into(),
            Value::String(resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(resource.kind.clone()));
    }
    value
}

/// Turns API objects into served config, remembering each object's last
/// valid version.
#[derive(Debug, Default)]
pub struct ConfigConverter {
    last_valid: BTreeMap<ConfigKey, ConfigObject>,
}

impl ConfigConverter {
    /// Converts the complete current set of objects; returns the objects to
    /// serve (sorted by kind/namespace/name) and the problems to report.
    pub fn convert(
        &mut self,
        values: impl IntoIterator<Item = Value>,
    ) -> (Vec<ConfigObject>, Vec<InputProblem>) {
        let origin = Origin {
            source: ORIGIN.to_string(),
            document: None,
        };
        let mut objects = Vec::new();
        let mut problems = Vec::new();
        let mut present = BTreeSet::new();
        for value in values {
            let key = key_of(&value);
            let errors = match load_object(&origin, value, "default", "") {
                Ok(Some(obj)) => {
                    let errors = validate(&obj);
                    if errors.is_empty() {
                        present.insert(obj.key());
                        self.last_valid.insert(obj.key(), obj.clone());
                        objects.push(obj);
                        continue;
                    }
                    errors
                }
                Ok(None) => continue,
                Err(error) => vec![error],
            };
            problems.extend(errors.iter().map(InputProblem::from_config_error));
            let key = key.or_else(|| errors.iter().find_map(|e| e.object.clone()));
            if let Some(key) = key {
                present.insert(key.clone());
                if let Some(previous) = self.last_valid.get(&key) {
                    problems.push(InputProblem {
                        source: ORIGIN.to_string(),
                        object: Some(key.to_string()),
                        field: None,
                        message: "the object is invalid; its last valid version is still served"
                            .into(),
                    });
                    objects.push(previous.clone());
                }
            }
        }
        // Deleted objects are forgotten: re-created invalid, nothing is kept.
        self.last_valid.retain(|k, _| present.contains(k));
        objects.sort_by_key(ConfigObject::key);
        problems.sort();
        (objects, problems)
    }
}

fn key_of(value: &Value) -> Option<ConfigKey> {
    let kind = Kind::from_name(value.get("kind")?.as_str()?)?;
    let meta = value.get("metadata")?;
    Some(ConfigKey {
        kind,
        namespace: meta.get("namespace")?.as_str()?.to_string(),
        name: meta.get("name")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(name: &str, regex: &str, version: &str) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version,
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {
                "hosts": ["reviews"],
                "http": [{
                    "match": [{"uri": {"regex": regex}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}]
                }]
            }
        })
    }

    fn dr(name: &str) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"host": "reviews", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]}
        })
    }

    #[test]
    fn valid_objects_are_served_sorted_with_their_namespace() {
        let mut c = ConfigConverter::default();
        let (objects, problems) = c.convert([vs("reviews", "/api/.*", "1"), dr("reviews")]);
        assert!(problems.is_empty(), "{problems:?}");
        let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(
            keys,
            [
                "VirtualService shop/reviews",
                "DestinationRule shop/reviews"
            ]
        );
        assert_eq!(objects[0].origin.source, "kubernetes");
        assert_eq!(
            objects[0].meta.creation_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
    }

    #[test]
    fn invalid_object_is_reported_with_namespace_name_and_field_and_skipped() {
        let mut c = ConfigConverter::default();
        let (objects, problems) = c.convert([vs("broken", "(unclosed", "1"), dr("reviews")]);
        assert_eq!(objects.len(), 1, "only the DestinationRule is served");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(p.source, "kubernetes");
        assert_eq!(p.object.as_deref(), Some("VirtualService shop/broken"));
        assert_eq!(p.field.as_deref(), Some("spec.http[0].match[0].uri.regex"));
    }

    #[test]
    fn an_object_that_turns_invalid_keeps_its_last_valid_version_until_deleted() {
        let mut c = ConfigConverter::default();
        let (good, _) = c.convert([vs("reviews", "/api/.*", "1")]);
        let (objects, problems) = c.convert([vs("reviews", "(bad", "2")]);
        assert_eq!(objects, good, "the last valid version is served");
        assert!(
            problems
                .iter()
                .any(|p| p.field.as_deref() == Some("spec.http[0].match[0].uri.regex")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("last valid version is still served")
                    && p.object.as_deref() == Some("VirtualService shop/reviews")),
            "{problems:?}"
        );
        // Fixed: the new version replaces it, no problems left.
        let (objects, problems) = c.convert([vs("reviews", "/v2/.*", "3")]);
        assert!(problems.is_empty());
        assert_eq!(objects[0].meta.resource_version.as_deref(), Some("3"));
        // Deleted, then re-created invalid: nothing old comes back.
        c.convert(Vec::<Value>::new());
        let (objects, problems) = c.convert([vs("reviews", "(bad", "4")]);
        assert!(objects.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn type_errors_are_reported_with_the_key_and_keep_the_last_valid_version() {
        let mut c = ConfigConverter::default();
        c.convert([dr("reviews")]);
        let mut wrong = dr("reviews");
        wrong["spec"]["subsets"] = json!("not a list");
        let (objects, problems) = c.convert([wrong]);
        assert_eq!(objects.len(), 1);
        assert!(
            problems.iter().any(
                |p| p.object.as_deref() == Some("DestinationRule shop/reviews")
                    && p.field.as_deref() == Some("spec.subsets")
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn api_resources_name_group_version_and_plural() {
        let r = api_resource(Kind::ServiceEntry);
        assert_eq!(r.api_version, "networking.istio.io/v1");
        assert_eq!(r.plural, "serviceentries");
        assert_eq!(r.kind, "ServiceEntry");
        let r = api_resource(Kind::AuthorizationPolicy);
        assert_eq!(r.api_version, "security.istio.io/v1");
        assert_eq!(r.plural, "authorizationpolicies");
        let r = api_resource(Kind::PeerAuthentication);
        assert_eq!(r.api_version, "security.istio.io/v1");
        assert_eq!(r.plural, "peerauthentications");
    }
}
