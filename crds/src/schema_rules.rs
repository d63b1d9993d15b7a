//! CRD schema rules that serde derives cannot express. Istio's protobuf
//! `oneof` groups become "at most one of these fields" constraints, so the
//! API server rejects the same objects Istio's own CRDs reject.

use schemars::Schema;
use serde_json::{Value, json};

/// A schemars transform adding "at most one of `fields` is set".
///
/// Written in the structural form Kubernetes accepts: the branches only use
/// `required` and `not`/`anyOf`, never types or properties.
pub(crate) fn at_most_one_of(fields: &'static [&'static str]) -> impl FnMut(&mut Schema) {
    move |schema: &mut Schema| {
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        let each: Vec<Value> = fields.iter().map(|f| json!({ "required": [f] })).collect();
        let mut branches = vec![json!({ "not": { "anyOf": each.clone() } })];
        branches.extend(each);
        let rule = Value::Array(branches);
        // A second group on the same object goes under `allOf`.
        match (obj.remove("oneOf"), obj.get_mut("allOf")) {
            (None, None) => {
                obj.insert("oneOf".into(), rule);
            }
            (Some(first), None) => {
                obj.insert(
                    "allOf".into(),
                    json!([{ "oneOf": first }, { "oneOf": rule }]),
                );
            }
            (first, Some(Value::Array(all))) => {
                all.extend(first.map(|f| json!({ "oneOf": f })));
                all.push(json!({ "oneOf": rule }));
            }
            (first, Some(_)) => {
                obj.extend(first.map(|f| ("oneOf".to_string(), f)));
            }
        }
    }
}
