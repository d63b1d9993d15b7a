//! Envoy building blocks the emitters share: filters, protobuf helpers,
//! tracing and access logs, SDS references, filter chain matches.

pub(crate) mod chain_match;
pub(crate) mod filters;
pub(crate) mod mesh_tls;
pub(crate) mod observability;
pub(crate) mod rbac;
pub(crate) mod sds;
