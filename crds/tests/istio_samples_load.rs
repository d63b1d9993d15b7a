//! Istio's own sample YAML (shared/istio-samples) must load and validate
//! cleanly: every networking.istio.io object of a served kind becomes a
//! config object, everything else is ignored.

use std::path::{Path, PathBuf};

use pilotfish_crds::validate::validate;
use pilotfish_crds::{Kind, load_yaml};
use serde_json::Value;

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio-samples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// How many documents (or List items) are Istio objects of a kind we serve,
/// counted independently of the loader.
fn expected_objects(text: &str) -> usize {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_default();
    let ours = |v: &Value| {
        let group_ok = v["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("networking.istio.io/"));
        group_ok && v["kind"].as_str().and_then(Kind::from_name).is_some()
    };
    docs.iter()
        .flat_map(|d| match d["items"].as_array() {
            Some(items) => items.iter().collect(),
            None => vec![d],
        })
        .filter(|v| ours(v))
        .count()
}

#[test]
fn istio_samples_load_without_errors() {
    let dir = samples_dir();
    if !dir.is_dir() {
        eprintln!(
            "note: {} not found; skipping the Istio samples",
            dir.display()
        );
        return;
    }
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(!files.is_empty(), "no YAML under {}", dir.display());
    let mut problems = Vec::new();
    let mut total = 0;
    for path in &files {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).expect("readable sample");
        let out = load_yaml(&source, &text, "default");
        problems.extend(out.errors.iter().map(|e| format!("load: {e}")));
        for obj in &out.objects {
            problems.extend(validate(obj).iter().map(|e| format!("validate: {e}")));
        }
        let expected = expected_objects(&text);
        if out.objects.len() != expected {
            problems.push(format!(
                "{source}: loaded {} objects, expected {expected}",
                out.objects.len()
            ));
        }
        total += out.objects.len();
    }
    assert!(
        problems.is_empty(),
        "{} problems in Istio samples:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    assert!(total > 0, "the samples hold no Istio objects");
    eprintln!(
        "loaded {total} Istio objects from {} sample files",
        files.len()
    );
}
