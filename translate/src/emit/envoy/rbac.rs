//! Envoy's RBAC filters, network and HTTP. An ALLOW filter admits what one
//! of its policies matches and refuses the rest (so one without policies
//! refuses everything); a DENY filter refuses what one of its policies
//! matches.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, Rbac, rbac::Action};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;

use crate::protobuf;

pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";

/// Whether a filter's policies admit or refuse what they match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Named policies of one filter; named so Envoy's stats and logs say
/// which policy decided.
pub type Policies = Vec<(String, Policy)>;

fn rules(verdict: Verdict, policies: Policies) -> Rbac {
    let action = match verdict {
        Verdict::Allow => Action::Allow,
        Verdict::Deny => Action::Deny,
    };
    Rbac {
        action: action as i32,
        policies: policies.into_iter().collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

/// A network RBAC filter (before tcp_proxy or the connection manager).
pub fn network_filter(stat_prefix: &str, verdict: Verdict, policies: Policies) -> Filter {
    let config = NetworkRbac {
        rules: Some(rules(verdict, policies)),
        stat_prefix: stat_prefix.to_string(),
        ..Default::default()
    };
    Filter {
        name: NETWORK_RBAC.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(protobuf::any(config))),
    }
}

/// An HTTP RBAC filter (before the router).
pub fn http_filter(verdict: Verdict, policies: Policies) -> HttpFilter {
    let config = HttpRbac {
        rules: Some(rules(verdict, policies)),
        ..Default::default()
    };
    HttpFilter {
        name: HTTP_RBAC.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(protobuf::any(config))),
        ..Default::default()
    }
}

/// Refuses every connection: an ALLOW filter without policies.
pub fn refuse_all(stat_prefix: &str) -> Filter {
    network_filter(stat_prefix, Verdict::Allow, Vec::new())
}
