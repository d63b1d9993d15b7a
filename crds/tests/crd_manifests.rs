//! The checked-in CRD manifests must be what the Rust types generate.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use pilotfish_crds::manifests::{ALL_FILE, MANIFEST_DIR, REGENERATE, crds, manifest_files};

#[test]
fn crd_manifests_match_rust_types() {
    let files = manifest_files().expect("manifests must render");
    let mut drift = Vec::new();
    for file in &files {
        let path = Path::new(MANIFEST_DIR).join(&file.name);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == file.contents => {}
            Ok(_) => drift.push(format!("{} differs from the Rust types", path.display())),
            Err(e) => drift.push(format!("{}: {e}", path.display())),
        }
    }
    let expected: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for entry in std::fs::read_dir(MANIFEST_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !expected.contains(&name.as_str()) {
            drift.push(format!(
                "{} is not generated any more; delete it",
                entry.path().display()
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "CRD manifests are out of date:\n  {}\nrun `{REGENERATE}` and commit crds/manifests/",
        drift.join("\n  ")
    );
}

#[test]
fn crd_manifests_round_trip_through_yaml() {
    let files = manifest_files().expect("manifests must render");
    let all = files.iter().find(|f| f.name == ALL_FILE).expect("all.yaml");
    let parsed: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&all.contents).expect("all.yaml must parse");
    assert_eq!(parsed, crds());
}
