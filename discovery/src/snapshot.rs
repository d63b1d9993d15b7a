//! A snapshot: every resource of one proxy view, encoded once to `Any` and
//! shared (via `Arc`) by every stream that serves that view.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use pilotfish_translate::XdsResources;
use pilotfish_translate::emit::RouteConfigParts;
use pilotfish_translate::names::outbound_cluster_host;
use sha2::{Digest, Sha256};

use crate::ads::encoded::{EntryBuffer, delta_entry, write_delta_entry, write_sotw_entry};
use crate::resource::Resource;
use crate::route_blocks::RouteBlocks;
use crate::xds_types::XdsType;

/// Resources of one type, by name.
#[derive(Debug, Default)]
pub struct TypeResources {
    pub resources: BTreeMap<String, Arc<Resource>>,
    /// Per-resource versions for incremental xDS, computed once per encoding
    /// rather than per stream and push.
    versions: BTreeMap<String, String>,
    /// Version of the whole set, for wildcard subscriptions: computed once
    /// here, not per stream and push.
    full_version: String,
    /// Each resource's response entry, encoded once for every stream that
    /// sends it (state of the world, and delta with its version).
    sotw_entries: EntryBuffer,
    delta_entries: EntryBuffer,
    /// Work every stream would otherwise repeat: what changed since a
    /// previous set, and the version of a shared subscription.
    memo: Memo,
}

/// Results computed by the first stream that needs them and reused by the
/// others: keyed by the (shared) previous set or name set, a few entries.
#[derive(Debug, Default)]
struct Memo {
    changed: Mutex<Vec<(Weak<TypeResources>, Arc<Changes>)>>,
    versions: MemoByNames<String>,
    selections: MemoByNames<Arc<Selection>>,
    everything: std::sync::OnceLock<Arc<Selection>>,
}

/// Results per shared name set.
type MemoByNames<V> = Mutex<Vec<(Weak<BTreeSet<String>>, V)>>;

/// What a subscription selects of a set, with its response entries: the
/// same for every stream subscribed to the same (shared) names, so a
/// stream's first full response costs it no lookup per name.
#[derive(Debug, Default)]
pub struct Selection {
    /// Selected names that exist, in order.
    pub names: Vec<String>,
    /// Subscribed names that do not exist.
    pub missing: Vec<String>,
    pub sotw_parts: Vec<Bytes>,
    pub delta_parts: Vec<Bytes>,
}

/// How a set differs from a previous one.
#[derive(Debug, Default)]
pub struct Changes {
    /// Names new or at another version.
    pub changed: BTreeSet<String>,
    /// Names the previous set had and this one lacks.
    pub removed: BTreeSet<String>,
}

/// Entries kept per memo: streams move from the same few previous sets.
const MEMO_ENTRIES: usize = 4;

fn memoized<K, V: Clone>(
    memo: &Mutex<Vec<(Weak<K>, V)>>,
    key: &Arc<K>,
    compute: impl FnOnce() -> V,
) -> V {
    let mut entries = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, value)) = entries
        .iter()
        .find(|(k, _)| std::ptr::eq(k.as_ptr(), Arc::as_ptr(key)))
    {
        return value.clone();
    }
    let value = compute();
    entries.retain(|(k, _)| k.strong_count() > 0);
    if entries.len() >= MEMO_ENTRIES {
        entries.remove(0);
    }
    entries.push((Arc::downgrade(key), value.clone()));
    value
}

impl TypeResources {
    /// Encodes `items`, reusing `previous` encodings of equal resources.
    /// Protobuf map fields encode in hash order, so equal resources can
    /// encode differently; reuse keeps versions (and pushes) stable.
    fn encode<T>(
        items: Vec<T>,
        name: impl Fn(&T) -> String,
        previous: Option<&TypeResources>,
    ) -> Self
    where
        T: prost::Name + prost::Message + Default + PartialEq,
    {
        let resources = items
            .into_iter()
            .map(|item| {
                let name = name(&item);
                let old = previous.and_then(|p| p.resources.get(&name));
                let any = match old {
                    Some(old) if T::decode(old.value().as_ref()).is_ok_and(|d| d == item) => {
                        old.clone()
                    }
                    _ => Arc::new(Resource::encode(&item)),
                };
                (name, any)
            })
            .collect();
        Self::new(resources)
    }

    pub fn new(resources: BTreeMap<String, Arc<Resource>>) -> Self {
        let versions: BTreeMap<String, String> = resources
            .iter()
            .map(|(name, resource)| (name.clone(), resource.version()))
            .collect();
        let full_version =
            selection_version(versions.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let sotw_entries =
            EntryBuffer::build(resources.iter(), |_, any, buf| write_sotw_entry(any, buf));
        let delta_entries = EntryBuffer::build(resources.iter(), |name, any, buf| {
            let version = versions.get(name).map(String::as_str).unwrap_or_default();
            write_delta_entry(name, version, any, buf)
        });
        TypeResources {
            resources,
            versions,
            full_version,
            sotw_entries,
            delta_entries,
            memo: Memo::default(),
        }
    }

    /// How this set differs from `previous`: computed once for all the
    /// streams that move from `previous` to this set.
    pub fn changed_since(self: &Arc<Self>, previous: &Arc<TypeResources>) -> Arc<Changes> {
        if Arc::ptr_eq(self, previous) {
            return Arc::default();
        }
        memoized(&self.memo.changed, previous, || {
            Arc::new(Changes {
                changed: self
                    .versions
                    .iter()
                    .filter(|(name, version)| previous.version(name) != Some(version.as_str()))
                    .map(|(name, _)| name.clone())
                    .collect(),
                removed: previous
                    .versions
                    .keys()
                    .filter(|name| !self.versions.contains_key(*name))
                    .cloned()
                    .collect(),
            })
        })
    }

    /// [`TypeResources::selection_version`] of a shared name set, computed
    /// once for all the streams that subscribe to the same set.
    pub fn shared_selection_version(&self, names: Option<&Arc<BTreeSet<String>>>) -> String {
        match names {
            None => self.full_version.clone(),
            Some(names) => memoized(&self.memo.versions, names, || {
                self.selection_version(Some(names))
            }),
        }
    }

    /// What `names` (all for `None`) selects, with its encoded entries;
    /// computed once per shared name set.
    pub fn selection(&self, names: Option<&Arc<BTreeSet<String>>>) -> Arc<Selection> {
        match names {
            None => self
                .memo
                .everything
                .get_or_init(|| Arc::new(self.select_entries(self.resources.keys(), Vec::new())))
                .clone(),
            Some(names) => memoized(&self.memo.selections, names, || {
                let (present, missing): (Vec<&String>, Vec<&String>) =
                    names.iter().partition(|n| self.resources.contains_key(*n));
                Arc::new(self.select_entries(present, missing.into_iter().cloned().collect()))
            }),
        }
    }

    fn select_entries<'a>(
        &self,
        present: impl IntoIterator<Item = &'a String>,
        missing: Vec<String>,
    ) -> Selection {
        let names: Vec<String> = present.into_iter().cloned().collect();
        Selection {
            sotw_parts: self.sotw_parts(&names),
            delta_parts: self.delta_entries.parts(&names, |n| n.as_str(), |_| None),
            names,
            missing,
        }
    }

    /// The encoded state-of-the-world entries of `names` (in name order,
    /// so neighbours share one slice); names absent here are left out.
    pub fn sotw_parts<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<Bytes> {
        self.sotw_entries.parts(names, |n| n.as_str(), |_| None)
    }

    /// The encoded delta entries (with versions) of `updated`, in order.
    pub fn delta_parts(&self, updated: &[(String, String, Arc<Resource>)]) -> Vec<Bytes> {
        self.delta_entries.parts(
            updated,
            |(name, _, _)| name.as_str(),
            |(name, version, any)| Some(delta_entry(name, version, any)),
        )
    }

    /// Bytes this set holds: its resources' pieces and its response
    /// entries, pieces whose address is already in `seen` left out (and
    /// the others added to it), so sets sharing pieces count them once.
    pub fn held_bytes(&self, seen: &mut HashSet<usize>) -> usize {
        let pieces: usize = self
            .resources
            .values()
            .flat_map(|r| r.pieces())
            .filter(|p| seen.insert(p.as_ptr() as usize))
            .map(|p| p.len())
            .sum();
        pieces + self.sotw_entries.own_len() + self.delta_entries.own_len()
    }

    /// The version of one resource (incremental xDS), if it exists.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.versions.get(name).map(String::as_str)
    }

    /// The version of what `names` selects (all for `None`): a hash of the
    /// selected names and their per-resource versions, so equal content has
    /// an equal version without hashing resource bytes per stream.
    pub fn selection_version(&self, names: Option<&BTreeSet<String>>) -> String {
        match names {
            None => self.full_version.clone(),
            Some(names) => selection_version(
                names
                    .iter()
                    .filter_map(|n| Some((n.as_str(), self.version(n)?))),
            ),
        }
    }

    /// The resources a subscription selects: all of them for a wildcard
    /// subscription, otherwise the named ones that exist.
    pub fn select(&self, names: Option<&BTreeSet<String>>) -> Vec<(&String, &Arc<Resource>)> {
        match names {
            None => self.resources.iter().collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| self.resources.get_key_value(n))
                .collect(),
        }
    }
}

fn selection_version<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (name, version) in items {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(version.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Types are behind `Arc` so an endpoints-only rebuild shares the unchanged
/// clusters, routes and secrets with the previous snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The mesh generation this snapshot was built from.
    pub mesh_version: u64,
    pub clusters: Arc<TypeResources>,
    pub endpoints: Arc<TypeResources>,
    pub listeners: Arc<TypeResources>,
    pub routes: Arc<TypeResources>,
    /// SDS secrets by `Secret.name` (`kubernetes://<credentialName>`...).
    pub secrets: Arc<TypeResources>,
}

impl Snapshot {
    /// Encodes `resources`; equal resources keep `previous`'s encoding.
    pub fn build(
        mesh_version: u64,
        resources: XdsResources,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let clusters = encode_clusters(resources.clusters, previous.map(|p| &*p.clusters));
        let endpoints = encode_endpoints(resources.endpoints, previous.map(|p| &*p.endpoints));
        // Encoded as a view's are (so versions agree), equal ones reused:
        // a whole configuration's hosts are not shared with an earlier
        // generation's, so equality is checked by decoding.
        let parts = resources.routes.into_iter().map(RouteConfigParts::whole);
        let routes = route_resources(
            RouteBlocks::default().encode(mesh_version, parts.collect()),
            previous,
            |old, fresh| {
                let decode = |r: &Resource| {
                    <RouteConfiguration as prost::Message>::decode(r.value().as_ref()).ok()
                };
                decode(old).is_some_and(|old| Some(old) == decode(fresh))
            },
        );
        Snapshot::with_own(
            mesh_version,
            (Arc::new(clusters), Arc::new(endpoints)),
            (resources.listeners, routes, resources.secrets),
            previous,
        )
    }

    /// A snapshot of clusters and endpoints already encoded (shared with
    /// other views) and a view's own resources, encoded here: route
    /// configurations from `blocks` (virtual hosts shared with other
    /// views), the rest whole; equal resources keep `previous`'s encoding.
    pub fn assemble(
        mesh_version: u64,
        shared: (Arc<TypeResources>, Arc<TypeResources>),
        own: ViewResources,
        previous: Option<&Snapshot>,
        blocks: &RouteBlocks,
    ) -> Snapshot {
        let routes = route_resources(
            blocks.encode(mesh_version, own.routes),
            previous,
            Resource::same_encoding,
        );
        Snapshot::with_own(
            mesh_version,
            shared,
            (own.listeners, routes, own.secrets),
            previous,
        )
    }

    fn with_own(
        mesh_version: u64,
        (clusters, endpoints): (Arc<TypeResources>, Arc<TypeResources>),
        (listeners, routes, secrets): (Vec<Listener>, TypeResources, Vec<Secret>),
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let secrets =
            TypeResources::encode(secrets, |s| s.name.clone(), previous.map(|p| &*p.secrets));
        Snapshot {
            mesh_version,
            clusters,
            endpoints,
            listeners: Arc::new(listener_resources(listeners, previous)),
            routes: Arc::new(routes),
            secrets: Arc::new(secrets),
        }
    }

    /// A snapshot for a generation in which only endpoints changed:
    /// `endpoints` (already patched, see [`patch_endpoints`]) replace the
    /// previous ones and every other resource is shared with `previous`;
    /// listeners too unless new ones are given (VIP-less services are
    /// matched by endpoint address).
    pub fn with_endpoints(
        mesh_version: u64,
        previous: &Snapshot,
        endpoints: Arc<TypeResources>,
        listeners: Option<Vec<Listener>>,
    ) -> Snapshot {
        Snapshot {
            mesh_version,
            clusters: previous.clusters.clone(),
            endpoints,
            listeners: match listeners {
                Some(listeners) => Arc::new(listener_resources(listeners, Some(previous))),
                None => previous.listeners.clone(),
            },
            routes: previous.routes.clone(),
            secrets: previous.secrets.clone(),
        }
    }

    /// [`Snapshot::of`], shared: a stream keeps what it last sent.
    pub fn of_shared(&self, ty: XdsType) -> &Arc<TypeResources> {
        match ty {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
            XdsType::Secret => &self.secrets,
        }
    }

    pub fn of(&self, ty: XdsType) -> &TypeResources {
        self.of_shared(ty)
    }

    fn of_shared_mut(&mut self, ty: XdsType) -> &mut Arc<TypeResources> {
        match ty {
            XdsType::Cluster => &mut self.clusters,
            XdsType::Endpoint => &mut self.endpoints,
            XdsType::Listener => &mut self.listeners,
            XdsType::Route => &mut self.routes,
            XdsType::Secret => &mut self.secrets,
        }
    }
}

/// Encoded route configurations as a set, each equal to one of `previous`
/// (by `equal`) replaced by it.
fn route_resources(
    encoded: Vec<(String, Resource)>,
    previous: Option<&Snapshot>,
    equal: impl Fn(&Resource, &Resource) -> bool,
) -> TypeResources {
    let routes = encoded.into_iter().map(|(name, fresh)| {
        let old = previous.and_then(|p| p.routes.resources.get(&name));
        let resource = match old {
            Some(old) if equal(old, &fresh) => old.clone(),
            _ => Arc::new(fresh),
        };
        (name, resource)
    });
    TypeResources::new(routes.collect())
}

/// What a view builds for itself: everything but clusters and endpoints.
#[derive(Debug, Default)]
pub struct ViewResources {
    pub listeners: Vec<Listener>,
    /// Route configurations with their virtual hosts shared by `Arc`.
    pub routes: Vec<RouteConfigParts>,
    pub secrets: Vec<Secret>,
}

/// Encodes clusters; equal ones keep `previous`'s encoding.
pub fn encode_clusters(items: Vec<Cluster>, previous: Option<&TypeResources>) -> TypeResources {
    TypeResources::encode(items, |c| c.name.clone(), previous)
}

/// Encodes endpoint assignments; equal ones keep `previous`'s encoding.
pub fn encode_endpoints(
    items: Vec<ClusterLoadAssignment>,
    previous: Option<&TypeResources>,
) -> TypeResources {
    TypeResources::encode(items, |e| e.cluster_name.clone(), previous)
}

/// `previous` endpoints with the assignments of the clusters of `hosts`
/// replaced by `fresh` (built for those hosts alone).
pub fn patch_endpoints(
    previous: &TypeResources,
    hosts: &BTreeSet<String>,
    fresh: Vec<ClusterLoadAssignment>,
) -> TypeResources {
    let replaced = |name: &str| outbound_cluster_host(name).is_some_and(|h| hosts.contains(h));
    let fresh = encode_endpoints(fresh, Some(previous));
    let mut all: BTreeMap<String, Arc<Resource>> = previous
        .resources
        .iter()
        .filter(|(name, _)| !replaced(name))
        .map(|(name, any)| (name.clone(), any.clone()))
        .collect();
    all.extend(fresh.resources);
    TypeResources::new(all)
}

fn listener_resources(items: Vec<Listener>, previous: Option<&Snapshot>) -> TypeResources {
    TypeResources::encode(items, |l| l.name.clone(), previous.map(|p| &*p.listeners))
}

/// Resource sets shared between views: views whose set of a type is equal
/// (same names at the same versions) hold one `TypeResources`, so 100
/// namespaces of sidecars that see the same clusters keep one copy of them
/// and their encodings, not 100. Entries are weak: a set lives as long as
/// some snapshot holds it.
#[derive(Debug, Default)]
pub struct SharedSets {
    sets: Mutex<SharedSetMap>,
}

#[derive(Debug, Default)]
struct SharedSetMap {
    by_version: HashMap<(XdsType, String), Weak<TypeResources>>,
    /// Size at which dead entries are swept next.
    sweep_at: usize,
}

impl SharedSets {
    /// `set` of type `ty`, or an equal one already shared.
    pub fn share_set(&self, ty: XdsType, set: Arc<TypeResources>) -> Arc<TypeResources> {
        self.sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .share(ty, set)
    }

    /// `snapshot` with each set replaced by an equal one already shared.
    pub fn share(&self, mut snapshot: Snapshot) -> Snapshot {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        for ty in XdsType::ALL {
            let set = snapshot.of_shared_mut(ty);
            *set = sets.share(ty, set.clone());
        }
        snapshot
    }
}

impl SharedSetMap {
    fn share(&mut self, ty: XdsType, set: Arc<TypeResources>) -> Arc<TypeResources> {
        let key = (ty, set.full_version.clone());
        if let Some(existing) = self.by_version.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        if self.by_version.len() >= self.sweep_at {
            self.by_version.retain(|_, set| set.strong_count() > 0);
            self.sweep_at = (self.by_version.len() * 2).max(64);
        }
        self.by_version.insert(key, Arc::downgrade(&set));
        set
    }
}

/// A set of resources `name → bytes` (type URL `t`), for tests.
#[cfg(test)]
pub(crate) fn test_set(entries: &[(&str, &[u8])]) -> Arc<TypeResources> {
    Arc::new(TypeResources::new(
        entries
            .iter()
            .map(|(name, value)| {
                let any = envoy_types::pb::google::protobuf::Any {
                    type_url: "t".into(),
                    value: value.to_vec(),
                };
                (name.to_string(), Arc::new(Resource::from_any(any)))
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        Secret, TlsCertificate, secret,
    };
    use envoy_types::pb::google::protobuf::Any;

    /// A route config with a multi-entry map, whose encoding order varies.
    fn routes() -> XdsResources {
        let per_filter = (0..8)
            .map(|i| {
                (
                    format!("filter-{i}"),
                    Any {
                        type_url: format!("t{i}"),
                        value: vec![i],
                    },
                )
            })
            .collect();
        XdsResources {
            routes: vec![RouteConfiguration {
                name: "9080".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "a:9080".into(),
                    domains: vec!["a".into()],
                    typed_per_filter_config: per_filter,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn equal_resources_keep_their_encoding_across_generations() {
        let first = Snapshot::build(1, routes(), None);
        let second = Snapshot::build(2, routes(), Some(&first));
        let (a, b) = (
            &first.routes.resources["9080"],
            &second.routes.resources["9080"],
        );
        assert!(
            Arc::ptr_eq(a, b),
            "an equal resource reuses the previous encoding"
        );
        assert_eq!(
            first.routes.selection_version(None),
            second.routes.selection_version(None)
        );
    }

    #[test]
    fn views_with_equal_sets_share_one_copy() {
        let shared = SharedSets::default();
        let first = shared.share(Snapshot::build(1, routes(), None));
        // Another view's translation, encoded on its own.
        let second = shared.share(Snapshot::build(1, routes(), Some(&first)));
        assert!(Arc::ptr_eq(&first.routes, &second.routes));
        let mut changed = routes();
        changed.routes[0].virtual_hosts[0].domains.push("b".into());
        let third = shared.share(Snapshot::build(1, changed, Some(&first)));
        assert!(!Arc::ptr_eq(&first.routes, &third.routes));
        assert!(Arc::ptr_eq(&first.clusters, &third.clusters), "both empty");
    }

    #[test]
    fn changed_resources_are_encoded_anew() {
        let first = Snapshot::build(1, routes(), None);
        let mut changed = routes();
        changed.routes[0].virtual_hosts[0].domains.push("b".into());
        let second = Snapshot::build(2, changed, Some(&first));
        assert!(!Arc::ptr_eq(
            &first.routes.resources["9080"],
            &second.routes.resources["9080"]
        ));
    }

    fn secrets(chain: &[u8]) -> XdsResources {
        XdsResources {
            secrets: vec![Secret {
                name: "kubernetes://gw-cert".into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(chain)),
                    private_key: Some(inline(b"KEY")),
                    ..Default::default()
                })),
            }],
            ..routes()
        }
    }

    fn inline(bytes: &[u8]) -> DataSource {
        DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_keyed_by_name_reused_when_equal_and_kept_by_endpoint_rebuilds() {
        let first = Snapshot::build(1, secrets(b"CERT"), None);
        let any = &first.secrets.resources["kubernetes://gw-cert"];
        assert_eq!(any.type_url(), XdsType::Secret.type_url());

        let second = Snapshot::build(2, secrets(b"CERT"), Some(&first));
        assert!(Arc::ptr_eq(
            any,
            &second.secrets.resources["kubernetes://gw-cert"]
        ));
        let renewed = Snapshot::build(3, secrets(b"CERT2"), Some(&second));
        assert_ne!(
            second.secrets.selection_version(None),
            renewed.secrets.selection_version(None),
            "a renewed certificate is a new SDS version"
        );

        let endpoints = Arc::new(patch_endpoints(
            &renewed.endpoints,
            &BTreeSet::new(),
            Vec::new(),
        ));
        let endpoints_only = Snapshot::with_endpoints(4, &renewed, endpoints, None);
        assert!(Arc::ptr_eq(&renewed.secrets, &endpoints_only.secrets));
        assert!(std::ptr::eq(
            endpoints_only.of(XdsType::Secret),
            &*endpoints_only.secrets
        ));
    }

    #[test]
    fn subscriptions_select_only_existing_named_resources() {
        let snap = Snapshot::build(1, routes(), None);
        let names = BTreeSet::from(["9080".to_string(), "9999".to_string()]);
        let selected = snap.routes.select(Some(&names));
        assert_eq!(selected.len(), 1);
    }

    use super::test_set as set;

    #[test]
    fn what_changed_is_computed_once_per_previous_set_and_shared() {
        let before = set(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let after = set(&[("a", b"1"), ("b", b"two"), ("d", b"4")]);
        let changes = after.changed_since(&before);
        assert_eq!(
            changes
                .changed
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["b", "d"]
        );
        assert_eq!(
            changes
                .removed
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["c"]
        );
        assert!(Arc::ptr_eq(&changes, &after.changed_since(&before)));
        assert!(after.changed_since(&after).changed.is_empty());

        let names = Arc::new(BTreeSet::from(["a".to_string(), "b".to_string()]));
        assert_eq!(
            after.shared_selection_version(Some(&names)),
            after.selection_version(Some(&names))
        );
        assert_eq!(
            after.shared_selection_version(None),
            after.selection_version(None)
        );
    }
}
