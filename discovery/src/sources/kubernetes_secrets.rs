//! Gateway TLS credentials from Kubernetes Secrets, as Istio reads them for
//! a Gateway server's `credentialName`:
//!
//! - `tls.crt` + `tls.key` (type `kubernetes.io/tls`, or `Opaque`), with the
//!   CA that verifies clients in `ca.crt`;
//! - Istio's generic Opaque form `cert` + `key`, with `cacert`.
//!
//! Secrets holding neither certificate key are none of Pilotfish's business
//! and are ignored silently. A certificate without its private key is
//! reported (`Secret ns/name`, the missing key) and not served. Only the
//! bytes go into the mesh; nothing here logs them, and the reflector keeps
//! only the data keys above, so unrelated secret data is dropped on arrival.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use pilotfish_registries::kubernetes::kube::Api;
use pilotfish_registries::kubernetes::kube::runtime::watcher;
use pilotfish_registries::kubernetes::watch::{
    Reflector, describe, reflect_selected, scoped_api, strip_metadata,
};
use pilotfish_registries::kubernetes::{ApiServer, StatusTracker};
use pilotfish_translate::TlsCredential;
use tokio::sync::{Notify, mpsc};

use crate::mesh_store::Credentials;
use crate::metrics::Metrics;
use crate::problems::InputProblem;
use crate::push::Change;
use crate::sources::kubernetes_source::{KubernetesSource, namespace_scopes, publish_on_change};

/// The credential source's name in the mesh store, problems and status.
pub const SOURCE_NAME: &str = "kubernetes-secrets";
/// `InputProblem::source` of problems with a Secret.
const ORIGIN: &str = "kubernetes";

/// Secret types that never hold a gateway credential and can be large or
/// numerous; the API server filters them out (Istio does the same).
const FIELD_SELECTOR: &str = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1";

/// Where a Secret keeps its certificate, key and CA.
struct Layout {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
}

/// Checked in order: a Secret with both layouts is read as `kubernetes.io/tls`.
const LAYOUTS: [Layout; 2] = [
    Layout {
        cert: "tls.crt",
        key: "tls.key",
        ca: "ca.crt",
    },
    Layout {
        cert: "cert",
        key: "key",
        ca: "cacert",
    },
];

/// Why a Secret that holds a certificate cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// `missing` is the private key, or the certificate itself when its
    /// entry is empty.
    #[error("has {present} but {missing} is missing or empty; the credential is not served")]
    Incomplete {
        present: &'static str,
        missing: &'static str,
    },
}

impl CredentialError {
    fn field(&self) -> String {
        match self {
            CredentialError::Incomplete { missing, .. } => format!("data.{missing}"),
        }
    }
}

/// The TLS credential a Secret holds; `None` for Secrets that hold none
/// (other types, or no certificate key).
pub fn credential(secret: &Secret) -> Result<Option<TlsCredential>, CredentialError> {
    let type_ok = matches!(
        secret.type_.as_deref(),
        None | Some("") | Some("Opaque") | Some("kubernetes.io/tls")
    );
    let Some(data) = secret.data.as_ref().filter(|_| type_ok) else {
        return Ok(None);
    };
    let value = |key: &str| data.get(key).map(|v| v.0.clone()).filter(|v| !v.is_empty());
    let Some(layout) = LAYOUTS.iter().find(|l| data.contains_key(l.cert)) else {
        return Ok(None);
    };
    let incomplete = |present, missing| CredentialError::Incomplete { present, missing };
    let certificate_chain = value(layout.cert).ok_or(incomplete(layout.key, layout.cert))?;
    let private_key = value(layout.key).ok_or(incomplete(layout.cert, layout.key))?;
    Ok(Some(TlsCredential {
        certificate_chain,
        private_key,
        ca_certificates: value(layout.ca),
    }))
}

/// The CA of a Secret that holds only a CA (`ca.crt` or `cacert`, no
/// certificate): Istio's separate `<credentialName>-cacert` Secret.
fn ca_only(secret: &Secret) -> Option<Vec<u8>> {
    let data = secret.data.as_ref()?;
    if LAYOUTS.iter().any(|l| data.contains_key(l.cert)) {
        return None;
    }
    LAYOUTS.iter().find_map(|l| {
        data.get(l.ca)
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
    })
}

/// Suffix of a Secret holding the CA for the credential named without it.
const CA_SECRET_SUFFIX: &str = "-cacert";

/// Converts the complete current set of Secrets: the credentials to serve,
/// by namespace and name, and the problems to report (sorted). A CA-only
/// Secret `<name>-cacert` gives credential `<name>` its CA when that
/// credential's own Secret has none.
pub fn convert<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> (Credentials, Vec<InputProblem>) {
    let mut credentials = Credentials::new();
    let mut separate_cas = Vec::new();
    let mut problems = Vec::new();
    for secret in secrets {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        match credential(secret) {
            Ok(Some(credential)) => {
                credentials.insert((namespace, name), credential);
            }
            Ok(None) => {
                if let (Some(base), Some(ca)) =
                    (name.strip_suffix(CA_SECRET_SUFFIX), ca_only(secret))
                {
                    separate_cas.push(((namespace, base.to_string()), ca));
                }
            }
            Err(error) => problems.push(InputProblem {
                source: ORIGIN.to_string(),
                object: Some(format!("Secret {namespace}/{name}")),
                field: Some(error.field()),
                message: error.to_string(),
            }),
        }
    }
    for (key, ca) in separate_cas {
        if let Some(credential) = credentials.get_mut(&key) {
            credential.ca_certificates.get_or_insert(ca);
        }
    }
    problems.sort();
    (credentials, problems)
}

/// Keeps only what [`credential`] reads: the data of the known keys.
fn strip(secret: &mut Secret) {
    strip_metadata(&mut secret.metadata);
    secret.string_data = None;
    if let Some(data) = secret.data.as_mut() {
        data.retain(|key, _| {
            LAYOUTS
                .iter()
                .any(|l| [l.cert, l.key, l.ca].contains(&key.as_str()))
        });
    }
}

/// Starts watching Secrets in `namespaces` (empty: all); each full set of
/// credentials becomes a `Change::Credentials`. The mesh store must have
/// `add_dynamic_credentials(SOURCE_NAME)` first.
pub fn start(
    api: &ApiServer,
    namespaces: &BTreeSet<String>,
    changes: mpsc::UnboundedSender<Change>,
    metrics: Arc<Metrics>,
) -> KubernetesSource {
    let (tracker, status) = StatusTracker::new(SOURCE_NAME, &api.url);
    let changed = Arc::new(Notify::new());
    let reflectors = namespace_scopes(namespaces)
        .into_iter()
        .map(|ns| {
            let api: Api<Secret> = scoped_api(&api.client, ns);
            reflect_selected(
                api,
                (),
                describe("Secret", ns),
                watcher::Config::default().fields(FIELD_SELECTOR),
                strip,
                tracker.clone(),
                changed.clone(),
            )
        })
        .collect();
    let publisher = run(reflectors, changed, changes, tracker.clone());
    KubernetesSource::spawn(SOURCE_NAME, api, tracker, status, publisher, metrics)
}

async fn run(
    reflectors: Vec<Reflector<Secret>>,
    changed: Arc<Notify>,
    changes: mpsc::UnboundedSender<Change>,
    tracker: StatusTracker,
) {
    for r in &reflectors {
        if !r.ready().await {
            return;
        }
    }
    let current = || {
        let secrets: Vec<Arc<Secret>> = reflectors.iter().flat_map(|r| r.store.state()).collect();
        let converted = convert(secrets.iter().map(|s| s.as_ref()));
        let count = converted.0.len();
        (converted, count)
    };
    let to_change = |(credentials, problems): &(Credentials, Vec<InputProblem>)| {
        tracing::debug!(
            credentials = credentials.len(),
            problems = problems.len(),
            "gateway credentials changed"
        );
        Change::Credentials {
            name: SOURCE_NAME.to_string(),
            credentials: credentials.clone(),
            problems: problems.clone(),
        }
    };
    publish_on_change(changed, changes, tracker, current, to_change).await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn secret(name: &str, type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            type_: type_.map(Into::into),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn key(name: &str) -> (String, String) {
        ("istio-system".into(), name.into())
    }

    #[test]
    fn kubernetes_tls_secret_with_ca_becomes_a_credential() {
        let s = secret(
            "gw",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "CERT"), ("tls.key", "KEY"), ("ca.crt", "CA")],
        );
        let c = credential(&s).unwrap().unwrap();
        assert_eq!(c.certificate_chain, b"CERT");
        assert_eq!(c.private_key, b"KEY");
        assert_eq!(c.ca_certificates.as_deref(), Some(&b"CA"[..]));
    }

    #[test]
    fn opaque_secrets_in_either_layout_become_credentials() {
        let tls = secret("a", Some("Opaque"), &[("tls.crt", "C"), ("tls.key", "K")]);
        let istio = secret(
            "b",
            Some("Opaque"),
            &[("cert", "C2"), ("key", "K2"), ("cacert", "CA2")],
        );
        let (credentials, problems) = convert([&tls, &istio]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(credentials[&key("a")].ca_certificates, None);
        assert_eq!(credentials[&key("b")].private_key, b"K2");
        assert_eq!(
            credentials[&key("b")].ca_certificates.as_deref(),
            Some(&b"CA2"[..])
        );
    }

    #[test]
    fn secrets_without_a_certificate_or_of_other_types_are_ignored_silently() {
        let plain = secret("db-password", Some("Opaque"), &[("password", "x")]);
        let docker = secret(
            "pull",
            Some("kubernetes.io/dockerconfigjson"),
            &[("tls.crt", "C")],
        );
        let empty = Secret::default();
        let (credentials, problems) = convert([&plain, &docker, &empty]);
        assert!(credentials.is_empty());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_separate_cacert_secret_gives_its_credential_a_ca() {
        let cert = secret(
            "gw",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "C"), ("tls.key", "K")],
        );
        let ca = secret("gw-cacert", Some("Opaque"), &[("cacert", "CA")]);
        let own = secret(
            "own",
            None,
            &[("tls.crt", "C"), ("tls.key", "K"), ("ca.crt", "OWN")],
        );
        let other = secret("own-cacert", None, &[("ca.crt", "OTHER")]);
        let orphan = secret("nobody-cacert", None, &[("ca.crt", "CA")]);
        let (credentials, problems) = convert([&ca, &cert, &own, &other, &orphan]);
        assert!(problems.is_empty(), "{problems:?}");
        let key = |name: &str| ("istio-system".to_string(), name.to_string());
        assert_eq!(
            credentials[&key("gw")].ca_certificates.as_deref(),
            Some(&b"CA"[..])
        );
        assert_eq!(
            credentials[&key("own")].ca_certificates.as_deref(),
            Some(&b"OWN"[..]),
            "a Secret's own CA wins"
        );
        assert_eq!(credentials.len(), 2, "CA-only Secrets are not credentials");
    }

    #[test]
    fn a_certificate_without_its_key_is_reported_naming_the_secret_and_key() {
        let s = secret("gw", Some("Opaque"), &[("cert", "C"), ("cacert", "CA")]);
        let empty_key = secret("gw2", None, &[("tls.crt", "C"), ("tls.key", "")]);
        let (credentials, problems) = convert([&s, &empty_key]);
        assert!(credentials.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0].object.as_deref(),
            Some("Secret istio-system/gw")
        );
        assert_eq!(problems[0].field.as_deref(), Some("data.key"));
        assert!(
            problems[0]
                .message
                .starts_with("has cert but key is missing"),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[1].object.as_deref(),
            Some("Secret istio-system/gw2")
        );
        assert_eq!(problems[1].field.as_deref(), Some("data.tls.key"));

        let empty_cert = secret("gw3", None, &[("tls.crt", ""), ("tls.key", "K")]);
        assert_eq!(
            credential(&empty_cert),
            Err(CredentialError::Incomplete {
                present: "tls.key",
                missing: "tls.crt"
            })
        );
    }

    #[test]
    fn stored_secrets_keep_only_credential_keys_and_nothing_prints_key_bytes() {
        let mut s = secret(
            "gw",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "C"), ("tls.key", "TOPSECRET"), ("extra", "x")],
        );
        strip(&mut s);
        let kept: Vec<&String> = s.data.as_ref().unwrap().keys().collect();
        assert_eq!(kept, ["tls.crt", "tls.key"]);
        let (credentials, _) = convert([&s]);
        let printed = format!("{credentials:?}");
        assert!(!printed.contains("TOPSECRET"), "{printed}");
    }
}
