//! Our CRDs (crds/manifests/, generated from the Rust types) on a real
//! kube-apiserver: they install, Istio's Bookinfo networking samples are
//! accepted at each of v1alpha3, v1beta1 and v1 and read back unchanged as
//! v1 (nothing pruned), as are our security.istio.io samples
//! (testdata/security/) at v1beta1 and v1, and the server's structural
//! schema rejects unknown fields and wrong types, naming the field.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh); no root.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::kube_apiserver::KubeApiServer;
use support::repo_path;

const VERSIONS: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];
/// Kind → plural of what Pilotfish serves; sample documents of other kinds
/// are skipped.
const SERVED: [(&str, &str); 4] = [
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("Gateway", "gateways"),
    ("ServiceEntry", "serviceentries"),
];

/// The `security.istio.io` kinds, served at v1beta1 and v1.
const SECURITY: [(&str, &str); 2] = [
    ("PeerAuthentication", "peerauthentications"),
    ("AuthorizationPolicy", "authorizationpolicies"),
];

/// Applies crds/manifests/ and waits until every CRD is Established.
fn install_crds(server: &KubeApiServer) {
    let dir = repo_path("crds/manifests");
    let out = server
        .kubectl(&["apply", "-f", dir.to_str().unwrap()])
        .expect_success("apply crds/manifests/");
    for (_, plural) in SERVED {
        assert!(
            out.stdout
                .contains(&format!("{plural}.networking.istio.io")),
            "kubectl apply did not mention CRD {plural}:\n{}",
            out.stdout
        );
    }
    let names: Vec<String> = SERVED
        .iter()
        .map(|(_, p)| format!("crd/{p}.networking.istio.io"))
        .chain(
            SECURITY
                .iter()
                .map(|(_, p)| format!("crd/{p}.security.istio.io")),
        )
        .collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    server.kubectl(&args).expect_success("CRDs Established");
}

/// The Istio samples: /work/shared/istio-samples, found from this crate as
/// ../../shared.
fn samples_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/istio-samples/bookinfo-networking");
    assert!(dir.is_dir(), "no Istio samples at {}", dir.display());
    dir
}

/// Every served document of every sample file: (file stem, document).
fn sample_documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read samples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read sample");
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let parsed = pilotfish_crds::load::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in parsed {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if SERVED.iter().any(|(k, _)| *k == kind) {
                docs.push((stem.clone(), doc));
            } else if !doc.is_null() {
                eprintln!("skipping {stem}: kind {kind:?} is not served");
            }
        }
    }
    docs
}

/// Equality where 100 and 100.0 are the same number (JSON from YAML keeps
/// what was written; the server may re-encode).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn istio_samples_are_accepted_at_every_version_and_read_back_as_v1() {
    let server = KubeApiServer::start("crds-samples");
    install_crds(&server);
    let docs = sample_documents(&samples_dir());
    assert!(docs.len() >= 30, "only {} sample documents", docs.len());

    for version in VERSIONS {
        let namespace = format!("samples-{version}");
        // Samples reuse names (several files define VirtualService
        // `reviews`), so each object is renamed after its file.
        let mut stream = format!(
            "{}\n",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        );
        let mut expected: BTreeMap<(String, String), Value> = BTreeMap::new();
        for (stem, doc) in &docs {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let name = format!("{stem}--{}", doc["metadata"]["name"].as_str().unwrap());
            let object = json!({
                "apiVersion": format!("networking.istio.io/{version}"),
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "spec": doc["spec"],
            });
            stream.push_str(&format!("---\n{object}\n"));
            assert!(
                expected
                    .insert((kind, name.clone()), doc["spec"].clone())
                    .is_none(),
                "duplicate {name}"
            );
        }
        // Strict field validation (kubectl's default): a field our schema
        // lacks would be an error, not silently pruned.
        server
            .kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &stream)
            .expect_success(&format!("apply samples at {version}"));

        let mut seen = 0;
        for (kind, plural) in SERVED {
            let list = list_as_v1(&server, plural, "networking.istio.io", &namespace);
            for item in list["items"].as_array().expect("items") {
                let name = item["metadata"]["name"].as_str().unwrap().to_string();
                assert_eq!(
                    item["apiVersion"], "networking.istio.io/v1",
                    "{kind} {name} (written at {version}) read back at {}",
                    item["apiVersion"]
                );
                let want = expected
                    .get(&(kind.to_string(), name.clone()))
                    .unwrap_or_else(|| panic!("unexpected {kind} {name}"));
                assert!(
                    same(&item["spec"], want),
                    "{kind} {name} written at {version} reads back different \
                     (pruned or defaulted?):\nwrote {want:#}\nread  {:#}",
                    item["spec"]
                );
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len(), "objects read back at {version}");
    }
}

#[test]
fn schema_rejects_unknown_fields_and_wrong_types_naming_the_field() {
    let server = KubeApiServer::start("crds-schema");
    install_crds(&server);

    for version in VERSIONS {
        let vs = |name: &str, spec: Value| {
            json!({
                "apiVersion": format!("networking.istio.io/{version}"),
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            })
            .to_string()
        };
        let unknown = vs(
            "unknown-field",
            json!({"hosts": ["reviews"], "http": [{
                "route": [{"destination": {"host": "reviews", "subsett": "v1"}}],
            }]}),
        );
        let out = server
            .kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &unknown)
            .expect_failure(&format!("unknown field at {version}"));
        assert!(
            out.stderr
                .contains(r#"unknown field "spec.http[0].route[0].destination.subsett""#),
            "{version}: the rejection should name spec.http[0].route[0].destination.subsett:\n{}",
            out.stderr
        );

        // Without strict validation the server's structural schema prunes
        // the field instead: stored without it, never passed to Pilotfish.
        server
            .kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &unknown)
            .expect_success(&format!("unknown field without validation at {version}"));
        let stored = server
            .kubectl(&["get", "virtualservice", "unknown-field", "-o", "json"])
            .expect_success("get pruned object");
        let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
        assert_eq!(
            stored["spec"]["http"][0]["route"][0]["destination"],
            json!({"host": "reviews"}),
            "{version}: the unknown field should have been pruned"
        );
        server
            .kubectl(&["delete", "virtualservice", "unknown-field"])
            .expect_success("delete");

        let wrong_type = vs(
            "wrong-type",
            json!({"hosts": "reviews", "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
        );
        let out = server
            .kubectl_stdin(&["apply", "-f", "-"], &wrong_type)
            .expect_failure(&format!("wrong type at {version}"));
        assert!(
            out.stderr.contains("spec.hosts") && out.stderr.contains("array"),
            "{version}: the rejection should name spec.hosts and its type:\n{}",
            out.stderr
        );
    }
}

#[test]
fn security_samples_are_accepted_at_v1beta1_and_v1_and_read_back_unchanged() {
    let server = KubeApiServer::start("crds-security");
    install_crds(&server);
    let dir = repo_path("testdata/security");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("testdata/security") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read sample");
        // Pilotfish itself accepts them, semantic checks included.
        let loaded = pilotfish_crds::load_yaml(&path.display().to_string(), &text, "default");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        for object in &loaded.objects {
            let errors = pilotfish_crds::validate::validate(object);
            assert!(errors.is_empty(), "{errors:?}");
        }
        docs.extend(pilotfish_crds::load::parse_documents(&text).expect("sample YAML"));
    }
    let kinds: BTreeMap<&str, usize> = SECURITY
        .iter()
        .map(|(kind, _)| {
            let n = docs.iter().filter(|d| d["kind"] == *kind).count();
            (*kind, n)
        })
        .collect();
    assert!(
        kinds.values().all(|n| *n > 0),
        "a sample of each kind: {kinds:?}"
    );

    for version in ["v1beta1", "v1"] {
        let namespace = format!("security-{version}");
        let mut stream = format!(
            "{}\n",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        );
        for doc in &docs {
            let mut object = doc.clone();
            object["apiVersion"] = json!(format!("security.istio.io/{version}"));
            object["metadata"]["namespace"] = json!(namespace);
            stream.push_str(&format!("---\n{object}\n"));
        }
        server
            .kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &stream)
            .expect_success(&format!("apply security samples at {version}"));
        for (kind, plural) in SECURITY {
            let list = list_as_v1(&server, plural, "security.istio.io", &namespace);
            let items = list["items"].as_array().expect("items");
            let written: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
            assert_eq!(items.len(), written.len(), "{kind} at {version}");
            for item in items {
                assert_eq!(item["apiVersion"], "security.istio.io/v1");
                let want = written
                    .iter()
                    .find(|d| d["metadata"]["name"] == item["metadata"]["name"])
                    .expect("a written object");
                assert!(
                    same(&item["spec"], &want["spec"]),
                    "{kind} written at {version} reads back different:\nwrote {:#}\nread  {:#}",
                    want["spec"],
                    item["spec"]
                );
            }
        }
    }
}

/// `kubectl get <plural>.v1.<group> -n <namespace> -o json`.
fn list_as_v1(server: &KubeApiServer, plural: &str, group: &str, namespace: &str) -> Value {
    let out = server
        .kubectl(&[
            "get",
            &format!("{plural}.v1.{group}"),
            "-n",
            namespace,
            "-o",
            "json",
        ])
        .expect_success(&format!("get {plural} as v1"));
    serde_json::from_str(&out.stdout).expect("kubectl JSON")
}
