//! Checks that a CRD schema is *structural* in the Kubernetes sense, so a
//! manifest kube-apiserver would refuse fails in our tests instead of at
//! `kubectl apply` time. Covers the rules our generated schemas can break;
//! it is not a full port of the API server's validation.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

/// Formats kube-apiserver knows; others draw "unrecognized format" warnings.
const FORMATS: [&str; 27] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
];
const NUMBER_FORMATS: [&str; 2] = ["float", "double"];

/// Every violation found, each prefixed with its schema path.
pub fn structural_problems(root: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    if root.type_.as_deref() != Some("object") {
        out.push("<root>: the root schema must have type: object".to_string());
    }
    structural(root, "<root>", &mut out);
    out
}

fn structural(s: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    let mut problem = |msg: &str| out.push(format!("{path}: {msg}"));
    forbidden_everywhere(s, &mut problem);
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    match s.type_.as_deref() {
        Some(_) if int_or_string => problem("x-kubernetes-int-or-string must not set a type"),
        Some(t) if !TYPES.contains(&t) => problem(&format!("unknown type {t:?}")),
        None if !int_or_string && !preserve => problem("a structural schema needs a type"),
        _ => {}
    }
    if s.properties.is_some() && s.additional_properties.is_some() {
        problem("properties and additionalProperties are mutually exclusive");
    }
    if let Some(JSONSchemaPropsOrBool::Bool(b)) = &s.additional_properties {
        problem(&format!("additionalProperties must be a schema, not {b}"));
    }
    if s.properties.is_some() && s.type_.as_deref() != Some("object") {
        problem("properties on a non-object");
    }
    if s.items.is_some() != (s.type_.as_deref() == Some("array")) {
        problem("type: array and items go together");
    }
    if let Some(format) = &s.format {
        let known = FORMATS.contains(&format.as_str())
            || (s.type_.as_deref() == Some("number") && NUMBER_FORMATS.contains(&format.as_str()));
        if !known {
            problem(&format!(
                "format {format:?} is not one the API server knows"
            ));
        }
    }
    for value in s.enum_.iter().flatten() {
        if !enum_value_fits(&value.0, s) {
            problem(&format!("enum value {} does not fit the schema", value.0));
        }
    }
    required_are_properties(s, s.properties.as_ref(), &mut problem);

    for (name, prop) in s.properties.iter().flatten() {
        structural(prop, &format!("{path}.{name}"), out);
    }
    match &s.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => structural(items, &format!("{path}[]"), out),
        Some(JSONSchemaPropsOrArray::Schemas(_)) => {
            out.push(format!("{path}: items must be a single schema"))
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &s.additional_properties {
        structural(values, &format!("{path}{{}}"), out);
    }
    if int_or_string && is_int_or_string_any_of(s) {
        return; // the one anyOf shape Kubernetes allows to carry types
    }
    for (keyword, sub) in junctors(s) {
        value_validation(
            sub,
            &format!("{path}.{keyword}"),
            s.properties.as_ref(),
            out,
        );
    }
}

/// Inside allOf/anyOf/oneOf/not only value checks are allowed, and only on
/// fields the structural part already declares.
fn value_validation(
    s: &JSONSchemaProps,
    path: &str,
    declared: Option<&BTreeMap<String, JSONSchemaProps>>,
    out: &mut Vec<String>,
) {
    let mut problem = |msg: &str| out.push(format!("{path}: {msg}"));
    forbidden_everywhere(s, &mut problem);
    let set = [
        ("type", s.type_.is_some()),
        ("description", s.description.is_some()),
        ("title", s.title.is_some()),
        ("nullable", s.nullable.is_some()),
        ("additionalProperties", s.additional_properties.is_some()),
        (
            "x-kubernetes-preserve-unknown-fields",
            s.x_kubernetes_preserve_unknown_fields.is_some(),
        ),
        (
            "x-kubernetes-int-or-string",
            s.x_kubernetes_int_or_string.is_some(),
        ),
        (
            "x-kubernetes-embedded-resource",
            s.x_kubernetes_embedded_resource.is_some(),
        ),
        (
            "x-kubernetes-validations",
            s.x_kubernetes_validations.is_some(),
        ),
    ];
    for (keyword, _) in set.iter().filter(|(_, present)| *present) {
        problem(&format!(
            "{keyword} is not allowed inside a value validation"
        ));
    }
    required_are_properties(s, declared, &mut problem);
    for (name, prop) in s.properties.iter().flatten() {
        match declared.and_then(|d| d.get(name)) {
            Some(decl) => value_validation(
                prop,
                &format!("{path}.{name}"),
                decl.properties.as_ref(),
                out,
            ),
            None => out.push(format!(
                "{path}: property {name:?} is not declared in the structural schema"
            )),
        }
    }
    for (keyword, sub) in junctors(s) {
        value_validation(sub, &format!("{path}.{keyword}"), declared, out);
    }
}

fn forbidden_everywhere(s: &JSONSchemaProps, problem: &mut impl FnMut(&str)) {
    let set = [
        ("$ref", s.ref_path.is_some()),
        ("$schema", s.schema.is_some()),
        ("id", s.id.is_some()),
        ("definitions", s.definitions.is_some()),
        ("dependencies", s.dependencies.is_some()),
        ("patternProperties", s.pattern_properties.is_some()),
        ("additionalItems", s.additional_items.is_some()),
        ("uniqueItems: true", s.unique_items == Some(true)),
        // Not forbidden by Kubernetes, but Istio's CRDs have no defaults and
        // server-side defaulting would rewrite what users stored.
        ("default", s.default.is_some()),
    ];
    for (keyword, _) in set.iter().filter(|(_, present)| *present) {
        problem(&format!("{keyword} is not allowed"));
    }
}

/// Not a Kubernetes rule: catches misspelt names in our own oneOf rules.
fn required_are_properties(
    s: &JSONSchemaProps,
    declared: Option<&BTreeMap<String, JSONSchemaProps>>,
    problem: &mut impl FnMut(&str),
) {
    for name in s.required.iter().flatten() {
        if !declared.is_some_and(|d| d.contains_key(name)) {
            problem(&format!(
                "required field {name:?} is not a declared property"
            ));
        }
    }
}

fn junctors(s: &JSONSchemaProps) -> Vec<(String, &JSONSchemaProps)> {
    let mut subs = Vec::new();
    for (keyword, list) in [
        ("allOf", &s.all_of),
        ("anyOf", &s.any_of),
        ("oneOf", &s.one_of),
    ] {
        for (i, sub) in list.iter().flatten().enumerate() {
            subs.push((format!("{keyword}[{i}]"), sub));
        }
    }
    if let Some(not) = &s.not {
        subs.push(("not".to_string(), not.as_ref()));
    }
    subs
}

fn is_int_or_string_any_of(s: &JSONSchemaProps) -> bool {
    let types: Vec<Option<&str>> = s
        .any_of
        .iter()
        .flatten()
        .map(|b| b.type_.as_deref())
        .collect();
    s.all_of.is_none()
        && s.one_of.is_none()
        && s.not.is_none()
        && types == [Some("integer"), Some("string")]
}

fn enum_value_fits(value: &Value, s: &JSONSchemaProps) -> bool {
    match (value, s.type_.as_deref()) {
        (Value::Null, _) => s.nullable == Some(true),
        (Value::String(_), Some("string")) => true,
        (Value::Number(n), Some("integer")) => n.is_i64() || n.is_u64(),
        (Value::Number(_), Some("number")) => true,
        (Value::Bool(_), Some("boolean")) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(value: Value) -> JSONSchemaProps {
        serde_json::from_value(value).expect("test schema")
    }

    #[test]
    fn accepts_istio_style_one_of() {
        let s = schema(serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"not": {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}},
                      {"required": ["a"]}, {"required": ["b"]}],
        }));
        assert_eq!(structural_problems(&s), Vec::<String>::new());
    }

    #[test]
    fn rejects_non_structural_shapes() {
        let s = schema(serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "a": {"properties": {}},
                "b": {"type": "integer", "format": "uint32"},
                "c": {"type": "object", "oneOf": [{"type": "object", "required": ["x"]}]},
                "d": {"type": "string", "enum": ["X", null]},
            },
        }));
        let problems = structural_problems(&s).join("\n");
        for expected in [
            "<root>: properties and additionalProperties are mutually exclusive",
            "<root>: additionalProperties must be a schema",
            "<root>.a: a structural schema needs a type",
            "<root>.b: format \"uint32\"",
            "<root>.c.oneOf[0]: type is not allowed inside a value validation",
            "<root>.c.oneOf[0]: required field \"x\"",
            "<root>.d: enum value null",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
    }
}
