//! TLS termination on gateway servers (Envoy's `DownstreamTlsContext`) and
//! the SDS secrets of servers that name a `credentialName`.
//!
//! - `SIMPLE`: the server presents its certificate.
//! - `MUTUAL`: clients must present a certificate the CA verifies (and,
//!   if given, carry one of `subjectAltNames`); others fail the handshake.
//! - `OPTIONAL_MUTUAL`: as MUTUAL, but a client without a certificate is let in.
//!
//! Certificates come from files on the proxy, or over SDS as
//! `kubernetes://<credentialName>` (and `kubernetes://<credentialName>-cacert`
//! for the CA), Istio's names.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, Secret, TlsCertificate,
    TlsParameters, common_tls_context, secret, tls_parameters,
};
use pilotfish_crds::{ServerTlsMode, ServerTlsSettings, TlsProtocol};

use crate::diagnostics::Diagnostic;
use crate::emit::context::Context;
use crate::emit::envoy::sds::secret_config as sds;
pub use crate::emit::envoy::sds::{ca_secret_name, certificate_secret_name};
use crate::emit::gateway::gateway_servers::{self, CertificateSource, GatewayServer, ServerKind};
use crate::emit::policy::upstream_tls;
use crate::names;
use crate::protobuf;
use crate::proxy::ProxyKind;

/// ALPN offered by terminated HTTPS servers.
const HTTPS_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The TLS transport socket of a terminated server; `None` for servers that
/// do not terminate TLS. HTTPS servers offer HTTP ALPN; TLS servers in front
/// of TCP offer none (their clients' protocol is opaque).
pub fn transport_socket(server: &GatewayServer) -> Option<TransportSocket> {
    let source = server.certificate.as_ref()?;
    let tls = server.server.tls.as_ref()?;
    let mode = tls.mode.unwrap_or(ServerTlsMode::Simple);
    let verifies_clients = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    let mut common = CommonTlsContext {
        tls_params: tls_parameters(tls),
        alpn_protocols: match server.kind {
            ServerKind::Https => HTTPS_ALPN.iter().map(|p| p.to_string()).collect(),
            _ => Vec::new(),
        },
        ..Default::default()
    };
    match source {
        CertificateSource::Files {
            certificate_chain,
            private_key,
            ca_certificates,
            ca_crl,
        } => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(upstream_tls::file(certificate_chain)),
                private_key: Some(upstream_tls::file(private_key)),
                ..Default::default()
            }];
            if verifies_clients {
                let mut validation = client_validation(tls);
                validation.trusted_ca = ca_certificates.as_deref().map(upstream_tls::file);
                validation.crl = ca_crl.as_deref().map(upstream_tls::file);
                common.validation_context_type =
                    Some(common_tls_context::ValidationContextType::ValidationContext(validation));
            }
        }
        CertificateSource::Credential { name, .. } => {
            common.tls_certificate_sds_secret_configs = vec![sds(certificate_secret_name(name))];
            if verifies_clients {
                let combined = common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(client_validation(tls)),
                    validation_context_sds_secret_config: Some(sds(ca_secret_name(name))),
                    ..Default::default()
                };
                common.validation_context_type = Some(
                    common_tls_context::ValidationContextType::CombinedValidationContext(combined),
                );
            }
        }
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(protobuf::bool_value(mode == ServerTlsMode::Mutual)),
        ..Default::default()
    };
    Some(TransportSocket {
        name: names::TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(protobuf::any(
            context,
        ))),
    })
}

/// SANs, SPKI pins and certificate hashes a client certificate must match.
fn client_validation(tls: &ServerTlsSettings) -> CertificateValidationContext {
    CertificateValidationContext {
        match_typed_subject_alt_names: tls
            .subject_alt_names
            .iter()
            .map(|san| upstream_tls::san_matcher(san))
            .collect(),
        verify_certificate_spki: tls.verify_certificate_spki.clone(),
        verify_certificate_hash: tls.verify_certificate_hash.clone(),
        ..Default::default()
    }
}

fn tls_parameters(tls: &ServerTlsSettings) -> Option<TlsParameters> {
    let version = |v: Option<TlsProtocol>| v.map_or(0, |v| protocol(v) as i32);
    let params = TlsParameters {
        tls_minimum_protocol_version: version(tls.min_protocol_version),
        tls_maximum_protocol_version: version(tls.max_protocol_version),
        cipher_suites: tls.cipher_suites.clone(),
        ecdh_curves: tls.ecdh_curves.clone(),
        ..Default::default()
    };
    (params != TlsParameters::default()).then_some(params)
}

fn protocol(v: TlsProtocol) -> tls_parameters::TlsProtocol {
    use tls_parameters::TlsProtocol as Envoy;
    match v {
        TlsProtocol::TlsAuto => Envoy::TlsAuto,
        TlsProtocol::TlsV1_0 => Envoy::TlSv10,
        TlsProtocol::TlsV1_1 => Envoy::TlSv11,
        TlsProtocol::TlsV1_2 => Envoy::TlSv12,
        TlsProtocol::TlsV1_3 => Envoy::TlSv13,
    }
}

/// The credentials the proxy's terminated servers name (routers only).
pub fn server_credentials(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    if ctx.proxy.kind != ProxyKind::Router {
        return Vec::new();
    }
    gateway_servers::plan(ctx, diags)
        .iter()
        .flat_map(|port| &port.servers)
        .filter_map(|server| match &server.certificate {
            Some(CertificateSource::Credential { name, .. }) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// SDS: the credentials the proxy's gateway servers and DestinationRules
/// name, found in its namespace: `kubernetes://<name>` (certificate and
/// key) and, when the Secret holds a CA, `kubernetes://<name>-cacert`.
/// Sorted by name.
pub fn secrets(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Secret> {
    let mut names = server_credentials(ctx, diags);
    names.extend(
        ctx.destination_rules
            .found_credentials()
            .into_iter()
            .map(|c| c.name),
    );
    let mut out: BTreeMap<String, Secret> = BTreeMap::new();
    for name in names {
        let key = (ctx.proxy.namespace.clone(), name.clone());
        // Only credentials that exist are named by the plan and the rules.
        let Some(credential) = ctx.mesh.credentials.get(&key) else {
            continue;
        };
        let certificate = secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&credential.certificate_chain)),
            private_key: Some(inline(&credential.private_key)),
            ..Default::default()
        });
        let cert_name = certificate_secret_name(&name);
        out.insert(
            cert_name.clone(),
            Secret {
                name: cert_name,
                r#type: Some(certificate),
            },
        );
        if let Some(ca) = &credential.ca_certificates {
            let validation = secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(ca)),
                ..Default::default()
            });
            let ca_name = ca_secret_name(&name);
            out.insert(
                ca_name.clone(),
                Secret {
                    name: ca_name,
                    r#type: Some(validation),
                },
            );
        }
    }
    out.into_values().collect()
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}
