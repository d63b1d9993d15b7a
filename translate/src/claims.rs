//! The one conflict rule of the translation: when several claimants want
//! the same key (a hostname, a domain, a destination address, an SNI
//! name), the oldest keeps it and every other is a loser that can name the
//! winner. "Oldest" is the claimant's [`Claimant::rank`]: Istio's
//! precedence (creation time, then namespace/name) for services, and for
//! Gateway servers their Gateway's place in that order; extended where a
//! table has phases (a service's own addresses before VirtualService rules,
//! Gateway servers before passthrough rules).
//!
//! Claimants that may share a key ([`Claimant::shares_with`], e.g. HTTP
//! services on one address) all hold it. Between equal ranks the earlier
//! claim wins. The answer of [`Claims::claim`] is final when claims come
//! oldest first, as every caller in this crate makes them; otherwise
//! [`Claims::holders`] and [`Claims::conflicts`] give the final outcome
//! once all claims are in.

use std::collections::BTreeMap;

use pilotfish_crds::CreationTime;
use pilotfish_model::Service;

/// Something that claims keys.
pub trait Claimant {
    type Rank: Ord;

    /// Lower ranks are older and win.
    fn rank(&self) -> Self::Rank;

    /// Whether `other` is this same claimant (claiming again is no conflict).
    fn is(&self, other: &Self) -> bool;

    /// Whether this holder lets `other` hold the same key too.
    fn shares_with(&self, _other: &Self) -> bool {
        false
    }
}

/// Services claim by Istio's precedence: older first, then hostname.
impl<'a> Claimant for &'a Service {
    type Rank = (CreationTime, &'a str);

    fn rank(&self) -> Self::Rank {
        Service::precedence(self)
    }

    fn is(&self, other: &Self) -> bool {
        std::ptr::eq(*self, *other)
    }
}

/// What a claim got.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Claim<'t, C> {
    /// The claimant holds the key (alone, or shared with compatible holders).
    Won,
    /// The claimant held the key already.
    Again,
    /// An older holder keeps the key.
    Lost { winner: &'t C },
}

/// A loser of a key, with the holder that beat it.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflict<'t, K, C> {
    pub key: &'t K,
    pub winner: &'t C,
    pub loser: &'t C,
}

/// Keys and their claimants.
#[derive(Clone, Debug)]
pub struct Claims<K, C> {
    /// Every distinct claimant of each key, by rank (ties: first claim first).
    by_key: BTreeMap<K, Vec<Entry<C>>>,
}

#[derive(Clone, Debug)]
struct Entry<C> {
    claimant: C,
    /// `None` if it holds the key, else the index of the older holder it
    /// cannot share with.
    winner: Option<usize>,
}

impl<K, C> Default for Claims<K, C> {
    fn default() -> Self {
        Claims {
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord, C: Claimant> Claims<K, C> {
    /// Records `claimant`'s claim on `key` and says whether it holds it.
    pub fn claim(&mut self, key: K, claimant: C) -> Claim<'_, C> {
        let entries = self.by_key.entry(key).or_default();
        let (at, again) = match entries.iter().position(|e| e.claimant.is(&claimant)) {
            Some(at) => (at, true),
            None => {
                let rank = claimant.rank();
                let at = entries.partition_point(|e| e.claimant.rank() <= rank);
                entries.insert(
                    at,
                    Entry {
                        claimant,
                        winner: None,
                    },
                );
                // Older claimants' outcomes stand; younger ones may now
                // lose the key to this one.
                decide(entries, at);
                (at, false)
            }
        };
        match entries[at].winner {
            Some(winner) => Claim::Lost {
                winner: &entries[winner].claimant,
            },
            None if again => Claim::Again,
            None => Claim::Won,
        }
    }

    /// The holders of `key`, oldest first.
    pub fn holders(&self, key: &K) -> Vec<&C> {
        self.by_key
            .get(key)
            .map(|entries| holding(entries).collect())
            .unwrap_or_default()
    }

    /// Every key with its holders (oldest first), by key.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Vec<&C>)> {
        self.by_key
            .iter()
            .map(|(key, entries)| (key, holding(entries).collect()))
    }

    /// Every loser once per key it lost, with the holder that beat it; by
    /// key, then oldest loser first.
    pub fn conflicts(&self) -> impl Iterator<Item = Conflict<'_, K, C>> {
        self.by_key.iter().flat_map(|(key, entries)| {
            entries.iter().filter_map(move |loser| {
                loser.winner.map(|w| Conflict {
                    key,
                    winner: &entries[w].claimant,
                    loser: &loser.claimant,
                })
            })
        })
    }
}

/// The claimants of one key that hold it.
fn holding<C>(entries: &[Entry<C>]) -> impl Iterator<Item = &C> {
    entries
        .iter()
        .filter(|e| e.winner.is_none())
        .map(|e| &e.claimant)
}

/// Decides the outcome of the entries from `from` on, oldest first: each
/// loses to the first older holder it cannot share with.
fn decide<C: Claimant>(entries: &mut [Entry<C>], from: usize) {
    for at in from..entries.len() {
        let winner = (0..at).find(|&holder| {
            entries[holder].winner.is_none()
                && !entries[holder].claimant.shares_with(&entries[at].claimant)
        });
        entries[at].winner = winner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claimant ranked by (age, namespace/name), like a config object.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Object {
        age: u32,
        name: &'static str,
        /// Objects of the same group may share keys.
        group: Option<u8>,
    }

    impl Claimant for Object {
        type Rank = (u32, &'static str);
        fn rank(&self) -> Self::Rank {
            (self.age, self.name)
        }
        fn is(&self, other: &Self) -> bool {
            self.name == other.name
        }
        fn shares_with(&self, other: &Self) -> bool {
            self.group.is_some() && self.group == other.group
        }
    }

    fn object(age: u32, name: &'static str) -> Object {
        Object {
            age,
            name,
            group: None,
        }
    }

    fn names<'a>(objects: impl IntoIterator<Item = &'a Object>) -> Vec<&'static str> {
        objects.into_iter().map(|o| o.name).collect()
    }

    #[test]
    fn the_oldest_claimant_holds_a_key_whatever_order_claims_come_in() {
        let (old, middle, young) = (object(1, "old"), object(2, "middle"), object(3, "young"));
        let orders = [
            [&old, &middle, &young],
            [&young, &middle, &old],
            [&middle, &young, &old],
        ];
        for order in orders {
            let mut claims = Claims::default();
            for claimant in order {
                let _ = claims.claim("reviews", claimant.clone());
            }
            assert_eq!(names(claims.holders(&"reviews")), ["old"]);
            let conflicts: Vec<_> = claims
                .conflicts()
                .map(|c| (c.winner.name, c.loser.name))
                .collect();
            assert_eq!(conflicts, [("old", "middle"), ("old", "young")]);
        }
    }

    #[test]
    fn equal_ages_are_decided_by_namespace_and_name() {
        let mut claims = Claims::default();
        assert_eq!(claims.claim("k", object(1, "shop/b")), Claim::Won);
        assert_eq!(claims.claim("k", object(1, "shop/a")), Claim::Won);
        assert_eq!(names(claims.holders(&"k")), ["shop/a"]);
        let conflict = claims.conflicts().next().expect("one conflict");
        assert_eq!(
            (conflict.winner.name, conflict.loser.name),
            ("shop/a", "shop/b")
        );
    }

    #[test]
    fn a_loser_learns_its_winner_and_is_reported_once_per_key() {
        let mut claims = Claims::default();
        let _ = claims.claim("a", object(1, "old"));
        let _ = claims.claim("b", object(1, "old"));
        let young = object(2, "young");
        for key in ["a", "b", "a"] {
            match claims.claim(key, young.clone()) {
                Claim::Lost { winner } => assert_eq!(winner.name, "old"),
                other => panic!("{key}: {other:?}"),
            }
        }
        let conflicts: Vec<_> = claims
            .conflicts()
            .map(|c| (*c.key, c.winner.name, c.loser.name))
            .collect();
        assert_eq!(conflicts, [("a", "old", "young"), ("b", "old", "young")]);
    }

    #[test]
    fn claiming_a_held_key_again_is_no_conflict() {
        let mut claims = Claims::default();
        assert_eq!(claims.claim("k", object(1, "a")), Claim::Won);
        assert_eq!(claims.claim("k", object(1, "a")), Claim::Again);
        assert_eq!(claims.conflicts().count(), 0);
        assert_eq!(names(claims.holders(&"k")), ["a"]);
    }

    #[test]
    fn compatible_claimants_share_a_key_and_an_incompatible_one_loses_to_the_oldest_it_meets() {
        let http = |age, name| Object {
            age,
            name,
            group: Some(1),
        };
        let mut claims = Claims::default();
        assert_eq!(claims.claim("10.0.0.1", http(1, "a")), Claim::Won);
        assert_eq!(claims.claim("10.0.0.1", http(2, "b")), Claim::Won);
        match claims.claim("10.0.0.1", object(3, "tcp")) {
            Claim::Lost { winner } => assert_eq!(winner.name, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(names(claims.holders(&"10.0.0.1")), ["a", "b"]);
        // An older exclusive claimant takes the key from every sharer.
        let _ = claims.claim("10.0.0.1", object(0, "oldest"));
        assert_eq!(names(claims.holders(&"10.0.0.1")), ["oldest"]);
        assert_eq!(claims.conflicts().count(), 3);
    }
}
