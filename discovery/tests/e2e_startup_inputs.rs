//! `pilotfish serve` given broken inputs at start.
//!
//! - A registry file that does not parse: pilotfish stays unready (`/ready`
//!   503 naming the file and the field), refuses ADS streams with
//!   UNAVAILABLE naming them (a raw gRPC client and a real Envoy get no
//!   mesh at all, never an empty one), and becomes ready and serves the
//!   whole mesh once the file is fixed, without a restart.
//! - A path flag naming nothing, or a path of the wrong kind: pilotfish
//!   exits non-zero with one line naming the flag and the path, whether or
//!   not the path's parent directory exists.
//! - A listen address already taken: pilotfish exits non-zero with one line
//!   naming the flag, the address and the cause, for every listener.
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::path::Path;
use std::sync::Arc;

use support::ads_client;
use support::bookinfo::{self, MISSPELT_REGISTRY_FIELD};
use support::netns::Netns;
use support::pilotfish::{self, Pilotfish, Refusal};
use support::testdir::TestDir;
use support::{PROPAGATION, Request, STARTUP, wait_until};

#[test]
fn a_registry_file_that_fails_to_parse_at_start_keeps_pilotfish_unready_until_it_parses() {
    let (good, broken) = bookinfo::registry_and_misspelt();
    let mut pod = bookinfo::pod("unparseable-registry")
        .registry(&broken)
        .start_unready();

    let body = wait_until(
        "/ready to refuse, naming the registry file",
        STARTUP,
        || match pod.pilotfish.get("/ready")? {
            (503, body) if body.contains("registry.yaml") => Ok(body),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        },
    );
    assert!(body.contains(MISSPELT_REGISTRY_FIELD), "/ready: {body}");

    let refused = ads_client::clusters_from_raw_client(pod.ns(), pilotfish::XDS_ADDRESS)
        .expect_err("an unready pilotfish must not serve a mesh");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("registry.yaml")
            && refused.message().contains(MISSPELT_REGISTRY_FIELD),
        "the refusal should say what pilotfish waits for: {refused:?}"
    );

    // Envoy was refused too (the raw client was the first), and holds no
    // configuration from pilotfish.
    let refusals = wait_until("Envoy's ADS stream to be refused", STARTUP, || {
        pod.envoy.assert_running();
        match pod.pilotfish.metric("xds_streams_refused_unready_total") {
            n if n >= 2.0 => Ok(n),
            n => Err(format!("{n} streams refused")),
        }
    });
    assert_eq!(pod.envoy.stat("cluster_manager.cds.update_success"), 0);
    assert_eq!(pod.envoy.stat("listener_manager.lds.update_success"), 0);
    assert_eq!(
        pod.pilotfish.get("/ready").map(|(status, _)| status),
        Ok(503)
    );

    println!(
        "unready: {refusals} ADS streams refused ({})",
        refused.message()
    );

    // Fixed in place: ready without a restart, and the whole mesh served.
    let fixed = std::time::Instant::now();
    pod.write_registry(&good);
    wait_until("/ready after the fix", PROPAGATION, || {
        match pod.pilotfish.get("/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        }
    });
    let clusters = ads_client::clusters_from_raw_client(pod.ns(), pilotfish::XDS_ADDRESS)
        .expect("a ready pilotfish serves the mesh");
    assert!(clusters >= 4, "only {clusters} clusters served");
    pod.envoy.wait_live();
    bookinfo::wait_served(&pod);
    println!(
        "Envoy served the whole mesh {:?} after the fix",
        fixed.elapsed()
    );
    pod.tally(10, &Request::get(bookinfo::DETAILS_VIP, "details"))
        .assert_all("details v1", "details once the registry parses");
    pod.envoy.assert_no_rejected_updates();
}

/// Runs `pilotfish serve <args>` in a namespace of its own (its default
/// ports are free there), which must refuse to start.
/// Its output goes to `<dir>/<case>.log`.
fn refused_start(dir: &TestDir, case: &str, args: &[String]) -> Refusal {
    let ns = Netns::new();
    Pilotfish::refused(&ns, args, &dir.path().join(format!("{case}.log")))
}

fn args(pairs: &[(&str, &Path)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}

#[test]
fn a_config_dir_that_is_a_file_or_a_registry_file_that_is_a_directory_is_refused_at_start() {
    let dir = TestDir::new("wrong-kind");
    let file = dir.path().join("registry.yaml");
    std::fs::write(&file, "services: []\n").expect("write");

    let refusal = refused_start(&dir, "config-dir-file", &args(&[("--config-dir", &file)]));
    refusal.assert_one_line_names(&[
        "--config-dir",
        &file.display().to_string(),
        "is not a directory",
    ]);

    let refusal = refused_start(
        &dir,
        "registry-dir",
        &args(&[("--registry-file", dir.path())]),
    );
    refusal.assert_one_line_names(&[
        "--registry-file",
        &dir.path().display().to_string(),
        "is a directory",
    ]);
}

#[test]
fn a_missing_path_is_refused_at_start_whether_or_not_its_parent_exists() {
    let dir = TestDir::new("missing-paths");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let registry = dir.path().join("registry.yaml");
    std::fs::write(&registry, "services: []\n").expect("write");
    let under_existing = dir.path().join("absent");
    let under_missing = dir.path().join("no-such-dir").join("absent");

    for (case, missing) in [("parent", &under_existing), ("no-parent", &under_missing)] {
        let missing_name = missing.display().to_string();
        for (flag, others) in [
            ("--config-dir", ("--registry-file", registry.as_path())),
            ("--registry-file", ("--config-dir", config.as_path())),
        ] {
            let name = format!("{case}{flag}");
            let refusal = refused_start(&dir, &name, &args(&[others, (flag, missing)]));
            refusal.assert_one_line_names(&[flag, &missing_name, "does not exist"]);
        }
        // The serving certificate of the secure port, and the kubeconfig,
        // follow the same rule.
        let refusal = refused_start(
            &dir,
            &format!("{case}-tls"),
            &args(&[
                ("--config-dir", &config),
                ("--tls-cert-file", missing),
                ("--tls-key-file", &registry),
            ]),
        );
        refusal.assert_one_line_names(&["--tls-cert-file", &missing_name, "does not exist"]);
        let mut kube = args(&[("--config-dir", &config), ("--kubeconfig", missing)]);
        kube.extend(["--config-source".into(), "kubernetes".into()]);
        let refusal = refused_start(&dir, &format!("{case}-kube"), &kube);
        refusal.assert_one_line_names(&["--kubeconfig", &missing_name, "does not exist"]);
    }
}

#[test]
fn every_listener_that_cannot_bind_names_its_flag_and_address() {
    let dir = TestDir::new("address-in-use");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let addresses = [
        ("--xds-address", "127.0.0.1:15010"),
        ("--secure-xds-address", "127.0.0.1:15012"),
        ("--http-address", "127.0.0.1:15014"),
        ("--monitoring-address", "127.0.0.1:15020"),
    ];
    for (taken_flag, taken) in addresses {
        let ns = Arc::new(Netns::new());
        let _holder = ns.run(|| std::net::TcpListener::bind(taken).expect("take the address"));
        let mut args = args(&[("--config-dir", &config)]);
        for (flag, address) in addresses {
            args.extend([flag.to_string(), address.to_string()]);
        }
        let log = dir
            .path()
            .join(format!("{}.log", taken_flag.trim_start_matches('-')));
        let refusal = Pilotfish::refused(&ns, &args, &log);
        refusal.assert_one_line_names(&[
            &format!("cannot listen on {taken} ({taken_flag})"),
            "Address already in use",
        ]);
    }
}
