//! `GET /debug/explain?proxy=<node id or pod>&url=<url>&header=<name: value>...`:
//! the path a request would take through a connected proxy, from the very
//! resources Pilotfish serves it (its snapshot, decoded back), with the
//! mesh's endpoint labels and service addresses.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use pilotfish_translate::XdsResources;
use pilotfish_translate::explain::{ExplainRequest, Explanation, explain_in_mesh};
use prost::Message;

use crate::mesh_store::MeshGeneration;
use crate::snapshot::Snapshot;
use crate::status::{ProxyStatus, SyncStatus};
use crate::xds_types::XdsType;

#[derive(Debug, thiserror::Error)]
pub enum ExplainEndpointError {
    #[error("missing ?{0}=")]
    Missing(&'static str),
    #[error("no connected proxy {0:?} (a node id, or a pod as name or name.namespace)")]
    UnknownProxy(String),
    #[error(transparent)]
    Request(#[from] pilotfish_translate::explain::ExplainError),
    #[error("{ty} resource {name} does not decode: {error}")]
    Decode {
        ty: &'static str,
        name: String,
        error: prost::DecodeError,
    },
}

impl ExplainEndpointError {
    /// Whether the caller asked wrongly (400/404) rather than the server failing.
    pub fn status(&self) -> u16 {
        match self {
            ExplainEndpointError::Missing(_) | ExplainEndpointError::Request(_) => 400,
            ExplainEndpointError::UnknownProxy(_) => 404,
            ExplainEndpointError::Decode { .. } => 500,
        }
    }
}

/// The query's `proxy`, `url` and every `header`.
pub struct ExplainQuery {
    pub proxy: String,
    pub url: String,
    pub headers: Vec<String>,
}

impl ExplainQuery {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<ExplainQuery, ExplainEndpointError> {
        let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Ok(ExplainQuery {
            proxy: first("proxy").ok_or(ExplainEndpointError::Missing("proxy"))?,
            url: first("url").ok_or(ExplainEndpointError::Missing("url"))?,
            headers: pairs
                .iter()
                .filter(|(k, _)| k == "header")
                .map(|(_, v)| v.clone())
                .collect(),
        })
    }
}

/// A connected proxy by node id, or by pod name (`productpage-v1`, or
/// `productpage-v1.default` with its namespace).
pub fn find_proxy(status: &SyncStatus, name: &str) -> Option<ProxyStatus> {
    let proxies = status.list();
    let by_pod = |p: &ProxyStatus| {
        let identity = &p.identity;
        let Some(pod) = &identity.pod else {
            return false;
        };
        let namespace = identity
            .id_namespace
            .as_deref()
            .unwrap_or(&identity.view.namespace);
        pod == name || format!("{pod}.{namespace}") == name
    };
    let exact = proxies.iter().find(|p| p.identity.node_id == name);
    exact
        .or_else(|| proxies.iter().find(|p| by_pod(p)))
        .cloned()
}

/// Explains `query` for its proxy with the generation's snapshot for it.
pub fn explain(
    query: &ExplainQuery,
    proxy: &ProxyStatus,
    generation: &MeshGeneration,
    snapshot: &Snapshot,
) -> Result<Explanation, ExplainEndpointError> {
    let request = ExplainRequest::parse(&query.url, &query.headers)?;
    let resources = resources(snapshot)?;
    let namespace = &proxy.identity.view.namespace;
    Ok(explain_in_mesh(
        &resources,
        &generation.mesh,
        namespace,
        request,
    ))
}

/// The answer as `/debug/explain` (and `pilotfish explain -o json`'s input)
/// has it: the explanation, its text for people, and whether it succeeds.
pub fn envelope(explanation: &Explanation) -> Result<serde_json::Value, serde_json::Error> {
    Ok(serde_json::json!({
        "explanation": serde_json::to_value(explanation)?,
        "text": explanation.to_string(),
        "succeeded": explanation.succeeded,
    }))
}

/// The snapshot's clusters, endpoints, listeners and routes as protos.
pub fn resources(snapshot: &Snapshot) -> Result<XdsResources, ExplainEndpointError> {
    Ok(XdsResources {
        clusters: decode::<Cluster>(snapshot, XdsType::Cluster)?,
        endpoints: decode::<ClusterLoadAssignment>(snapshot, XdsType::Endpoint)?,
        listeners: decode::<Listener>(snapshot, XdsType::Listener)?,
        routes: decode::<RouteConfiguration>(snapshot, XdsType::Route)?,
        secrets: Vec::new(),
    })
}

fn decode<T: Message + Default>(
    snapshot: &Snapshot,
    ty: XdsType,
) -> Result<Vec<T>, ExplainEndpointError> {
    snapshot
        .of(ty)
        .select(None)
        .into_iter()
        .map(|(name, resource)| {
            T::decode(resource.value().as_ref()).map_err(|error| ExplainEndpointError::Decode {
                ty: ty.short(),
                name: name.clone(),
                error,
            })
        })
        .collect()
}
