//! Config objects left out of pushes because a proxy rejected (NACKed) what
//! they produced. One bad object would otherwise freeze every resource it
//! shares (a VirtualService, the whole route configuration of its port):
//! Envoy keeps its last accepted version of a rejected resource, so no
//! other change to it gets through. Pilotfish names the object, leaves it
//! out, and serves it again once its content changes (or drops the entry
//! when it is deleted).

use std::collections::BTreeMap;

use pilotfish_crds::{ConfigKey, ConfigObject};
use tokio::sync::mpsc;

use crate::problems::InputProblem;
use crate::push::Change;

/// Objects left out at once, at most. A proxy that rejects whatever it is
/// sent must not make the server drop the mesh one object at a time.
pub const MAX_QUARANTINED: usize = 32;

/// Whose rejections may leave an object out (`--quarantine-rejected-config`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuarantinePolicy {
    /// Proxies that proved their identity (client certificate or token):
    /// an anonymous client of the plaintext port cannot drop config.
    #[default]
    Authenticated,
    /// Any proxy, on either port (trusted networks, tests).
    Any,
    /// None: rejections are only reported.
    Off,
}

impl QuarantinePolicy {
    pub fn allows(self, authenticated: bool) -> bool {
        match self {
            QuarantinePolicy::Authenticated => authenticated,
            QuarantinePolicy::Any => true,
            QuarantinePolicy::Off => false,
        }
    }
}

/// Where streams send the objects rejections are down to: the push
/// scheduler, which leaves them out of the next generation.
#[derive(Clone, Debug)]
pub struct QuarantineSink {
    pub policy: QuarantinePolicy,
    changes: mpsc::UnboundedSender<Change>,
}

impl QuarantineSink {
    pub fn new(policy: QuarantinePolicy, changes: mpsc::UnboundedSender<Change>) -> Self {
        QuarantineSink { policy, changes }
    }

    pub fn request(&self, request: QuarantineRequest) {
        // Closed only when the server stops.
        let _ = self.changes.send(Change::Rejected(Box::new(request)));
    }
}

/// A proxy rejected what `object` (as it is now) produced, and nothing else
/// changed in what it rejected since it last accepted it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuarantineRequest {
    pub object: ConfigObject,
    /// Node id of the proxy that rejected it.
    pub proxy: String,
    /// Envoy's error message (shortened: a proxy chooses its size).
    pub message: String,
}

#[derive(Debug)]
struct Entry {
    /// The content that was rejected: another content lifts the quarantine.
    object: ConfigObject,
    problem: InputProblem,
    /// Left out of a merge at least once (counted once).
    applied: bool,
}

#[derive(Debug, Default)]
pub struct Quarantine {
    entries: BTreeMap<ConfigKey, Entry>,
    /// Objects ever left out, for `pilotfish_config_quarantines_total`.
    applied_total: u64,
}

impl Quarantine {
    /// Records `request`; it takes effect at the next merge of the config.
    /// Returns false (and logs why) when it is not taken.
    pub fn add(&mut self, request: QuarantineRequest) -> bool {
        let key = request.object.key();
        if let Some(entry) = self.entries.get(&key)
            && entry.object == request.object
        {
            return false;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_QUARANTINED {
            tracing::error!(object = %key, proxy = %request.proxy, limit = MAX_QUARANTINED, "a proxy rejected this object, but as many objects as allowed are already left out; it is kept");
            return false;
        }
        let message = &request.message;
        let problem = InputProblem {
            source: request.object.origin.to_string(),
            object: Some(key.to_string()),
            field: None,
            message: format!(
                "rejected by Envoy (proxy {}): {message}; left out of pushes until it changes",
                request.proxy
            ),
        };
        tracing::debug!(object = %key, proxy = %request.proxy, "leaving out an object a proxy rejected");
        self.entries.insert(
            key,
            Entry {
                object: request.object,
                problem,
                applied: false,
            },
        );
        true
    }

    /// Removes from `objects` those quarantined as they are, reporting each
    /// in `problems`; a quarantined object that changed or is gone is
    /// released.
    pub fn apply(&mut self, objects: &mut Vec<ConfigObject>, problems: &mut Vec<InputProblem>) {
        if self.entries.is_empty() {
            return;
        }
        let mut held = BTreeMap::new();
        for object in objects.iter() {
            if let Some(entry) = self.entries.get(&object.key()) {
                held.insert(object.key(), entry.object == *object);
            }
        }
        self.entries.retain(|key, _| {
            let unchanged = held.get(key).copied().unwrap_or(false);
            if !unchanged {
                tracing::info!(object = %key, "a left-out object changed or was deleted; it is served again");
            }
            unchanged
        });
        objects.retain(|object| !self.entries.contains_key(&object.key()));
        for entry in self.entries.values_mut() {
            if !entry.applied {
                entry.applied = true;
                self.applied_total += 1;
            }
            problems.push(entry.problem.clone());
        }
    }

    /// Objects left out now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Objects ever left out.
    pub fn applied_total(&self) -> u64 {
        self.applied_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, host: &str) -> ConfigObject {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec: {{hosts: [{host}]}}\n"
        );
        let mut loaded = pilotfish_crds::load_yaml("vs.yaml", &yaml, "default");
        loaded.objects.remove(0)
    }

    fn request(object: &ConfigObject) -> QuarantineRequest {
        QuarantineRequest {
            object: object.clone(),
            proxy: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            message: "RE2 program size too large".into(),
        }
    }

    fn names(objects: &[ConfigObject]) -> Vec<&str> {
        objects.iter().map(|o| o.meta.name.as_str()).collect()
    }

    #[test]
    fn a_rejected_object_is_left_out_and_reported_until_it_changes() {
        let (bad, good) = (vs("bad", "a"), vs("good", "b"));
        let mut quarantine = Quarantine::default();
        assert!(quarantine.add(request(&bad)));
        assert!(!quarantine.add(request(&bad)), "the same content once");

        let mut objects = vec![bad.clone(), good.clone()];
        let mut problems = Vec::new();
        quarantine.apply(&mut objects, &mut problems);
        assert_eq!(names(&objects), ["good"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].object.as_deref(),
            Some("VirtualService default/bad")
        );
        assert!(
            problems[0]
                .message
                .contains("rejected by Envoy (proxy sidecar~")
        );
        assert!(problems[0].message.contains("RE2 program size too large"));
        // Merged again with the same content: still out, counted once.
        let mut objects = vec![bad.clone(), good.clone()];
        quarantine.apply(&mut objects, &mut Vec::new());
        assert_eq!(names(&objects), ["good"]);
        assert_eq!(quarantine.applied_total(), 1);

        let fixed = vs("bad", "c");
        let mut objects = vec![fixed, good];
        let mut problems = Vec::new();
        quarantine.apply(&mut objects, &mut problems);
        assert_eq!(names(&objects), ["bad", "good"], "served again");
        assert!(problems.is_empty());
        assert!(quarantine.is_empty());
    }

    #[test]
    fn a_deleted_object_leaves_the_quarantine() {
        let mut quarantine = Quarantine::default();
        quarantine.add(request(&vs("bad", "a")));
        quarantine.apply(&mut Vec::new(), &mut Vec::new());
        assert!(quarantine.is_empty());
    }

    #[test]
    fn no_more_than_the_limit_are_left_out() {
        let mut quarantine = Quarantine::default();
        for i in 0..MAX_QUARANTINED {
            assert!(quarantine.add(request(&vs(&format!("vs{i}"), "a"))));
        }
        assert!(!quarantine.add(request(&vs("one-more", "a"))));
        assert_eq!(quarantine.len(), MAX_QUARANTINED);
    }

    #[test]
    fn only_authenticated_proxies_quarantine_by_default() {
        let policy = QuarantinePolicy::default();
        assert!(policy.allows(true));
        assert!(!policy.allows(false));
        assert!(QuarantinePolicy::Any.allows(false));
        assert!(!QuarantinePolicy::Off.allows(true));
    }
}
