//! Which listener takes the connection and which of its filter chains
//! handles it, as Envoy picks them.
//!
//! A capturing sidecar's `virtualOutbound` (15001, `use_original_dst`)
//! hands each connection to the listener whose address is the original
//! destination `ip:port`, else the wildcard one on that port. A listener's
//! chains are narrowed criterion by criterion in Envoy's order
//! (destination port, destination IP with the longest prefix, server
//! name, transport protocol, application protocols): at each, chains that
//! name a value the connection lacks drop out, and the most specific of
//! the rest stay; nothing left means the default chain.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{RouteSpecifier, StripPortMode},
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::{ExplainRequest, Miss, Scheme, Step, StepKind, Target, config_of, socket_address};
use crate::names;
use crate::protobuf;
use crate::resources::XdsResources;

/// What the chosen chain does with the connection.
pub enum Handler {
    /// tcp_proxy to these clusters.
    Tcp(Vec<Target>),
    /// An HTTP connection manager with these routes.
    Http(RouteSource),
    /// Anything else: why the request goes no further.
    Unknown(String),
}

pub enum RouteSource {
    Rds {
        name: String,
        strip_port: bool,
    },
    Inline {
        config: Box<RouteConfiguration>,
        strip_port: bool,
    },
}

/// Picks listener and chain, adding a step for each; `Err` when no
/// listener takes the connection.
pub fn choose(
    resources: &XdsResources,
    request: &ExplainRequest,
    steps: &mut Vec<Step>,
) -> Result<Handler, String> {
    let listener = pick_listener(resources, request, steps)?;
    let chain = pick_chain(listener, request, steps)?;
    Ok(handler(chain, request))
}

fn pick_listener<'r>(
    resources: &'r XdsResources,
    request: &ExplainRequest,
    steps: &mut Vec<Step>,
) -> Result<&'r Listener, String> {
    let destination = destination(request);
    let virtual_outbound = resources
        .listeners
        .iter()
        .find(|l| l.use_original_dst.as_ref().is_some_and(|b| b.value));
    let bound = bound_at(resources, request, virtual_outbound);
    match (virtual_outbound, bound) {
        (Some(virtual_listener), found) => {
            let mut step = Step::new(StepKind::Listener, &virtual_listener.name).note(
                "intercepted outbound connections arrive here; use_original_dst hands each to the listener of its original destination",
            );
            let Some((listener, how)) = found else {
                step = step.note(format!(
                    "no listener for {destination}: it handles the connection itself"
                ));
                steps.push(step);
                return Ok(virtual_listener);
            };
            steps.push(step);
            steps.push(Step::new(StepKind::Listener, &listener.name).note(how));
            Ok(listener)
        }
        (None, Some((listener, how))) => {
            steps.push(Step::new(StepKind::Listener, &listener.name).note(how));
            Ok(listener)
        }
        (None, None) => Err(format!("no listener takes connections to {destination}")),
    }
}

fn destination(request: &ExplainRequest) -> String {
    match request.destination_ip {
        Some(ip) => names::host_port(ip, request.port),
        None => format!("{}:{} (address unknown)", request.host, request.port),
    }
}

/// The listener at the destination's exact address, else the wildcard one
/// on its port (never `skip`, the virtual listener itself).
fn bound_at<'r>(
    resources: &'r XdsResources,
    request: &ExplainRequest,
    skip: Option<&Listener>,
) -> Option<(&'r Listener, String)> {
    let candidates = || {
        resources
            .listeners
            .iter()
            .filter(move |l| skip.is_none_or(|s| s.name != l.name))
            .filter_map(|l| listener_address(l).map(|a| (l, a)))
            .filter(|(_, (_, port))| *port == u32::from(request.port))
    };
    let exact = request.destination_ip.and_then(|ip| {
        candidates().find(|(_, (address, _))| address.parse::<IpAddr>().ok() == Some(ip))
    });
    if let Some((listener, (address, port))) = exact {
        return Some((
            listener,
            format!("its address {address}:{port} is the destination's"),
        ));
    }
    candidates()
        .find(|(_, (address, _))| {
            address
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        })
        .map(|(listener, (address, port))| {
            (
                listener,
                format!("the wildcard listener {address}:{port} on the destination port"),
            )
        })
}

fn listener_address(listener: &Listener) -> Option<(String, u32)> {
    socket_address(listener.address.as_ref())
}

/// What the connection offers each criterion.
struct Offer {
    port: u32,
    ip: Option<IpAddr>,
    /// ALPN as the HTTP inspector reports it, when the listener runs one.
    application_protocol: Option<&'static str>,
}

/// A chain's specificity on one criterion: `Ok(0)` it names none, higher is
/// more specific; `Err(why)` it names a value the connection lacks.
type Rank = Result<u32, String>;

const CRITERIA: [&str; 5] = [
    "destination port",
    "destination IP",
    "server name",
    "transport protocol",
    "application protocol",
];

fn pick_chain<'l>(
    listener: &'l Listener,
    request: &ExplainRequest,
    steps: &mut Vec<Step>,
) -> Result<&'l FilterChain, String> {
    let sniffs_http = listener
        .listener_filters
        .iter()
        .any(|f| f.name == names::HTTP_INSPECTOR);
    let offer = Offer {
        port: u32::from(request.port),
        ip: request.destination_ip,
        application_protocol: (sniffs_http && request.scheme == Scheme::Http).then_some("http/1.1"),
    };
    let mut candidates: Vec<(usize, &FilterChain)> =
        listener.filter_chains.iter().enumerate().collect();
    let mut misses = Vec::new();
    for (criterion, name) in CRITERIA.iter().enumerate() {
        let ranked: Vec<_> = candidates
            .iter()
            .map(|(i, chain)| (*i, *chain, rank(chain, criterion, &offer)))
            .collect();
        let best = ranked
            .iter()
            .filter_map(|(_, _, r)| r.as_ref().ok())
            .max()
            .copied();
        candidates.clear();
        for (i, chain, rank) in ranked {
            match rank {
                Ok(r) if Some(r) == best => candidates.push((i, chain)),
                Ok(_) => misses.push(miss(
                    i,
                    chain,
                    format!("a chain matching the {name} more specifically wins"),
                )),
                Err(why) => misses.push(miss(i, chain, why)),
            }
        }
    }
    let (chain, how) = match candidates.first() {
        Some((i, chain)) => (
            *chain,
            format!("filter chain {} matches", chain_name(*i, chain)),
        ),
        None => match &listener.default_filter_chain {
            Some(chain) => (
                chain,
                "no filter chain matches: the listener's default chain".to_string(),
            ),
            None => {
                return Err(format!(
                    "no filter chain of {} matches and it has no default: Envoy closes the connection",
                    listener.name
                ));
            }
        },
    };
    let mut step = Step::new(StepKind::FilterChain, chain_display_name(chain)).note(how);
    if let Some(alpn) = offer.application_protocol {
        step = step.note(format!("the HTTP inspector reports {alpn}"));
    }
    step.not_matched = misses;
    step.config = config_of(chain.metadata.as_ref());
    steps.push(step);
    Ok(chain)
}

fn chain_name(index: usize, chain: &FilterChain) -> String {
    match chain.name.is_empty() {
        true => format!("#{index}"),
        false => chain.name.clone(),
    }
}

fn chain_display_name(chain: &FilterChain) -> String {
    match chain.name.is_empty() {
        true => "(unnamed)".to_string(),
        false => chain.name.clone(),
    }
}

fn miss(index: usize, chain: &FilterChain, reason: String) -> Miss {
    Miss {
        name: chain_name(index, chain),
        reason,
    }
}

fn rank(chain: &FilterChain, criterion: usize, offer: &Offer) -> Rank {
    let Some(m) = chain.filter_chain_match.as_ref() else {
        return Ok(0);
    };
    match criterion {
        0 => match m.destination_port.as_ref().map(|p| p.value) {
            None => Ok(0),
            Some(port) if port == offer.port => Ok(1),
            Some(port) => Err(format!("needs destination port {port}")),
        },
        1 => {
            if m.prefix_ranges.is_empty() {
                return Ok(0);
            }
            let ranges: Vec<String> = m
                .prefix_ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.address_prefix,
                        r.prefix_len.as_ref().map_or(0, |l| l.value)
                    )
                })
                .collect();
            let Some(ip) = offer.ip else {
                return Err(format!(
                    "needs a destination in {ranges:?}; the address is unknown"
                ));
            };
            ranges
                .iter()
                .filter_map(|r| r.parse::<ipnet::IpNet>().ok())
                .filter(|net| net.contains(&ip))
                .map(|net| u32::from(net.prefix_len()) + 1)
                .max()
                .ok_or_else(|| format!("{ip} is not in {ranges:?}"))
        }
        2 => match m.server_names.is_empty() {
            true => Ok(0),
            false => Err(format!(
                "needs TLS with server name in {:?}",
                m.server_names
            )),
        },
        3 => match m.transport_protocol.as_str() {
            "" => Ok(0),
            "raw_buffer" => Ok(1),
            other => Err(format!("needs transport protocol {other}")),
        },
        _ => {
            if m.application_protocols.is_empty() {
                return Ok(0);
            }
            match offer.application_protocol {
                Some(alpn) if m.application_protocols.iter().any(|p| p == alpn) => Ok(1),
                Some(alpn) => Err(format!(
                    "needs application protocol in {:?}, not {alpn}",
                    m.application_protocols
                )),
                None => Err(format!(
                    "needs application protocol in {:?}; the connection is not detected as HTTP",
                    m.application_protocols
                )),
            }
        }
    }
}

/// The chain's network filter that decides where the connection goes.
fn handler(chain: &FilterChain, request: &ExplainRequest) -> Handler {
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if let Some(tcp) = protobuf::unpack::<TcpProxy>(any) {
            return Handler::Tcp(tcp_targets(&tcp));
        }
        if let Some(hcm) = protobuf::unpack::<HttpConnectionManager>(any) {
            if request.scheme == Scheme::Tcp {
                return Handler::Unknown(format!(
                    "{} is HTTP: raw TCP bytes fail to parse and Envoy closes the connection",
                    chain_display_name(chain)
                ));
            }
            let strip_port = hcm.strip_matching_host_port
                || matches!(
                    hcm.strip_port_mode,
                    Some(StripPortMode::StripAnyHostPort(true))
                );
            return match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => Handler::Http(RouteSource::Rds {
                    name: rds.route_config_name,
                    strip_port,
                }),
                Some(RouteSpecifier::RouteConfig(config)) => Handler::Http(RouteSource::Inline {
                    config: Box::new(config),
                    strip_port,
                }),
                _ => Handler::Unknown(
                    "the HTTP connection manager's routes are not RDS or inline".into(),
                ),
            };
        }
    }
    Handler::Unknown(format!(
        "{} has neither tcp_proxy nor an HTTP connection manager",
        chain_display_name(chain)
    ))
}

fn tcp_targets(proxy: &TcpProxy) -> Vec<Target> {
    match &proxy.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => vec![Target {
            cluster: cluster.clone(),
            weight: None,
        }],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)) => weighted
            .clusters
            .iter()
            .map(|c| Target {
                cluster: c.name.clone(),
                weight: Some(c.weight),
            })
            .collect(),
        None => Vec::new(),
    }
}
