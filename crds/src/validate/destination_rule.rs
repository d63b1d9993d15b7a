//! DestinationRule checks.

use std::collections::BTreeMap;

use super::Report;
use crate::destination_rule::{
    ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};

pub(super) fn check(spec: &DestinationRuleSpec, r: &mut Report) {
    if spec.host.is_empty() {
        r.error("spec.host", "host is required");
    }
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
        r.number_range(
            &format!("{at}.retryBudget.percent"),
            budget.percent,
            0.0,
            100.0,
        );
    }
    let parts = (
        &policy.load_balancer,
        &policy.connection_pool,
        &policy.outlier_detection,
    );
    port_level_parts(at, parts, r);
    for (j, port_policy) in policy.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{j}]");
        r.port(
            &format!("{at}.port.number"),
            port_policy.port.as_ref().and_then(|p| p.number),
        );
        let parts = (
            &port_policy.load_balancer,
            &port_policy.connection_pool,
            &port_policy.outlier_detection,
        );
        port_level_parts(&at, parts, r);
    }
}

type Parts<'a> = (
    &'a Option<LoadBalancerSettings>,
    &'a Option<ConnectionPoolSettings>,
    &'a Option<OutlierDetection>,
);

/// The settings a policy and its per-port overrides share.
fn port_level_parts(at: &str, (lb, pool, outlier): Parts<'_>, r: &mut Report) {
    if let Some(lb) = lb {
        load_balancer(&format!("{at}.loadBalancer"), lb, r);
    }
    if let Some(pool) = pool {
        connection_pool(&format!("{at}.connectionPool"), pool, r);
    }
    if let Some(od) = outlier {
        let at = format!("{at}.outlierDetection");
        r.duration_min_1ms(&format!("{at}.interval"), od.interval.as_ref());
        r.duration_min_1ms(
            &format!("{at}.baseEjectionTime"),
            od.base_ejection_time.as_ref(),
        );
        r.int_range(
            &format!("{at}.maxEjectionPercent"),
            od.max_ejection_percent.map(i64::from),
            0,
            100,
        );
        r.int_range(
            &format!("{at}.minHealthPercent"),
            od.min_health_percent.map(i64::from),
            0,
            100,
        );
        for (k, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
            let field = format!("{at}.outlierDetectionHttpErrorCodes[{k}]");
            r.int_range(&field, Some(i64::from(*code)), 100, 599);
        }
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
        if let Some(cookie) = &hash.http_cookie {
            // A zero TTL is meaningful (a session cookie), so only parse it.
            r.duration(&format!("{at}.httpCookie.ttl"), cookie.ttl.as_ref());
        }
    }
    r.duration_min_1ms(
        &format!("{at}.warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    );
    if let Some(warmup) = &lb.warmup {
        r.duration_min_1ms(&format!("{at}.warmup.duration"), warmup.duration.as_ref());
        r.number_range(
            &format!("{at}.warmup.minimumPercent"),
            warmup.minimum_percent,
            0.0,
            100.0,
        );
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

fn connection_pool(at: &str, pool: &ConnectionPoolSettings, r: &mut Report) {
    if let Some(tcp) = &pool.tcp {
        let at = format!("{at}.tcp");
        r.duration_min_1ms(
            &format!("{at}.connectTimeout"),
            tcp.connect_timeout.as_ref(),
        );
        r.duration(&format!("{at}.idleTimeout"), tcp.idle_timeout.as_ref());
        r.duration_min_1ms(
            &format!("{at}.maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        if let Some(keepalive) = &tcp.tcp_keepalive {
            r.duration_min_1ms(&format!("{at}.tcpKeepalive.time"), keepalive.time.as_ref());
            r.duration_min_1ms(
                &format!("{at}.tcpKeepalive.interval"),
                keepalive.interval.as_ref(),
            );
        }
    }
    if let Some(http) = &pool.http {
        let at = format!("{at}.http");
        r.duration_min_1ms(&format!("{at}.idleTimeout"), http.idle_timeout.as_ref());
        if let Some(keepalive) = &http.http2_keep_alive {
            r.duration_min_1ms(
                &format!("{at}.http2KeepAlive.interval"),
                keepalive.interval.as_ref(),
            );
            r.duration_min_1ms(
                &format!("{at}.http2KeepAlive.timeout"),
                keepalive.timeout.as_ref(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, fields};

    fn dr(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n{spec}"
        )
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
        let got: Vec<String> = fields(&errors_of(&yaml))
            .into_iter()
            .map(|(f, _)| f)
            .collect();
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
        let got: Vec<String> = fields(&errors_of(&yaml))
            .into_iter()
            .map(|(f, _)| f)
            .collect();
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
        let got: Vec<String> = fields(&errors_of(&yaml))
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            got,
            [
                "spec.trafficPolicy.retryBudget.percent",
                "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
                "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]",
            ]
        );
    }
}
