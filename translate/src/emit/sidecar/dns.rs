//! The sidecar's DNS answers (node metadata `DNS_CAPTURE`): a UDP listener
//! on 127.0.0.1:15053 running Envoy's DNS filter, to which the pod's DNS
//! queries are redirected (`pilotfish-iptables.sh --capture-dns`). It
//! answers the names of the services the proxy sees with their addresses:
//! VIPs, and for ServiceEntries without addresses the allocated ones when
//! the proxy uses them (`DNS_AUTO_ALLOCATE`), so an application connecting
//! by name reaches the address its service's filter chain matches. Other
//! names go to the upstream resolvers of the host.

use std::collections::BTreeMap;

use crate::emit::context::Context;
use crate::hosts;
use crate::protobuf;
use envoy_types::pb::envoy::config::core::v3::{
    Address, TrafficDirection, address, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, ListenerFilter, listener_filter};
use envoy_types::pb::envoy::data::dns::v3::DnsTable;
use envoy_types::pb::envoy::data::dns::v3::dns_table::{
    AddressList, DnsEndpoint, DnsVirtualDomain, dns_endpoint,
};
use envoy_types::pb::envoy::extensions::filters::udp::dns_filter::v3::DnsFilterConfig;
use envoy_types::pb::envoy::extensions::filters::udp::dns_filter::v3::dns_filter_config::{
    ClientContextConfig, ServerContextConfig, server_context_config,
};

/// Istio's DNS proxy port, which capture rules redirect port 53 to.
pub const DNS_PORT: u16 = 15053;
pub const DNS_LISTENER: &str = "dns";
const ANSWER_TTL_SECS: u64 = 30;
const RESOLVER_TIMEOUT_SECS: u64 = 5;
/// Queries forwarded upstream at once; more are answered with an error.
const MAX_PENDING_LOOKUPS: u64 = 256;

/// The DNS listener, for proxies that capture DNS.
pub fn listener(ctx: &Context) -> Option<Listener> {
    if !ctx.proxy.dns.capture || ctx.proxy.interception.binds_listeners() {
        return None;
    }
    let config = DnsFilterConfig {
        stat_prefix: "dns".into(),
        server_config: Some(ServerContextConfig {
            config_source: Some(server_context_config::ConfigSource::InlineDnsTable(table(
                ctx,
            ))),
        }),
        client_config: Some(ClientContextConfig {
            resolver_timeout: Some(protobuf::seconds(RESOLVER_TIMEOUT_SECS)),
            max_pending_lookups: MAX_PENDING_LOOKUPS,
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(Listener {
        name: DNS_LISTENER.into(),
        address: Some(udp(protobuf::socket_address("127.0.0.1", DNS_PORT))),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.udp.dns_filter".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(protobuf::any(
                config,
            ))),
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    })
}

fn udp(mut address: Address) -> Address {
    if let Some(address::Address::SocketAddress(socket)) = &mut address.address {
        socket.protocol = socket_address::Protocol::Udp as i32;
    }
    address
}

/// Every name of every visible service with an address, sorted.
fn table(ctx: &Context) -> DnsTable {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in ctx.services() {
        let addresses: Vec<String> = ctx
            .service_addresses(service)
            .iter()
            .map(ToString::to_string)
            .collect();
        if addresses.is_empty() || service.hostname.contains('*') {
            continue;
        }
        for name in hosts::names(service, &ctx.proxy.namespace, ctx.domain_suffix()) {
            // The older service (first seen) keeps a name two could answer.
            names.entry(name).or_insert_with(|| addresses.clone());
        }
    }
    DnsTable {
        virtual_domains: names
            .into_iter()
            .map(|(name, address)| DnsVirtualDomain {
                name,
                endpoint: Some(DnsEndpoint {
                    endpoint_config: Some(dns_endpoint::EndpointConfig::AddressList(AddressList {
                        address,
                    })),
                }),
                answer_ttl: Some(protobuf::seconds(ANSWER_TTL_SECS)),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use pilotfish_model::Protocol;

    fn dns_table(listener: &Listener) -> BTreeMap<String, Vec<String>> {
        let filter = &listener.listener_filters[0];
        let Some(listener_filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            panic!("no typed config")
        };
        let config: DnsFilterConfig = protobuf::unpack(any).expect("a DNS filter config");
        let Some(server_context_config::ConfigSource::InlineDnsTable(table)) =
            config.server_config.and_then(|s| s.config_source)
        else {
            panic!("no inline table")
        };
        table
            .virtual_domains
            .into_iter()
            .map(|d| {
                let Some(dns_endpoint::EndpointConfig::AddressList(list)) =
                    d.endpoint.and_then(|e| e.endpoint_config)
                else {
                    panic!("no address list")
                };
                (d.name, list.address)
            })
            .collect()
    }

    #[test]
    fn a_capturing_sidecar_answers_service_names_with_vips_and_allocated_addresses() {
        let db = dns_service_entry("db.example.com", 5432);
        let m = mesh(
            vec![
                service(
                    "reviews.default.svc.cluster.local",
                    &["10.0.0.1"],
                    &[(9080, Protocol::Http)],
                ),
                service(
                    "ratings.shop.svc.cluster.local",
                    &["10.0.0.2"],
                    &[(9080, Protocol::Http)],
                ),
                db,
            ],
            vec![],
            &[],
        );
        let mut proxy = sidecar("default");
        proxy.dns.capture = true;
        let t = translate_for(&m, &proxy);
        // Without auto-allocation db has no address; the rest is answered.
        let table = dns_table(listener_named(&t, DNS_LISTENER));
        assert_eq!(table["reviews"], ["10.0.0.1"]);
        assert_eq!(table["reviews.default.svc"], ["10.0.0.1"]);
        assert_eq!(table["ratings.shop"], ["10.0.0.2"]);
        assert!(
            !table.contains_key("ratings"),
            "short names only in the own namespace"
        );
        assert!(!table.contains_key("db.example.com"));

        proxy.dns.auto_allocate = true;
        let t = translate_for(&m, &proxy);
        let table = dns_table(listener_named(&t, DNS_LISTENER));
        let allocated = crate::resolve(m.clone())
            .addresses
            .of("db.example.com")
            .expect("allocated");
        assert_eq!(table["db.example.com"], [allocated.to_string()]);
        assert_envoy_invariants(&t);

        let t = translate_for(&m, &sidecar("default"));
        assert!(
            t.resources.listeners.iter().all(|l| l.name != DNS_LISTENER),
            "only when asked for"
        );
    }
}
