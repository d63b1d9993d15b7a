//! One incremental (delta) ADS stream: per-type [`DeltaState`], nonces
//! correlated with ACK/NACK, and a delta per type on each mesh generation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::requests::DeltaRequest;
use tokio::sync::mpsc;
use tonic::Status;

use super::XdsContext;
use super::delta::{DeltaState, SubscriptionChange, Updated};
use super::encoded::EncodedResponse;
use super::rejection::{SentNames, SentResponse};
use super::session::{Caller, Protocol, Session};
use crate::snapshot::TypeResources;
use crate::xds_types::{XdsProtocol, XdsType};

/// Unanswered responses kept per type; a proxy answers each in order, so
/// more means it stopped answering and the oldest are forgotten.
const MAX_IN_FLIGHT: usize = 64;

struct TypeStream {
    state: DeltaState,
    /// Responses sent and not answered yet, oldest first.
    in_flight: VecDeque<InFlight>,
}

struct InFlight {
    nonce: String,
    /// The system version it carried (delta requests carry no version to ACK).
    version: String,
    /// What it sent, for the types whose resources name their config objects.
    sent: Option<SentResponse>,
}

pub struct DeltaConnection {
    session: Session<EncodedResponse>,
    types: BTreeMap<XdsType, TypeStream>,
}

impl DeltaConnection {
    pub fn new(
        ctx: Arc<XdsContext>,
        id: u64,
        tx: mpsc::Sender<Result<EncodedResponse, Status>>,
        caller: Caller,
    ) -> Self {
        DeltaConnection {
            session: Session::new(ctx, id, XdsProtocol::Delta, tx, caller),
            types: BTreeMap::new(),
        }
    }

    /// Records the ACK or NACK of a response sent on this stream.
    fn on_reply(&mut self, ty: XdsType, request: &DeltaRequest) {
        let Some(stream) = self.types.get_mut(&ty) else {
            return;
        };
        let nonce = request.response_nonce.as_str();
        let Some(position) = stream.in_flight.iter().position(|f| f.nonce == nonce) else {
            // Not one of ours (or forgotten): there is nothing to correlate.
            tracing::debug!(
                connection = self.session.id,
                r#type = ty.short(),
                nonce,
                "reply to an unknown nonce"
            );
            return;
        };
        // Replies come in order: older unanswered responses were superseded.
        let Some(answered) = stream.in_flight.drain(..=position).next_back() else {
            return;
        };
        let (version, sent) = (&answered.version, answered.sent.as_ref());
        match &request.error_detail {
            Some(error) => self.session.record_nack(ty, version, &error.message, sent),
            None => self.session.record_ack(ty, version, sent),
        }
    }

    /// Sends `ty`'s delta; an empty one only when `always` (the first
    /// request of a type, whose initial fetch waits for an answer).
    async fn push(&mut self, ty: XdsType, always: bool) -> Result<(), Status> {
        self.push_deferring(ty, always, false).await.map(drop)
    }

    /// As [`DeltaConnection::push`]; with `defer_removals`, the removed
    /// names are left out of the response and returned, to be sent once
    /// the routes and listeners that referred to them are updated (make
    /// before break: a route still naming a removed cluster answers 503).
    async fn push_deferring(
        &mut self,
        ty: XdsType,
        always: bool,
        defer_removals: bool,
    ) -> Result<Option<DeferredRemovals>, Status> {
        let Some(snapshot) = self.session.snapshot().await else {
            return Ok(None);
        };
        let Some(stream) = self.types.get_mut(&ty) else {
            return Ok(None);
        };
        let resources = self.session.resources(&snapshot, ty);
        let mut delta = stream.state.diff(&resources);
        if delta.is_empty() && !always {
            return Ok(None);
        }
        let deferred = (defer_removals && !delta.removed.is_empty()).then(|| DeferredRemovals {
            ty,
            version: delta.system_version.clone(),
            resources: resources.clone(),
            removed: std::mem::take(&mut delta.removed),
        });
        if deferred.is_some() && delta.updated.is_empty() && !always {
            return Ok(deferred);
        }
        let nonce = self.session.next_nonce();
        let names = || match &delta.updated {
            Updated::Listed(_) => SentNames::Listed(delta.updated.names().cloned().collect()),
            Updated::Selection(selection) => SentNames::Selection(selection.clone()),
        };
        stream.in_flight.push_back(InFlight {
            nonce: nonce.clone(),
            version: delta.system_version.clone(),
            sent: SentResponse::of(ty, self.session.generation.version, &resources, names),
        });
        if stream.in_flight.len() > MAX_IN_FLIGHT {
            stream.in_flight.pop_front();
        }
        self.session
            .record_push(ty, &delta.system_version, &nonce, stream.state.held());
        if ty == XdsType::Cluster
            && let Some(eds) = self.types.get_mut(&XdsType::Endpoint)
        {
            // The protocol has an updated cluster warm only on a fresh
            // ClusterLoadAssignment, even an unchanged one; recent Envoys
            // fall back to their EDS cache, which is not promised.
            eds.state.force(delta.updated.names());
        }
        tracing::debug!(
            connection = self.session.id,
            r#type = ty.short(),
            updated = delta.updated.len(),
            removed = delta.removed.len(),
            "delta push"
        );
        // The snapshot's own encoded entries: shared, not copied per stream.
        let entries = delta.updated.parts(&resources);
        let updated = delta.updated.len();
        let response = EncodedResponse::delta(
            delta.system_version,
            ty.type_url(),
            nonce,
            delta.removed,
            entries,
        );
        self.session
            .count_sent(ty, updated, response.resource_bytes());
        self.session.send(response).await?;
        Ok(deferred)
    }

    /// Sends removals held back by [`DeltaConnection::push_deferring`].
    async fn send_removals(&mut self, deferred: DeferredRemovals) -> Result<(), Status> {
        let DeferredRemovals {
            ty,
            version,
            resources,
            removed,
        } = deferred;
        let Some(stream) = self.types.get_mut(&ty) else {
            return Ok(());
        };
        let nonce = self.session.next_nonce();
        stream.in_flight.push_back(InFlight {
            nonce: nonce.clone(),
            version: version.clone(),
            sent: SentResponse::of(ty, self.session.generation.version, &resources, || {
                SentNames::Listed(Vec::new())
            }),
        });
        if stream.in_flight.len() > MAX_IN_FLIGHT {
            stream.in_flight.pop_front();
        }
        self.session
            .record_push(ty, &version, &nonce, stream.state.held());
        tracing::debug!(
            connection = self.session.id,
            r#type = ty.short(),
            removed = removed.len(),
            "delta removals after routes"
        );
        let response = EncodedResponse::delta(version, ty.type_url(), nonce, removed, Vec::new());
        self.session.send(response).await
    }
}

/// Removed names of one type, sent after the types that referred to them.
struct DeferredRemovals {
    ty: XdsType,
    version: String,
    resources: Arc<TypeResources>,
    removed: Vec<String>,
}

impl Protocol for DeltaConnection {
    type Request = DeltaRequest;
    type Response = EncodedResponse;

    fn session(&mut self) -> &mut Session<EncodedResponse> {
        &mut self.session
    }

    async fn on_request(&mut self, mut request: DeltaRequest) -> Result<(), Status> {
        self.session.register(request.node.as_ref())?;
        let Some(ty) = XdsType::from_type_url(&request.type_url) else {
            tracing::debug!(connection = self.session.id, type_url = %request.type_url, "ignoring request for a type Pilotfish does not serve");
            return Ok(());
        };
        self.session
            .note_request(ty, &request.resource_names_subscribe);
        if !request.response_nonce.is_empty() {
            self.on_reply(ty, &request);
        }
        // Subscription changes count even on a stale nonce (the protocol says
        // so); an ACK carries none, and then nothing is sent.
        let stream = self.types.entry(ty).or_insert_with(|| TypeStream {
            state: DeltaState::new(ty),
            in_flight: VecDeque::new(),
        });
        let first = stream.state.apply(SubscriptionChange {
            subscribe: &request.resource_names_subscribe,
            unsubscribe: &request.resource_names_unsubscribe,
            initial_versions: Some(std::mem::take(&mut request.initial_resource_versions)),
        });
        if !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
        {
            stream.state.intern_names(&self.session.ctx.name_sets);
        }
        if !request.resource_names_unsubscribe.is_empty() {
            self.session.record_names(ty, stream.state.held());
        }
        self.push(ty, first).await?;
        if ty == XdsType::Cluster {
            // Clusters updated just now need their endpoints resent.
            self.push(XdsType::Endpoint, false).await?;
        }
        Ok(())
    }

    /// Pushes each subscribed type's delta in push order, so new clusters
    /// precede their endpoints and listeners their routes.
    async fn push_changed(&mut self) -> Result<(), Status> {
        // Clusters before endpoints, listeners before routes; removed
        // clusters only after the routes that named them have changed.
        let mut deferred = None;
        for ty in XdsType::ALL {
            let removals = self
                .push_deferring(ty, false, ty == XdsType::Cluster)
                .await?;
            deferred = deferred.or(removals);
        }
        match deferred {
            Some(removals) => self.send_removals(removals).await,
            None => Ok(()),
        }
    }
}
