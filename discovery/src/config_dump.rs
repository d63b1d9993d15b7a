//! A dump of what Pilotfish serves a proxy: each resource by name, size and
//! content in Envoy's own JSON (the protobuf JSON mapping Envoy's
//! `/config_dump` prints: `"@type"` on every `Any`, durations as "5s",
//! enums by name), so the two dumps can be compared side by side.
//!
//! Secrets are shown as Envoy's own config dump shows them: certificates in
//! full, key material (private keys, passwords, PKCS#12 bundles, session
//! ticket keys, generic secrets) replaced by `[redacted]` before the
//! conversion, so it never reaches the JSON.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use serde_json::{Value, json};

use crate::security::workload_certificates::WorkloadSecrets;
use crate::snapshot::Snapshot;
use crate::xds_types::XdsType;

/// `workload`: the proxy's own workload certificate (`default`, `ROOTCA`),
/// which lives beside the view's snapshot, not in it.
pub fn config_dump(snapshot: &Snapshot, workload: Option<&WorkloadSecrets>) -> Value {
    let mut types = serde_json::Map::new();
    for ty in XdsType::ALL {
        let of_type = snapshot.of(ty);
        let selected = of_type.select(None);
        let own = workload
            .filter(|_| ty == XdsType::Secret)
            .map(|w| &w.resources)
            .into_iter()
            .flatten();
        let resources: Vec<Value> = selected
            .iter()
            .map(|(name, any)| (*name, *any))
            .chain(own)
            .map(|(name, any)| json!({"name": name, "bytes": any.value_len(), "resource": describe(ty, &any.to_any())}))
            .collect();
        types.insert(
            ty.short().to_string(),
            json!({"type_url": ty.type_url(), "version": of_type.selection_version(None), "resources": resources}),
        );
    }
    json!({"mesh_version": snapshot.mesh_version, "types": types})
}

fn describe(ty: XdsType, any: &Any) -> Value {
    let converted = match ty {
        XdsType::Secret => redacted(any),
        _ => pilotfish_xds_json::any_to_json(any).map_err(|e| e.to_string()),
    };
    converted.unwrap_or_else(|error| json!({ "error": error }))
}

/// A Secret's JSON, its key material redacted before the conversion.
fn redacted(any: &Any) -> Result<Value, String> {
    let mut secret = Secret::decode(any.value.as_slice())
        .map_err(|e| format!("{}: protobuf does not decode: {e}", Secret::full_name()))?;
    redact(&mut secret);
    // Packed again so it carries "@type" like every other resource.
    pilotfish_xds_json::any_to_json(&envoy_types::util::pack_any(secret)).map_err(|e| e.to_string())
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
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
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
        let dump = config_dump(&snapshot, None);
        let text = dump.to_string();
        assert!(!text.contains("SECRETKEY"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        let sds = &dump["types"]["sds"];
        assert_eq!(sds["resources"][0]["name"], "kubernetes://gw-cert");
        assert_eq!(sds["resources"][1]["name"], "kubernetes://gw-cert-cacert");
        let cert = &sds["resources"][0]["resource"];
        assert_eq!(
            cert["@type"],
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
        );
        let tls = &cert["tlsCertificate"];
        assert_eq!(tls["privateKey"]["inlineString"], "[redacted]", "{cert}");
        assert_eq!(
            tls["certificateChain"]["inlineString"], "-----BEGIN CERTIFICATE-----\nCHAIN",
            "certificates are shown as text: {cert}"
        );
        let ca = &sds["resources"][1]["resource"]["validationContext"]["trustedCa"];
        assert_eq!(ca["inlineString"], "CLIENTCA");
    }

    #[test]
    fn resources_are_dumped_in_envoys_json() {
        let resources = XdsResources {
            clusters: vec![Cluster {
                name: "outbound|9080||reviews.default.svc.cluster.local".into(),
                connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let dump = config_dump(&Snapshot::build(1, resources, None), None);
        let cds = &dump["types"]["cds"]["resources"][0];
        assert_eq!(
            cds["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(
            cds["resource"]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(cds["resource"]["connectTimeout"], "5s", "{cds}");
    }
}
