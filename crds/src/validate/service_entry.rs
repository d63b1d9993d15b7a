//! ServiceEntry checks, including the rules Istio's CRD states in CEL.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Report, hosts};
use crate::service_entry::{Resolution, ServiceEntrySpec};

const UNIX_PREFIX: &str = "unix://";

pub(super) fn check(spec: &ServiceEntrySpec, r: &mut Report) {
    if spec.hosts.is_empty() {
        r.error("spec.hosts", "at least one host is required");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host == "*" {
            r.error(format!("spec.hosts[{i}]"), "\"*\" is not a valid host");
        } else {
            r.host(&format!("spec.hosts[{i}]"), host, hosts::wildcard_domain);
        }
    }
    r.export_to(&spec.export_to);
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    for (i, address) in spec.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}]");
        if address.parse::<IpAddr>().is_ok() {
            continue;
        }
        if address.parse::<IpNet>().is_err() {
            r.error(
                at,
                format!("{address:?} is not an IP address or CIDR range"),
            );
        } else if !matches!(resolution, Resolution::None | Resolution::Static) {
            r.error(
                at,
                "CIDR ranges are allowed only with resolution NONE or STATIC",
            );
        }
    }
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        r.port(&format!("{at}.number"), Some(port.number));
        if port.target_port.is_some() {
            r.port(&format!("{at}.targetPort"), port.target_port);
        }
        if let Some(first) = seen.insert(port.number, i) {
            r.error(
                format!("{at}.number"),
                format!("duplicate port {} (also spec.ports[{first}])", port.number),
            );
        }
    }
    endpoints(spec, resolution, r);
}

fn endpoints(spec: &ServiceEntrySpec, resolution: Resolution, r: &mut Report) {
    if spec.endpoints.is_empty() {
        return;
    }
    if spec.workload_selector.is_some() {
        r.error(
            "spec.endpoints",
            "endpoints and workloadSelector cannot be combined",
        );
    }
    match resolution {
        Resolution::None => r.error("spec.endpoints", "resolution NONE cannot have endpoints"),
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => r.error(
            "spec.endpoints",
            "resolution DNS_ROUND_ROBIN allows at most one endpoint",
        ),
        _ => {}
    }
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        for (name, port) in &ep.ports {
            r.port(&format!("{at}.ports.{name}"), Some(*port));
        }
        let Some(address) = &ep.address else {
            // An endpoint reached through a network's gateway needs no address.
            if ep.network.is_none() {
                r.error(
                    format!("{at}.address"),
                    "an endpoint needs an address or a network",
                );
            }
            continue;
        };
        let unix = address.starts_with(UNIX_PREFIX);
        if resolution == Resolution::Static && !unix && address.parse::<IpAddr>().is_err() {
            r.error(
                format!("{at}.address"),
                format!("resolution STATIC needs IP addresses, not {address:?}"),
            );
        }
        if unix && !ep.ports.is_empty() {
            r.error(
                format!("{at}.ports"),
                "a unix socket endpoint cannot have ports",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, field_paths, fields, object};

    fn se(spec: &str) -> String {
        object("ServiceEntry", "s", spec)
    }

    const PORTS: &str = "  ports: [{number: 80, name: http, protocol: HTTP}]\n";

    #[test]
    fn se_valid_entries_have_no_errors() {
        let stat = se(&format!(
            "  hosts: [db.example]\n  addresses: [10.0.0.1, 10.1.0.0/16, 'fd00::/8']\n{PORTS}  resolution: STATIC\n  endpoints: [{{address: 10.0.0.5}}, {{address: 'unix:///var/run/db.sock'}}]\n"
        ));
        assert_eq!(fields(&errors_of(&stat)), vec![]);
        let dns = se(&format!(
            "  hosts: [api.example]\n{PORTS}  resolution: DNS\n  endpoints: [{{address: a.example}}]\n"
        ));
        assert_eq!(fields(&errors_of(&dns)), vec![]);
    }

    #[test]
    fn se_hosts_must_not_be_empty() {
        assert_one(
            &se(&format!("  hosts: []\n{PORTS}")),
            "spec.hosts",
            "at least one host",
        );
        assert_one(
            &se(&format!("  hosts: ['*']\n{PORTS}")),
            "spec.hosts[0]",
            "not a valid host",
        );
    }

    #[test]
    fn se_ports_must_be_in_range_and_unique() {
        let yaml = se(
            "  hosts: [a.example]\n  ports: [{number: 80, name: a}, {number: 0, name: b}, {number: 80, name: c}]\n",
        );
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "spec.ports[1].number");
        assert_eq!(got[1].0, "spec.ports[2].number");
        assert!(got[1].1.contains("duplicate port 80"), "{got:?}");
    }

    #[test]
    fn se_static_endpoints_need_ip_addresses() {
        let yaml = se(&format!(
            "  hosts: [a.example]\n{PORTS}  resolution: STATIC\n  endpoints: [{{address: db.internal}}]\n"
        ));
        assert_one(
            &yaml,
            "spec.endpoints[0].address",
            "STATIC needs IP addresses",
        );
    }

    #[test]
    fn se_addresses_must_be_ips_or_cidrs() {
        let yaml = se(&format!(
            "  hosts: [a.example]\n  addresses: [not-an-ip, 10.0.0.0/33]\n{PORTS}"
        ));
        let got = field_paths(&yaml);
        assert_eq!(got, ["spec.addresses[0]", "spec.addresses[1]"]);
        let yaml = se(&format!(
            "  hosts: [a.example]\n  addresses: [10.0.0.0/8]\n{PORTS}  resolution: DNS\n"
        ));
        assert_one(&yaml, "spec.addresses[0]", "CIDR ranges are allowed only");
    }

    #[test]
    fn se_endpoint_rules_from_istio_cel() {
        let yaml = se(&format!(
            "  hosts: [a.example]\n{PORTS}  endpoints: [{{address: 10.0.0.1}}]\n"
        ));
        assert_one(
            &yaml,
            "spec.endpoints",
            "resolution NONE cannot have endpoints",
        );
        let yaml = se(&format!(
            "  hosts: [a.example]\n{PORTS}  resolution: STATIC\n  workloadSelector: {{labels: {{app: db}}}}\n  endpoints: [{{address: 10.0.0.1}}]\n"
        ));
        assert_one(&yaml, "spec.endpoints", "cannot be combined");
    }
}
