//! Stage 1 as JSON: what a generation resolved to before any view looks
//! at it. Read by golden tests (the IR boundary between `resolve` and
//! `emit`) and by operators comparing what was loaded with what a proxy
//! got. Objects are named as diagnostics name them, never by the file they
//! came from, so the dump does not depend on where the input lives.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use pilotfish_crds::ConfigObject;

use super::Resolved;

impl Resolved {
    /// The resolved services, VirtualServices (in precedence order) and
    /// DestinationRules, and stage 1's diagnostics.
    pub fn dump(&self) -> Value {
        let mesh = self.mesh();
        let name = |position: usize| mesh.config.get(position).map(object_name);
        let services: Vec<Value> = self
            .services
            .by_host
            .iter()
            .map(|(hostname, positions)| {
                let mut held = positions.iter().filter_map(|&p| mesh.services.get(p));
                let endpoints = mesh.endpoints.get(hostname).map_or(0, |e| e.len());
                json!({
                    "hostname": hostname,
                    "service": held.next(),
                    "endpoints": endpoints,
                    // Older services hold the hostname; these lost it.
                    "shadowed": held.collect::<Vec<_>>(),
                })
            })
            .collect();
        let virtual_services: Vec<Value> = self
            .virtual_services
            .entries
            .iter()
            .map(|vs| {
                json!({
                    "object": name(vs.config),
                    "hosts": vs.hosts,
                    "for_mesh": vs.for_mesh,
                    "for_gateways": vs.for_gateways,
                })
            })
            .collect();
        let destination_rules: Vec<Value> = self
            .destination_rules
            .iter()
            .map(|dr| json!({"object": name(dr.config), "host": dr.host}))
            .collect();
        json!({
            "services": services,
            "virtual_services": virtual_services,
            "destination_rules": destination_rules,
            "allocated_addresses": self.addresses.iter().collect::<BTreeMap<_, _>>(),
            "diagnostics": self.diagnostics(),
        })
    }
}

fn object_name(object: &ConfigObject) -> String {
    object.key().to_string()
}
