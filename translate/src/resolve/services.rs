//! Services by hostname. Should a registry merge leave two services with
//! one hostname, the older is chosen wherever both are visible: the
//! crate's one conflict rule ([`Claims`]) orders them here once, and a view
//! takes the first one it can see.

use std::collections::{BTreeMap, HashMap};

use pilotfish_model::Service;

use crate::claims::Claims;

#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceTable {
    /// Positions in the mesh's services by hostname: the holder, then the
    /// losers oldest first.
    pub by_host: BTreeMap<String, Vec<usize>>,
}

impl ServiceTable {
    pub fn new(services: &[Service]) -> Self {
        let position: HashMap<*const Service, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (std::ptr::from_ref(s), i))
            .collect();
        let at = |s: &&Service| position.get(&std::ptr::from_ref(*s)).copied();
        let mut claims: Claims<&str, &Service> = Claims::default();
        for service in services {
            let _ = claims.claim(service.hostname.as_str(), service);
        }
        let mut by_host: BTreeMap<String, Vec<usize>> = claims
            .iter()
            .map(|(host, holders)| {
                (
                    host.to_string(),
                    holders.into_iter().filter_map(at).collect(),
                )
            })
            .collect();
        for conflict in claims.conflicts() {
            if let (Some(positions), Some(loser)) =
                (by_host.get_mut(*conflict.key), at(conflict.loser))
            {
                positions.push(loser);
            }
        }
        ServiceTable { by_host }
    }
}
