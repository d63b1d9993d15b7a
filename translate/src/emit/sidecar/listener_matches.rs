//! Which destinations each service claims on an outbound port, with
//! conflicts resolved. Envoy picks a filter chain by destination IP before
//! anything else, and rejects listeners with two chains on the same match,
//! so every TCP chain must match on its own addresses (or, for VIP-less TLS
//! services, its SNI) and no match may be claimed twice. Once every service
//! holds its own destinations, VirtualService `tls`/`tcp` rules split them
//! and may claim more ([`crate::emit::sidecar::tcp_routes`]).
//!
//! Without interception the application dials the sidecar's loopback
//! listener itself, so the only destination Envoy ever sees on a port is
//! that listener's address: every service claims it (HTTP services share
//! it, as usual), one opaque service per port keeps it and the others are
//! reported, as with Istio's `InterceptionNone`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use pilotfish_model::{Protocol, Resolution, Service};

use crate::claims::{Claim, Claimant, Claims};
use crate::diagnostics::{Diagnostic, DiagnosticKind, service_object};
use crate::emit::context::Context;
pub use crate::emit::envoy::chain_match::MatchOn;
use crate::emit::sidecar::tcp_routes::{self, L4Chain, MatchClaims};
use crate::names;

/// How a port's traffic is handled by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handling {
    /// Shared HTTP connection manager, routed by Host header.
    Http,
    /// tcp_proxy to the service cluster (TCP, TLS).
    Opaque,
    /// Unknown protocol: HTTP if the inspector sees HTTP, else TCP.
    Sniffed,
}

impl Handling {
    pub fn of(protocol: Protocol) -> Handling {
        match protocol {
            Protocol::Http | Protocol::Http2 | Protocol::Grpc => Handling::Http,
            Protocol::Tcp | Protocol::Tls => Handling::Opaque,
            Protocol::Unknown => Handling::Sniffed,
        }
    }

    /// Whether two services can share a destination address. HTTP services
    /// can (the Host header tells them apart), also with a sniffed service
    /// whose HTTP chain uses the same route configuration.
    fn can_share_with(self, other: Handling) -> bool {
        matches!(
            (self, other),
            (Handling::Http, Handling::Http)
                | (Handling::Http, Handling::Sniffed)
                | (Handling::Sniffed, Handling::Http)
        )
    }
}

/// A service that gets filter chains matching its own destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressedService<'a> {
    pub service: &'a Service,
    pub handling: Handling,
    pub match_on: MatchOn,
    /// Its tcp_proxy chains (VirtualService `tls`/`tcp` rules, then the
    /// default route); for sniffed services, their non-HTTP side.
    pub chains: Vec<L4Chain>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortPlan<'a> {
    pub port: u16,
    /// Some HTTP service is on the port: HTTP to any destination no chain
    /// of its own matches goes to the port's route configuration.
    pub has_http: bool,
    /// Sorted by hostname.
    pub addressed: Vec<AddressedService<'a>>,
    /// The TCP service that owns the port: it takes the non-HTTP traffic
    /// to destinations no chain matches (without one, the outbound traffic
    /// policy does). A ServiceEntry of resolution NONE without addresses
    /// (letting a whole port out), or the port's only TCP service without
    /// a VIP, as Istio gives such a service the port.
    pub owner: Option<&'a Service>,
}

/// Visible services grouped by port number, ports ascending, services by
/// hostname; the sidecar's own ports are left out, and so are services
/// whose traffic would come back into the sidecar ([`forwards_to_itself`]).
pub fn services_by_port<'a>(ctx: &Context<'a>) -> BTreeMap<u16, Vec<&'a Service>> {
    let mut out: BTreeMap<u16, Vec<&'a Service>> = BTreeMap::new();
    for service in ctx.services().filter(|s| !forwards_to_itself(ctx, s)) {
        let ports: BTreeSet<u16> = service
            .ports
            .iter()
            .map(|p| p.port)
            .filter(|p| !names::RESERVED_PORTS.contains(p))
            .collect();
        for port in ports {
            out.entry(port).or_default().push(service);
        }
    }
    out
}

/// Services with a port the sidecar reserves; they get clusters but no listener.
pub fn reserved_port_diagnostics(ctx: &Context) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for service in ctx.services() {
        for port in service
            .ports
            .iter()
            .filter(|p| names::RESERVED_PORTS.contains(&p.port))
        {
            let message = format!(
                "port {} is reserved for the sidecar; no outbound listener serves it",
                port.port
            );
            out.push(Diagnostic::new(
                DiagnosticKind::Unreachable,
                service_object(&service.hostname),
                message,
            ));
        }
    }
    out
}

/// Without interception a connection's original destination is the
/// sidecar's own listener, so a service whose cluster forwards to the
/// original destination (resolution NONE) would send every connection
/// straight back into it.
fn forwards_to_itself(ctx: &Context, service: &Service) -> bool {
    ctx.proxy.interception.binds_listeners() && service.resolution == Resolution::Passthrough
}

/// Services that get no listener or route because they would loop
/// ([`forwards_to_itself`]).
pub fn self_forwarding_diagnostics(ctx: &Context) -> Vec<Diagnostic> {
    ctx.services()
        .filter(|s| forwards_to_itself(ctx, s))
        .map(|service| {
            Diagnostic::new(
                DiagnosticKind::Unreachable,
                service_object(&service.hostname),
                "resolution NONE forwards to the original destination, which for a sidecar without interception is its own listener; no outbound listener or route serves it".to_string(),
            )
        })
        .collect()
}

/// Where traffic for `service` on `port` is addressed: its VIPs, or for
/// VIP-less services (Consul, headless) its endpoint IPs on that port.
/// Without interception, the listener's own address whatever the service.
pub fn destination_addresses(ctx: &Context, service: &Service, port: u16) -> BTreeSet<IpAddr> {
    if ctx.proxy.interception.binds_listeners() {
        return BTreeSet::from([ctx.proxy.interception.outbound_listener_address()]);
    }
    let vips: BTreeSet<IpAddr> = ctx.service_addresses(service).into_iter().collect();
    if !vips.is_empty() {
        return vips;
    }
    ctx.endpoints(&service.hostname)
        .iter()
        .filter(|ep| ep.service_port == port)
        .filter_map(|ep| ep.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect()
}

/// Resolves the claims of `services` on `port`: older services (by
/// [`Service::precedence`]) keep contested addresses; losers are reported.
pub fn plan<'a>(
    ctx: &Context<'a>,
    port: u16,
    services: &[&'a Service],
    diags: &mut Vec<Diagnostic>,
) -> PortPlan<'a> {
    let mut ordered: Vec<(&'a Service, Protocol)> = services
        .iter()
        .filter_map(|s| s.port(port).map(|p| (*s, p.protocol)))
        .collect();
    ordered.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));

    let has_http = ordered
        .iter()
        .any(|(_, p)| Handling::of(*p) == Handling::Http);
    let lone = lone_vipless_tcp_service(ctx, &ordered);
    let mut claims = PortClaims::default();
    let mut addressed = Vec::new();
    // Destinations no chain matches go to one owner of the port.
    let mut owner: Claims<(), &'a Service> = Claims::default();
    let mut claim_port = |service: &'a Service, diags: &mut Vec<Diagnostic>| {
        if let Claim::Lost { winner } = owner.claim((), service) {
            diags.push(conflict(service, winner, port, "(any other destination)"));
        }
    };
    for &(service, protocol) in &ordered {
        let handling = Handling::of(protocol);
        let wanted = destination_addresses(ctx, service, port);
        let is_lone = lone.is_some_and(|l| std::ptr::eq(l, service));
        if is_lone {
            claim_port(service, diags);
        }
        let match_on = if !wanted.is_empty() {
            claims.addresses(service, handling, port, wanted, diags)
        } else if protocol == Protocol::Tls {
            claims.server_name(service, port, diags)
        } else if handling == Handling::Opaque && service.resolution == Resolution::Passthrough {
            claim_port(service, diags);
            None
        } else if is_lone {
            None
        } else {
            if handling != Handling::Http {
                diags.push(unreachable(service, port, handling));
            }
            None
        };
        if let Some(match_on) = match_on.filter(|_| handling != Handling::Http) {
            addressed.push(AddressedService {
                service,
                handling,
                match_on,
                chains: Vec::new(),
            });
        }
    }
    // Rules claim extra matches only once every service holds its own,
    // older services first.
    let mut match_claims = claims.match_claims();
    for svc in &mut addressed {
        svc.chains = tcp_routes::service_chains(
            ctx,
            port,
            svc.service,
            &svc.match_on,
            &mut match_claims,
            diags,
        );
    }
    addressed.sort_by(|a, b| a.service.hostname.cmp(&b.service.hostname));
    PortPlan {
        port,
        has_http,
        addressed,
        owner: owner.holders(&()).first().copied().copied(),
    }
}

/// The port's TCP service without a VIP (resolved by DNS, or known only by
/// its endpoints), when it is the only one: it can own the port, since no
/// other such service needs telling apart from it. A ServiceEntry of
/// resolution NONE claims the port on its own and is not counted; without
/// interception each listener has one address and this does not apply.
fn lone_vipless_tcp_service<'a>(
    ctx: &Context,
    ordered: &[(&'a Service, Protocol)],
) -> Option<&'a Service> {
    if ctx.proxy.interception.binds_listeners() {
        return None;
    }
    let mut vipless = ordered.iter().filter(|(service, protocol)| {
        *protocol == Protocol::Tcp
            && service.resolution != Resolution::Passthrough
            && ctx.service_addresses(service).is_empty()
    });
    match (vipless.next(), vipless.next()) {
        (Some((service, _)), None) => Some(*service),
        _ => None,
    }
}

/// A service holding a destination address, with how it handles it.
#[derive(Clone, Copy)]
struct AddressHolder<'a> {
    service: &'a Service,
    handling: Handling,
}

impl<'a> Claimant for AddressHolder<'a> {
    type Rank = <&'a Service as Claimant>::Rank;

    fn rank(&self) -> Self::Rank {
        self.service.rank()
    }

    fn is(&self, other: &Self) -> bool {
        self.service.is(&other.service)
    }

    fn shares_with(&self, other: &Self) -> bool {
        self.handling.can_share_with(other.handling)
    }
}

/// Matches already given out on one port.
#[derive(Default)]
struct PortClaims<'a> {
    addresses: Claims<IpAddr, AddressHolder<'a>>,
    server_names: Claims<String, &'a Service>,
}

impl<'a> PortClaims<'a> {
    /// Every match held, for VirtualService rules to claim more.
    fn match_claims(&self) -> MatchClaims<'a> {
        let mut out = MatchClaims::default();
        for (ip, holders) in self.addresses.iter() {
            let chains = holders.iter().find(|h| h.handling != Handling::Http);
            if let Some(holder) = chains {
                out.own(holder.service, &MatchOn::Addresses(vec![*ip]));
            }
            for holder in holders.iter().filter(|h| h.handling == Handling::Http) {
                out.http_address(holder.service, *ip);
            }
        }
        for (name, holders) in self.server_names.iter() {
            for service in holders {
                out.own(service, &MatchOn::ServerName(name.clone()));
            }
        }
        out
    }

    /// The wanted addresses nobody incompatible holds yet; `None` if none is left.
    fn addresses(
        &mut self,
        service: &'a Service,
        handling: Handling,
        port: u16,
        wanted: BTreeSet<IpAddr>,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<MatchOn> {
        let mut kept = Vec::new();
        let holder = AddressHolder { service, handling };
        for address in wanted {
            match self.addresses.claim(address, holder) {
                Claim::Lost { winner } => diags.push(conflict(
                    service,
                    winner.service,
                    port,
                    &address.to_string(),
                )),
                Claim::Won | Claim::Again => kept.push(address),
            }
        }
        (!kept.is_empty()).then_some(MatchOn::Addresses(kept))
    }

    fn server_name(
        &mut self,
        service: &'a Service,
        port: u16,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<MatchOn> {
        let name = service.hostname.to_ascii_lowercase();
        if name.is_empty() || name == "*" || name.contains(char::is_whitespace) {
            diags.push(unreachable(service, port, Handling::Opaque));
            return None;
        }
        if let Claim::Lost { winner } = self.server_names.claim(name.clone(), service) {
            diags.push(conflict(service, winner, port, &format!("SNI {name}")));
            return None;
        }
        Some(MatchOn::ServerName(name))
    }
}

fn conflict(loser: &Service, winner: &Service, port: u16, address: &str) -> Diagnostic {
    Diagnostic::new(
        DiagnosticKind::ListenerConflict,
        service_object(&loser.hostname),
        format!(
            "port {port}, address {address} is already matched by service {} (older); traffic to that address goes there",
            winner.hostname
        ),
    )
}

fn unreachable(service: &Service, port: u16, handling: Handling) -> Diagnostic {
    let what = match handling {
        Handling::Sniffed => "non-HTTP traffic",
        _ => "traffic",
    };
    Diagnostic::new(
        DiagnosticKind::Unreachable,
        service_object(&service.hostname),
        format!(
            "port {port}: no VIP and no endpoint IPs to match on, so {what} for it cannot be told apart from other destinations on the port; it takes the port's default path"
        ),
    )
}
