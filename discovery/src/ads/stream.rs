//! One state-of-the-world ADS stream: subscriptions per type, nonces,
//! ACK/NACK tracking, and pushes when the mesh generation changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use super::XdsContext;
use super::encoded::EncodedResponse;
use super::interned::NameSet;
use super::rejection::{SentNames, SentResponse};
use super::requests::{self, SotwRequest};
use super::session::{Caller, Protocol, Session};

use crate::snapshot::{Selection, TypeResources};
use crate::status::ResourceNames;
use crate::xds_types::{XdsProtocol, XdsType};

#[derive(Default)]
struct Subscription {
    /// `None` is a wildcard subscription (all resources of the type); a
    /// named one shares its set with the streams that ask the same.
    names: Option<NameSet>,
    /// Digest of the name list that made `names`: a request repeating it
    /// is recognised without parsing.
    names_digest: Option<[u8; 16]>,
    /// What the proxy holds of this type since our last response: the
    /// snapshot's own (shared) resources, not a copy per stream.
    sent: Option<Arc<TypeResources>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    /// The response of `sent_nonce`, until the proxy accepts or rejects it
    /// (for the types whose resources name their config objects).
    in_flight: Option<SentResponse>,
    /// Unchanged resources to send again: names just subscribed, and the
    /// assignments of clusters just updated (Envoy warms an updated cluster
    /// only on a fresh one).
    resend: BTreeSet<String>,
}

/// ClusterLoadAssignments and RouteConfigurations are not wildcard types:
/// in state of the world a response need only carry the ones that changed
/// (Envoy keeps the others), so one service's endpoint change costs each
/// proxy that one assignment, not all of them.
fn sends_only_changes(ty: XdsType) -> bool {
    matches!(ty, XdsType::Endpoint | XdsType::Route)
}

/// The resources of one response: those that changed, or all selected.
enum ToSend {
    Changed(Vec<String>),
    All(Arc<Selection>),
}

impl ToSend {
    fn names(&self) -> &[String] {
        match self {
            ToSend::Changed(names) => names,
            ToSend::All(selection) => &selection.names,
        }
    }
}

pub struct Connection {
    session: Session<EncodedResponse>,
    subscriptions: BTreeMap<XdsType, Subscription>,
}

impl Connection {
    pub fn new(
        ctx: Arc<XdsContext>,
        id: u64,
        tx: mpsc::Sender<Result<EncodedResponse, Status>>,
        caller: Caller,
    ) -> Self {
        Connection {
            session: Session::new(ctx, id, XdsProtocol::Sotw, tx, caller),
            subscriptions: BTreeMap::new(),
        }
    }

    /// Clusters before endpoints, listeners before routes; but when the
    /// clusters only lost members, they go last, after the listeners and
    /// routes that named them (make before break: a route still naming a
    /// cluster Envoy no longer has answers 503). A state-of-the-world CDS
    /// response cannot keep a cluster and add another, so a change that
    /// does both keeps the usual order.
    async fn push_order(&mut self) -> Vec<XdsType> {
        let removals_only = match self.session.snapshot().await {
            Some(snapshot) => {
                let current = self.session.resources(&snapshot, XdsType::Cluster);
                self.subscriptions
                    .get(&XdsType::Cluster)
                    .and_then(|sub| sub.sent.as_ref())
                    .map(|sent| current.changed_since(sent))
                    .is_some_and(|c| c.changed.is_empty() && !c.removed.is_empty())
            }
            None => false,
        };
        let mut order = XdsType::ALL.to_vec();
        if removals_only {
            order.retain(|ty| *ty != XdsType::Cluster);
            order.push(XdsType::Cluster);
        }
        order
    }

    async fn push(&mut self, ty: XdsType, force: bool) -> Result<(), Status> {
        let Some(snapshot) = self.session.snapshot().await else {
            return Ok(());
        };
        let current = self.session.resources(&snapshot, ty);
        // Only what the proxy subscribed to (a request made the entry).
        let Some(sub) = self.subscriptions.get_mut(&ty) else {
            return Ok(());
        };
        let names = sub.names.as_deref();
        let version = current.shared_selection_version(sub.names.as_ref());
        let to_send = match (&sub.sent, sends_only_changes(ty)) {
            (Some(sent), true) => {
                // What changed is worked out once for every stream moving
                // from the same previous set; each stream only filters it.
                let changed = current.changed_since(sent);
                let wanted = |name: &String| names.is_none_or(|n| n.contains(name));
                let names: BTreeSet<&String> = changed
                    .changed
                    .iter()
                    .chain(sub.resend.iter())
                    .filter(|name| wanted(name) && current.resources.contains_key(*name))
                    .collect();
                ToSend::Changed(names.into_iter().cloned().collect())
            }
            // Everything selected: shared by the streams with these names.
            _ => ToSend::All(current.selection(sub.names.as_ref())),
        };
        // Nothing new needs no answer, unless the proxy asked anew (a first
        // request must be answered, even with nothing in it).
        let nothing_new = if sends_only_changes(ty) {
            to_send.names().is_empty()
        } else {
            sub.sent_version.as_deref() == Some(version.as_str())
        };
        if !force && nothing_new {
            return Ok(());
        }
        let nonce = self.session.next_nonce();
        // The snapshot's own encoded entries: shared, not copied per stream.
        let parts = match &to_send {
            ToSend::Changed(names) => current.sotw_parts(names),
            ToSend::All(selection) => selection.sotw_parts.clone(),
        };
        let response = EncodedResponse::sotw(version.clone(), ty.type_url(), nonce.clone(), parts);
        // Clusters new or changed since the last push: the shared
        // difference, not a comparison per stream.
        let updated: Vec<String> = match (ty, &sub.sent) {
            (XdsType::Cluster, Some(sent)) => current
                .changed_since(sent)
                .changed
                .iter()
                .cloned()
                .collect(),
            (XdsType::Cluster, None) => to_send.names().to_vec(),
            _ => Vec::new(),
        };
        let names = || match &to_send {
            ToSend::Changed(names) => SentNames::Listed(names.clone()),
            ToSend::All(selection) => SentNames::Selection(selection.clone()),
        };
        sub.in_flight = SentResponse::of(ty, self.session.generation.version, &current, names);
        sub.sent = Some(current.clone());
        sub.sent_version = Some(version.clone());
        sub.sent_nonce = Some(nonce.clone());
        sub.resend.clear();
        let held = ResourceNames::Selected {
            resources: current.clone(),
            names: sub.names.clone(),
        };
        if let Some(eds) = self.subscriptions.get_mut(&XdsType::Endpoint)
            && let Some(subscribed) = &eds.names
        {
            eds.resend
                .extend(updated.into_iter().filter(|n| subscribed.contains(n)));
        }
        self.session.record_push(ty, &version, &nonce, held);
        self.session
            .count_sent(ty, to_send.names().len(), response.resource_bytes());
        self.session.send(response).await
    }
}

impl Protocol for Connection {
    type Request = SotwRequest;
    type Response = EncodedResponse;

    fn session(&mut self) -> &mut Session<EncodedResponse> {
        &mut self.session
    }

    async fn on_request(&mut self, request: SotwRequest) -> Result<(), Status> {
        self.session.register(request.node.as_ref())?;
        let Some(ty) = XdsType::from_type_url(&request.type_url) else {
            tracing::debug!(connection = self.session.id, type_url = %request.type_url, "ignoring request for a type Pilotfish does not serve");
            return Ok(());
        };
        if ty == XdsType::Secret {
            self.session.note_request(ty, &request.names.parse()?);
        }
        let sub = self.subscriptions.entry(ty).or_default();
        let is_response_to_us = !request.response_nonce.is_empty();
        if is_response_to_us && sub.sent_nonce.as_deref() != Some(request.response_nonce.as_str()) {
            // A reply to an older response; a newer one is already on its way.
            return Ok(());
        }
        // Answered: a repeated answer to the same response says nothing new.
        let answered = match is_response_to_us {
            true => sub.in_flight.take(),
            false => None,
        };
        if let Some(error) = &request.error_detail {
            self.session
                .record_nack(ty, &request.version_info, &error.message, answered.as_ref());
            return Ok(());
        }
        if is_response_to_us {
            self.session
                .record_ack(ty, &request.version_info, answered.as_ref());
        }
        let sub = self.subscriptions.entry(ty).or_default();
        // Every SotW ACK repeats the whole subscription (an EDS ACK names
        // every cluster): an equal digest is the same subscription, and
        // otherwise the names are compared in place; a set is built only
        // when they changed.
        let digest = request.names.digest();
        let changed = if sub.sent_nonce.is_some() && sub.names_digest == Some(digest) {
            false
        } else {
            let requested = request.names.parse()?;
            let changed =
                sub.sent_nonce.is_none() || !same_names(ty, sub.names.as_deref(), &requested);
            if changed {
                let names = requested_names(ty, &requested)?;
                // Names new to the subscription are answered even if the
                // proxy held them before (it may have dropped them meanwhile).
                if let (Some(before), Some(after)) = (&sub.names, &names) {
                    sub.resend.extend(after.difference(before).cloned());
                }
                sub.names = names.map(|n| self.session.ctx.name_sets.intern(n));
            }
            sub.names_digest = Some(digest);
            changed
        };
        if changed {
            self.push(ty, true).await?;
            if ty == XdsType::Cluster {
                // Assignments of the clusters just updated go out at once.
                self.push(XdsType::Endpoint, false).await?;
            }
        }
        Ok(())
    }

    /// Pushes every subscribed type whose content changed, in push order.
    async fn push_changed(&mut self) -> Result<(), Status> {
        for ty in self.push_order().await {
            if self.subscriptions.contains_key(&ty) {
                self.push(ty, false).await?;
            }
        }
        Ok(())
    }
}

/// CDS and LDS requests with no names (or `*`) subscribe to everything.
fn requested_names(ty: XdsType, names: &[Bytes]) -> Result<Option<BTreeSet<String>>, Status> {
    if is_wildcard_request(ty, names) {
        Ok(None)
    } else {
        Ok(Some(requests::names(names)?.into_iter().collect()))
    }
}

fn is_wildcard_request(ty: XdsType, names: &[Bytes]) -> bool {
    ty.is_wildcard()
        && (names.is_empty() || names.iter().any(|n| n == XdsType::WILDCARD.as_bytes()))
}

/// Whether a request subscribes to exactly `current` (`None`: wildcard),
/// without copying its names: they are sorted as references and walked
/// beside the set.
fn same_names(ty: XdsType, current: Option<&BTreeSet<String>>, names: &[Bytes]) -> bool {
    match (current, is_wildcard_request(ty, names)) {
        (None, wildcard) => wildcard,
        (Some(_), true) => false,
        (Some(current), false) => {
            if names.len() < current.len() {
                return false;
            }
            let mut sorted: Vec<&[u8]> = names.iter().map(|n| n.as_ref()).collect();
            sorted.sort_unstable();
            sorted.dedup();
            sorted.len() == current.len()
                && sorted.iter().zip(current).all(|(a, b)| *a == b.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn names(names: &[&str]) -> Vec<Bytes> {
        names
            .iter()
            .map(|n| Bytes::copy_from_slice(n.as_bytes()))
            .collect()
    }

    #[test]
    fn a_repeated_subscription_is_the_same_in_any_order_or_with_duplicates() {
        let current = set(&["a", "b", "c"]);
        let eds = XdsType::Endpoint;
        assert!(same_names(eds, Some(&current), &names(&["c", "a", "b"])));
        assert!(same_names(
            eds,
            Some(&current),
            &names(&["a", "b", "b", "c"])
        ));
        assert!(!same_names(eds, Some(&current), &names(&["a", "b"])));
        assert!(!same_names(eds, Some(&current), &names(&["a", "b", "d"])));
        assert!(!same_names(eds, Some(&current), &names(&["a", "a", "b"])));
        assert!(!same_names(eds, None, &names(&["a"])));
    }

    #[test]
    fn wildcard_subscriptions_compare_as_wildcards() {
        let cds = XdsType::Cluster;
        assert!(same_names(cds, None, &[]));
        assert!(same_names(cds, None, &names(&["*"])));
        assert!(!same_names(cds, Some(&set(&["a"])), &[]));
        assert!(!same_names(cds, None, &names(&["a"])));
        assert!(same_names(cds, Some(&set(&["a"])), &names(&["a"])));
    }
}
