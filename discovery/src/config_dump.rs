//! A readable dump of what Pilotfish serves a proxy. envoy-types has no
//! protobuf JSON mapping, so each resource is shown by name, size and its
//! decoded structure in Rust debug notation; Envoy's own `/config_dump` on
//! the proxy remains the authoritative JSON view.
//!
//! Secrets are shown as Envoy's own config dump shows them: certificates in
//! full, key material (private keys, passwords, PKCS#12 bundles, session
//! ticket keys, generic secrets) replaced by `[redacted]`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Value, json};

use crate::snapshot::Snapshot;
use crate::xds_types::XdsType;

pub fn config_dump(snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for ty in XdsType::ALL {
        let of_type = snapshot.of(ty);
        let selected = of_type.select(None);
        let resources: Vec<Value> = selected
            .iter()
            .map(|(name, any)| json!({"name": name, "bytes": any.value.len(), "resource": describe(ty, any)}))
            .collect();
        types.insert(
            ty.short().to_string(),
            json!({"type_url": ty.type_url(), "version": of_type.selection_version(None), "resources": resources}),
        );
    }
    json!({"mesh_version": snapshot.mesh_version, "types": types})
}

fn describe(ty: XdsType, any: &Any) -> String {
    let bytes = any.value.as_slice();
    let decoded = match ty {
        XdsType::Cluster => Cluster::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Endpoint => ClusterLoadAssignment::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Listener => Listener::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Route => RouteConfiguration::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Secret => Secret::decode(bytes).map(|mut m| {
            redact(&mut m);
            format!("{m:#?}")
        }),
    };
    decoded.unwrap_or_else(|e| format!("<undecodable: {e}>"))
}

/// Replaces key material with `[redacted]` (as Envoy's own dump does) and
/// shows PEM certificates as text rather than byte lists.
fn redact(secret: &mut Secret) {
    match &mut secret.r#type {
        Some(secret::Type::TlsCertificate(cert)) => {
            for source in [&mut cert.private_key, &mut cert.password, &mut cert.pkcs12] {
                source.iter_mut().for_each(hide);
            }
            cert.certificate_chain.iter_mut().for_each(as_text);
        }
        Some(secret::Type::ValidationContext(validation)) => {
            validation.trusted_ca.iter_mut().for_each(as_text)
        }
        Some(secret::Type::SessionTicketKeys(keys)) => keys.keys.iter_mut().for_each(hide),
        Some(secret::Type::GenericSecret(generic)) => {
            generic.secret.iter_mut().for_each(hide);
            generic.secrets.values_mut().for_each(hide);
        }
        None => {}
    }
}

fn hide(source: &mut DataSource) {
    source.specifier = Some(data_source::Specifier::InlineString("[redacted]".into()));
}

fn as_text(source: &mut DataSource) {
    if let Some(data_source::Specifier::InlineBytes(bytes)) = &source.specifier
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        source.specifier = Some(data_source::Specifier::InlineString(text.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, TlsCertificate,
    };
    use pilotfish_translate::XdsResources;

    use super::*;

    fn inline(bytes: &[u8]) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
            ..Default::default()
        })
    }

    #[test]
    fn secrets_are_dumped_with_certificates_but_without_key_material() {
        let resources = XdsResources {
            secrets: vec![
                Secret {
                    name: "kubernetes://gw-cert".into(),
                    r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: inline(b"-----BEGIN CERTIFICATE-----\nCHAIN"),
                        private_key: inline(b"-----BEGIN PRIVATE KEY-----\nSECRETKEY"),
                        ..Default::default()
                    })),
                },
                Secret {
                    name: "kubernetes://gw-cert-cacert".into(),
                    r#type: Some(secret::Type::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: inline(b"CLIENTCA"),
                            ..Default::default()
                        },
                    )),
                },
            ],
            ..Default::default()
        };
        let snapshot = Snapshot::build(1, resources, None);
        let dump = config_dump(&snapshot);
        let text = dump.to_string();
        assert!(!text.contains("SECRETKEY"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        let sds = &dump["types"]["sds"];
        assert_eq!(sds["resources"][0]["name"], "kubernetes://gw-cert");
        assert_eq!(sds["resources"][1]["name"], "kubernetes://gw-cert-cacert");
        let cert = sds["resources"][0]["resource"].as_str().unwrap_or_default();
        assert!(cert.contains("CHAIN"), "certificates are shown: {cert}");
        assert!(text.contains("CLIENTCA"));
    }
}
