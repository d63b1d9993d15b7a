//! Blocking-query index bookkeeping, following Consul's advice for
//! blocking-query clients.

/// What the next blocking query sends, given the index the last one sent and
/// the `X-Consul-Index` Consul answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStep {
    /// The `index` parameter of the next query (0 = plain read, no blocking).
    pub next: u64,
    /// The index went backwards (Consul restarted from an older state, a
    /// snapshot was restored, another server answered): start over.
    pub reset: bool,
    /// The query made no progress; the caller should pause briefly before
    /// the next one so that a misbehaving index cannot become a busy loop.
    pub pace: bool,
}

pub fn next_index(sent: u64, returned: u64) -> IndexStep {
    let reset = returned < sent;
    let next = if reset {
        // Consul: an index lower than the one we waited on means the state
        // was replaced; keeping the old index would block until Consul
        // catches up with a number that no longer means anything.
        0
    } else if returned == 0 {
        // Consul: an index of 0 is a Consul bug and makes every query return
        // at once; treat it as 1.
        1
    } else {
        returned
    };
    IndexStep {
        next,
        reset,
        pace: sent != 0 && returned <= sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_advances_normally() {
        assert_eq!(
            next_index(0, 42),
            IndexStep {
                next: 42,
                reset: false,
                pace: false
            }
        );
        assert_eq!(
            next_index(42, 57),
            IndexStep {
                next: 57,
                reset: false,
                pace: false
            }
        );
    }

    #[test]
    fn timeout_keeps_the_index() {
        let step = next_index(57, 57);
        assert_eq!(step.next, 57);
        assert!(!step.reset);
        assert!(step.pace);
    }

    #[test]
    fn index_going_backwards_resets_to_a_full_read() {
        let step = next_index(5000, 12);
        assert_eq!(step.next, 0);
        assert!(step.reset);
    }

    #[test]
    fn zero_index_is_treated_as_one() {
        assert_eq!(next_index(0, 0).next, 1);
        // From a real index, 0 is also a step backwards: reset first.
        assert_eq!(
            next_index(57, 0),
            IndexStep {
                next: 0,
                reset: true,
                pace: true
            }
        );
        // And a Consul stuck at 0 is paced rather than polled in a loop.
        assert_eq!(
            next_index(1, 0),
            IndexStep {
                next: 0,
                reset: true,
                pace: true
            }
        );
    }
}
