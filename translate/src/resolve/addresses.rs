//! Addresses for ServiceEntries that declare none. A DNS ServiceEntry
//! without `addresses` has nothing a sidecar can match its traffic on, so
//! two of them cannot share a port. Each gets a VIP from 240.240.0.0/16
//! (the reserved range Istio uses), which sidecars that ask for it
//! (`DNS_AUTO_ALLOCATE` in the node metadata) match on, and which their
//! DNS answers hand to the application (`DNS_CAPTURE`).
//!
//! The address is a function of the host name, so every replica and every
//! restart gives the same one: FNV-1a of the name picks a slot; a slot
//! already taken goes to the older service (creation time, then name) and
//! the younger probes the next free one. Only a collision can move an
//! address, and only the younger service's.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use pilotfish_model::{RegistryKind, Resolution, Service};

/// Slots of 240.240.0.0/16 handed out: all but .0.0 and .255.255.
const FIRST_SLOT: u32 = 1;
const SLOTS: u32 = 0xFFFE;

#[derive(Clone, Debug, Default)]
pub(crate) struct AllocatedAddresses {
    by_host: BTreeMap<String, Ipv4Addr>,
}

impl AllocatedAddresses {
    pub fn new(services: &[Service]) -> Self {
        let mut wanting: Vec<&Service> = services.iter().filter(|s| wants_address(s)).collect();
        wanting.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        let mut taken = HashSet::new();
        let mut by_host = BTreeMap::new();
        for service in wanting {
            if by_host.contains_key(&service.hostname) {
                continue;
            }
            let start = fnv1a(service.hostname.as_bytes()) % SLOTS;
            let free = (0..SLOTS)
                .map(|step| (start + step) % SLOTS)
                .find(|slot| !taken.contains(slot));
            let Some(slot) = free else { break };
            taken.insert(slot);
            by_host.insert(service.hostname.clone(), address(slot));
        }
        AllocatedAddresses { by_host }
    }

    /// The address allocated to `hostname`, if it wanted one.
    pub fn of(&self, hostname: &str) -> Option<Ipv4Addr> {
        self.by_host.get(hostname).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Ipv4Addr)> {
        self.by_host.iter()
    }
}

/// A ServiceEntry host without addresses, resolved by DNS or given
/// endpoints. Not resolution NONE: its traffic goes to the address the
/// application chose, so a made-up address would lead nowhere; not a
/// wildcard host, which names no single service.
fn wants_address(service: &Service) -> bool {
    service.registry == RegistryKind::ServiceEntry
        && service.vips.iter().all(|ip| ip.is_unspecified())
        && service.resolution != Resolution::Passthrough
        && !service.hostname.contains('*')
}

fn address(slot: u32) -> Ipv4Addr {
    let n = FIRST_SLOT + slot;
    // n < 0x10000 by construction.
    Ipv4Addr::new(240, 240, (n >> 8) as u8, (n & 0xFF) as u8)
}

/// 32-bit FNV-1a: fixed by its definition, unlike std's hashers, so the
/// addresses do not change with the compiler.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{created, dns_service_entry};

    fn entry(host: &str, timestamp: &str) -> Service {
        created(dns_service_entry(host, 5432), timestamp)
    }

    #[test]
    fn addresses_follow_from_host_names_whatever_else_the_mesh_holds() {
        let a = entry("db-a.example.com", "2024-01-01T00:00:00Z");
        let b = entry("db-b.example.com", "2024-01-02T00:00:00Z");
        let alone = AllocatedAddresses::new(std::slice::from_ref(&a));
        let both = AllocatedAddresses::new(&[b.clone(), a.clone()]);
        assert_eq!(alone.of("db-a.example.com"), both.of("db-a.example.com"));
        let ip = both.of("db-b.example.com").expect("allocated");
        assert_eq!(ip.octets()[..2], [240, 240]);
        assert_ne!(both.of("db-a.example.com"), Some(ip));
        // Fixed by FNV-1a: the same in every process and release.
        assert_eq!(
            alone.of("db-a.example.com"),
            Some(address(fnv1a(b"db-a.example.com") % SLOTS))
        );
    }

    #[test]
    fn on_a_collision_the_older_service_keeps_the_slot() {
        // Two names with one slot, found by search (deterministic).
        let names: Vec<String> = (0..100_000).map(|i| format!("h{i}.example.com")).collect();
        let mut seen = std::collections::HashMap::new();
        let (first, second) = names
            .iter()
            .find_map(|n| {
                let slot = fnv1a(n.as_bytes()) % SLOTS;
                seen.insert(slot, n.clone()).map(|other| (other, n.clone()))
            })
            .expect("a collision among 100,000 names in 65,534 slots");
        let older = entry(&second, "2020-01-01T00:00:00Z");
        let younger = entry(&first, "2021-01-01T00:00:00Z");
        let allocated = AllocatedAddresses::new(&[younger, older]);
        let slot = address(fnv1a(second.as_bytes()) % SLOTS);
        assert_eq!(allocated.of(&second), Some(slot), "older keeps its slot");
        let moved = allocated.of(&first).expect("allocated");
        assert_ne!(moved, slot);
    }

    #[test]
    fn only_service_entries_without_addresses_resolution_none_or_wildcards_get_none() {
        let mut with_vip = entry("vip.example.com", "2024-01-01T00:00:00Z");
        with_vip.vips = vec!["10.0.0.1".parse().expect("ip")];
        let mut passthrough = entry("none.example.com", "2024-01-01T00:00:00Z");
        passthrough.resolution = Resolution::Passthrough;
        let wildcard = entry("*.example.com", "2024-01-01T00:00:00Z");
        let mut kubernetes = entry("db.default.svc.cluster.local", "2024-01-01T00:00:00Z");
        kubernetes.registry = RegistryKind::Kubernetes;
        let allocated = AllocatedAddresses::new(&[with_vip, passthrough, wildcard, kubernetes]);
        assert_eq!(allocated.iter().count(), 0);
    }
}
