//! Stage 2: one proxy view's Envoy resources, selected from a
//! [`Resolved`] generation. Sidecar-only parts live in [`sidecar`],
//! gateway-only ones in [`gateway`], traffic policy in [`policy`], Envoy
//! building blocks in [`envoy`]; the per-type emitters here dispatch on the
//! proxy kind.

pub(crate) mod clusters;
pub(crate) mod context;
pub(crate) mod endpoints;
pub(crate) mod envoy;
pub(crate) mod gateway;
pub(crate) mod listeners;
pub(crate) mod policy;
pub(crate) mod routes;
pub(crate) mod service_clusters;
pub(crate) mod sidecar;

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

pub use crate::parts::RouteConfigParts;
pub use context::Context;

use crate::diagnostics::{self, Diagnostic};
use crate::proxy::ProxyView;
use crate::resolve::Resolved;
use crate::resources::{Translation, XdsResources};

/// Every resource type for one view, with the diagnostics of its own
/// selection (the generation's own are [`Resolved::diagnostics`]).
pub fn emit(resolved: &Resolved, proxy: &ProxyView) -> Translation {
    let ctx = Context::new(resolved, proxy);
    let mut diagnostics = Vec::new();
    let resources = XdsResources {
        clusters: clusters(&ctx, &mut diagnostics),
        endpoints: endpoints(&ctx),
        listeners: listeners(&ctx, &mut diagnostics),
        routes: routes(&ctx, &mut diagnostics),
        secrets: secrets(&ctx, &mut diagnostics),
    };
    diagnostics::normalize(&mut diagnostics);
    Translation {
        resources,
        diagnostics,
    }
}

/// CDS: the clusters of the services the view sees.
pub fn clusters(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Cluster> {
    clusters::build(ctx, diags)
}

/// EDS: the load assignments of those clusters.
pub fn endpoints(ctx: &Context) -> Vec<ClusterLoadAssignment> {
    endpoints::build(ctx)
}

/// EDS for the clusters of `hosts` only.
pub fn endpoints_for_hosts(ctx: &Context, hosts: &BTreeSet<String>) -> Vec<ClusterLoadAssignment> {
    endpoints::build_for_hosts(ctx, hosts)
}

/// LDS.
pub fn listeners(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Listener> {
    listeners::build(ctx, diags)
}

/// RDS, each configuration whole.
pub fn routes(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<RouteConfiguration> {
    route_parts(ctx, diags)
        .into_iter()
        .map(RouteConfigParts::assemble)
        .collect()
}

/// RDS with each configuration's virtual hosts shared by `Arc` with the
/// other views of the generation that have the same ones, so a server can
/// encode a shared virtual host once.
pub fn route_parts(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<RouteConfigParts> {
    routes::build(ctx, diags)
}

/// SDS: the credentials the view's gateway servers and DestinationRules name.
pub fn secrets(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Secret> {
    gateway::gateway_tls::secrets(ctx, diags)
}
