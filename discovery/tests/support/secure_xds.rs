//! Proxies on the secure xDS port (15012): pilotfish keeps its mesh CA in
//! the test directory, each Envoy gets a workload certificate from that CA
//! (`pilotfish certificate issue`, as an operator would for a VM) or
//! presents a ServiceAccount token, and its bootstrap says how
//! (`--xds-root-cert`, `--cert-dir` or `--token-file`).
//!
//! `PILOTFISH_TEST_SECURE_XDS=1` puts every pod's Envoy of the bookinfo-style
//! harness on the secure port, so the suite's traffic tests also hold over
//! TLS with verified identities.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::envoy::PROXY_UID;
use super::process::write_world_readable;
use super::run_checked;

pub const SECURE_XDS_ADDRESS: &str = "127.0.0.1:15012";
/// The name pilotfish's CA-issued serving certificate carries by default.
pub const SERVER_NAME: &str = "istiod.istio-system.svc";

/// Whether the suite runs its pods' Envoys on the secure port.
pub fn enabled_for_suite() -> bool {
    std::env::var("PILOTFISH_TEST_SECURE_XDS").is_ok_and(|v| v == "1")
}

/// Where pilotfish keeps its CA under a test directory.
pub fn ca_dir(test_dir: &Path) -> PathBuf {
    test_dir.join("mesh-ca")
}

/// pilotfish arguments: the mesh CA in `test_dir`, the secure port on.
pub fn pilotfish_args(test_dir: &Path) -> Vec<String> {
    vec![
        "--ca-dir".into(),
        ca_dir(test_dir).display().to_string(),
        "--secure-xds-address".into(),
        "0.0.0.0:15012".into(),
    ]
}

/// Issues a certificate for `namespace/service_account` from the CA that a
/// running pilotfish keeps in `test_dir`, into `<test_dir>/certs-<sa>`
/// readable by Envoy's uid, and returns the bootstrap arguments that use it
/// (the caller points `--xds-address` at [`SECURE_XDS_ADDRESS`]).
pub fn certificate_bootstrap_args(
    test_dir: &Path,
    namespace: &str,
    service_account: &str,
) -> Vec<String> {
    let out = test_dir.join(format!("certs-{service_account}"));
    run_checked(Command::new(super::pilotfish::binary()).args([
        "certificate",
        "issue",
        "--ca-dir",
        &ca_dir(test_dir).display().to_string(),
        "--namespace",
        namespace,
        "--service-account",
        service_account,
        "--out-dir",
        &out.display().to_string(),
    ]));
    give_to_proxy(&out);
    vec![
        "--xds-root-cert".into(),
        out.join("root-cert.pem").display().to_string(),
        "--cert-dir".into(),
        out.display().to_string(),
        "--service-account".into(),
        service_account.into(),
    ]
}

/// Bootstrap arguments presenting `token` (written to a file first) over
/// TLS, trusting the CA that pilotfish keeps in `test_dir`.
pub fn token_bootstrap_args(test_dir: &Path, name: &str, token: &str) -> Vec<String> {
    let token_file = test_dir.join(format!("{name}.token"));
    write_world_readable(&token_file, token);
    let root = test_dir.join(format!("{name}-root-cert.pem"));
    let ca_cert = std::fs::read_to_string(ca_dir(test_dir).join("ca-cert.pem"))
        .expect("pilotfish wrote its CA certificate");
    write_world_readable(&root, &ca_cert);
    vec![
        "--xds-root-cert".into(),
        root.display().to_string(),
        "--token-file".into(),
        token_file.display().to_string(),
    ]
}

/// Envoy runs as uid 1337: it must read its key (mode 0600).
pub fn give_to_proxy(dir: &Path) {
    let owner = format!("{PROXY_UID}:{PROXY_UID}");
    run_checked(Command::new("chown").args(["-R", &owner, &dir.display().to_string()]));
}
