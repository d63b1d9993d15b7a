//! Incremental (delta) xDS state of one resource type on one stream: what the
//! proxy subscribed to, what it holds, and the diff of that against a
//! snapshot. Pure (no I/O), so the protocol rules are tested here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::resource::Resource;
use bytes::Bytes;

use super::interned::{NameSet, NameSets};
use crate::snapshot::{Selection, TypeResources};
use crate::status::ResourceNames;
use crate::xds_types::XdsType;

/// What one response carries.
#[derive(Debug, Default)]
pub struct Delta {
    /// Resources the proxy lacks or holds at another version.
    pub updated: Updated,
    /// Names the proxy holds (or asked for) that do not exist for it.
    pub removed: Vec<String>,
    /// Version of everything the subscription selects (`system_version_info`;
    /// for debugging and the sync status only).
    pub system_version: String,
}

/// The resources a delta sends.
#[derive(Debug)]
pub enum Updated {
    /// Name, version, resource, one by one.
    Listed(Vec<(String, String, Arc<Resource>)>),
    /// Everything a subscription selects (a proxy that holds nothing yet):
    /// shared by every stream with the same subscription.
    Selection(Arc<Selection>),
}

impl Default for Updated {
    fn default() -> Self {
        Updated::Listed(Vec::new())
    }
}

impl Updated {
    pub fn len(&self) -> usize {
        match self {
            Updated::Listed(list) => list.len(),
            Updated::Selection(selection) => selection.names.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn names(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match self {
            Updated::Listed(list) => Box::new(list.iter().map(|(name, _, _)| name)),
            Updated::Selection(selection) => Box::new(selection.names.iter()),
        }
    }

    /// The encoded response entries, from `resources`' shared buffer.
    pub fn parts(&self, resources: &TypeResources) -> Vec<Bytes> {
        match self {
            Updated::Listed(list) => resources.delta_parts(list),
            Updated::Selection(selection) => selection.delta_parts.clone(),
        }
    }
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

/// One request's subscription fields. The initial versions are taken, not
/// borrowed: a reconnecting proxy lists everything it holds (thousands of
/// names), and they become the stream's record of it without a copy.
#[derive(Debug, Default)]
pub struct SubscriptionChange<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    pub initial_versions: Option<HashMap<String, String>>,
}

/// What a proxy holds of one type.
#[derive(Debug)]
enum Known {
    /// Name by name: its initial versions, or what remains after it
    /// unsubscribed.
    Listed(HashMap<String, String>),
    /// Exactly what `names` selected of `resources` (all for `None`) when
    /// last sent: the snapshot's own set, not a copy per stream.
    Sent {
        resources: Arc<TypeResources>,
        names: Option<NameSet>,
    },
}

impl Known {
    fn version(&self, name: &str) -> Option<&str> {
        match self {
            Known::Listed(map) => map.get(name).map(String::as_str),
            Known::Sent { resources, names } => {
                if names.as_ref().is_none_or(|n| n.contains(name)) {
                    resources.version(name)
                } else {
                    None
                }
            }
        }
    }

    /// The names held for which `keep` says yes, copied (only those).
    fn names_where(&self, keep: impl Fn(&String) -> bool) -> Vec<String> {
        match self {
            Known::Listed(map) => map.keys().filter(|n| keep(n)).cloned().collect(),
            Known::Sent { resources, names } => resources
                .select(names.as_deref())
                .into_iter()
                .map(|(name, _)| name)
                .filter(|n| keep(n))
                .cloned()
                .collect(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.version(name).is_some()
    }

    /// Name by name, for the rare edits (unsubscribes) of what is held.
    fn listed(&mut self) -> &mut HashMap<String, String> {
        if let Known::Sent { resources, names } = self {
            let map = resources
                .select(names.as_deref())
                .into_iter()
                .filter_map(|(name, _)| Some((name.clone(), resources.version(name)?.to_string())))
                .collect();
            *self = Known::Listed(map);
        }
        match self {
            Known::Listed(map) => map,
            Known::Sent { .. } => unreachable!("made Listed above"),
        }
    }
}

#[derive(Debug)]
pub struct DeltaState {
    ty: XdsType,
    /// Whether a request for the type was seen on this stream (the legacy
    /// wildcard rule only applies to the first one).
    started: bool,
    /// Subscribed to every resource: `*`, or (legacy) a first request that
    /// named nothing.
    wildcard: bool,
    /// Explicitly subscribed names; shared with the streams that subscribe
    /// to the same (see [`DeltaState::intern_names`]).
    names: NameSet,
    /// What the proxy holds, name → version: its `initial_resource_versions`,
    /// then what was sent to it. Updated when sent, not when ACKed, so a
    /// NACKed resource is not resent until its content changes.
    known: Known,
    /// Names whose state must be sent even if `known` says the proxy has it:
    /// a subscribe may come from a proxy that forgot the resource.
    forced: BTreeSet<String>,
    /// The proxy holds nothing and every subscribed name is to be sent (a
    /// first request without initial versions): `forced` is left empty and
    /// the whole shared selection goes out.
    fresh: bool,
}

impl DeltaState {
    pub fn new(ty: XdsType) -> Self {
        DeltaState {
            ty,
            started: false,
            wildcard: false,
            names: NameSet::default(),
            known: Known::Listed(HashMap::new()),
            forced: BTreeSet::new(),
            fresh: false,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Names of the resources the proxy holds, once it applied what was sent.
    pub fn known_names(&self) -> Vec<String> {
        let mut names = self.known.names_where(|_| true);
        names.sort();
        names
    }

    /// What the proxy holds, for the sync status: shared, not copied.
    pub fn held(&self) -> ResourceNames {
        match &self.known {
            Known::Listed(map) => ResourceNames::Listed(map.keys().cloned().collect()),
            Known::Sent { resources, names } => ResourceNames::Selected {
                resources: resources.clone(),
                names: names.clone(),
            },
        }
    }

    /// Replaces the subscribed names by the shared set equal to them.
    pub fn intern_names(&mut self, sets: &NameSets) {
        let names = std::mem::take(&mut self.names);
        self.names = sets.intern(Arc::unwrap_or_clone(names));
    }

    /// Applies a request's subscription changes. Returns whether it was the
    /// first request for the type on this stream.
    pub fn apply(&mut self, change: SubscriptionChange<'_>) -> bool {
        let first = !self.started;
        self.started = true;
        self.unfresh();
        if first {
            // A new stream's state holds nothing but what the proxy says
            // it has.
            let initial = change.initial_versions.unwrap_or_default();
            self.fresh = initial.is_empty();
            let known = self.known.listed();
            if known.is_empty() {
                // The decoded map itself, not a rehash of it.
                *known = initial;
            } else {
                known.extend(initial);
            }
            // Legacy wildcard: a first request naming nothing means `*`.
            if self.ty.is_wildcard() && change.subscribe.is_empty() && change.unsubscribe.is_empty()
            {
                self.wildcard = true;
            }
        }
        // On the first request what is known is what the proxy just told.
        let told = |known: &Known, name: &String| known.contains(name);
        for name in change.subscribe {
            if self.is_wildcard_name(name) {
                self.wildcard = true;
                continue;
            }
            Arc::make_mut(&mut self.names).insert(name.clone());
            // Resent even if unchanged, unless the proxy just said which
            // version it holds (a reconnect). A fresh proxy is sent all.
            if first && (self.fresh || told(&self.known, name)) {
                continue;
            }
            self.forced.insert(name.clone());
        }
        for name in change.unsubscribe {
            if self.is_wildcard_name(name) {
                self.wildcard = false;
                // The proxy drops what it held only through the wildcard.
                let names = &self.names;
                self.known.listed().retain(|n, _| names.contains(n));
                continue;
            }
            Arc::make_mut(&mut self.names).remove(name);
            if self.wildcard {
                // It may or may not still be covered by the wildcard: the
                // proxy cannot tell, so it is sent again or removed.
                self.forced.insert(name.clone());
            } else {
                self.forced.remove(name);
                self.known.listed().remove(name);
            }
        }
        first
    }

    /// A fresh state made explicit: every subscribed name forced.
    fn unfresh(&mut self) {
        if std::mem::take(&mut self.fresh) {
            self.forced.extend(self.names.iter().cloned());
        }
    }

    /// Marks subscribed `names` to be sent again even if unchanged.
    pub fn force<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        self.unfresh();
        for name in names {
            if self.wildcard || self.names.contains(name) {
                self.forced.insert(name.clone());
            }
        }
    }

    /// What the proxy needs to match `resources`; records it as sent.
    /// Work per call is the subscription's size, with map lookups only:
    /// no hashing of resource bytes, no scan per name.
    pub fn diff(&mut self, resources: &Arc<TypeResources>) -> Delta {
        let subscription = (!self.wildcard).then(|| self.names.clone());
        let names = subscription.as_ref();
        let system_version = resources.shared_selection_version(names);
        if let Some(delta) = self.diff_from_sent(resources, names, &system_version) {
            return delta;
        }
        if self.wildcard && !self.names.is_empty() {
            // Names besides the wildcard are reported one by one if missing.
            self.unfresh();
        }
        if std::mem::take(&mut self.fresh) {
            // Holds nothing, asked for all it subscribed: the selection.
            let selection = resources.selection(names);
            self.known = Known::Sent {
                resources: resources.clone(),
                names: names.cloned(),
            };
            return Delta {
                removed: selection.missing.clone(),
                updated: Updated::Selection(selection),
                system_version,
            };
        }
        let selected = resources.select(names.map(|n| &**n));
        let mut updated = Vec::new();
        for (name, any) in &selected {
            let version = resources.version(name).unwrap_or_default();
            let current = self.known.version(name) == Some(version);
            if !current || self.forced.contains(*name) {
                updated.push(((*name).clone(), version.to_string(), Arc::clone(any)));
            }
        }
        let exists = |name: &String| {
            resources.resources.contains_key(name) && (self.wildcard || self.names.contains(name))
        };
        // Only the names that went are copied: a reconnect lists
        // thousands that are all still there.
        let removed: Vec<String> = self
            .known
            .names_where(|n| !exists(n))
            .into_iter()
            .chain(self.forced.iter().filter(|n| !exists(n)).cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The proxy now holds exactly the selection at these versions.
        self.known = Known::Sent {
            resources: resources.clone(),
            names: names.cloned(),
        };
        self.forced.clear();
        Delta {
            updated: Updated::Listed(updated),
            removed,
            system_version,
        }
    }

    /// The common case: the proxy holds what was last sent and its
    /// subscription is the same; the delta is the sets' difference,
    /// computed once for every stream, filtered by this subscription.
    fn diff_from_sent(
        &mut self,
        resources: &Arc<TypeResources>,
        names: Option<&NameSet>,
        system_version: &str,
    ) -> Option<Delta> {
        let Known::Sent {
            resources: previous,
            names: sent_names,
        } = &self.known
        else {
            return None;
        };
        let same_subscription = match (sent_names, names) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same_subscription || !self.forced.is_empty() {
            return None;
        }
        let changes = resources.changed_since(previous);
        let wanted = |name: &String| names.is_none_or(|n| n.contains(name));
        let updated = changes
            .changed
            .iter()
            .filter(|name| wanted(name))
            .filter_map(|name| {
                let any = resources.resources.get(name)?;
                let version = resources.version(name)?;
                Some((name.clone(), version.to_string(), Arc::clone(any)))
            })
            .collect();
        let removed = changes
            .removed
            .iter()
            .filter(|name| wanted(name))
            .cloned()
            .collect();
        self.known = Known::Sent {
            resources: resources.clone(),
            names: names.cloned(),
        };
        Some(Delta {
            updated: Updated::Listed(updated),
            removed,
            system_version: system_version.to_string(),
        })
    }

    fn is_wildcard_name(&self, name: &str) -> bool {
        self.ty.is_wildcard() && name == XdsType::WILDCARD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::snapshot::test_set as resources;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn subscribe(list: &[String]) -> SubscriptionChange<'_> {
        SubscriptionChange {
            subscribe: list,
            ..Default::default()
        }
    }

    fn unsubscribe(list: &[String]) -> SubscriptionChange<'_> {
        SubscriptionChange {
            unsubscribe: list,
            ..Default::default()
        }
    }

    fn updated(delta: &Delta) -> Vec<&str> {
        delta.updated.names().map(String::as_str).collect()
    }

    #[test]
    fn a_first_request_naming_nothing_is_a_wildcard_for_cds_and_lds_only() {
        let all = resources(&[("a", b"1"), ("b", b"2")]);
        let mut cds = DeltaState::new(XdsType::Cluster);
        assert!(cds.apply(SubscriptionChange::default()));
        assert!(cds.is_wildcard());
        let delta = cds.diff(&all);
        assert_eq!(updated(&delta), ["a", "b"]);
        assert!(delta.removed.is_empty());

        let mut eds = DeltaState::new(XdsType::Endpoint);
        eds.apply(SubscriptionChange::default());
        assert!(!eds.is_wildcard());
        assert!(eds.diff(&all).is_empty());
    }

    #[test]
    fn legacy_wildcard_is_kept_when_names_are_added_and_ends_with_unsubscribing_star() {
        let all = resources(&[("a", b"1"), ("b", b"2")]);
        let mut lds = DeltaState::new(XdsType::Listener);
        lds.apply(SubscriptionChange::default());
        lds.diff(&all);
        assert!(!lds.apply(subscribe(&names(&["a"]))));
        assert!(lds.is_wildcard(), "adding a name keeps the wildcard");
        assert_eq!(
            updated(&lds.diff(&all)),
            ["a"],
            "a subscribed name is resent"
        );

        lds.apply(unsubscribe(&names(&["*"])));
        assert!(!lds.is_wildcard());
        assert_eq!(
            lds.known_names(),
            ["a"],
            "b was held through the wildcard only"
        );
        // An empty request later is not a wildcard any more.
        lds.apply(unsubscribe(&names(&["a"])));
        lds.apply(SubscriptionChange::default());
        assert!(!lds.is_wildcard());
        assert!(lds.diff(&all).is_empty());
    }

    #[test]
    fn explicit_star_subscribes_to_everything() {
        let all = resources(&[("a", b"1")]);
        let mut cds = DeltaState::new(XdsType::Cluster);
        cds.apply(subscribe(&names(&["*"])));
        assert!(cds.is_wildcard());
        assert_eq!(updated(&cds.diff(&all)), ["a"]);
    }

    #[test]
    fn named_subscribe_sends_what_exists_and_removes_what_does_not() {
        let all = resources(&[("a", b"1"), ("b", b"2")]);
        let mut eds = DeltaState::new(XdsType::Endpoint);
        eds.apply(subscribe(&names(&["a", "missing"])));
        let delta = eds.diff(&all);
        assert_eq!(updated(&delta), ["a"]);
        assert_eq!(
            delta.removed,
            ["missing"],
            "a missing name is reported at once"
        );
        assert_eq!(eds.known_names(), ["a"]);

        // The missing resource appears later: it is sent.
        let more = resources(&[("a", b"1"), ("b", b"2"), ("missing", b"3")]);
        assert_eq!(updated(&eds.diff(&more)), ["missing"]);
    }

    #[test]
    fn fresh_streams_with_one_subscription_share_one_first_response() {
        let all = resources(&[("a", b"1"), ("b", b"2")]);
        let sets = NameSets::default();
        let first = |state: &mut DeltaState| {
            state.apply(subscribe(&names(&["a", "b", "missing"])));
            state.intern_names(&sets);
            state.diff(&all)
        };
        let (mut one, mut two) = (
            DeltaState::new(XdsType::Endpoint),
            DeltaState::new(XdsType::Endpoint),
        );
        let (d1, d2) = (first(&mut one), first(&mut two));
        match (&d1.updated, &d2.updated) {
            (Updated::Selection(a), Updated::Selection(b)) => assert!(Arc::ptr_eq(a, b)),
            other => panic!("expected shared selections, got {other:?}"),
        }
        assert_eq!(updated(&d1), ["a", "b"]);
        assert_eq!(d1.removed, ["missing"]);
        assert!(one.diff(&all).is_empty(), "then it holds the selection");
    }

    #[test]
    fn unsubscribe_without_wildcard_forgets_silently() {
        let all = resources(&[("a", b"1"), ("b", b"2")]);
        let mut rds = DeltaState::new(XdsType::Route);
        rds.apply(subscribe(&names(&["a", "b"])));
        rds.diff(&all);
        rds.apply(unsubscribe(&names(&["b", "never-subscribed"])));
        assert!(
            rds.diff(&all).is_empty(),
            "nothing to send for an unsubscribe"
        );
        assert_eq!(rds.known_names(), ["a"]);
        let changed = resources(&[("a", b"1"), ("b", b"CHANGED")]);
        assert!(rds.diff(&changed).is_empty(), "b is no longer watched");
    }

    #[test]
    fn unsubscribing_a_name_under_a_wildcard_resends_or_removes_it() {
        let all = resources(&[("a", b"1")]);
        let mut cds = DeltaState::new(XdsType::Cluster);
        cds.apply(SubscriptionChange::default());
        cds.apply(subscribe(&names(&["a", "x"])));
        let delta = cds.diff(&all);
        assert_eq!(updated(&delta), ["a"]);
        assert_eq!(delta.removed, ["x"]);
        cds.apply(unsubscribe(&names(&["a", "x"])));
        let delta = cds.diff(&all);
        assert_eq!(updated(&delta), ["a"], "a is still covered by the wildcard");
        assert_eq!(delta.removed, ["x"]);
    }

    #[test]
    fn unchanged_content_sends_nothing_and_changes_send_only_the_changed_resource() {
        let mut cds = DeltaState::new(XdsType::Cluster);
        cds.apply(SubscriptionChange::default());
        let first = cds.diff(&resources(&[("a", b"1"), ("b", b"2")]));
        assert!(cds.diff(&resources(&[("a", b"1"), ("b", b"2")])).is_empty());
        let delta = cds.diff(&resources(&[("a", b"1"), ("b", b"3"), ("c", b"4")]));
        assert_eq!(updated(&delta), ["b", "c"]);
        assert!(delta.removed.is_empty());
        assert_ne!(delta.system_version, first.system_version);
        let delta = cds.diff(&resources(&[("b", b"3"), ("c", b"4")]));
        assert!(delta.updated.is_empty());
        assert_eq!(delta.removed, ["a"]);
    }

    #[test]
    fn initial_versions_send_only_what_differs_on_reconnect() {
        let all = resources(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let mut versions = HashMap::new();
        for name in ["a", "b"] {
            versions.insert(
                name.to_string(),
                all.version(name).unwrap_or_default().to_string(),
            );
        }
        versions.insert("c".into(), "stale".into());
        versions.insert("gone".into(), "old".into());
        let mut cds = DeltaState::new(XdsType::Cluster);
        cds.apply(SubscriptionChange {
            initial_versions: Some(versions.clone()),
            ..Default::default()
        });
        let delta = cds.diff(&all);
        assert_eq!(updated(&delta), ["c"]);
        assert_eq!(delta.removed, ["gone"]);

        // Named types: names the proxy reports holding are not forced, and
        // held names it no longer subscribes to are removed.
        let mut eds = DeltaState::new(XdsType::Endpoint);
        let wanted = names(&["a", "b"]);
        eds.apply(SubscriptionChange {
            subscribe: &wanted,
            initial_versions: Some(versions.clone()),
            ..Default::default()
        });
        let delta = eds.diff(&all);
        assert!(delta.updated.is_empty());
        assert_eq!(delta.removed, ["c", "gone"]);
    }

    #[test]
    fn a_subscribe_to_a_held_resource_resends_it() {
        let all = resources(&[("a", b"1")]);
        let mut eds = DeltaState::new(XdsType::Endpoint);
        eds.apply(subscribe(&names(&["a"])));
        eds.diff(&all);
        eds.apply(subscribe(&names(&["a"])));
        assert_eq!(updated(&eds.diff(&all)), ["a"]);
        eds.force(&names(&["a", "not-subscribed"]));
        let delta = eds.diff(&all);
        assert_eq!(updated(&delta), ["a"]);
        assert!(
            delta.removed.is_empty(),
            "force only touches subscribed names"
        );
    }
}
