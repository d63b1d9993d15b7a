//! What the translator needs to know about a proxy. Proxies with equal views
//! get identical resources, so the cache builds one snapshot per view.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use pilotfish_model::Protocol;
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ProxyKind {
    #[default]
    Sidecar,
    /// A gateway (Istio's `router`).
    Router,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum InterceptionMode {
    /// iptables REDIRECT to 15001/15006; per-port listeners do not bind.
    #[default]
    Redirect,
    /// TPROXY; treated like REDIRECT for listener binding.
    Tproxy,
    /// No interception: per-port listeners bind real sockets on loopback;
    /// no `virtualOutbound`, no inbound side.
    None,
}

impl InterceptionMode {
    /// Whether the sidecar's per-port outbound listeners are real sockets
    /// the application dials, rather than targets of `virtualOutbound`.
    pub fn binds_listeners(self) -> bool {
        self == Self::None
    }

    /// The address of the sidecar's per-port outbound listeners. Under
    /// iptables they bind nothing and every destination reaches them, so
    /// they carry the wildcard. Without interception they bind loopback, as
    /// Istio's do: the application dials `127.0.0.1:<port>`, and every other
    /// local address on that port stays free for the host's own servers, so
    /// a connection Envoy opens to one of them reaches that server instead
    /// of coming back into Envoy's listener.
    pub fn outbound_listener_address(self) -> IpAddr {
        match self {
            Self::Redirect | Self::Tproxy => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Self::None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "REDIRECT" => Some(Self::Redirect),
            "TPROXY" => Some(Self::Tproxy),
            "NONE" => Some(Self::None),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProxyView {
    pub kind: ProxyKind,
    /// The proxy's own namespace (short names, exportTo).
    pub namespace: String,
    pub interception: InterceptionMode,
    /// Workload labels (sourceLabels matches, Gateway selectors).
    pub labels: BTreeMap<String, String>,
    /// Ports the workload itself serves (from the registry endpoints at the
    /// proxy's IP), sorted: what the inbound listener delivers locally.
    pub inbound: Vec<InboundPort>,
    /// Where the proxy runs (Envoy `Node.locality`), for locality-aware
    /// load balancing.
    pub locality: Option<Locality>,
    /// DNS proxying the proxy asked for (node metadata `DNS_CAPTURE`,
    /// `DNS_AUTO_ALLOCATE`, as Istio's `ISTIO_META_DNS_*`).
    pub dns: DnsOptions,
    /// The proxy proved a mesh identity on the secure xDS port, so it is
    /// served its workload certificate over SDS (`default`, `ROOTCA`) and
    /// can originate and accept mesh mTLS. Set by the server, never by
    /// what a proxy says about itself.
    pub workload_certificate: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DnsOptions {
    /// The application's DNS queries are captured to the sidecar.
    pub capture: bool,
    /// ServiceEntries without addresses are matched at their allocated
    /// VIPs (240.240.0.0/16), which the sidecar's DNS answers give out.
    pub auto_allocate: bool,
}

/// A port the local application listens on, and what it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InboundPort {
    pub port: u16,
    pub protocol: Protocol,
}

/// Where a proxy or endpoint runs: `region/zone/subzone`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

impl Locality {
    /// `region/zone/subzone`, any suffix of which may be missing; `None` for
    /// an empty string.
    pub fn parse(text: &str) -> Option<Locality> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut parts = text.splitn(3, '/').map(str::to_string);
        Some(Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            sub_zone: parts.next().unwrap_or_default(),
        })
    }

    pub fn from_envoy(l: &EnvoyLocality) -> Option<Locality> {
        let out = Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        };
        (!out.is_empty()).then_some(out)
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.sub_zone.is_empty()
    }

    /// Whether this locality matches a rule's `region[/zone[/subzone]]`,
    /// where `*` matches anything and a missing part matches anything.
    pub fn matches(&self, rule: &str) -> bool {
        let mut parts = rule.trim().splitn(3, '/');
        let (region, zone, sub_zone) = (parts.next(), parts.next(), parts.next());
        let part = |rule: Option<&str>, value: &str, required: bool| match rule {
            Some("*") => true,
            None | Some("") => !required,
            Some(rule) => rule == value,
        };
        part(region, &self.region, true)
            && part(zone, &self.zone, false)
            && part(sub_zone, &self.sub_zone, false)
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.sub_zone)
    }
}
