//! What a service's outbound filter chains match on: a leaf shared by the
//! port plan (`listener_matches`), the L4 routes (`tcp_routes`) and the
//! listeners built from them, so that none of those imports another for it.

use std::net::IpAddr;

/// What a service's filter chains match on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchOn {
    /// Destination IPs (without interception, the listener's own
    /// address): sorted, unique, never empty.
    Addresses(Vec<IpAddr>),
    /// The TLS SNI, for VIP-less TLS services (external HTTPS hosts
    /// resolved by DNS): their destination IPs are unknown.
    ServerName(String),
}
