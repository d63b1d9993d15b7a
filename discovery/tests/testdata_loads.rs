//! The shipped example mesh (testdata/) must load cleanly: the README's
//! `pilotfish serve` runs on it and the end-to-end tests build on it.

use std::path::PathBuf;

fn testdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(relative)
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn bookinfo_registry_has_four_services_with_vips() {
    let path = testdata("bookinfo/registry.yaml");
    let outcome = pilotfish_registries::file::parse_registry_file("registry.yaml", &read(&path))
        .expect("registry parses");
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let services = &outcome.snapshot.services;
    let hosts: Vec<&str> = services.iter().map(|s| s.hostname.as_str()).collect();
    for name in ["productpage", "details", "reviews", "ratings"] {
        assert!(
            hosts.contains(&format!("{name}.default.svc.cluster.local").as_str()),
            "{name} missing: {hosts:?}"
        );
    }
    assert!(
        services.iter().all(|s| !s.vips.is_empty()),
        "every Bookinfo service has a VIP"
    );
    assert_eq!(
        outcome.snapshot.endpoints["reviews.default.svc.cluster.local"].len(),
        3
    );
}

#[test]
fn bookinfo_config_loads_without_errors() {
    let dir = testdata("bookinfo/config");
    let mut objects = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        let outcome =
            pilotfish_crds::load_yaml(&path.display().to_string(), &read(&path), "default");
        assert!(
            outcome.errors.is_empty(),
            "{}: {:?}",
            path.display(),
            outcome.errors
        );
        assert!(
            outcome.ignored.is_empty(),
            "{}: {:?}",
            path.display(),
            outcome.ignored
        );
        objects += outcome.objects.len();
    }
    assert_eq!(objects, 5, "four DestinationRules and one VirtualService");
}
