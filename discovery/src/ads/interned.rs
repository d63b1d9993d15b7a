//! Subscription name sets shared between streams. Thousands of sidecars of
//! one view subscribe to the same long lists of ClusterLoadAssignment and
//! RouteConfiguration names; each stream keeps an `Arc` to one shared set
//! instead of its own copy.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

pub type NameSet = Arc<BTreeSet<String>>;

/// Sets by content hash; entries whose last holder went are swept as the
/// map grows, so it holds no more than the sets in use.
#[derive(Default)]
pub struct NameSets {
    sets: Mutex<HashMap<u64, Vec<Weak<BTreeSet<String>>>>>,
}

impl NameSets {
    /// The shared set equal to `names`.
    pub fn intern(&self, names: BTreeSet<String>) -> NameSet {
        let mut hasher = DefaultHasher::new();
        names.hash(&mut hasher);
        let key = hasher.finish();
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = sets.entry(key).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(found) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|set| **set == names)
        {
            return found;
        }
        let set = Arc::new(names);
        bucket.push(Arc::downgrade(&set));
        if sets.len() > 1024 && sets.len().is_power_of_two() {
            sets.retain(|_, bucket| bucket.iter().any(|w| w.strong_count() > 0));
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn equal_sets_are_one_shared_set_and_unused_ones_go() {
        let sets = NameSets::default();
        let a = sets.intern(set(&["a", "b"]));
        let b = sets.intern(set(&["b", "a"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = sets.intern(set(&["a"]));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        let again = sets.intern(set(&["a", "b"]));
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "a fresh set once the old one went"
        );
    }
}
