//! Who a proxy is, from the Envoy `Node` it sends: Istio's node id form
//! `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` plus metadata `LABELS`,
//! `NAMESPACE` and `INTERCEPTION_MODE`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use pilotfish_translate::{DnsOptions, InterceptionMode, Locality, ProxyKind, ProxyView};
use serde::Serialize;

use crate::security::WorkloadIdentity;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyIdentity {
    pub node_id: String,
    pub kind: ProxyKind,
    pub ip: Option<String>,
    pub pod: Option<String>,
    /// The namespace written in the node id (`<pod>.<namespace>`), if any.
    pub id_namespace: Option<String>,
    /// Metadata `SERVICE_ACCOUNT`, if the proxy sent it.
    pub service_account: Option<String>,
    pub view: ProxyView,
}

impl ProxyIdentity {
    /// Checks what the node says about itself against what it proved: the
    /// namespace it asks config (and secrets) for, the namespace in its id,
    /// and its service account must all be the verified identity's.
    pub fn matches(&self, verified: &WorkloadIdentity) -> Result<(), String> {
        if self.view.namespace != verified.namespace {
            return Err(format!(
                "metadata NAMESPACE {:?} is not the authenticated namespace {:?}",
                self.view.namespace, verified.namespace
            ));
        }
        if let Some(ns) = self
            .id_namespace
            .as_ref()
            .filter(|ns| **ns != verified.namespace)
        {
            return Err(format!(
                "the node id's namespace {ns:?} is not the authenticated namespace {:?}",
                verified.namespace
            ));
        }
        if let Some(sa) = self
            .service_account
            .as_ref()
            .filter(|sa| **sa != verified.service_account)
        {
            return Err(format!(
                "metadata SERVICE_ACCOUNT {sa:?} is not the authenticated service account {:?}",
                verified.service_account
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("the first request of a stream must carry a node")]
    Missing,
    #[error(
        "node id {0:?}: expected <type>~<ip>~<pod>.<namespace>~<domain> with type sidecar or router"
    )]
    BadId(String),
    #[error("node {0:?}: metadata INTERCEPTION_MODE {1:?} is not REDIRECT, TPROXY or NONE")]
    BadInterception(String, String),
}

pub fn identify(node: Option<&Node>) -> Result<ProxyIdentity, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    let bad = || NodeError::BadId(node.id.clone());
    let parts: Vec<&str> = node.id.split('~').collect();
    let [kind, ip, pod_ns, domain] = parts.as_slice() else {
        return Err(bad());
    };
    let kind = match *kind {
        "sidecar" => ProxyKind::Sidecar,
        "router" => ProxyKind::Router,
        _ => return Err(bad()),
    };
    let metadata = node.metadata.as_ref();
    let (pod, id_namespace) = match pod_ns.split_once('.') {
        Some((pod, ns)) => (Some(pod.to_string()), Some(ns.to_string())),
        None => (Some(pod_ns.to_string()).filter(|p| !p.is_empty()), None),
    };
    let namespace = metadata
        .and_then(|m| string_field(m, "NAMESPACE"))
        .or_else(|| id_namespace.clone())
        .or_else(|| domain.split('.').next().map(str::to_string))
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let interception = match metadata.and_then(|m| string_field(m, "INTERCEPTION_MODE")) {
        None => InterceptionMode::Redirect,
        Some(mode) => InterceptionMode::parse(&mode)
            .ok_or_else(|| NodeError::BadInterception(node.id.clone(), mode))?,
    };
    let labels = metadata.map(labels_field).unwrap_or_default();
    Ok(ProxyIdentity {
        node_id: node.id.clone(),
        kind,
        ip: Some(ip.to_string()).filter(|s| !s.is_empty()),
        pod,
        id_namespace,
        service_account: metadata
            .and_then(|m| string_field(m, "SERVICE_ACCOUNT"))
            .filter(|sa| !sa.is_empty()),
        view: ProxyView {
            kind,
            namespace,
            interception,
            labels,
            // Filled per mesh generation from the registries (see proxy_view).
            inbound: Vec::new(),
            locality: node.locality.as_ref().and_then(Locality::from_envoy),
            dns: DnsOptions {
                capture: metadata.is_some_and(|m| flag_field(m, "DNS_CAPTURE")),
                auto_allocate: metadata.is_some_and(|m| flag_field(m, "DNS_AUTO_ALLOCATE")),
            },
            // Never from the node: the session sets it from what the
            // caller proved.
            workload_certificate: false,
        },
    })
}

/// A boolean flag as Istio's agent writes it: the string "true" (or a
/// JSON boolean).
fn flag_field(s: &Struct, key: &str) -> bool {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v.eq_ignore_ascii_case("true"),
        Some(Kind::BoolValue(v)) => *v,
        _ => false,
    }
}

fn string_field(s: &Struct, key: &str) -> Option<String> {
    match s.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(v) => Some(v.clone()),
        _ => None,
    }
}

fn labels_field(s: &Struct) -> BTreeMap<String, String> {
    let Some(Kind::StructValue(labels)) = s.fields.get("LABELS").and_then(|v| v.kind.as_ref())
    else {
        return BTreeMap::new();
    };
    labels
        .fields
        .iter()
        .filter_map(|(k, v)| match v.kind.as_ref() {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn string(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn parses_istio_sidecar_node() {
        let mut labels = Struct::default();
        labels.fields.insert("app".into(), string("reviews"));
        let mut meta = Struct::default();
        meta.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        meta.fields
            .insert("INTERCEPTION_MODE".into(), string("NONE"));
        let node = Node {
            id: "sidecar~10.1.0.7~reviews-v1-abc.shop~shop.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        let id = identify(Some(&node)).expect("valid node");
        assert_eq!(id.kind, ProxyKind::Sidecar);
        assert_eq!(id.ip.as_deref(), Some("10.1.0.7"));
        assert_eq!(id.pod.as_deref(), Some("reviews-v1-abc"));
        assert_eq!(id.view.namespace, "shop");
        assert_eq!(id.view.interception, InterceptionMode::None);
        assert_eq!(
            id.view.labels.get("app").map(String::as_str),
            Some("reviews")
        );
    }

    #[test]
    fn dns_proxying_is_asked_for_by_istio_metadata_flags() {
        let node = |flags: &[(&str, Value)]| Node {
            id: "sidecar~10.1.0.7~a.shop~shop.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: flags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            }),
            ..Default::default()
        };
        let dns = |n: Node| identify(Some(&n)).expect("valid node").view.dns;
        assert_eq!(dns(node(&[])), DnsOptions::default());
        let both = node(&[
            ("DNS_CAPTURE", string("true")),
            ("DNS_AUTO_ALLOCATE", string("True")),
        ]);
        assert_eq!(
            dns(both),
            DnsOptions {
                capture: true,
                auto_allocate: true
            }
        );
        let off = node(&[("DNS_CAPTURE", string("false"))]);
        assert!(!dns(off).capture);
    }

    #[test]
    fn reads_the_node_locality() {
        let mut node = Node {
            id: "sidecar~10.1.0.7~a.shop~shop.svc.cluster.local".into(),
            ..Default::default()
        };
        assert_eq!(identify(Some(&node)).unwrap().view.locality, None);
        node.locality = Some(envoy_types::pb::envoy::config::core::v3::Locality {
            region: "us-east".into(),
            zone: "zone-a".into(),
            sub_zone: String::new(),
        });
        let view = identify(Some(&node)).unwrap().view;
        assert_eq!(view.locality, Locality::parse("us-east/zone-a"));
        node.locality = Some(Default::default());
        assert_eq!(identify(Some(&node)).unwrap().view.locality, None);
    }

    #[test]
    fn node_claims_must_match_the_verified_identity() {
        let node = |id: &str, ns: Option<&str>, sa: Option<&str>| {
            let mut meta = Struct::default();
            if let Some(ns) = ns {
                meta.fields.insert("NAMESPACE".into(), string(ns));
            }
            if let Some(sa) = sa {
                meta.fields.insert("SERVICE_ACCOUNT".into(), string(sa));
            }
            identify(Some(&Node {
                id: id.into(),
                metadata: Some(meta),
                ..Default::default()
            }))
            .expect("valid node")
        };
        let verified = WorkloadIdentity::new("cluster.local", "shop", "gw");
        let id = "router~10.0.0.1~gw-1.shop~shop.svc.cluster.local";
        assert_eq!(
            node(id, Some("shop"), Some("gw")).matches(&verified),
            Ok(())
        );
        assert_eq!(node(id, None, None).matches(&verified), Ok(()));
        let claims_other = node(id, Some("istio-system"), None).matches(&verified);
        assert!(claims_other.is_err_and(|e| e.contains("NAMESPACE \"istio-system\"")));
        let other_id = "router~10.0.0.1~gw-1.prod~prod.svc.cluster.local";
        assert!(
            node(other_id, Some("shop"), None)
                .matches(&verified)
                .is_err()
        );
        let other_sa = node(id, Some("shop"), Some("admin")).matches(&verified);
        assert!(other_sa.is_err_and(|e| e.contains("SERVICE_ACCOUNT")));
    }

    #[test]
    fn rejects_malformed_ids() {
        for id in ["", "sidecar", "gateway~1.2.3.4~a.b~b.svc.cluster.local"] {
            let node = Node {
                id: id.into(),
                ..Default::default()
            };
            assert!(
                matches!(identify(Some(&node)), Err(NodeError::BadId(_))),
                "{id}"
            );
        }
        assert_eq!(identify(None), Err(NodeError::Missing));
    }
}
