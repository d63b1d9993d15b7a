//! One ADS stream: subscriptions per type, nonces, ACK/NACK tracking, and
//! pushes when the mesh generation changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::XdsContext;
use crate::mesh_store::MeshGeneration;
use crate::metrics::type_label;
use crate::node::{ProxyIdentity, identify};
use crate::proxy_view::view_for;
use crate::snapshot::content_version;
use crate::status::{ProxyStatus, TypeStatus};
use crate::xds_types::XdsType;

#[derive(Default)]
struct Subscription {
    /// `None` is a wildcard subscription (all resources of the type).
    names: Option<BTreeSet<String>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
}

pub struct Connection {
    ctx: Arc<XdsContext>,
    id: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    identity: Option<ProxyIdentity>,
    status: Option<Arc<Mutex<ProxyStatus>>>,
    subscriptions: BTreeMap<XdsType, Subscription>,
    generation: Arc<MeshGeneration>,
    nonce: u64,
}

impl Connection {
    pub fn new(
        ctx: Arc<XdsContext>,
        id: u64,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> Self {
        let generation = ctx.generations.borrow().clone();
        Connection {
            ctx,
            id,
            tx,
            identity: None,
            status: None,
            subscriptions: BTreeMap::new(),
            generation,
            nonce: 0,
        }
    }

    pub async fn run(
        mut self,
        mut requests: Streaming<DiscoveryRequest>,
        peer: Option<SocketAddr>,
    ) {
        let mut generations = self.ctx.generations.clone();
        generations.mark_unchanged();
        loop {
            tokio::select! {
                message = requests.message() => match message {
                    Ok(Some(request)) => {
                        if let Err(status) = self.on_request(request).await {
                            tracing::warn!(connection = self.id, ?peer, error = %status.message(), "closing ADS stream");
                            let _ = self.tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(connection = self.id, error = %e, "ADS stream ended");
                        break;
                    }
                },
                changed = generations.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.generation = generations.borrow_and_update().clone();
                    if self.push_changed().await.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(identity) = &self.identity {
            tracing::info!(connection = self.id, node = %identity.node_id, "proxy disconnected");
            self.ctx.status.remove(self.id);
            self.ctx.metrics.connected_proxies.dec();
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if self.identity.is_none() {
            self.register(&request)?;
        }
        let Some(ty) = XdsType::from_type_url(&request.type_url) else {
            tracing::debug!(connection = self.id, type_url = %request.type_url, "ignoring request for a type Pilotfish does not serve");
            return Ok(());
        };
        let sub = self.subscriptions.entry(ty).or_default();
        let is_response_to_us = !request.response_nonce.is_empty();
        if is_response_to_us && sub.sent_nonce.as_deref() != Some(request.response_nonce.as_str()) {
            // A reply to an older response; a newer one is already on its way.
            return Ok(());
        }
        if let Some(error) = &request.error_detail {
            self.record_nack(ty, &request.version_info, &error.message);
            return Ok(());
        }
        if is_response_to_us {
            self.update_status(ty, |s| s.acked_version = Some(request.version_info.clone()));
        }
        let names = requested_names(ty, &request.resource_names);
        let sub = self.subscriptions.entry(ty).or_default();
        let changed = sub.names != names || sub.sent_nonce.is_none();
        sub.names = names;
        if changed {
            self.push(ty, true).await?;
        }
        Ok(())
    }

    fn register(&mut self, request: &DiscoveryRequest) -> Result<(), Status> {
        let identity =
            identify(request.node.as_ref()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(connection = self.id, node = %identity.node_id, namespace = %identity.view.namespace, "proxy connected");
        let connected_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.status = Some(self.ctx.status.register(ProxyStatus {
            connection_id: self.id,
            identity: identity.clone(),
            connected_at_unix,
            mesh_version: self.generation.version,
            types: BTreeMap::new(),
        }));
        self.ctx.metrics.connected_proxies.inc();
        self.identity = Some(identity);
        Ok(())
    }

    fn record_nack(&mut self, ty: XdsType, version: &str, message: &str) {
        let node = self
            .identity
            .as_ref()
            .map(|i| i.node_id.as_str())
            .unwrap_or_default();
        // Logged once per rejected response; the same version is not re-sent.
        tracing::warn!(
            node,
            r#type = ty.short(),
            rejected_version = version,
            error = message,
            "proxy rejected config (NACK)"
        );
        self.ctx
            .metrics
            .nacks
            .get_or_create(&type_label(ty.short()))
            .inc();
        self.update_status(ty, |s| {
            s.last_nack = Some(message.to_string());
            s.nacks += 1;
        });
    }

    /// Pushes every subscribed type whose content changed, in push order.
    async fn push_changed(&mut self) -> Result<(), ()> {
        let subscribed: Vec<XdsType> = self.subscriptions.keys().copied().collect();
        let mut ordered = XdsType::ALL.to_vec();
        ordered.retain(|t| subscribed.contains(t));
        for ty in ordered {
            self.push(ty, false).await.map_err(|_| ())?;
        }
        if let Some(status) = &self.status {
            status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mesh_version = self.generation.version;
        }
        Ok(())
    }

    async fn push(&mut self, ty: XdsType, force: bool) -> Result<(), Status> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let view = view_for(identity, &self.generation.inbound);
        let snapshot = self.ctx.cache.snapshot(&self.generation, &view);
        let sub = self.subscriptions.entry(ty).or_default();
        let selected = snapshot.of(ty).select(sub.names.as_ref());
        let version = content_version(&selected);
        if !force && sub.sent_version.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: selected
                .iter()
                .map(|(_, any)| any.as_ref().clone())
                .collect(),
            type_url: ty.type_url(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let names: Vec<String> = selected.iter().map(|(n, _)| (*n).clone()).collect();
        sub.sent_version = Some(version.clone());
        sub.sent_nonce = Some(nonce.clone());
        tracing::debug!(connection = self.id, node = %identity.node_id, r#type = ty.short(), %version, resources = names.len(), "push");
        self.ctx
            .metrics
            .pushes
            .get_or_create(&type_label(ty.short()))
            .inc();
        self.update_status(ty, |s| {
            s.sent_version = Some(version);
            s.sent_nonce = Some(nonce);
            s.pushes += 1;
            s.resource_names = names;
        });
        self.tx
            .send(Ok(response))
            .await
            .map_err(|_| Status::cancelled("stream closed"))
    }

    fn update_status(&self, ty: XdsType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(status) = &self.status {
            let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
            f(status.types.entry(ty).or_default());
        }
    }
}

/// CDS and LDS requests with no names (or `*`) subscribe to everything.
fn requested_names(ty: XdsType, names: &[String]) -> Option<BTreeSet<String>> {
    if ty.is_wildcard() && (names.is_empty() || names.iter().any(|n| n == "*")) {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}
