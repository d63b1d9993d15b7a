//! Gateway checks.

use super::{Report, hosts};
use crate::gateway::{GatewaySpec, ServerTlsMode, ServerTlsSettings};

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
        let protocol = server.port.protocol.as_deref().unwrap_or_default();
        if !PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
            r.error(
                format!("{at}.port.protocol"),
                format!("{protocol:?} is not one of {}", PROTOCOLS.join(", ")),
            );
        }
        let terminates = ["HTTPS", "TLS"]
            .iter()
            .any(|p| p.eq_ignore_ascii_case(protocol));
        match &server.tls {
            None if terminates => r.error(
                format!("{at}.tls"),
                "a server on an HTTPS or TLS port needs tls settings",
            ),
            Some(tls) => tls_settings(&format!("{at}.tls"), tls, r),
            None => {}
        }
    }
}

/// The port protocols Istio's Gateway accepts (case-insensitively).
const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS",
];

/// Certificates that a terminating server needs when no `credentialName`
/// supplies them, as Istio's webhook requires.
fn tls_settings(at: &str, tls: &ServerTlsSettings, r: &mut Report) {
    let from_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
    let files = from_credential || !tls.tls_certificates.is_empty();
    let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
    if matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) && !files
    {
        if tls
            .server_certificate
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            r.error(
                format!("{at}.serverCertificate"),
                "SIMPLE and MUTUAL TLS need a server certificate (or credentialName)",
            );
        }
        if tls.private_key.as_deref().unwrap_or_default().is_empty() {
            r.error(
                format!("{at}.privateKey"),
                "SIMPLE and MUTUAL TLS need a private key (or credentialName)",
            );
        }
    }
    if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        && !from_credential
        && tls.ca_cert_credential_name.is_none()
        && tls
            .ca_certificates
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        r.error(
            format!("{at}.caCertificates"),
            "MUTUAL TLS needs a CA bundle to verify clients (or credentialName)",
        );
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
    fn gw_protocols_and_terminating_tls_follow_istio() {
        let yaml = gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n");
        assert_one(&yaml, "spec.servers[0].tls", "needs tls settings");
        let yaml = gw("  - port: {number: 80, name: h, protocol: SPDY}\n    hosts: ['*']\n");
        assert_one(&yaml, "spec.servers[0].port.protocol", "is not one of");
        let yaml = gw(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n",
        );
        assert_one(&yaml, "spec.servers[0].tls.caCertificates", "CA bundle");
        let yaml = gw(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, privateKey: /k.pem}\n",
        );
        assert_one(
            &yaml,
            "spec.servers[0].tls.serverCertificate",
            "server certificate",
        );
        let fine = gw(
            "  - port: {number: 443, name: https, protocol: https}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: gw-cert}\n",
        );
        assert!(errors_of(&fine).is_empty());
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
