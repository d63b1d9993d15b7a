//! Traffic policy: DestinationRules merged for a view, and what they (and
//! a route's own policies) become on clusters and routes.

pub(crate) mod authorization;
pub(crate) mod authorization_rules;
pub(crate) mod destination_rules;
pub(crate) mod locality;
pub(crate) mod peer_authentication;
pub(crate) mod traffic_policy;
pub(crate) mod upstream_tls;
pub(crate) mod workload_selection;
