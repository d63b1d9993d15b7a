//! What a proxy's rejection (NACK) of a response says about the config:
//! the resources it rejected, the config objects that fed them (read from
//! the resources' `istio.config` metadata, see
//! [`pilotfish_translate::provenance`]), and which of those changed since
//! the proxy last accepted these resources. When exactly one did, and
//! nothing else could have, that object is at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use pilotfish_crds::ConfigKey;
use pilotfish_translate::provenance;
use prost::Message;
use serde::Serialize;

use crate::mesh_store::MeshGeneration;
use crate::snapshot::{Selection, TypeResources};
use crate::xds_types::XdsType;

/// Envoy's message is kept this long: a proxy chooses its size.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Names of the resources one response carried.
#[derive(Debug)]
pub enum SentNames {
    Listed(Vec<String>),
    /// A whole subscription's selection, shared by the streams that sent it.
    Selection(Arc<Selection>),
}

impl SentNames {
    fn names(&self) -> &[String] {
        match self {
            SentNames::Listed(names) => names,
            SentNames::Selection(selection) => &selection.names,
        }
    }
}

/// A response a proxy has yet to accept or reject, of a type whose
/// resources name the config objects they come from.
#[derive(Debug)]
pub struct SentResponse {
    /// The mesh generation it was built from.
    generation: u64,
    /// The set its resources were taken from (shared with the snapshot).
    resources: Arc<TypeResources>,
    names: SentNames,
}

impl SentResponse {
    /// `None` for types whose resources come from no config object that
    /// could be left out (endpoints, secrets): their names are not listed.
    pub fn of(
        ty: XdsType,
        generation: u64,
        resources: &Arc<TypeResources>,
        names: impl FnOnce() -> SentNames,
    ) -> Option<SentResponse> {
        matches!(ty, XdsType::Cluster | XdsType::Listener | XdsType::Route).then(|| SentResponse {
            generation,
            resources: resources.clone(),
            names: names(),
        })
    }

    /// The config objects that fed resource `name` of this response.
    fn fed_by(&self, ty: XdsType, name: &str) -> BTreeSet<ConfigKey> {
        let Some(any) = self.resources.resources.get(name) else {
            return BTreeSet::new();
        };
        let value = any.value();
        let bytes = value.as_ref();
        let decoded = match ty {
            XdsType::Route => {
                RouteConfiguration::decode(bytes).map(|r| provenance::of_route_configuration(&r))
            }
            XdsType::Cluster => Cluster::decode(bytes).map(|c| provenance::of_cluster(&c)),
            XdsType::Listener => Listener::decode(bytes).map(|l| provenance::of_listener(&l)),
            XdsType::Endpoint | XdsType::Secret => return BTreeSet::new(),
        };
        // Our own encoding: it decodes.
        decoded.unwrap_or_default()
    }
}

/// Which generations a proxy accepted one type's resources at.
#[derive(Debug, Default)]
pub struct Acceptance {
    /// The generation of the last response the proxy accepted (0: none).
    accepted: u64,
    /// Resources rejected and not accepted since.
    unaccepted: BTreeMap<String, Unaccepted>,
}

#[derive(Clone, Copy, Debug)]
struct Unaccepted {
    /// The generation the proxy last accepted the resource at.
    since: u64,
    /// An object was blamed for it already: if the proxy still rejects
    /// it, leaving that object out did not help, and nothing more is
    /// blamed (no cascade) until the proxy accepts it.
    blamed: bool,
}

impl Acceptance {
    /// The proxy accepted `sent`. Returns whether it now holds every
    /// resource of the type as sent (no rejection stands).
    pub fn accept(&mut self, sent: &SentResponse) -> bool {
        self.accepted = sent.generation;
        for name in sent.names.names() {
            self.unaccepted.remove(name);
        }
        self.unaccepted.is_empty()
    }

    /// The proxy rejected `sent`: each resource of it, with what is known
    /// of it since it was last accepted.
    fn reject(&mut self, sent: &SentResponse) -> Vec<(String, Unaccepted)> {
        let first = Unaccepted {
            since: self.accepted,
            blamed: false,
        };
        sent.names
            .names()
            .iter()
            .map(|name| {
                let unaccepted = *self.unaccepted.entry(name.clone()).or_insert(first);
                (name.clone(), unaccepted)
            })
            .collect()
    }

    /// An object was blamed for these resources.
    fn blame(&mut self, names: &[String]) {
        for name in names {
            if let Some(unaccepted) = self.unaccepted.get_mut(name) {
                unaccepted.blamed = true;
            }
        }
    }
}

/// What a rejection is put down to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Exactly this object changed in what the proxy rejected.
    Object(ConfigKey),
    /// None, or several, of the objects changed since the proxy accepted
    /// these resources, or services changed too: no one object is at fault.
    Unattributed,
    /// The config changed again since the rejected response (an object was
    /// edited, deleted or left out): the next response will tell.
    Outdated,
    /// The proxy still rejects these resources after the object blamed for
    /// them was left out: nothing more is blamed until it accepts them.
    StillRejected,
}

/// A rejection as the sync status and diagnostics show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Envoy's message.
    pub message: String,
    /// The resources of the rejected response.
    pub resources: Vec<String>,
    /// The config objects that fed them (`VirtualService ns/name`...).
    pub config: Vec<String>,
    /// Those of them that changed since the proxy last accepted them.
    pub changed: Vec<String>,
    pub verdict: Verdict,
}

/// Works out what the proxy rejected in `sent` (a response of type `ty`)
/// against the current `generation`.
pub fn attribute(
    ty: XdsType,
    acceptance: &mut Acceptance,
    sent: &SentResponse,
    generation: &MeshGeneration,
    message: &str,
) -> Rejection {
    let mut fed_by = BTreeSet::new();
    let mut changed = BTreeSet::new();
    let mut outdated = false;
    let mut registry_changed = false;
    let mut blamed = false;
    for (name, unaccepted) in acceptance.reject(sent) {
        let accepted_at = unaccepted.since;
        blamed |= unaccepted.blamed;
        registry_changed |= generation.registry_changed_at > accepted_at;
        for key in sent.fed_by(ty, &name) {
            match generation.revisions.get(&key) {
                // Gone (deleted or left out) or edited since it was sent.
                None => outdated = true,
                Some(revision) if *revision > sent.generation => outdated = true,
                Some(revision) if *revision > accepted_at => {
                    changed.insert(key.clone());
                }
                Some(_) => {}
            }
            fed_by.insert(key);
        }
    }
    let verdict = match (blamed, outdated, registry_changed, changed.len()) {
        (true, _, _, _) => Verdict::StillRejected,
        (false, true, _, _) => Verdict::Outdated,
        (false, false, false, 1) => changed
            .first()
            .cloned()
            .map_or(Verdict::Unattributed, Verdict::Object),
        _ => Verdict::Unattributed,
    };
    if matches!(verdict, Verdict::Object(_)) {
        acceptance.blame(sent.names.names());
    }
    let names = |keys: &BTreeSet<ConfigKey>| keys.iter().map(ToString::to_string).collect();
    Rejection {
        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        resources: sent.names.names().to_vec(),
        config: names(&fed_by),
        changed: names(&changed),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resource::Resource;
    use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
    use pilotfish_crds::ConfigObject;

    fn vs(name: &str) -> ConfigObject {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec: {{hosts: [{name}]}}\n"
        );
        pilotfish_crds::load_yaml("vs.yaml", &yaml, "default")
            .objects
            .remove(0)
    }

    /// Route configurations, each with one route per VirtualService named.
    fn routes(configs: &[(&str, &[&ConfigObject])]) -> Arc<TypeResources> {
        let resources = configs
            .iter()
            .map(|(name, objects)| {
                let routes = objects
                    .iter()
                    .map(|o| Route {
                        metadata: provenance::metadata([*o]),
                        ..Default::default()
                    })
                    .collect();
                let config = RouteConfiguration {
                    name: name.to_string(),
                    virtual_hosts: vec![VirtualHost {
                        routes,
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                (name.to_string(), Arc::new(Resource::encode(&config)))
            })
            .collect();
        Arc::new(TypeResources::new(resources))
    }

    fn sent(generation: u64, resources: &Arc<TypeResources>, names: &[&str]) -> SentResponse {
        let names = || SentNames::Listed(names.iter().map(|n| n.to_string()).collect());
        SentResponse::of(XdsType::Route, generation, resources, names).expect("routes")
    }

    /// A generation at `version` whose objects have these revisions.
    fn generation(version: u64, revisions: &[(&ConfigObject, u64)]) -> MeshGeneration {
        MeshGeneration {
            version,
            revisions: Arc::new(revisions.iter().map(|(o, r)| (o.key(), *r)).collect()),
            registry_changed_at: 1,
            ..Default::default()
        }
    }

    #[test]
    fn the_one_object_changed_since_the_proxy_accepted_is_at_fault() {
        let (a, b) = (vs("a"), vs("b"));
        let mut acceptance = Acceptance::default();
        let first = routes(&[("80", &[&a, &b])]);
        assert!(acceptance.accept(&sent(1, &first, &["80"])));

        let edited = routes(&[("80", &[&a, &b])]);
        let current = generation(2, &[(&a, 1), (&b, 2)]);
        let rejection = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(2, &edited, &["80"]),
            &current,
            "bad regex",
        );
        assert_eq!(rejection.verdict, Verdict::Object(b.key()));
        assert_eq!(
            rejection.config,
            ["VirtualService default/a", "VirtualService default/b"]
        );
        assert_eq!(rejection.changed, ["VirtualService default/b"]);
        assert_eq!(rejection.resources, ["80"]);
    }

    #[test]
    fn a_rejected_resource_keeps_the_generation_it_was_last_accepted_at() {
        let (a, b) = (vs("a"), vs("b"));
        let mut acceptance = Acceptance::default();
        let both = routes(&[("80", &[&a]), ("90", &[&b])]);
        acceptance.accept(&sent(1, &both, &["80", "90"]));
        // 80 rejected at 2 (a changed); 90 alone accepted at 3 (b changed).
        let current = generation(2, &[(&a, 2), (&b, 1)]);
        let rejected = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(2, &both, &["80"]),
            &current,
            "",
        );
        assert_eq!(rejected.verdict, Verdict::Object(a.key()));
        assert!(!acceptance.accept(&sent(3, &both, &["90"])), "80 stands");
        // 80 again at 4 after b changed too: still measured from 1 (and
        // `a` was blamed for it already).
        let current = generation(4, &[(&a, 2), (&b, 4)]);
        let routes_80 = routes(&[("80", &[&a, &b])]);
        let again = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(4, &routes_80, &["80"]),
            &current,
            "",
        );
        assert_eq!(again.changed.len(), 2);
        assert_eq!(again.verdict, Verdict::StillRejected);
        assert!(acceptance.accept(&sent(5, &routes_80, &["80"])));
    }

    #[test]
    fn a_proxy_still_rejecting_after_the_blamed_object_left_blames_nothing_more() {
        let (a, b) = (vs("a"), vs("b"));
        let mut acceptance = Acceptance::default();
        let both = routes(&[("80", &[&a, &b])]);
        acceptance.accept(&sent(1, &both, &["80"]));
        let rejected = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(2, &both, &["80"]),
            &generation(2, &[(&a, 2), (&b, 1)]),
            "",
        );
        assert_eq!(rejected.verdict, Verdict::Object(a.key()));
        // `a` left out at 3 while `b` was edited: still rejected.
        let without_a = routes(&[("80", &[&b])]);
        let again = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(3, &without_a, &["80"]),
            &generation(3, &[(&b, 3)]),
            "",
        );
        assert_eq!(again.verdict, Verdict::StillRejected);
        assert_eq!(again.changed, ["VirtualService default/b"]);
        // Accepted later: a new rejection may blame again.
        acceptance.accept(&sent(4, &without_a, &["80"]));
        let fresh = attribute(
            XdsType::Route,
            &mut acceptance,
            &sent(5, &without_a, &["80"]),
            &generation(5, &[(&b, 5)]),
            "",
        );
        assert_eq!(fresh.verdict, Verdict::Object(b.key()));
    }

    #[test]
    fn no_object_is_blamed_when_services_changed_or_the_config_moved_on() {
        let a = vs("a");
        let resources = routes(&[("80", &[&a])]);
        let mut acceptance = Acceptance::default();
        acceptance.accept(&sent(1, &resources, &["80"]));
        let mut services_too = generation(2, &[(&a, 2)]);
        services_too.registry_changed_at = 2;
        let verdict = |acceptance: &mut Acceptance, current: &MeshGeneration| {
            attribute(
                XdsType::Route,
                acceptance,
                &sent(2, &resources, &["80"]),
                current,
                "",
            )
            .verdict
        };
        assert_eq!(
            verdict(&mut acceptance, &services_too),
            Verdict::Unattributed
        );
        let edited_since = generation(3, &[(&a, 3)]);
        assert_eq!(verdict(&mut acceptance, &edited_since), Verdict::Outdated);
        let left_out = generation(3, &[]);
        assert_eq!(verdict(&mut acceptance, &left_out), Verdict::Outdated);
    }

    #[test]
    fn endpoints_and_secrets_are_not_tracked() {
        let resources = Arc::new(TypeResources::default());
        let names = || SentNames::Listed(Vec::new());
        assert!(SentResponse::of(XdsType::Endpoint, 1, &resources, names).is_none());
        assert!(SentResponse::of(XdsType::Secret, 1, &resources, names).is_none());
    }

    #[test]
    fn a_long_message_is_shortened() {
        let a = vs("a");
        let resources = routes(&[("80", &[&a])]);
        let rejection = attribute(
            XdsType::Route,
            &mut Acceptance::default(),
            &sent(1, &resources, &["80"]),
            &generation(1, &[(&a, 1)]),
            &"x".repeat(5000),
        );
        assert_eq!(rejection.message.len(), MAX_MESSAGE_CHARS);
    }
}
