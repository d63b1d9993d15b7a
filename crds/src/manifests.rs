//! CustomResourceDefinition manifests built from the Rust types, so the API
//! server accepts what the loader accepts. `gen-crds` writes them under
//! `crds/manifests/`; a test fails when the checked-in files drift.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSON, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::json;

use crate::object::Kind;
use crate::structural::structural_problems;
use crate::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, ServiceEntry, VirtualService,
};

/// Where `gen-crds` writes and the drift test reads.
pub const MANIFEST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
/// The version objects are stored at; the others are served from it as-is.
pub const STORAGE_VERSION: &str = "v1";
/// The file holding every CRD, for a single `kubectl apply -f`.
pub const ALL_FILE: &str = "all.yaml";
pub const REGENERATE: &str = "cargo run -p pilotfish-crds --bin gen-crds";

const HEADER: &str = "# Generated from the Rust types in crds/src by `cargo run -p pilotfish-crds --bin gen-crds`.\n# Do not edit by hand.\n";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot serialize {crd} to YAML: {source}")]
    Yaml {
        crd: String,
        source: serde_saphyr::SerializeError,
    },
    #[error("the schema of {crd} is not structural:\n  {}", problems.join("\n  "))]
    NotStructural { crd: String, problems: Vec<String> },
}

/// One manifest file: its name under [`MANIFEST_DIR`] and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub contents: String,
}

/// The CRD of `kind`, served at every version of [`Kind::versions`].
pub fn crd(kind: Kind) -> CustomResourceDefinition {
    let mut crd = match kind {
        Kind::VirtualService => VirtualService::crd(),
        Kind::DestinationRule => DestinationRule::crd(),
        Kind::Gateway => Gateway::crd(),
        Kind::ServiceEntry => ServiceEntry::crd(),
        Kind::PeerAuthentication => PeerAuthentication::crd(),
        Kind::AuthorizationPolicy => AuthorizationPolicy::crd(),
    };
    crd.spec.names.list_kind = Some(format!("{kind}List"));
    let template = crd.spec.versions.drain(..).next().unwrap_or_default();
    let mut spec = template
        .schema
        .and_then(|v| v.open_api_v3_schema)
        .and_then(|root| root.properties)
        .and_then(|mut props| props.remove("spec"))
        .unwrap_or_default();
    for_each_schema(&mut spec, &mut normalize);
    let root = JSONSchemaProps {
        type_: Some("object".into()),
        description: Some(description(kind).into()),
        properties: Some(BTreeMap::from([
            ("spec".to_string(), spec),
            ("status".to_string(), status_schema()),
        ])),
        // As in Istio: only a ServiceEntry must have a spec.
        required: (kind == Kind::ServiceEntry).then(|| vec!["spec".to_string()]),
        ..Default::default()
    };
    crd.spec.versions = kind
        .versions()
        .iter()
        .map(|version| CustomResourceDefinitionVersion {
            name: version.to_string(),
            served: true,
            storage: *version == STORAGE_VERSION,
            schema: Some(CustomResourceValidation {
                open_api_v3_schema: Some(root.clone()),
            }),
            subresources: Some(CustomResourceSubresources {
                status: Some(CustomResourceSubresourceStatus(json!({}))),
                scale: None,
            }),
            additional_printer_columns: template.additional_printer_columns.clone(),
            ..Default::default()
        })
        .collect();
    crd
}

/// All CRDs, in [`Kind::ALL`] order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    Kind::ALL.into_iter().map(crd).collect()
}

/// `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// The files `gen-crds` writes: one per kind plus [`ALL_FILE`]. Refuses to
/// render a schema that is not structural.
pub fn manifest_files() -> Result<Vec<ManifestFile>, ManifestError> {
    let mut files = Vec::new();
    let mut documents = Vec::new();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let problems = schema
                .map(structural_problems)
                .unwrap_or_else(|| vec!["no schema".into()]);
            if !problems.is_empty() {
                return Err(ManifestError::NotStructural {
                    crd: name,
                    problems,
                });
            }
        }
        let yaml = serde_saphyr::to_string(&crd).map_err(|source| ManifestError::Yaml {
            crd: name.clone(),
            source,
        })?;
        files.push(ManifestFile {
            name: file_name(&crd),
            contents: format!("{HEADER}{yaml}"),
        });
        documents.push(yaml);
    }
    files.push(ManifestFile {
        name: ALL_FILE.to_string(),
        contents: format!("{HEADER}{}", documents.join("---\n")),
    });
    Ok(files)
}

fn description(kind: Kind) -> &'static str {
    match kind {
        Kind::VirtualService => "Routing rules for traffic addressed to a set of hosts.",
        Kind::DestinationRule => {
            "Policies for traffic to a service after routing: subsets, load balancing, connection pools, outlier detection, upstream TLS."
        }
        Kind::Gateway => "Ports, protocols and hosts served by an edge proxy.",
        Kind::ServiceEntry => "Adds hosts, often outside the mesh, to the service registry.",
        Kind::PeerAuthentication => {
            "Whether workloads accept mutual TLS, plaintext or both from their peers."
        }
        Kind::AuthorizationPolicy => {
            "Which requests workloads allow or deny, by peer, operation and conditions."
        }
    }
}

/// Makes schemars output look like Istio's CRDs: no defaults (the API server
/// would write them into stored objects), no `null` among enum values
/// (`nullable` already allows it; older API servers mishandled it), and
/// integer ranges instead of `uint32`-style formats the API server does not
/// recognise.
fn normalize(schema: &mut JSONSchemaProps) {
    schema.default = None;
    if let Some(values) = &mut schema.enum_ {
        values.retain(|v| !v.0.is_null());
    }
    let range = match schema.format.as_deref() {
        Some("uint8") => Some((0.0, Some(f64::from(u8::MAX)))),
        Some("uint16") => Some((0.0, Some(f64::from(u16::MAX)))),
        Some("uint32") => Some((0.0, Some(f64::from(u32::MAX)))),
        Some("uint64" | "uint") => Some((0.0, None)),
        _ => None,
    };
    if let Some((min, max)) = range {
        schema.format = None;
        schema.minimum = Some(schema.minimum.map_or(min, |m| m.max(min)));
        schema.maximum = max.map(|max| schema.maximum.map_or(max, |m| m.min(max)));
    }
}

fn for_each_schema(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    for prop in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        for_each_schema(prop, f);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &mut schema.items {
        for_each_schema(items, f);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut schema.additional_properties {
        for_each_schema(values, f);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        for sub in list.iter_mut().flatten() {
            for_each_schema(sub, f);
        }
    }
    if let Some(not) = &mut schema.not {
        for_each_schema(not, f);
    }
}

/// Istio's status shape. Unknown fields are kept so status written by other
/// controllers (or newer Istio versions) survives.
fn status_schema() -> JSONSchemaProps {
    let condition = object([
        (
            "lastProbeTime",
            timestamp("When the condition was last probed."),
        ),
        (
            "lastTransitionTime",
            timestamp("When the condition last changed status."),
        ),
        (
            "message",
            string("Human-readable details about the last transition."),
        ),
        (
            "observedGeneration",
            int_or_string("The generation this condition describes."),
        ),
        (
            "reason",
            string("One-word CamelCase reason for the last transition."),
        ),
        ("status", string("Status of the condition.")),
        ("type", string("Type of the condition.")),
    ]);
    let message_type = object([
        ("code", string("Message code such as IST0101.")),
        ("name", string("Human-readable name of the message type.")),
    ]);
    let message = object([
        (
            "documentationUrl",
            string("Where the message is documented."),
        ),
        (
            "level",
            JSONSchemaProps {
                enum_: Some(
                    ["UNKNOWN", "ERROR", "WARNING", "INFO"]
                        .map(|l| JSON(json!(l)))
                        .to_vec(),
                ),
                ..string("Severity of the message.")
            },
        ),
        ("type", message_type),
    ]);
    JSONSchemaProps {
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..object([
            (
                "conditions",
                array(condition, "Current conditions of the resource."),
            ),
            (
                "observedGeneration",
                int_or_string("The generation the status describes."),
            ),
            (
                "validationMessages",
                array(message, "Problems found by config analysis."),
            ),
        ])
    }
}

fn object<const N: usize>(props: [(&str, JSONSchemaProps); N]) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ..Default::default()
    }
}

fn array(items: JSONSchemaProps, description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("array".into()),
        description: Some(description.into()),
        items: Some(JSONSchemaPropsOrArray::Schema(Box::new(items))),
        ..Default::default()
    }
}

fn string(description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("string".into()),
        description: Some(description.into()),
        ..Default::default()
    }
}

fn timestamp(description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        format: Some("date-time".into()),
        ..string(description)
    }
}

fn int_or_string(description: &str) -> JSONSchemaProps {
    let typed = |t: &str| JSONSchemaProps {
        type_: Some(t.into()),
        ..Default::default()
    };
    JSONSchemaProps {
        description: Some(description.into()),
        x_kubernetes_int_or_string: Some(true),
        any_of: Some(vec![typed("integer"), typed("string")]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_served_at_its_groups_versions_with_v1_stored() {
        for crd in crds() {
            let versions: Vec<(&str, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.served, v.storage))
                .collect();
            let expected: &[(&str, bool, bool)] = if crd.spec.group == "security.istio.io" {
                &[("v1", true, true), ("v1beta1", true, false)]
            } else {
                assert_eq!(crd.spec.group, "networking.istio.io");
                &[
                    ("v1", true, true),
                    ("v1beta1", true, false),
                    ("v1alpha3", true, false),
                ]
            };
            assert_eq!(versions, expected);
            let schemas: Vec<_> = crd.spec.versions.iter().map(|v| &v.schema).collect();
            assert!(
                schemas.windows(2).all(|w| w[0] == w[1]),
                "versions must share one schema"
            );
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in crds() {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let problems = structural_problems(schema.expect("schema"));
            assert!(
                problems.is_empty(),
                "{:?}:\n{}",
                crd.metadata.name,
                problems.join("\n")
            );
        }
    }

    #[test]
    fn normalize_turns_unsigned_formats_into_ranges() {
        let mut s = JSONSchemaProps {
            type_: Some("integer".into()),
            format: Some("uint32".into()),
            minimum: Some(0.0),
            default: Some(JSON(json!(0))),
            ..Default::default()
        };
        normalize(&mut s);
        assert_eq!(
            (s.format, s.minimum, s.maximum, s.default),
            (None, Some(0.0), Some(4294967295.0), None)
        );
    }

    #[test]
    fn normalize_drops_null_from_enums() {
        let mut s = JSONSchemaProps {
            type_: Some("string".into()),
            nullable: Some(true),
            enum_: Some(vec![JSON(json!("A")), JSON(json!(null))]),
            ..Default::default()
        };
        normalize(&mut s);
        assert_eq!(s.enum_, Some(vec![JSON(json!("A"))]));
    }
}
