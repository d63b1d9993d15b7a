//! Gateway checks.

use super::{Report, hosts};
use crate::gateway::GatewaySpec;

pub(super) fn check(spec: &GatewaySpec, r: &mut Report) {
    if spec.servers.is_empty() {
        r.error("spec.servers", "a gateway needs at least one server");
    }
    for (i, server) in spec.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        r.port(&format!("{at}.port.number"), Some(server.port.number));
        if server.hosts.is_empty() {
            r.error(format!("{at}.hosts"), "a server needs at least one host");
        }
        for (j, host) in server.hosts.iter().enumerate() {
            r.host(&format!("{at}.hosts[{j}]"), host, hosts::gateway_host);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, fields, object};

    fn gw(servers: &str) -> String {
        let spec = format!("  selector: {{istio: ingressgateway}}\n  servers:\n{servers}");
        object("Gateway", "g", &spec)
    }

    #[test]
    fn gw_valid_server_has_no_errors() {
        let yaml = gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n");
        assert_eq!(fields(&errors_of(&yaml)), vec![]);
    }

    #[test]
    fn gw_port_must_be_1_to_65535() {
        let yaml = gw("  - port: {number: 70000, name: http, protocol: HTTP}\n    hosts: ['*']\n");
        assert_one(&yaml, "spec.servers[0].port.number", "1..=65535");
        let yaml = gw("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n");
        assert_one(&yaml, "spec.servers[0].port.number", "1..=65535");
    }

    #[test]
    fn gw_server_needs_a_host() {
        let yaml = gw("  - port: {number: 80, name: http, protocol: HTTP}\n");
        assert_one(&yaml, "spec.servers[0].hosts", "at least one host");
    }

    #[test]
    fn gw_needs_a_server() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {selector: {istio: ingressgateway}}\n";
        assert_one(yaml, "spec.servers", "at least one server");
    }
}
