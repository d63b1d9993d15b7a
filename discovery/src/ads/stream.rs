//! One state-of-the-world ADS stream: subscriptions per type, nonces,
//! ACK/NACK tracking, and pushes when the mesh generation changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::Status;

use super::XdsContext;
use super::session::{Caller, Protocol, Session};
use crate::snapshot::content_version;
use crate::xds_types::{XdsProtocol, XdsType};

#[derive(Default)]
struct Subscription {
    /// `None` is a wildcard subscription (all resources of the type).
    names: Option<BTreeSet<String>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
}

pub struct Connection {
    session: Session<DiscoveryResponse>,
    subscriptions: BTreeMap<XdsType, Subscription>,
}

impl Connection {
    pub fn new(
        ctx: Arc<XdsContext>,
        id: u64,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
        caller: Caller,
    ) -> Self {
        Connection {
            session: Session::new(ctx, id, XdsProtocol::Sotw, tx, caller),
            subscriptions: BTreeMap::new(),
        }
    }

    async fn push(&mut self, ty: XdsType, force: bool) -> Result<(), Status> {
        let Some(snapshot) = self.session.snapshot() else {
            return Ok(());
        };
        let sub = self.subscriptions.entry(ty).or_default();
        let selected = self
            .session
            .resources(&snapshot, ty)
            .select(sub.names.as_ref());
        let version = content_version(&selected);
        if !force && sub.sent_version.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        let nonce = self.session.next_nonce();
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
        self.session.record_push(ty, &version, &nonce, names);
        self.session.send(response).await
    }
}

impl Protocol for Connection {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn session(&mut self) -> &mut Session<DiscoveryResponse> {
        &mut self.session
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        self.session.register(request.node.as_ref())?;
        let Some(ty) = XdsType::from_type_url(&request.type_url) else {
            tracing::debug!(connection = self.session.id, type_url = %request.type_url, "ignoring request for a type Pilotfish does not serve");
            return Ok(());
        };
        self.session.note_request(ty, &request.resource_names);
        let sub = self.subscriptions.entry(ty).or_default();
        let is_response_to_us = !request.response_nonce.is_empty();
        if is_response_to_us && sub.sent_nonce.as_deref() != Some(request.response_nonce.as_str()) {
            // A reply to an older response; a newer one is already on its way.
            return Ok(());
        }
        if let Some(error) = &request.error_detail {
            self.session
                .record_nack(ty, &request.version_info, &error.message);
            return Ok(());
        }
        if is_response_to_us {
            self.session.record_ack(ty, &request.version_info);
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

    /// Pushes every subscribed type whose content changed, in push order.
    async fn push_changed(&mut self) -> Result<(), Status> {
        for ty in XdsType::ALL {
            if self.subscriptions.contains_key(&ty) {
                self.push(ty, false).await?;
            }
        }
        Ok(())
    }
}

/// CDS and LDS requests with no names (or `*`) subscribe to everything.
fn requested_names(ty: XdsType, names: &[String]) -> Option<BTreeSet<String>> {
    if ty.is_wildcard() && (names.is_empty() || names.iter().any(|n| n == XdsType::WILDCARD)) {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}
