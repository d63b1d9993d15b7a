//! What only sidecars get: inbound listeners for their own ports, outbound
//! listener matches per port (HTTP, TCP, TLS, sniffed), and the routes the
//! VirtualServices bound to `mesh` produce.

pub(crate) mod dns;
pub(crate) mod http_routes;
pub(crate) mod inbound;
pub(crate) mod listener_matches;
pub(crate) mod route_destinations;
pub(crate) mod tcp_routes;
pub(crate) mod virtual_service_index;
