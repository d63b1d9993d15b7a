//! Workload certificates served over SDS, as Istio's agent serves them to
//! its Envoy: `default` (the proxy's own SPIFFE certificate and key) and
//! `ROOTCA` (the mesh root to verify peers with).
//!
//! One certificate per verified identity (namespace + service account),
//! shared by every stream of that identity and by no other. It is renewed
//! when half of its life has passed (Istio's agent renews at the same
//! point), so a proxy always holds one with half its life left; every
//! stream holding the identity sees the new one at once. Identities leave
//! the store when the last stream holding them ends, so what it holds is
//! bounded by the authenticated streams. Keys live only in memory and are
//! never logged (the `Debug` of [`WorkloadSecrets`] leaves them out).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use prost::Name;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::ca::{CaError, CertificateAuthority, IssuedCertificate};
use super::identity::WorkloadIdentity;
use crate::resource::Resource;

/// Istio's SDS name of a proxy's own certificate and key.
pub const DEFAULT_SECRET: &str = "default";
/// Istio's SDS name of the mesh root.
pub const ROOT_SECRET: &str = "ROOTCA";

/// Whether an SDS name is one of the per-identity secrets.
pub fn is_workload_secret(name: &str) -> bool {
    name == DEFAULT_SECRET || name == ROOT_SECRET
}

/// The earliest renewal after an issue: a very short `ttl` (or a CA about
/// to expire) must not make the scheduler spin.
const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);
/// When issuing fails (a CA past its life), the next attempt.
const RETRY_DELAY: Duration = Duration::from_secs(10);

/// The SDS resources of one identity's current certificate.
pub struct WorkloadSecrets {
    /// `default` and `ROOTCA`, by name, encoded once for every stream.
    pub resources: BTreeMap<String, Arc<Resource>>,
    pub not_after: SystemTime,
    /// Short hash of the certificate chain: the version of `default`.
    pub version: String,
}

impl std::fmt::Debug for WorkloadSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSecrets")
            .field("version", &self.version)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadSecrets {
    fn new(issued: IssuedCertificate, root_pem: &str) -> Self {
        let version = short_hash(issued.chain_pem.as_bytes());
        let default = Secret {
            name: DEFAULT_SECRET.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(issued.chain_pem)),
                private_key: Some(inline(issued.key_pem)),
                ..Default::default()
            })),
        };
        let root = Secret {
            name: ROOT_SECRET.to_string(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(root_pem.to_string())),
                    ..Default::default()
                },
            )),
        };
        // Versions from the certificates, not the encoding: the key is not
        // hashed, and a reconnecting proxy that reports the same chain is
        // not sent it again.
        let resources = [
            (default, version.clone()),
            (root, short_hash(root_pem.as_bytes())),
        ]
        .into_iter()
        .map(|(secret, version)| {
            let encoded = prost::Message::encode_to_vec(&secret);
            let resource =
                Resource::with_version(Secret::type_url(), vec![encoded.into()], version);
            (secret.name, Arc::new(resource))
        })
        .collect();
        WorkloadSecrets {
            resources,
            not_after: issued.not_after,
            version,
        }
    }
}

/// PEM is text: inline strings keep Envoy's config dump readable (it
/// redacts private keys whatever their form).
fn inline(pem: String) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem)),
        ..Default::default()
    }
}

fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

struct Entry {
    /// Streams holding a [`Lease`] on the identity.
    holders: usize,
    secrets: watch::Sender<Arc<WorkloadSecrets>>,
    renew_at: Instant,
}

/// Per-identity workload certificates, renewed by [`WorkloadCertificates::run`].
pub struct WorkloadCertificates {
    ca: Arc<CertificateAuthority>,
    ttl: Duration,
    entries: Mutex<HashMap<WorkloadIdentity, Entry>>,
    /// A new identity may need renewing before the scheduler's next wake-up.
    added: Notify,
}

/// A stream's hold on its identity's certificate: follows renewals, and
/// lets the identity go when the last lease is dropped.
pub struct Lease {
    store: Arc<WorkloadCertificates>,
    identity: WorkloadIdentity,
    secrets: watch::Receiver<Arc<WorkloadSecrets>>,
}

impl Lease {
    /// The identity's current certificate.
    pub fn current(&self) -> Arc<WorkloadSecrets> {
        self.secrets.borrow().clone()
    }

    /// Marks the current certificate as seen and returns it.
    pub fn seen(&mut self) -> Arc<WorkloadSecrets> {
        self.secrets.borrow_and_update().clone()
    }

    /// Resolves when a certificate newer than the last seen is issued;
    /// owns what it waits on, so it borrows nothing of the stream.
    pub fn renewed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut secrets = self.secrets.clone();
        async move {
            if secrets.changed().await.is_err() {
                // The store is gone: no renewal will ever come.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.store.release(&self.identity);
    }
}

impl WorkloadCertificates {
    /// Certificates from `ca` living `ttl`.
    pub fn new(ca: Arc<CertificateAuthority>, ttl: Duration) -> Arc<Self> {
        Arc::new(WorkloadCertificates {
            ca,
            ttl,
            entries: Mutex::new(HashMap::new()),
            added: Notify::new(),
        })
    }

    /// The identity's certificate, issued if no stream holds it yet.
    pub fn acquire(self: &Arc<Self>, identity: &WorkloadIdentity) -> Result<Lease, CaError> {
        self.acquire_at(identity, Instant::now())
    }

    fn acquire_at(
        self: &Arc<Self>,
        identity: &WorkloadIdentity,
        now: Instant,
    ) -> Result<Lease, CaError> {
        if let Some(lease) = self.hold_existing(identity) {
            return Ok(lease);
        }
        // Signed outside the lock; a stream of the same identity that won
        // the race keeps its certificate and this one is dropped.
        let (secrets, renew_at) = self.issue(identity, now)?;
        let mut entries = self.lock();
        let entry = entries.entry(identity.clone()).or_insert_with(|| {
            tracing::info!(%identity, version = %secrets.version, "issued a workload certificate for SDS");
            Entry {
                holders: 0,
                secrets: watch::Sender::new(Arc::new(secrets)),
                renew_at,
            }
        });
        entry.holders += 1;
        let lease = self.lease(identity, &entry.secrets);
        drop(entries);
        self.added.notify_one();
        Ok(lease)
    }

    fn hold_existing(self: &Arc<Self>, identity: &WorkloadIdentity) -> Option<Lease> {
        let mut entries = self.lock();
        let entry = entries.get_mut(identity)?;
        entry.holders += 1;
        Some(self.lease(identity, &entry.secrets))
    }

    fn lease(
        self: &Arc<Self>,
        identity: &WorkloadIdentity,
        secrets: &watch::Sender<Arc<WorkloadSecrets>>,
    ) -> Lease {
        let mut secrets = secrets.subscribe();
        secrets.mark_unchanged();
        Lease {
            store: self.clone(),
            identity: identity.clone(),
            secrets,
        }
    }

    fn release(&self, identity: &WorkloadIdentity) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(identity) {
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                entries.remove(identity);
                tracing::debug!(%identity, "no stream holds the identity; its workload certificate is dropped");
            }
        }
    }

    /// A new certificate and when to renew it: at half its life.
    fn issue(
        &self,
        identity: &WorkloadIdentity,
        now: Instant,
    ) -> Result<(WorkloadSecrets, Instant), CaError> {
        let issued = self.ca.issue_workload(identity, self.ttl)?;
        // Half of the life it really got (the CA's own end may cut it).
        let life = issued
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let renew_at = now + (life / 2).max(MIN_RENEWAL_DELAY);
        Ok((WorkloadSecrets::new(issued, self.ca.root_pem()), renew_at))
    }

    /// Renews every certificate due at `now`; returns when the next one
    /// is due.
    pub fn renew_due(&self, now: Instant) -> Option<Instant> {
        let due: Vec<WorkloadIdentity> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.renew_at <= now)
            .map(|(identity, _)| identity.clone())
            .collect();
        for identity in due {
            let renewed = self.issue(&identity, now);
            let mut entries = self.lock();
            // Released meanwhile: nobody needs it.
            let Some(entry) = entries.get_mut(&identity) else {
                continue;
            };
            match renewed {
                Ok((secrets, renew_at)) => {
                    tracing::info!(%identity, version = %secrets.version, "renewed a workload certificate at half its life");
                    entry.renew_at = renew_at;
                    entry.secrets.send_replace(Arc::new(secrets));
                }
                Err(error) => {
                    tracing::warn!(%identity, %error, retry_in = ?RETRY_DELAY, "cannot renew a workload certificate");
                    entry.renew_at = now + RETRY_DELAY;
                }
            }
        }
        self.lock().values().map(|entry| entry.renew_at).min()
    }

    /// The identity's current certificate, if a stream holds one; holds
    /// nothing itself (for the debug pages).
    pub fn peek(&self, identity: &WorkloadIdentity) -> Option<Arc<WorkloadSecrets>> {
        self.lock()
            .get(identity)
            .map(|entry| entry.secrets.borrow().clone())
    }

    /// Identities with a certificate (held by at least one stream).
    pub fn identities(&self) -> usize {
        self.lock().len()
    }

    /// Renews certificates as they come due, until `stop`. One task for
    /// every identity: it sleeps until the earliest renewal.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = self.renew_due(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.added.notified() => {}
                _ = sleep => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkloadIdentity, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn store() -> Arc<WorkloadCertificates> {
        let ca = CertificateAuthority::generate("cluster.local").expect("CA");
        WorkloadCertificates::new(Arc::new(ca), TTL)
    }

    fn identity(sa: &str) -> WorkloadIdentity {
        WorkloadIdentity::new("cluster.local", "shop", sa)
    }

    fn decode(secrets: &WorkloadSecrets, name: &str) -> Secret {
        let resource = &secrets.resources[name];
        prost::Message::decode(resource.value().as_ref()).expect("a Secret")
    }

    fn certificate(secrets: &WorkloadSecrets) -> TlsCertificate {
        match decode(secrets, DEFAULT_SECRET).r#type {
            Some(secret::Type::TlsCertificate(tls)) => tls,
            other => panic!("default is not a certificate: {other:?}"),
        }
    }

    fn pem(source: Option<DataSource>) -> String {
        match source.and_then(|s| s.specifier) {
            Some(data_source::Specifier::InlineString(pem)) => pem,
            other => panic!("not an inline string: {other:?}"),
        }
    }

    #[test]
    fn default_carries_the_identity_and_rootca_the_mesh_root() {
        let store = store();
        let lease = store.acquire(&identity("reviews")).expect("issued");
        let secrets = lease.current();
        let tls = certificate(&secrets);
        let chain = pem(tls.certificate_chain);
        assert!(
            chain.ends_with(store.ca.root_pem()),
            "chain ends with the root"
        );
        let leaf = rustls_pemfile_first(&chain);
        assert_eq!(
            crate::security::ca::spiffe_identity_of(&leaf).expect("SPIFFE SAN"),
            identity("reviews")
        );
        assert!(pem(tls.private_key).contains("PRIVATE KEY"));
        match decode(&secrets, ROOT_SECRET).r#type {
            Some(secret::Type::ValidationContext(v)) => {
                assert_eq!(pem(v.trusted_ca), store.ca.root_pem())
            }
            other => panic!("ROOTCA is not a validation context: {other:?}"),
        }
        assert_eq!(secrets.resources[DEFAULT_SECRET].version(), secrets.version);
        let debug = format!("{secrets:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    fn rustls_pemfile_first(chain: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM")
            .to_vec()
    }

    #[test]
    fn one_identity_shares_one_certificate_and_others_get_their_own_keys() {
        let store = store();
        let one = store.acquire(&identity("reviews")).expect("issued");
        let two = store.acquire(&identity("reviews")).expect("issued");
        assert!(Arc::ptr_eq(&one.current(), &two.current()));
        let other = store.acquire(&identity("ratings")).expect("issued");
        let key = |lease: &Lease| pem(certificate(&lease.current()).private_key);
        assert_ne!(key(&one), key(&other));
        assert_ne!(one.current().version, other.current().version);
        assert_eq!(store.identities(), 2);
    }

    #[test]
    fn certificates_are_renewed_at_half_life_and_every_holder_sees_it() {
        let store = store();
        let start = Instant::now();
        let mut one = store
            .acquire_at(&identity("reviews"), start)
            .expect("issued");
        let two = store
            .acquire_at(&identity("reviews"), start)
            .expect("issued");
        let first = one.seen();
        let next = store.renew_due(start + TTL / 2 - Duration::from_secs(60));
        assert!(Arc::ptr_eq(&first, &one.current()), "not yet half life");
        let next = next.expect("a renewal is scheduled");
        assert!(next > start + TTL / 2 - Duration::from_secs(60));
        assert!(next <= start + TTL / 2);

        let after = store.renew_due(start + TTL / 2 + Duration::from_secs(1));
        let renewed = one.current();
        assert_ne!(renewed.version, first.version);
        assert!(Arc::ptr_eq(&renewed, &two.current()));
        let after = after.expect("the next renewal");
        assert!(after >= start + TTL - Duration::from_secs(60), "{after:?}");
        // A holder waiting for a renewal is woken.
        let woken = one.renewed();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), woken)
                .await
                .expect("woken by the renewal")
        });
    }

    #[test]
    fn identities_leave_when_no_stream_holds_them() {
        let store = store();
        let one = store.acquire(&identity("reviews")).expect("issued");
        let two = store.acquire(&identity("reviews")).expect("issued");
        let first = one.current();
        drop(one);
        assert_eq!(store.identities(), 1, "still held");
        drop(two);
        assert_eq!(store.identities(), 0);
        assert_eq!(store.renew_due(Instant::now() + TTL), None);
        let again = store.acquire(&identity("reviews")).expect("issued");
        assert_ne!(again.current().version, first.version, "a new certificate");
    }
}
