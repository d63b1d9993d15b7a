//! DestinationRule checks.

use std::collections::BTreeMap;

use super::{Report, hosts};
use crate::destination_rule::{
    ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    PolicySections, TrafficPolicy,
};

/// Envoy's largest ring hash ring and Maglev table.
const MAX_RING_SIZE: u64 = 8_388_608;
const MAX_MAGLEV_TABLE: u64 = 5_000_011;

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

pub(super) fn check(spec: &DestinationRuleSpec, r: &mut Report) {
    if spec.host.is_empty() {
        r.error("spec.host", "host is required");
    } else {
        r.host("spec.host", &spec.host, hosts::host_or_ip);
    }
    r.export_to(&spec.export_to);
    if let Some(policy) = &spec.traffic_policy {
        traffic_policy("spec.trafficPolicy", policy, r);
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            r.error(format!("{at}.name"), "subset name is required");
        } else if let Some(first) = seen.insert(&subset.name, i) {
            r.error(
                format!("{at}.name"),
                format!(
                    "duplicate subset name {:?} (also spec.subsets[{first}])",
                    subset.name
                ),
            );
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(&format!("{at}.trafficPolicy"), policy, r);
        }
    }
}

fn traffic_policy(at: &str, policy: &TrafficPolicy, r: &mut Report) {
    if let Some(budget) = &policy.retry_budget {
        r.percent(&format!("{at}.retryBudget.percent"), budget.percent);
    }
    policy_sections(at, policy.sections(), r);
    for (j, port_policy) in policy.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{j}]");
        r.port(
            &format!("{at}.port.number"),
            port_policy.port.as_ref().and_then(|p| p.number),
        );
        policy_sections(&at, port_policy.sections(), r);
    }
}

/// The settings a policy and its per-port overrides share.
fn policy_sections(at: &str, sections: PolicySections<'_>, r: &mut Report) {
    if let Some(lb) = sections.load_balancer {
        load_balancer(&format!("{at}.loadBalancer"), lb, r);
    }
    if let Some(pool) = sections.connection_pool {
        connection_pool(&format!("{at}.connectionPool"), pool, r);
    }
    if let Some(od) = sections.outlier_detection {
        outlier_detection(&format!("{at}.outlierDetection"), od, r);
    }
}

fn outlier_detection(at: &str, od: &OutlierDetection, r: &mut Report) {
    let mut od_at = r.at(at);
    od_at.duration_min_1ms("interval", od.interval.as_ref());
    od_at.duration_min_1ms("baseEjectionTime", od.base_ejection_time.as_ref());
    od_at.percent("maxEjectionPercent", od.max_ejection_percent);
    od_at.percent("minHealthPercent", od.min_health_percent);
    for (k, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        let field = format!("{at}.outlierDetectionHttpErrorCodes[{k}]");
        r.int_range(&field, Some(i64::from(*code)), 100, 599);
    }
}

fn load_balancer(at: &str, lb: &LoadBalancerSettings, r: &mut Report) {
    let set = [
        ("simple", lb.simple.is_some()),
        ("consistentHash", lb.consistent_hash.is_some()),
        ("backendUtilization", lb.backend_utilization.is_some()),
    ];
    r.at_most_one(at, &set);
    if let Some(hash) = &lb.consistent_hash {
        let at = format!("{at}.consistentHash");
        let key = [
            ("httpHeaderName", hash.http_header_name.is_some()),
            ("httpCookie", hash.http_cookie.is_some()),
            ("useSourceIp", hash.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                hash.http_query_parameter_name.is_some(),
            ),
        ];
        r.at_most_one(&at, &key);
        r.at_most_one(
            &at,
            &[
                ("ringHash", hash.ring_hash.is_some()),
                ("maglev", hash.maglev.is_some()),
            ],
        );
        // Envoy's own bounds, which Istio leaves to Envoy.
        let ring = hash
            .ring_hash
            .as_ref()
            .and_then(|h| h.minimum_ring_size)
            .or(hash.minimum_ring_size);
        if let Some(size) = ring
            && size > MAX_RING_SIZE
        {
            let field = match hash.ring_hash {
                Some(_) => "ringHash.minimumRingSize",
                None => "minimumRingSize",
            };
            r.error(
                format!("{at}.{field}"),
                format!("ring size {size} must be at most {MAX_RING_SIZE}"),
            );
        }
        if let Some(size) = hash.maglev.as_ref().and_then(|m| m.table_size)
            && (size > MAX_MAGLEV_TABLE || !is_prime(size))
        {
            r.error(
                format!("{at}.maglev.tableSize"),
                format!("table size {size} must be a prime number at most {MAX_MAGLEV_TABLE}"),
            );
        }
        if let Some(name) = &hash.http_header_name {
            r.header_name(&format!("{at}.httpHeaderName"), name);
        }
        if hash.http_query_parameter_name.as_deref() == Some("") {
            r.error(
                format!("{at}.httpQueryParameterName"),
                "the query parameter name must not be empty",
            );
        }
        if hash.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
            r.error(
                format!("{at}.httpCookie.name"),
                "the cookie name must not be empty",
            );
        }
        if let Some(cookie) = &hash.http_cookie {
            // A zero TTL is meaningful (a session cookie), so only parse it.
            r.duration(&format!("{at}.httpCookie.ttl"), cookie.ttl.as_ref());
        }
    }
    r.at(at)
        .duration_min_1ms("warmupDurationSecs", lb.warmup_duration_secs.as_ref());
    if let Some(warmup) = &lb.warmup {
        let mut warmup_at = r.at(format!("{at}.warmup"));
        warmup_at.duration_min_1ms("duration", warmup.duration.as_ref());
        warmup_at.percent("minimumPercent", warmup.minimum_percent);
        r.number_range(
            &format!("{at}.warmup.aggression"),
            warmup.aggression,
            0.0,
            f64::MAX,
        );
    }
    if let Some(zone) = &lb.zone_aware_lb_setting {
        let size = zone.min_cluster_size.map(i64::from);
        r.int_range(
            &format!("{at}.zoneAwareLbSetting.minClusterSize"),
            size,
            1,
            i64::from(u32::MAX),
        );
    }
}

/// Connection-pool limits are counts: Istio refuses negative ones (Envoy's
/// fields are unsigned).
fn non_negative(field: String, value: Option<i32>, r: &mut Report) {
    r.int_range(&field, value.map(i64::from), 0, i64::from(i32::MAX));
}

fn connection_pool(at: &str, pool: &ConnectionPoolSettings, r: &mut Report) {
    if let Some(tcp) = &pool.tcp {
        non_negative(format!("{at}.tcp.maxConnections"), tcp.max_connections, r);
    }
    if let Some(http) = &pool.http {
        let counts = [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ];
        for (name, value) in counts {
            non_negative(format!("{at}.http.{name}"), value, r);
        }
    }
    if let Some(tcp) = &pool.tcp {
        let mut tcp_at = r.at(format!("{at}.tcp"));
        tcp_at.duration_min_1ms("connectTimeout", tcp.connect_timeout.as_ref());
        tcp_at.duration("idleTimeout", tcp.idle_timeout.as_ref());
        tcp_at.duration_min_1ms(
            "maxConnectionDuration",
            tcp.max_connection_duration.as_ref(),
        );
        if let Some(keepalive) = &tcp.tcp_keepalive {
            tcp_at.duration_min_1ms("tcpKeepalive.time", keepalive.time.as_ref());
            tcp_at.duration_min_1ms("tcpKeepalive.interval", keepalive.interval.as_ref());
        }
    }
    if let Some(http) = &pool.http {
        let mut http_at = r.at(format!("{at}.http"));
        http_at.duration_min_1ms("idleTimeout", http.idle_timeout.as_ref());
        if let Some(keepalive) = &http.http2_keep_alive {
            http_at.duration_min_1ms("http2KeepAlive.interval", keepalive.interval.as_ref());
            http_at.duration_min_1ms("http2KeepAlive.timeout", keepalive.timeout.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, field_paths, fields, object};

    #[test]
    fn negative_connection_pool_limits_are_refused() {
        let dr = |pool: &str| {
            object(
                "DestinationRule",
                "pool",
                &format!("  host: reviews\n  trafficPolicy:\n    connectionPool: {pool}\n"),
            )
        };
        assert_one(
            &dr("{tcp: {maxConnections: -1}}"),
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "-1",
        );
        assert_eq!(
            field_paths(&dr("{http: {http1MaxPendingRequests: -2, maxRetries: -3}}")),
            [
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "spec.trafficPolicy.connectionPool.http.maxRetries",
            ]
        );
        assert!(field_paths(&dr("{tcp: {maxConnections: 0}, http: {maxRetries: 3}}")).is_empty());
    }

    fn dr(spec: &str) -> String {
        object("DestinationRule", "d", spec)
    }

    #[test]
    fn dr_valid_rule_has_no_errors() {
        let yaml = dr(
            "  host: reviews\n  trafficPolicy:\n    connectionPool: {tcp: {connectTimeout: 30ms, idleTimeout: 0s}}\n    loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 0s}}}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
        );
        assert_eq!(fields(&errors_of(&yaml)), vec![]);
    }

    #[test]
    fn dr_host_must_not_be_empty() {
        assert_one(&dr("  host: ''\n"), "spec.host", "required");
    }

    #[test]
    fn dr_subset_names_must_be_unique_and_non_empty() {
        let yaml = dr("  host: r\n  subsets:\n  - {name: v1}\n  - {name: ''}\n  - {name: v1}\n");
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "spec.subsets[1].name");
        assert_eq!(got[1].0, "spec.subsets[2].name");
        assert!(got[1].1.contains("duplicate subset name \"v1\""), "{got:?}");
    }

    #[test]
    fn dr_bad_durations_are_reported_with_field_path() {
        let yaml = dr(
            "  host: r\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 1x, idleTimeout: 'y', tcpKeepalive: {time: '5', interval: 1m}}\n    outlierDetection: {interval: '10', baseEjectionTime: 30s}\n    loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: forever}}}\n",
        );
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
                "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
                "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
                "spec.trafficPolicy.outlierDetection.interval",
            ]
        );
    }

    #[test]
    fn dr_subset_and_port_level_policies_are_checked() {
        let yaml = dr(
            "  host: r\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 0}\n      outlierDetection: {maxEjectionPercent: 101}\n  subsets:\n  - name: v1\n    trafficPolicy: {connectionPool: {http: {idleTimeout: never}}}\n",
        );
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.trafficPolicy.portLevelSettings[0].port.number",
                "spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent",
                "spec.subsets[0].trafficPolicy.connectionPool.http.idleTimeout",
            ]
        );
    }

    #[test]
    fn dr_simple_and_consistent_hash_not_both() {
        let yaml = dr(
            "  host: r\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}\n",
        );
        assert_one(
            &yaml,
            "spec.trafficPolicy.loadBalancer",
            "only one of simple, consistentHash",
        );
        let yaml = dr(
            "  host: r\n  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x, maglev: {}, ringHash: {}}}\n",
        );
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got.iter()
                .all(|(f, _)| f == "spec.trafficPolicy.loadBalancer.consistentHash"),
            "{got:?}"
        );
    }

    #[test]
    fn dr_schema_ranges_apply_to_files_too() {
        let yaml = dr(
            "  host: r\n  trafficPolicy:\n    outlierDetection: {outlierDetectionHttpErrorCodes: [503, 99]}\n    retryBudget: {percent: 120}\n    loadBalancer: {warmup: {duration: 10s, minimumPercent: 101}}\n",
        );
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.trafficPolicy.retryBudget.percent",
                "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
                "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]",
            ]
        );
    }

    #[test]
    fn hash_keys_and_sizes_envoy_refuses_are_refused() {
        let lb = |hash: &str| {
            dr(&format!(
                "  host: reviews\n  trafficPolicy:\n    loadBalancer: {{consistentHash: {hash}}}\n"
            ))
        };
        let at = "spec.trafficPolicy.loadBalancer.consistentHash";
        assert_one(
            &lb("{httpQueryParameterName: ''}"),
            &format!("{at}.httpQueryParameterName"),
            "empty",
        );
        assert_one(
            &lb("{httpHeaderName: 'a b'}"),
            &format!("{at}.httpHeaderName"),
            "header name",
        );
        assert_one(
            &lb("{httpCookie: {name: ''}}"),
            &format!("{at}.httpCookie.name"),
            "empty",
        );
        assert_one(
            &lb("{useSourceIp: true, maglev: {tableSize: 100}}"),
            &format!("{at}.maglev.tableSize"),
            "prime",
        );
        assert_one(
            &lb("{useSourceIp: true, ringHash: {minimumRingSize: 8388609}}"),
            &format!("{at}.ringHash.minimumRingSize"),
            "at most",
        );
        assert!(field_paths(&lb("{useSourceIp: true, maglev: {tableSize: 65537}}")).is_empty());
    }

    #[test]
    fn durations_envoy_cannot_hold_in_nanoseconds_are_refused() {
        let pool = |timeout: &str| {
            dr(&format!(
                "  host: reviews\n  trafficPolicy:\n    connectionPool: {{tcp: {{connectTimeout: {timeout}}}}}\n"
            ))
        };
        let field = "spec.trafficPolicy.connectionPool.tcp.connectTimeout";
        assert_one(&pool("9223372036s"), field, "out of range");
        assert!(field_paths(&pool("9223372035s")).is_empty());
    }
}
