//! Our generated CRD schemas against Istio's official ones
//! (shared/istio-reference/crd-all.gen.yaml): same field paths both ways, so
//! valid Istio YAML is never refused as an "unknown field" and we accept no
//! field Istio lacks; same types, enums, oneOf groups; no field required that
//! Istio leaves optional; same names, versions and printer columns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pilotfish_crds::manifests::crds;
use serde_json::Value;

/// What we compare about one schema node.
#[derive(Debug, Default)]
struct Node {
    type_: Option<String>,
    /// Format and bounds of numbers.
    numeric: Option<(Option<String>, Option<f64>, Option<f64>)>,
    enum_: Option<BTreeSet<String>>,
    required: BTreeSet<String>,
    /// Each oneOf group as the set of fields it makes mutually exclusive.
    one_of_groups: BTreeSet<BTreeSet<String>>,
}

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio-reference/crd-all.gen.yaml")
}

/// Istio's CRDs by name, or `None` (with a note) when the file is absent.
fn istio_crds() -> Option<BTreeMap<String, Value>> {
    let path = reference_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "note: {} not found; skipping the Istio comparison",
            path.display()
        );
        return None;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("Istio CRDs must parse");
    Some(
        docs.into_iter()
            .filter_map(|d| Some((d["metadata"]["name"].as_str()?.to_string(), d)))
            .collect(),
    )
}

/// (crd name, ours, Istio's) for each of our kinds.
fn pairs() -> Option<Vec<(String, Value, Value)>> {
    let mut istio = istio_crds()?;
    let pairs = crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().expect("name");
            let theirs = istio
                .remove(&name)
                .unwrap_or_else(|| panic!("Istio has no CRD {name}"));
            (name, serde_json::to_value(&crd).expect("json"), theirs)
        })
        .collect();
    Some(pairs)
}

fn spec_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

fn walk(schema: &Value, path: String, out: &mut BTreeMap<String, Node>) {
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    let mut groups = BTreeSet::new();
    let mut one_ofs: Vec<&Value> = schema.get("oneOf").into_iter().collect();
    one_ofs.extend(
        schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("oneOf")),
    );
    for one_of in one_ofs {
        let group: BTreeSet<String> = one_of
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|branch| strings(&branch["required"]))
            .collect();
        groups.insert(group);
    }
    out.insert(
        path.clone(),
        Node {
            type_: schema["type"].as_str().map(String::from),
            numeric: matches!(schema["type"].as_str(), Some("integer" | "number")).then(|| {
                let format = schema["format"].as_str().map(String::from);
                (
                    format,
                    schema["minimum"].as_f64(),
                    schema["maximum"].as_f64(),
                )
            }),
            enum_: schema.get("enum").map(strings),
            required: strings(&schema["required"]),
            one_of_groups: groups,
        },
    );
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        walk(prop, format!("{path}.{name}"), out);
    }
    if let Some(items) = schema.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, format!("{path}{{}}"), out);
    }
}

fn nodes(crd: &Value) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(spec_schema(crd), "spec".to_string(), &mut out);
    out
}

fn report(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} {what}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// `name: path` for each spec path of `from` that `other` lacks.
fn paths_only_in(from: &Value, other: &Value, name: &str, out: &mut Vec<String>) {
    let other = nodes(other);
    for path in nodes(from).keys().filter(|p| !other.contains_key(*p)) {
        out.push(format!("{name}: {path}"));
    }
}

#[test]
fn istio_spec_paths_all_exist_in_ours() {
    let Some(pairs) = pairs() else { return };
    let mut missing = Vec::new();
    for (name, ours, theirs) in &pairs {
        paths_only_in(theirs, ours, name, &mut missing);
    }
    report(
        "Istio fields missing from our types (valid Istio YAML would be rejected)",
        missing,
    );
}

#[test]
fn our_spec_paths_all_exist_in_istio() {
    let Some(pairs) = pairs() else { return };
    let mut extra = Vec::new();
    for (name, ours, theirs) in &pairs {
        paths_only_in(ours, theirs, name, &mut extra);
    }
    report("fields in our types that Istio lacks", extra);
}

#[test]
fn types_enums_required_and_oneofs_match_istio() {
    let Some(pairs) = pairs() else { return };
    let mut problems = Vec::new();
    for (name, ours, theirs) in &pairs {
        let theirs = nodes(theirs);
        for (path, our) in nodes(ours) {
            let Some(their) = theirs.get(&path) else {
                continue;
            };
            let at = format!("{name}: {path}");
            // Istio leaves int-or-string nodes untyped; we have none in spec.
            if our.type_ != their.type_ {
                problems.push(format!(
                    "{at}: type {:?}, Istio {:?}",
                    our.type_, their.type_
                ));
            }
            if our.numeric != their.numeric {
                problems.push(format!(
                    "{at}: number {:?}, Istio {:?}",
                    our.numeric, their.numeric
                ));
            }
            if our.enum_ != their.enum_ {
                problems.push(format!(
                    "{at}: enum {:?}, Istio {:?}",
                    our.enum_, their.enum_
                ));
            }
            let extra: Vec<_> = our.required.difference(&their.required).collect();
            if !extra.is_empty() {
                problems.push(format!("{at}: we require {extra:?}, Istio does not"));
            }
            if our.one_of_groups != their.one_of_groups {
                problems.push(format!(
                    "{at}: oneOf groups {:?}, Istio {:?}",
                    our.one_of_groups, their.one_of_groups
                ));
            }
        }
    }
    report("schema differences from Istio", problems);
}

#[test]
fn crd_names_versions_and_columns_match_istio() {
    let Some(pairs) = pairs() else { return };
    let mut problems = Vec::new();
    let versions = |crd: &Value| -> BTreeSet<(String, bool, bool, bool)> {
        let list = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|v| {
                let flag = |k: &str| v[k].as_bool().unwrap_or(false);
                let status = v["subresources"].get("status").is_some();
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    flag("served"),
                    flag("storage"),
                    status,
                )
            })
            .collect()
    };
    let columns = |crd: &Value| -> Vec<(Value, Value, Value)> {
        let list = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .cloned();
        list.unwrap_or_default()
            .into_iter()
            .map(|c| (c["name"].clone(), c["type"].clone(), c["jsonPath"].clone()))
            .collect()
    };
    let root_required =
        |crd: &Value| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"].clone();
    for (name, ours, theirs) in &pairs {
        let mut check = |what: &str, a: String, b: String| {
            if a != b {
                problems.push(format!("{name}: {what} {a}, Istio {b}"));
            }
        };
        check(
            "names",
            ours["spec"]["names"].to_string(),
            theirs["spec"]["names"].to_string(),
        );
        check(
            "scope",
            ours["spec"]["scope"].to_string(),
            theirs["spec"]["scope"].to_string(),
        );
        check(
            "versions",
            format!("{:?}", versions(ours)),
            format!("{:?}", versions(theirs)),
        );
        check(
            "printer columns",
            format!("{:?}", columns(ours)),
            format!("{:?}", columns(theirs)),
        );
        check(
            "root required",
            root_required(ours).to_string(),
            root_required(theirs).to_string(),
        );
        let status = |crd: &Value| {
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                ["x-kubernetes-preserve-unknown-fields"]
                .clone()
        };
        check(
            "status preserves unknown fields",
            status(ours).to_string(),
            status(theirs).to_string(),
        );
    }
    report("CRD metadata differences from Istio", problems);
}
