//! Error reporting of the loader and validator on the files in tests/fixtures.

use std::path::PathBuf;

use pilotfish_crds::validate::validate;
use pilotfish_crds::{LoadOutcome, load_yaml};

fn load(name: &str) -> (String, LoadOutcome) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    let source = format!("fixtures/{name}");
    let out = load_yaml(&source, &text, "default");
    (source, out)
}

fn messages(out: &LoadOutcome) -> Vec<String> {
    out.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn fixture_unknown_field_names_file_object_and_path() {
    let (_, out) = load("unknown-field.yaml");
    assert!(out.objects.is_empty());
    let msgs = messages(&out);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let expected = "fixtures/unknown-field.yaml (document 0): VirtualService shop/reviews: field spec.http[0].route[0].destination";
    assert!(msgs[0].starts_with(expected), "{}", msgs[0]);
    assert!(msgs[0].contains("unknown field `subsett`"), "{}", msgs[0]);
}

#[test]
fn fixture_wrong_type_names_the_field() {
    let (_, out) = load("wrong-type.yaml");
    let err = &out.errors[0];
    assert_eq!(err.field.as_deref(), Some("spec.http[0].route[0].weight"));
    assert!(err.message.contains("invalid type"), "{}", err.message);
}

#[test]
fn fixture_bad_version_is_rejected() {
    let (_, out) = load("bad-version.yaml");
    let msgs = messages(&out);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("DestinationRule default/reviews: field apiVersion"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[0].contains("unsupported version \"v2\""),
        "{}",
        msgs[0]
    );
}

#[test]
fn fixture_list_loads_items_and_reports_broken_item_by_index() {
    let (_, out) = load("list.yaml");
    let keys: Vec<String> = out.objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Gateway istio-system/ingress"]);
    assert_eq!(out.ignored.len(), 1, "the Deployment is ignored");
    let err = &out.errors[0];
    assert_eq!(err.field.as_deref(), Some("items[1].spec.resolution"));
    assert!(
        err.to_string().contains("ServiceEntry default/broken"),
        "{err}"
    );
}

#[test]
fn fixture_multi_doc_keeps_good_documents_and_names_the_bad_one() {
    let (_, out) = load("multi-doc.yaml");
    let keys: Vec<String> = out.objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        keys,
        ["DestinationRule default/reviews", "ServiceEntry default/db"]
    );
    let msgs = messages(&out);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    // The empty document between the two `---` is skipped and not counted.
    assert!(
        msgs[0].starts_with("fixtures/multi-doc.yaml (document 1): DestinationRule default/ratings: field spec.trafficPolicy.loadBalancer.simple"),
        "{}",
        msgs[0]
    );
    assert!(out.objects.iter().all(|o| validate(o).is_empty()));
}

#[test]
fn fixture_semantic_errors_are_found_by_validate() {
    let (_, out) = load("semantic-errors.yaml");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let errors = validate(&out.objects[0]);
    let fields: Vec<&str> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "spec.http[0].match[0].uri.regex",
            "spec.http[0].route[0].weight",
            "spec.http[0].timeout"
        ]
    );
    let shown = errors[0].to_string();
    assert!(
        shown.starts_with("fixtures/semantic-errors.yaml (document 0): VirtualService default/reviews: field spec.http[0].match[0].uri.regex: invalid regex"),
        "{shown}"
    );
}
