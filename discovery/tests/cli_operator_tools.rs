//! The operator's commands run as a user runs them (the `pilotfish`
//! binary): `validate` and `diff` offline on the Bookinfo testdata;
//! `proxy-status` and `proxy-config` against a running server with a real
//! Envoy sidecar, compared with Envoy's own config dump, and with the same
//! proxy rejecting config (NACKED, with Envoy's message).

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use support::bookinfo;
use support::config_dump::{active_clusters, active_listeners};
use support::{PROPAGATION, Pod, wait_until};

const REGISTRY: &str = "testdata/bookinfo/registry.yaml";
const CONFIG: &str = "testdata/bookinfo/config";

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `pilotfish args` (here, or in `pod`'s namespace): exit code and stdout.
fn pilotfish(pod: Option<&Pod>, args: &[&str]) -> (i32, String) {
    let binary = support::pilotfish::binary();
    let mut cmd = match pod {
        Some(pod) => pod.ns().command(binary, args),
        None => {
            let mut cmd = Command::new(binary);
            cmd.args(args);
            cmd
        }
    };
    let out = cmd.output().expect("run pilotfish");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("$ pilotfish {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pilotfish-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const BROKEN: &str = r#"# an object the loader rejects, one a DestinationRule lacks, one nothing knows, a duplicate
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-timeout}
spec:
  hosts: [ratings]
  http:
  - timeout: 5x
    route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details-v9}
spec:
  hosts: [details]
  http:
  - route: [{destination: {host: details, subset: v9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts: [ghost.example.com]
  gateways: [no-such-gateway]
  http:
  - route: [{destination: {host: ghost.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"#;

/// The finding for the `reviews` VirtualService that both `broken.yaml` and
/// the testdata define, at the copy that sorts second by path.
fn duplicate_finding(broken: &str) -> String {
    let testdata = repo(&format!("{CONFIG}/{}", bookinfo::REVIEWS_VS_FILE));
    let (used, flagged) = if broken < testdata.as_str() {
        (broken.to_string(), format!("{testdata}:2"))
    } else {
        (testdata, format!("{broken}:28"))
    };
    format!(
        "{flagged}: error: VirtualService default/reviews: metadata.name: duplicate object; the one in {used} is used"
    )
}

#[test]
fn validate_passes_the_testdata_and_fails_bad_objects_with_file_line_and_field() {
    let (code, out) = pilotfish(
        None,
        &[
            "validate",
            &repo(CONFIG),
            "--registry-file",
            &repo(REGISTRY),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");

    let dir = temp_dir("validate");
    let file = dir.join("broken.yaml");
    std::fs::write(&file, BROKEN).expect("write");
    let file = file.to_str().expect("utf-8");
    let args = [
        "validate",
        &repo(CONFIG),
        file,
        "--registry-file",
        &repo(REGISTRY),
    ];
    let (code, out) = pilotfish(None, &args);
    assert_eq!(code, 1, "errors fail the command: {out}");
    let expected = [
        format!("{file}:2: error: VirtualService default/ratings-timeout: spec.http[0].timeout"),
        format!(
            "{file}:11: error: VirtualService default/details-v9: spec.http[0].route[0].destination.subset"
        ),
        "[MissingSubset]".into(),
        format!(
            "{file}:19: error: VirtualService default/ghost: spec.http[0].route[0].destination.host"
        ),
        "[UnknownHost]".into(),
        "Gateway default/no-such-gateway does not exist".into(),
        // Located at the copy that is not used: files are read in path
        // order and the first copy wins, so which one is flagged depends on
        // where the checkout and the temporary directory are.
        duplicate_finding(file),
    ];
    for line in &expected {
        assert!(out.contains(line.as_str()), "missing {line:?} in:\n{out}");
    }

    let (code, out) = pilotfish(None, &[&args[..], &["-o", "json"]].concat());
    assert_eq!(code, 1);
    let report = json(&out);
    let kinds: BTreeSet<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    for kind in [
        "InvalidInput",
        "MissingSubset",
        "UnknownHost",
        "UnboundVirtualService",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    assert_eq!(report["errors"], 4, "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn diff_lists_the_proxies_and_resources_a_change_would_touch_and_exits_1() {
    let dir = temp_dir("diff");
    let file = dir.join("reviews-v3.yaml");
    std::fs::write(&file, bookinfo::reviews_weighted(&[("v3", 100)])).expect("write");
    let base = [
        "diff",
        "--config",
        &repo(CONFIG),
        "--registry-file",
        &repo(REGISTRY),
    ];
    let (code, out) = pilotfish(
        None,
        &[&base[..], &[file.to_str().expect("utf-8"), "-o", "json"]].concat(),
    );
    assert_eq!(code, 1, "a change exits 1: {out}");
    let report = json(&out);
    assert_eq!(
        report["objects"]["VirtualService default/reviews"],
        "modified"
    );
    let proxies = report["proxies"].as_array().expect("proxies");
    assert_eq!(
        proxies.len(),
        6,
        "every Bookinfo sidecar sees reviews: {out}"
    );
    let productpage = proxies
        .iter()
        .find(|p| p["proxy"] == "sidecar default app=productpage,version=v1")
        .expect("productpage's sidecar changes");
    let changes: Vec<(&str, &str, &str)> = productpage["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default(),
                r["change"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(changes, [("route", "9080", "modified")], "{out}");

    // The testdata's own file applied again changes nothing: exit 0.
    let unchanged = repo(&format!("{CONFIG}/{}", bookinfo::REVIEWS_VS_FILE));
    let (code, out) = pilotfish(None, &[&base[..], &[unchanged.as_str()]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no proxy changes"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Envoy's default RE2 program size limit, below the one pilotfish's
/// bootstrap sets: a large valid regex is rejected by this proxy.
const STRICT_RE2_PROGRAM_SIZE: u64 = 100;
const LARGE_REGEX: &str = "/api/(users|orders|products|payments)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.*";

fn names(resources: &Value, field: &str) -> BTreeSet<String> {
    resources
        .as_array()
        .expect("a list of resources")
        .iter()
        .filter_map(|r| r[field].as_str().map(str::to_string))
        .collect()
}

fn envoy_routes(dump: &Value) -> BTreeSet<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["dynamic_route_configs"].as_array())
        .flatten()
        .filter_map(|r| r["route_config"]["name"].as_str().map(str::to_string))
        .collect()
}

fn status_of(pod: &Pod, column: &str) -> Value {
    let (code, out) = pilotfish(
        Some(pod),
        &[
            "proxy-status",
            "proxy-status-pod",
            "--server",
            pod.pilotfish.http_address(),
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    json(&out)["proxies"][0]["types"][column].clone()
}

#[test]
fn proxy_status_shows_synced_then_nacked_and_proxy_config_matches_envoys_own_dump() {
    let pod = bookinfo::pod("proxy-status-pod")
        .envoy_runtime("re2.max_program_size.error_level", STRICT_RE2_PROGRAM_SIZE)
        // Keep the rejected object in, so the proxy stays NACKED.
        .pilotfish_arg("--quarantine-rejected-config=off")
        .start();
    bookinfo::wait_served(&pod);
    let server = pod.pilotfish.http_address().to_string();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());

    let (code, table) = pilotfish(Some(&pod), &["proxy-status", "--server", &server]);
    assert_eq!(code, 0);
    let row = table
        .lines()
        .find(|l| l.starts_with("proxy-status-pod.default"))
        .unwrap_or_else(|| panic!("a row for the pod: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..7],
        ["sidecar", cells[2], "SYNCED", "SYNCED", "SYNCED", "SYNCED"],
        "{row}"
    );

    // proxy-config shows what Envoy holds: the same clusters, listeners
    // and routes, by name, as Envoy's own config dump.
    let dump = pod.envoy.config_dump();
    let config = |kind: &str| {
        let (code, out) = pilotfish(
            Some(&pod),
            &[
                "proxy-config",
                kind,
                "proxy-status-pod",
                "--server",
                &server,
                "-o",
                "json",
            ],
        );
        assert_eq!(code, 0, "{out}");
        json(&out)
    };
    let ours: BTreeSet<String> = names(&config("clusters"), "name");
    let envoys: BTreeSet<String> = active_clusters(&dump)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(ours, envoys, "clusters");
    let ours = names(&config("listeners"), "name");
    let envoys: BTreeSet<String> = active_listeners(&dump)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(ours, envoys, "listeners");
    assert_eq!(
        names(&config("routes"), "name"),
        envoy_routes(&dump),
        "routes"
    );
    let endpoints = names(&config("endpoints"), "clusterName");
    assert!(
        endpoints.contains(&support::outbound_cluster(
            9080,
            "v2",
            &bookinfo::fqdn("reviews")
        )),
        "{endpoints:?}"
    );
    let (code, clusters) = pilotfish(
        Some(&pod),
        &[
            "proxy-config",
            "clusters",
            "proxy-status-pod",
            "--server",
            &server,
        ],
    );
    assert_eq!(code, 0);
    let reviews_v2: Vec<&str> = clusters
        .lines()
        .find(|l| l.contains("reviews.default.svc.cluster.local") && l.contains(" v2 "))
        .unwrap_or_else(|| panic!("a reviews v2 row: {clusters}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        reviews_v2,
        [
            "reviews.default.svc.cluster.local",
            "9080",
            "v2",
            "outbound",
            "EDS",
            "reviews.default"
        ]
    );

    // A VirtualService this Envoy rejects: RDS turns NACKED with its message.
    pod.write_config(
        "ratings-by-path.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings-by-path}}\n\
             spec:\n  hosts: [ratings]\n  http:\n  - match: [{{uri: {{regex: \"{LARGE_REGEX}\"}}}}]\n    \
             route: [{{destination: {{host: details}}}}]\n  - route: [{{destination: {{host: ratings}}}}]\n"
        ),
    );
    wait_until("proxy-status to show RDS NACKED", PROPAGATION, || {
        let rds = status_of(&pod, "RDS");
        match rds["state"].as_str() {
            Some("NACKED") => Ok(()),
            other => Err(format!("RDS {other:?}: {rds}")),
        }
    });
    let rds = status_of(&pod, "RDS");
    let error = rds["error"].as_str().unwrap_or_default();
    assert!(error.contains("program size"), "Envoy's own message: {rds}");
    assert_eq!(status_of(&pod, "CDS")["state"], "SYNCED");
    let (_, table) = pilotfish(Some(&pod), &["proxy-status", "--server", &server]);
    assert!(
        table.contains("proxy-status-pod.default RDS NACKED:"),
        "{table}"
    );
}

/// `serve`'s log on stderr (a file here, not a terminal), once it serves.
fn serve_log(extra: &[&str]) -> String {
    let dir = temp_dir(&format!("log{}", extra.len()));
    let log = dir.join("stderr");
    let mut child = Command::new(support::pilotfish::binary())
        .args([
            "serve",
            "--registry-file",
            &repo(REGISTRY),
            "--config-dir",
            &repo(CONFIG),
        ])
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--secure-xds-address",
            "off",
        ])
        .args(["--http-address", "127.0.0.1:0"])
        .args(extra)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start pilotfish serve");
    wait_until("pilotfish to log that it serves", PROPAGATION, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.contains("pilotfish serving") {
            true => Ok(()),
            false => Err(text),
        }
    });
    child.kill().ok();
    child.wait().ok();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&dir).ok();
    text
}

#[test]
fn serve_logs_plain_text_off_a_terminal_and_json_lines_with_log_format_json() {
    let text = serve_log(&[]);
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI codes in a file: {text:?}"
    );
    let json_log = serve_log(&["--log-format", "json"]);
    for line in json_log.lines() {
        let entry = json(line);
        assert!(
            entry["level"].is_string() && entry["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        json_log.contains("\"message\":\"pilotfish serving\""),
        "{json_log}"
    );
}

#[test]
fn validate_checks_hosts_against_a_real_consul_agent_with_registry_consul() {
    use std::sync::Arc;
    use support::consul::{Consul, Instance};
    use support::netns::Netns;
    use support::testdir::TestDir;

    let dir = TestDir::new("validate-consul");
    let ns = Arc::new(Netns::new());
    let consul = Consul::start(ns.clone(), dir.path(), "127.0.0.1");
    consul.register(&Instance::new("details-1", "details", "127.0.0.1", 9080));
    let config = dir.path().join("vs.yaml");
    std::fs::write(
        &config,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: details}\n\
         spec:\n  hosts: [details.service.consul]\n  http:\n  - route:\n    \
         - destination: {host: details.service.consul}\n    - destination: {host: reviews.service.consul}\n",
    )
    .expect("write");
    let run_in = |pod_ns: &Netns, args: &[&str]| {
        let out = pod_ns
            .command(support::pilotfish::binary(), args)
            .output()
            .expect("run pilotfish");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), stdout)
    };
    let url = consul.url();
    let (code, out) = run_in(
        &ns,
        &[
            "validate",
            config.to_str().expect("utf-8"),
            "--registry",
            "consul",
            "--consul-address",
            &url,
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("route[1].destination.host: host reviews.service.consul is not a service"),
        "{out}"
    );
    assert!(
        !out.contains("host details.service.consul"),
        "details is in Consul: {out}"
    );
}
