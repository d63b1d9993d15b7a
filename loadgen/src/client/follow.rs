//! Envoy's subscription logic, whatever the protocol variant: clusters
//! (wildcard) first; endpoints for every EDS cluster; then listeners
//! (wildcard) once the clusters warmed; then the route configurations the
//! listeners name. The variant only decides how each step is put on the wire.

use std::collections::{BTreeMap, BTreeSet};

use crate::inspect::{References, XdsType};

/// What to send next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Ack(XdsType),
    /// A new subscription of `ty`: the whole set (state of the world) and
    /// the difference to the previous one (delta). An empty set on a first
    /// CDS or LDS request is the wildcard.
    Subscribe {
        ty: XdsType,
        names: Vec<String>,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

/// How a response changes what the proxy holds.
pub enum Update<'a> {
    /// State of the world: this is everything of the type.
    Replace(&'a References),
    /// Delta: these changed, those went away.
    Merge {
        changed: &'a References,
        removed: &'a [String],
    },
}

#[derive(Default)]
pub struct Follower {
    /// Cluster name → EDS names it needs; listener name → route names.
    clusters: BTreeMap<String, Vec<String>>,
    listeners: BTreeMap<String, Vec<String>>,
    /// Named subscriptions currently requested (EDS, RDS).
    endpoints: BTreeSet<String>,
    routes: BTreeSet<String>,
    acked: [bool; 4],
    listeners_requested: bool,
}

impl Follower {
    /// The requests that open a stream. A proxy's first stream asks for
    /// every cluster and follows from there; a later one (a reconnect)
    /// repeats at once every subscription the proxy holds, as Envoy does,
    /// and the proxy is synced again once each is answered on it.
    pub fn open(&mut self) -> Vec<Step> {
        self.acked = [false; 4];
        let mut steps = vec![wildcard(XdsType::Cluster)];
        if !self.endpoints.is_empty() {
            steps.push(subscription(XdsType::Endpoint, &self.endpoints));
        }
        if self.listeners_requested {
            steps.push(wildcard(XdsType::Listener));
        }
        if !self.routes.is_empty() {
            steps.push(subscription(XdsType::Route, &self.routes));
        }
        steps
    }

    /// The resource names currently subscribed for `ty` (empty: wildcard).
    pub fn names(&self, ty: XdsType) -> Vec<String> {
        match ty {
            XdsType::Endpoint => self.endpoints.iter().cloned().collect(),
            XdsType::Route => self.routes.iter().cloned().collect(),
            XdsType::Cluster | XdsType::Listener => Vec::new(),
        }
    }

    /// Applies a response of `ty` and says what to send in return.
    pub fn on_response(&mut self, ty: XdsType, update: Update<'_>) -> Vec<Step> {
        match ty {
            XdsType::Cluster => apply(&mut self.clusters, update),
            XdsType::Listener => apply(&mut self.listeners, update),
            XdsType::Endpoint | XdsType::Route => {}
        }
        self.acked[ty.index()] = true;
        let mut steps = vec![Step::Ack(ty)];
        match ty {
            XdsType::Cluster => {
                let wanted = referenced(&self.clusters);
                steps.extend(resubscribe(XdsType::Endpoint, &mut self.endpoints, wanted));
                if self.endpoints.is_empty() {
                    steps.extend(self.request_listeners());
                }
            }
            XdsType::Endpoint => steps.extend(self.request_listeners()),
            XdsType::Listener => {
                let wanted = referenced(&self.listeners);
                steps.extend(resubscribe(XdsType::Route, &mut self.routes, wanted));
            }
            XdsType::Route => {}
        }
        steps
    }

    /// All four types answered and ACKed (a type nothing needs counts as done).
    pub fn synced(&self) -> bool {
        let [cds, eds, lds, rds] = self.acked;
        cds && (eds || self.endpoints.is_empty()) && lds && (rds || self.routes.is_empty())
    }

    fn request_listeners(&mut self) -> Option<Step> {
        if self.listeners_requested {
            return None;
        }
        self.listeners_requested = true;
        Some(wildcard(XdsType::Listener))
    }
}

fn wildcard(ty: XdsType) -> Step {
    Step::Subscribe {
        ty,
        names: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
    }
}

/// Every name of a subscription, as a new stream requests it.
fn subscription(ty: XdsType, names: &BTreeSet<String>) -> Step {
    let names: Vec<String> = names.iter().cloned().collect();
    Step::Subscribe {
        ty,
        added: names.clone(),
        names,
        removed: Vec::new(),
    }
}

fn apply(held: &mut BTreeMap<String, Vec<String>>, update: Update<'_>) {
    match update {
        Update::Replace(all) => {
            *held = all.iter().cloned().collect();
        }
        Update::Merge { changed, removed } => {
            held.extend(changed.iter().cloned());
            for name in removed {
                held.remove(name);
            }
        }
    }
}

fn referenced(held: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    held.values().flatten().cloned().collect()
}

/// A subscription step if `wanted` differs from what is subscribed.
fn resubscribe(
    ty: XdsType,
    subscribed: &mut BTreeSet<String>,
    wanted: BTreeSet<String>,
) -> Option<Step> {
    if *subscribed == wanted {
        return None;
    }
    let added = wanted.difference(subscribed).cloned().collect();
    let removed = subscribed.difference(&wanted).cloned().collect();
    *subscribed = wanted;
    Some(Step::Subscribe {
        ty,
        names: subscribed.iter().cloned().collect(),
        added,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(items: &[(&str, &[&str])]) -> References {
        items
            .iter()
            .map(|(n, r)| (n.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn follows_envoy_order_and_reports_sync() {
        let mut f = Follower::default();
        let clusters = refs(&[("a", &["a"]), ("blackhole", &[])]);
        let steps = f.on_response(XdsType::Cluster, Update::Replace(&clusters));
        assert_eq!(steps[0], Step::Ack(XdsType::Cluster));
        assert!(
            matches!(&steps[1], Step::Subscribe { ty: XdsType::Endpoint, names, .. } if names == &["a"])
        );
        assert_eq!(steps.len(), 2, "listeners wait for the endpoints");
        let steps = f.on_response(XdsType::Endpoint, Update::Replace(&Vec::new()));
        assert!(matches!(
            &steps[1],
            Step::Subscribe {
                ty: XdsType::Listener,
                ..
            }
        ));
        assert!(!f.synced());
        let listeners = refs(&[("0.0.0.0_8080", &["8080"])]);
        let steps = f.on_response(XdsType::Listener, Update::Replace(&listeners));
        assert!(
            matches!(&steps[1], Step::Subscribe { ty: XdsType::Route, added, .. } if added == &["8080"])
        );
        f.on_response(XdsType::Route, Update::Replace(&Vec::new()));
        assert!(f.synced());
    }

    #[test]
    fn a_new_stream_repeats_every_subscription_and_syncs_again() {
        let mut f = Follower::default();
        assert_eq!(f.open(), vec![wildcard(XdsType::Cluster)]);
        let clusters = refs(&[("a", &["a"])]);
        f.on_response(XdsType::Cluster, Update::Replace(&clusters));
        f.on_response(XdsType::Endpoint, Update::Replace(&Vec::new()));
        let listeners = refs(&[("0.0.0.0_8080", &["8080"])]);
        f.on_response(XdsType::Listener, Update::Replace(&listeners));
        f.on_response(XdsType::Route, Update::Replace(&Vec::new()));
        assert!(f.synced());

        let steps = f.open();
        assert!(!f.synced(), "a new stream must be answered again");
        let types: Vec<XdsType> = steps
            .iter()
            .map(|s| match s {
                Step::Ack(ty) | Step::Subscribe { ty, .. } => *ty,
            })
            .collect();
        assert_eq!(types, XdsType::ALL);
        assert!(
            matches!(&steps[3], Step::Subscribe { added, .. } if added == &["8080"]),
            "{steps:?}"
        );
        // A delta server with the same input answers each with nothing:
        // the proxy keeps what it holds and asks for nothing more.
        let nothing = Vec::new();
        for ty in XdsType::ALL {
            let steps = f.on_response(
                ty,
                Update::Merge {
                    changed: &nothing,
                    removed: &[],
                },
            );
            assert_eq!(steps, vec![Step::Ack(ty)]);
        }
        assert!(f.synced());
        assert_eq!(f.names(XdsType::Endpoint), vec!["a".to_string()]);
    }

    #[test]
    fn delta_removal_unsubscribes_endpoints() {
        let mut f = Follower::default();
        let clusters = refs(&[("a", &["a"]), ("b", &["b"])]);
        f.on_response(
            XdsType::Cluster,
            Update::Merge {
                changed: &clusters,
                removed: &[],
            },
        );
        let steps = f.on_response(
            XdsType::Cluster,
            Update::Merge {
                changed: &Vec::new(),
                removed: &["b".to_string()],
            },
        );
        assert!(matches!(&steps[1], Step::Subscribe { removed, .. } if removed == &["b"]));
        assert_eq!(f.names(XdsType::Endpoint), vec!["a".to_string()]);
    }
}
