//! What the translator needs to know about a proxy. Proxies with equal views
//! get identical resources, so the cache builds one snapshot per view.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use pilotfish_model::Protocol;
use serde::Serialize;

pub use crate::locality::Locality;

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
}

/// A port the local application listens on, and what it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InboundPort {
    pub port: u16,
    pub protocol: Protocol,
}
