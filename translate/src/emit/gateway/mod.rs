//! What gateways get: their Gateways' servers bound to ports, listeners
//! and routes per server, and the TLS credentials those servers name.

pub(crate) mod gateway_bindings;
pub(crate) mod gateway_listeners;
pub(crate) mod gateway_routes;
pub(crate) mod gateway_servers;
pub(crate) mod gateway_tls;

#[cfg(test)]
mod gateway_tests;
