//! Mesh-wide access logs and tracing (Istio MeshConfig's `accessLogFile`,
//! `enableTracing` and `defaultConfig.tracing.zipkin.address`), added to
//! every HTTP connection manager and TCP proxy Pilotfish generates. Done as
//! one pass over the finished listeners so that each filter builder stays
//! ignorant of mesh-wide observability.

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::trace::v3::{
    ZipkinConfig, tracing::Http, tracing::http, zipkin_config::CollectorEndpointVersion,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;

use crate::mesh::{MeshConfig, ZipkinCollector};
use crate::names;
use crate::protobuf;

/// The cluster spans are sent to.
pub const ZIPKIN_CLUSTER: &str = "zipkin";
/// Zipkin's v2 collector path (JSON).
const ZIPKIN_ENDPOINT: &str = "/api/v2/spans";
const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";
const ZIPKIN_TRACER: &str = "envoy.tracers.zipkin";

/// Adds the mesh's access log and tracer to the HTTP connection managers
/// and TCP proxies of `listeners`; nothing when the mesh asks for neither.
pub fn instrument(mesh: &MeshConfig, listeners: &mut [Listener]) {
    if mesh.access_log_file.is_none() && mesh.zipkin.is_none() {
        return;
    }
    let chains = listeners.iter_mut().flat_map(|l| {
        l.filter_chains
            .iter_mut()
            .chain(&mut l.default_filter_chain)
    });
    for filter in chains.flat_map(|chain| chain.filters.iter_mut()) {
        instrument_filter(mesh, filter);
    }
}

fn instrument_filter(mesh: &MeshConfig, filter: &mut Filter) {
    let Some(filter::ConfigType::TypedConfig(config)) = &mut filter.config_type else {
        return;
    };
    match filter.name.as_str() {
        names::HTTP_CONNECTION_MANAGER => {
            if let Some(mut hcm) = protobuf::unpack::<HttpConnectionManager>(config) {
                hcm.access_log.extend(access_log(mesh));
                hcm.tracing = mesh.zipkin.as_ref().map(tracing).or(hcm.tracing);
                *config = protobuf::any(hcm);
            }
        }
        names::TCP_PROXY => {
            if let Some(mut proxy) = protobuf::unpack::<TcpProxy>(config) {
                proxy.access_log.extend(access_log(mesh));
                *config = protobuf::any(proxy);
            }
        }
        _ => {}
    }
}

/// Envoy's default log format to `accessLogFile` (`/dev/stdout` and the like).
fn access_log(mesh: &MeshConfig) -> Option<AccessLog> {
    let path = mesh.access_log_file.as_ref()?;
    Some(AccessLog {
        name: FILE_ACCESS_LOG.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(protobuf::any(
            FileAccessLog {
                path: path.clone(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    })
}

/// Envoy's Zipkin tracer reporting to [`ZIPKIN_CLUSTER`]. Sampling is left
/// at Envoy's default (every request), as pilot-discovery did without
/// PILOT_TRACE_SAMPLING.
fn tracing(collector: &ZipkinCollector) -> http_connection_manager::Tracing {
    let zipkin = ZipkinConfig {
        collector_cluster: ZIPKIN_CLUSTER.to_string(),
        collector_endpoint: ZIPKIN_ENDPOINT.to_string(),
        collector_endpoint_version: CollectorEndpointVersion::HttpJson as i32,
        collector_hostname: collector.host.clone(),
        ..Default::default()
    };
    http_connection_manager::Tracing {
        provider: Some(Http {
            name: ZIPKIN_TRACER.to_string(),
            config_type: Some(http::ConfigType::TypedConfig(protobuf::any(zipkin))),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::translate;

    fn observed_mesh() -> crate::MeshState {
        with_access_log_and_tracing(busy_mesh())
    }

    fn every_filter(t: &crate::Translation) -> Vec<&Filter> {
        t.resources
            .listeners
            .iter()
            .flat_map(|l| l.filter_chains.iter().chain(&l.default_filter_chain))
            .flat_map(|chain| &chain.filters)
            .collect()
    }

    fn typed<T: prost::Message + prost::Name + Default>(filter: &Filter) -> T {
        let Some(filter::ConfigType::TypedConfig(config)) = &filter.config_type else {
            panic!("{} has no typed config", filter.name);
        };
        protobuf::unpack(config).unwrap_or_else(|| panic!("{} does not decode", filter.name))
    }

    #[test]
    fn every_connection_manager_and_tcp_proxy_logs_to_the_access_log_file() {
        let t = translate(&observed_mesh(), &sidecar("default"));
        let filters = every_filter(&t);
        let mut seen = (0, 0);
        for filter in filters {
            let logs = match filter.name.as_str() {
                names::HTTP_CONNECTION_MANAGER => {
                    seen.0 += 1;
                    typed::<HttpConnectionManager>(filter).access_log
                }
                names::TCP_PROXY => {
                    seen.1 += 1;
                    typed::<TcpProxy>(filter).access_log
                }
                _ => continue,
            };
            assert_eq!(logs.len(), 1, "{}", filter.name);
            let Some(access_log::ConfigType::TypedConfig(config)) = &logs[0].config_type else {
                panic!("access log without config");
            };
            let file: FileAccessLog = protobuf::unpack(config).expect("file access log");
            assert_eq!(file.path, "/dev/stdout");
        }
        assert!(seen.0 > 0 && seen.1 > 0, "HCMs and TCP proxies: {seen:?}");
    }

    #[test]
    fn tracing_sends_zipkin_v2_json_spans_to_a_cluster_for_the_collector_address() {
        let t = translate(&observed_mesh(), &sidecar("default"));
        for filter in every_filter(&t) {
            if filter.name != names::HTTP_CONNECTION_MANAGER {
                continue;
            }
            let provider = typed::<HttpConnectionManager>(filter)
                .tracing
                .and_then(|t| t.provider)
                .expect("HCM has a tracer");
            assert_eq!(provider.name, ZIPKIN_TRACER);
            let Some(http::ConfigType::TypedConfig(config)) = &provider.config_type else {
                panic!("tracer without config");
            };
            let zipkin: ZipkinConfig = protobuf::unpack(config).expect("zipkin config");
            assert_eq!(zipkin.collector_cluster, ZIPKIN_CLUSTER);
            assert_eq!(zipkin.collector_endpoint, "/api/v2/spans");
            assert_eq!(
                zipkin.collector_endpoint_version,
                CollectorEndpointVersion::HttpJson as i32
            );
        }
        let cluster = t
            .resources
            .clusters
            .iter()
            .find(|c| c.name == ZIPKIN_CLUSTER)
            .expect("zipkin cluster");
        let assignment = format!("{:?}", cluster.load_assignment);
        assert!(
            assignment.contains("zipkin.istio-system") && assignment.contains("9411"),
            "{assignment}"
        );
    }

    #[test]
    fn without_access_log_or_tracing_nothing_is_added() {
        let t = translate(&busy_mesh(), &sidecar("default"));
        assert!(
            t.resources
                .clusters
                .iter()
                .all(|c| c.name != ZIPKIN_CLUSTER)
        );
        for filter in every_filter(&t) {
            if filter.name == names::HTTP_CONNECTION_MANAGER {
                let hcm = typed::<HttpConnectionManager>(filter);
                assert!(hcm.access_log.is_empty() && hcm.tracing.is_none());
            }
        }
    }
}
