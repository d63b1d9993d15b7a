//! DestinationRule `tls`: TLS origination on a cluster (Envoy's
//! `UpstreamTlsContext` as the cluster's transport socket).
//!
//! - `DISABLE` (or no mode: Istio's default): plaintext.
//! - `SIMPLE`: TLS; the server certificate is verified against
//!   `caCertificates` (a file on the proxy's host) and, if given, its
//!   `subjectAltNames`; `sni` is sent as given, or, for HTTP clusters, taken
//!   from each request's Host (Envoy's `auto_sni`), as Istio does.
//! - `MUTUAL`: as SIMPLE, presenting `clientCertificate`/`privateKey`.
//! - `credentialName`: the client certificate (MUTUAL) and the CA (its
//!   `ca.crt`, else `caCertificates`) come over SDS from the Kubernetes
//!   Secret of that name in the proxy's namespace, as Istio's
//!   `kubernetes://<name>` and `kubernetes://<name>-cacert`. A Secret the
//!   proxy's namespace does not hold is reported; the cluster then uses the
//!   file fields only.
//! - `ISTIO_MUTUAL`: mesh mTLS with the proxy's workload certificate
//!   ([`crate::emit::envoy::mesh_tls`]), for proxies that hold one; for
//!   others (not authenticated on the secure xDS port) it is reported and
//!   the cluster stays plaintext.
//!
//! Problems are reported once per DestinationRule section
//! ([`diagnostics`]), not once per cluster the section applies to.
//!
//! File paths are the proxy's: Envoy rejects a cluster whose CA or
//! certificate file it cannot read, which Pilotfish cannot check from here.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use pilotfish_crds::{ClientTlsMode, ClientTlsSettings};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::envoy::sds;
use crate::names;
use crate::protobuf;

/// What a cluster gets from a `tls` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Origination {
    pub transport_socket: TransportSocket,
    /// No `sni` was given: HTTP clusters take it from the request's Host.
    pub auto_sni: bool,
    /// Verify the server certificate against the SNI sent (auto SNI with a
    /// CA and no explicit `subjectAltNames`).
    pub auto_san_validation: bool,
}

/// The `credentialName` of a `tls` section as found in the proxy's
/// namespace; `None` when the section names none or it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCredential {
    pub name: String,
    /// The Secret holds a CA (`ca.crt`/`cacert`) to verify servers with.
    pub has_ca: bool,
}

/// The transport socket for `tls`, or `None` when the cluster stays
/// plaintext (DISABLE, ISTIO_MUTUAL, MUTUAL without a client certificate).
/// `alpn` is offered in the handshake (`h2` for HTTP/2 upstreams).
pub fn origination(
    tls: &ClientTlsSettings,
    alpn: &[&str],
    credential: Option<&FoundCredential>,
) -> Option<Origination> {
    let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
    let mut common = CommonTlsContext {
        alpn_protocols: alpn.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    match (mode, credential) {
        (ClientTlsMode::Disable | ClientTlsMode::IstioMutual, _) => return None,
        (ClientTlsMode::Simple, _) => {}
        (ClientTlsMode::Mutual, Some(found)) => {
            common.tls_certificate_sds_secret_configs = vec![sds::secret_config(
                sds::certificate_secret_name(&found.name),
            )];
        }
        (ClientTlsMode::Mutual, None) => common.tls_certificates = vec![client_certificate(tls)?],
    }
    let verifying = match credential.filter(|c| c.has_ca) {
        Some(found) if tls.insecure_skip_verify != Some(true) => {
            let combined = common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: san_matchers(tls),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds::secret_config(
                    sds::ca_secret_name(&found.name),
                )),
                ..Default::default()
            };
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(combined),
            );
            true
        }
        _ => {
            let validation = validation_context(tls);
            let verifying = validation.is_some();
            common.validation_context_type =
                validation.map(common_tls_context::ValidationContextType::ValidationContext);
            verifying
        }
    };
    let sni = tls.sni.clone().unwrap_or_default();
    let context = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: sni.clone(),
        ..Default::default()
    };
    Some(Origination {
        transport_socket: TransportSocket {
            name: names::TLS_TRANSPORT_SOCKET.to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(protobuf::any(
                context,
            ))),
        },
        auto_sni: sni.is_empty(),
        auto_san_validation: sni.is_empty() && verifying && tls.subject_alt_names.is_empty(),
    })
}

pub(crate) fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.trim().is_empty())
}

fn client_certificate(tls: &ClientTlsSettings) -> Option<TlsCertificate> {
    let chain = non_empty(&tls.client_certificate)?;
    let key = non_empty(&tls.private_key)?;
    Some(TlsCertificate {
        certificate_chain: Some(file(chain)),
        private_key: Some(file(key)),
        ..Default::default()
    })
}

/// Verification of the server: none with `insecureSkipVerify` or without
/// a CA file (reported), else the CA, the CRL and the SANs.
fn validation_context(tls: &ClientTlsSettings) -> Option<CertificateValidationContext> {
    if tls.insecure_skip_verify == Some(true) {
        return None;
    }
    let ca = non_empty(&tls.ca_certificates)?;
    Some(CertificateValidationContext {
        trusted_ca: Some(file(ca)),
        crl: non_empty(&tls.ca_crl).map(file),
        match_typed_subject_alt_names: san_matchers(tls),
        ..Default::default()
    })
}

fn san_matchers(tls: &ClientTlsSettings) -> Vec<SubjectAltNameMatcher> {
    tls.subject_alt_names
        .iter()
        .filter(|san| !san.is_empty())
        .map(|san| san_matcher(san))
        .collect()
}

/// `spiffe://...` and other URIs match URI SANs, IP literals IP SANs, the
/// rest DNS SANs (where Envoy honours wildcard certificates).
pub(crate) fn san_matcher(san: &str) -> SubjectAltNameMatcher {
    let san_type = if san.contains("://") {
        SanType::Uri
    } else if san.parse::<IpAddr>().is_ok() {
        SanType::IpAddress
    } else {
        SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(san.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the proxy's namespace holds for a section's `credentialName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialLookup<'c> {
    /// The section names no credential.
    NotNamed,
    Found(&'c FoundCredential),
    /// Named, but no such Secret in `namespace`.
    Missing {
        namespace: &'c str,
    },
}

/// Problems of one `tls` section at `path` of DestinationRule `object`.
pub fn diagnostics(
    object: &str,
    path: &str,
    tls: &ClientTlsSettings,
    credential: CredentialLookup,
    workload_certificate: bool,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let unsupported = |field: &str, message: String| {
        Diagnostic::new(DiagnosticKind::Unsupported, object, message).at(format!("{path}.{field}"))
    };
    let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
    match mode {
        ClientTlsMode::Disable => return out,
        ClientTlsMode::IstioMutual => {
            if !workload_certificate {
                out.push(unsupported(
                    "mode",
                    "mode ISTIO_MUTUAL needs the proxy's workload certificate, which only proxies authenticated on the secure xDS port get; this proxy's cluster stays plaintext".into(),
                ));
            }
            return out;
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    let has_files =
        non_empty(&tls.client_certificate).is_some() && non_empty(&tls.private_key).is_some();
    let found = match credential {
        CredentialLookup::Found(found) => Some(found),
        _ => None,
    };
    if let CredentialLookup::Missing { namespace } = credential {
        let consequence = if mode == ClientTlsMode::Mutual && !has_files {
            "the cluster stays plaintext"
        } else {
            "only the file fields (caCertificates, clientCertificate, privateKey) are used"
        };
        let name = non_empty(&tls.credential_name).unwrap_or_default();
        out.push(
            Diagnostic::new(
                DiagnosticKind::MissingCredential,
                object,
                format!("no Secret {namespace}/{name} with a certificate and key (credentials are read from the proxy's namespace); {consequence}"),
            )
            .at(format!("{path}.credentialName")),
        );
    } else if mode == ClientTlsMode::Mutual && !has_files && found.is_none() {
        let field = if non_empty(&tls.client_certificate).is_none() {
            "clientCertificate"
        } else {
            "privateKey"
        };
        out.push(Diagnostic::invalid(
            object,
            format!("{path}.{field}"),
            "mode MUTUAL needs both clientCertificate and privateKey; the cluster stays plaintext",
        ));
    }
    let has_files = has_files || found.is_some();
    let skip_verify = tls.insecure_skip_verify == Some(true);
    let has_ca = non_empty(&tls.ca_certificates).is_some() || found.is_some_and(|f| f.has_ca);
    if !skip_verify && !has_ca && (mode == ClientTlsMode::Simple || has_files) {
        out.push(unsupported(
            "caCertificates",
            "verifying against the system's CA store is not supported yet: without caCertificates the server certificate is NOT verified (set insecureSkipVerify: true to say that is intended)".into(),
        ));
    }
    if non_empty(&tls.ca_crl).is_some() && (!has_ca || skip_verify) {
        out.push(Diagnostic::invalid(
            object,
            format!("{path}.caCrl"),
            "caCrl applies only when the server certificate is verified against caCertificates; ignored",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> ClientTlsSettings {
        serde_json::from_str(json).expect("tls settings")
    }

    fn context(o: &Origination) -> UpstreamTlsContext {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &o.transport_socket.config_type
        else {
            panic!("no typed config")
        };
        protobuf::unpack(any).expect("UpstreamTlsContext")
    }

    fn validation(c: &UpstreamTlsContext) -> Option<CertificateValidationContext> {
        match c.common_tls_context.clone()?.validation_context_type? {
            common_tls_context::ValidationContextType::ValidationContext(v) => Some(v),
            _ => None,
        }
    }

    fn filename(d: &Option<DataSource>) -> Option<String> {
        match d.clone()?.specifier? {
            data_source::Specifier::Filename(f) => Some(f),
            _ => None,
        }
    }

    #[test]
    fn disable_istio_mutual_and_no_mode_stay_plaintext() {
        for json in [
            r#"{"mode":"DISABLE"}"#,
            r#"{"mode":"ISTIO_MUTUAL"}"#,
            r#"{"sni":"a.example.com"}"#,
            r#"{"mode":"MUTUAL","caCertificates":"/ca.pem"}"#,
        ] {
            assert_eq!(origination(&settings(json), &[], None), None, "{json}");
        }
    }

    #[test]
    fn simple_verifies_with_the_ca_sans_and_sni() {
        let tls = settings(
            r#"{"mode":"SIMPLE","caCertificates":"/etc/ca.pem","caCrl":"/etc/crl.pem","sni":"db.example.com","subjectAltNames":["db.example.com","spiffe://td/ns/x","10.0.0.1"]}"#,
        );
        let o = origination(&tls, &["h2"], None).unwrap();
        assert_eq!(o.transport_socket.name, "envoy.transport_sockets.tls");
        assert!(!o.auto_sni && !o.auto_san_validation);
        let c = context(&o);
        assert_eq!(c.sni, "db.example.com");
        assert_eq!(
            c.common_tls_context.as_ref().unwrap().alpn_protocols,
            ["h2"]
        );
        assert!(
            c.common_tls_context
                .as_ref()
                .unwrap()
                .tls_certificates
                .is_empty()
        );
        let v = validation(&c).unwrap();
        assert_eq!(filename(&v.trusted_ca).as_deref(), Some("/etc/ca.pem"));
        assert_eq!(filename(&v.crl).as_deref(), Some("/etc/crl.pem"));
        let types: Vec<i32> = v
            .match_typed_subject_alt_names
            .iter()
            .map(|m| m.san_type)
            .collect();
        assert_eq!(
            types,
            [
                SanType::Dns as i32,
                SanType::Uri as i32,
                SanType::IpAddress as i32
            ]
        );
        assert!(
            diagnostics(
                "DestinationRule default/db",
                "spec.trafficPolicy.tls",
                &tls,
                CredentialLookup::NotNamed,
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn simple_without_sni_uses_auto_sni_and_validates_the_san_against_it() {
        let o = origination(
            &settings(r#"{"mode":"SIMPLE","caCertificates":"/ca.pem"}"#),
            &[],
            None,
        )
        .unwrap();
        assert!(o.auto_sni && o.auto_san_validation);
        assert_eq!(context(&o).sni, "");
        let skip =
            settings(r#"{"mode":"SIMPLE","caCertificates":"/ca.pem","insecureSkipVerify":true}"#);
        let o = origination(&skip, &[], None).unwrap();
        assert!(o.auto_sni && !o.auto_san_validation);
        assert_eq!(
            validation(&context(&o)),
            None,
            "insecureSkipVerify: no verification"
        );
    }

    #[test]
    fn mutual_presents_the_client_certificate() {
        let tls = settings(
            r#"{"mode":"MUTUAL","clientCertificate":"/c.pem","privateKey":"/k.pem","caCertificates":"/ca.pem"}"#,
        );
        let c = context(&origination(&tls, &[], None).unwrap());
        let cert = &c.common_tls_context.unwrap().tls_certificates[0];
        assert_eq!(filename(&cert.certificate_chain).as_deref(), Some("/c.pem"));
        assert_eq!(filename(&cert.private_key).as_deref(), Some("/k.pem"));
    }

    /// Diagnostics of `json`, whose `credentialName` (if any) the proxy's
    /// namespace does not hold.
    fn fields(json: &str) -> Vec<(DiagnosticKind, String, String)> {
        let tls = settings(json);
        let lookup = match tls.credential_name {
            Some(_) => CredentialLookup::Missing {
                namespace: "default",
            },
            None => CredentialLookup::NotNamed,
        };
        diagnostics(
            "DestinationRule default/r",
            "spec.trafficPolicy.tls",
            &tls,
            lookup,
            false,
        )
        .into_iter()
        .map(|d| (d.kind, d.field.unwrap_or_default(), d.message))
        .collect()
    }

    #[test]
    fn istio_mutual_without_a_workload_certificate_is_reported() {
        let found = fields(r#"{"mode":"ISTIO_MUTUAL"}"#);
        assert_eq!(found.len(), 1);
        let (kind, field, message) = &found[0];
        assert_eq!(*kind, DiagnosticKind::Unsupported);
        assert_eq!(field, "spec.trafficPolicy.tls.mode");
        assert!(
            message.contains("ISTIO_MUTUAL needs the proxy's workload certificate"),
            "{message}"
        );
        assert!(message.contains("plaintext"), "{message}");
    }

    #[test]
    fn incomplete_or_unverifiable_settings_are_reported() {
        assert!(fields(r#"{"mode":"DISABLE","credentialName":"x"}"#).is_empty());
        let f = fields(r#"{"mode":"SIMPLE","credentialName":"secret"}"#);
        let names: Vec<_> = f.iter().map(|(k, f, _)| (*k, f.as_str())).collect();
        assert_eq!(
            names,
            [
                (
                    DiagnosticKind::MissingCredential,
                    "spec.trafficPolicy.tls.credentialName"
                ),
                (
                    DiagnosticKind::Unsupported,
                    "spec.trafficPolicy.tls.caCertificates"
                ),
            ]
        );
        assert!(f[1].2.contains("NOT verified"));
        let f = fields(r#"{"mode":"MUTUAL","privateKey":"/k.pem","caCertificates":"/ca.pem"}"#);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, DiagnosticKind::InvalidField);
        assert_eq!(f[0].1, "spec.trafficPolicy.tls.clientCertificate");
        let f = fields(r#"{"mode":"SIMPLE","insecureSkipVerify":true,"caCrl":"/crl.pem"}"#);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1, "spec.trafficPolicy.tls.caCrl");
    }

    #[test]
    fn a_found_credential_comes_over_sds_with_its_ca() {
        let tls = settings(
            r#"{"mode":"MUTUAL","credentialName":"client","subjectAltNames":["db.example.com"]}"#,
        );
        let found = FoundCredential {
            name: "client".into(),
            has_ca: true,
        };
        let c = context(&origination(&tls, &[], Some(&found)).unwrap());
        let common = c.common_tls_context.unwrap();
        assert!(common.tls_certificates.is_empty());
        assert_eq!(
            common.tls_certificate_sds_secret_configs[0].name,
            "kubernetes://client"
        );
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
            common.validation_context_type
        else {
            panic!("no combined validation context")
        };
        assert_eq!(
            v.validation_context_sds_secret_config.unwrap().name,
            "kubernetes://client-cacert"
        );
        assert_eq!(
            v.default_validation_context
                .unwrap()
                .match_typed_subject_alt_names
                .len(),
            1
        );
        let lookup = CredentialLookup::Found(&found);
        assert!(
            diagnostics(
                "DestinationRule default/r",
                "spec.trafficPolicy.tls",
                &tls,
                lookup,
                false
            )
            .is_empty()
        );
    }
}
