//! Pilotfish's mesh certificate authority: a self-signed root (like Istio's
//! `istio-ca-secret`) or a plugged-in CA (Istio's `cacerts` files), which
//! signs workload certificates carrying a SPIFFE id and the control plane's
//! own serving certificate.
//!
//! Key material never reaches an error message or a log line.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::identity::WorkloadIdentity;

/// Istio's file and Secret key names for a CA (`cacerts`, `istio-ca-secret`).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// The Secret type Istio gives `istio-ca-secret`.
const CA_SECRET_TYPE: &str = "istio.io/ca-root";
const CA_COMMON_NAME: &str = "Pilotfish mesh CA";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start a minute in the past, so a peer whose clock lags slightly
/// does not refuse a brand-new certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate the mesh CA: {0}")]
    Generate(rcgen::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{dir}: has {present} but not {missing}; give both or neither (then a CA is generated)"
    )]
    Incomplete {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("{source_name}: {reason}")]
    InvalidCertificate { source_name: String, reason: String },
    #[error("{source_name}: {reason}")]
    InvalidKey { source_name: String, reason: String },
    #[error("{source_name}: the private key does not belong to the CA certificate")]
    KeyMismatch { source_name: String },
    #[error("{source_name}: the certificate is not a CA (basicConstraints CA:true is missing)")]
    NotCa { source_name: String },
    #[error("{secret}: {message}")]
    Kubernetes { secret: String, message: String },
    #[error("{secret}: has no {key:?} entry")]
    SecretMissingKey { secret: String, key: &'static str },
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("invalid name for a certificate: {0}")]
    InvalidName(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(rcgen::Error),
    #[error("no random numbers from the system")]
    Random,
    #[error("certificate has no usable workload identity: {0}")]
    NoIdentity(String),
}

/// A freshly issued certificate with its own new private key.
pub struct IssuedCertificate {
    /// The leaf, then the certificates up to and including the root.
    pub chain_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The mesh CA. Signs with `issuer`; every issued chain is the leaf followed
/// by `chain_pems` (the signing certificate, any intermediates, the root).
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    chain_pems: Vec<String>,
    root_pem: String,
    not_after: SystemTime,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The PEM files or Secret entries a CA is made of.
struct CaMaterial<'a> {
    source_name: String,
    ca_cert: &'a str,
    ca_key: &'a str,
    cert_chain: Option<&'a str>,
    root_cert: Option<&'a str>,
}

impl CertificateAuthority {
    /// A new self-signed root: ECDSA P-256, CA:true, valid ten years.
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let (ca, _) = Self::generate_with_key(trust_domain)?;
        Ok(ca)
    }

    fn generate_with_key(trust_domain: &str) -> Result<(Self, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        name.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial()?);
        let cert_pem = params.self_signed(&key).map_err(CaError::Generate)?.pem();
        let key_pem = key.serialize_pem();
        let ca = Self::from_material(
            trust_domain,
            CaMaterial {
                source_name: "generated CA".to_string(),
                ca_cert: &cert_pem,
                ca_key: &key_pem,
                cert_chain: None,
                root_cert: None,
            },
        )?;
        Ok((ca, key_pem))
    }

    /// A CA from a certificate and its PKCS#8 key; fails when the key does
    /// not match the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, trust_domain: &str) -> Result<Self, CaError> {
        Self::from_material(
            trust_domain,
            CaMaterial {
                source_name: "CA certificate".to_string(),
                ca_cert: cert_pem,
                ca_key: key_pem,
                cert_chain: None,
                root_cert: None,
            },
        )
    }

    /// Loads `ca-cert.pem` and `ca-key.pem` (with Istio's optional
    /// `root-cert.pem` and `cert-chain.pem` for an intermediate CA) from
    /// `dir`; when neither exists, generates a root and persists it there.
    pub fn load_or_generate_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Self::load_dir(dir, trust_domain),
            (false, false) => {
                let (ca, key_pem) = Self::generate_with_key(trust_domain)?;
                fs::create_dir_all(dir).map_err(|source| CaError::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
                // The key first: a crash in between leaves an incomplete
                // directory, which is refused, never a certificate whose
                // key was lost.
                write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(|source| {
                    CaError::Write {
                        path: key_path.clone(),
                        source,
                    }
                })?;
                write_atomic(&cert_path, ca.root_pem.as_bytes(), 0o644).map_err(|source| {
                    CaError::Write {
                        path: cert_path.clone(),
                        source,
                    }
                })?;
                tracing::info!(dir = %dir.display(), trust_domain, "generated a new mesh CA and saved it");
                Ok(ca)
            }
            (true, false) => Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                present: CA_CERT_FILE,
                missing: CA_KEY_FILE,
            }),
            (false, true) => Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                present: CA_KEY_FILE,
                missing: CA_CERT_FILE,
            }),
        }
    }

    /// Loads the CA files of `dir` (see [`Self::load_or_generate_dir`]);
    /// missing files are an error.
    pub fn load_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let ca_cert = read_file(&dir.join(CA_CERT_FILE))?;
        let ca_key = read_file(&dir.join(CA_KEY_FILE))?;
        let cert_chain = read_optional_file(&dir.join(CERT_CHAIN_FILE))?;
        let root_cert = read_optional_file(&dir.join(ROOT_CERT_FILE))?;
        let ca = Self::from_material(
            trust_domain,
            CaMaterial {
                source_name: dir.display().to_string(),
                ca_cert: &ca_cert,
                ca_key: &ca_key,
                cert_chain: cert_chain.as_deref(),
                root_cert: root_cert.as_deref(),
            },
        )?;
        tracing::info!(dir = %dir.display(), trust_domain, "loaded the mesh CA");
        Ok(ca)
    }

    /// Reads the CA from a Secret laid out as Istio's `istio-ca-secret`
    /// (`ca-cert.pem`, `ca-key.pem`); when there is none, generates a root
    /// and creates the Secret. Another replica creating it first (409) is
    /// resolved by reading theirs, so all replicas share one CA.
    pub async fn load_or_create_secret(
        client: kube::Client,
        namespace: &str,
        name: &str,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let secret_name = format!("Secret {namespace}/{name}");
        let kube_error = |e: kube::Error| CaError::Kubernetes {
            secret: secret_name.clone(),
            message: e.to_string(),
        };
        if let Some(secret) = secrets.get_opt(name).await.map_err(kube_error)? {
            let ca = Self::from_secret(&secret, &secret_name, trust_domain)?;
            tracing::info!(secret = %secret_name, trust_domain, "loaded the mesh CA");
            return Ok(ca);
        }
        let (ca, key_pem) = Self::generate_with_key(trust_domain)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            type_: Some(CA_SECRET_TYPE.to_string()),
            data: Some(BTreeMap::from([
                (
                    CA_CERT_FILE.to_string(),
                    ByteString(ca.root_pem.as_bytes().to_vec()),
                ),
                (CA_KEY_FILE.to_string(), ByteString(key_pem.into_bytes())),
            ])),
            ..Secret::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %secret_name, trust_domain, "generated a new mesh CA and stored it");
                Ok(ca)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(secret = %secret_name, "another replica created the CA first; using theirs");
                let secret = secrets.get(name).await.map_err(kube_error)?;
                Self::from_secret(&secret, &secret_name, trust_domain)
            }
            Err(e) => Err(kube_error(e)),
        }
    }

    fn from_secret(
        secret: &Secret,
        secret_name: &str,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        let entry = |key: &'static str| -> Result<Option<String>, CaError> {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|s| s.clone().into_bytes())
                });
            match bytes {
                Some(b) if !b.is_empty() => {
                    String::from_utf8(b)
                        .map(Some)
                        .map_err(|_| CaError::InvalidCertificate {
                            source_name: format!("{secret_name} {key}"),
                            reason: "not UTF-8 PEM text".to_string(),
                        })
                }
                _ => Ok(None),
            }
        };
        let required = |key: &'static str| -> Result<String, CaError> {
            entry(key)?.ok_or(CaError::SecretMissingKey {
                secret: secret_name.to_string(),
                key,
            })
        };
        let ca_cert = required(CA_CERT_FILE)?;
        let ca_key = required(CA_KEY_FILE)?;
        let cert_chain = entry(CERT_CHAIN_FILE)?;
        let root_cert = entry(ROOT_CERT_FILE)?;
        Self::from_material(
            trust_domain,
            CaMaterial {
                source_name: secret_name.to_string(),
                ca_cert: &ca_cert,
                ca_key: &ca_key,
                cert_chain: cert_chain.as_deref(),
                root_cert: root_cert.as_deref(),
            },
        )
    }

    fn from_material(trust_domain: &str, m: CaMaterial<'_>) -> Result<Self, CaError> {
        let bad_cert = |what: &str, reason: String| CaError::InvalidCertificate {
            source_name: format!("{} {what}", m.source_name),
            reason,
        };
        let (ca_pem, ca_der) = pem_certificates(m.ca_cert)
            .map_err(|r| bad_cert(CA_CERT_FILE, r))?
            .into_iter()
            .next()
            .ok_or_else(|| bad_cert(CA_CERT_FILE, "holds no certificate".to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| bad_cert(CA_CERT_FILE, format!("cannot parse the certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(CaError::NotCa {
                source_name: format!("{} {CA_CERT_FILE}", m.source_name),
            });
        }
        let key_source = format!("{} {CA_KEY_FILE}", m.source_name);
        let key_der = PrivateKeyDer::from_pem_slice(m.ca_key.as_bytes()).map_err(|_| {
            CaError::InvalidKey {
                source_name: key_source.clone(),
                reason: "holds no PEM private key".to_string(),
            }
        })?;
        if !matches!(key_der, PrivateKeyDer::Pkcs8(_)) {
            return Err(CaError::InvalidKey {
                source_name: key_source,
                reason: "only PKCS#8 keys (BEGIN PRIVATE KEY) are supported; convert with `openssl pkcs8 -topk8 -nocrypt`".to_string(),
            });
        }
        let key = KeyPair::try_from(&key_der).map_err(|e| CaError::InvalidKey {
            source_name: key_source.clone(),
            reason: format!("unusable key: {e}"),
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                source_name: m.source_name,
            });
        }
        let not_after =
            UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| bad_cert(CA_CERT_FILE, format!("cannot sign with it: {e}")))?;

        let mut chain: Vec<(String, CertificateDer<'static>)> = match m.cert_chain {
            Some(text) => pem_certificates(text).map_err(|r| bad_cert(CERT_CHAIN_FILE, r))?,
            None => Vec::new(),
        };
        if chain.first().map(|(_, der)| der) != Some(&ca_der) {
            chain.insert(0, (ca_pem, ca_der));
        }
        let root = match m.root_cert {
            Some(text) => pem_certificates(text)
                .map_err(|r| bad_cert(ROOT_CERT_FILE, r))?
                .into_iter()
                .next()
                .ok_or_else(|| bad_cert(ROOT_CERT_FILE, "holds no certificate".to_string()))?,
            None => chain
                .last()
                .cloned()
                .expect("the chain holds the CA certificate"),
        };
        if chain.last().map(|(_, der)| der) != Some(&root.1) {
            chain.push(root.clone());
        }
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            issuer,
            chain_pems: chain.into_iter().map(|(pem, _)| pem).collect(),
            root_pem: root.0,
            not_after,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The mesh's root certificate: what proxies and clients trust.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A serving certificate (serverAuth) for the control plane, with a new
    /// ECDSA key.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut sans = Vec::new();
        for name in dns_names {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| CaError::InvalidName(name.clone()))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        if sans.is_empty() {
            return Err(CaError::InvalidName(
                "a server certificate needs a DNS name or an IP address".to_string(),
            ));
        }
        self.issue_with_new_key(sans, vec![ExtendedKeyUsagePurpose::ServerAuth], ttl)
    }

    /// A workload certificate (URI SAN = the SPIFFE id, client and server
    /// auth) with a new key: for tests and offline issuing by an operator.
    pub fn issue_workload(
        &self,
        identity: &WorkloadIdentity,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        self.issue_with_new_key(vec![spiffe_san(identity)?], workload_ekus(), ttl)
    }

    /// Signs a CSR for an authenticated caller. Only the CSR's public key is
    /// used (after checking the CSR's self-signature): the caller's verified
    /// identity becomes the only SAN, whatever names the CSR asks for, as
    /// Istio does. Returns the PEM chain, leaf first, root last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &WorkloadIdentity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|_| CaError::Csr("not a PEM CERTIFICATE REQUEST".to_string()))?;
        let (_, request) = X509CertificationRequest::from_der(&der)
            .map_err(|e| CaError::Csr(format!("cannot parse it: {e}")))?;
        request.verify_signature().map_err(|_| {
            CaError::Csr("its signature does not verify with its own public key".to_string())
        })?;
        let public_key =
            SubjectPublicKeyInfo::from_der(request.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::Csr(format!("unsupported public key: {e}")))?;
        let (leaf_pem, _) = self.sign_leaf(
            vec![spiffe_san(identity)?],
            workload_ekus(),
            ttl,
            &public_key,
        )?;
        Ok(std::iter::once(leaf_pem)
            .chain(self.chain_pems.iter().cloned())
            .collect())
    }

    fn issue_with_new_key(
        &self,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Issue)?;
        let (leaf_pem, not_after) = self.sign_leaf(sans, ekus, ttl, &key)?;
        let mut chain_pem = leaf_pem;
        for pem in &self.chain_pems {
            chain_pem.push_str(pem);
        }
        Ok(IssuedCertificate {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Signs a leaf for `public_key`; its validity ends no later than the CA's.
    fn sign_leaf(
        &self,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        ttl: Duration,
        public_key: &impl PublicKeyData,
    ) -> Result<(String, SystemTime), CaError> {
        let now = SystemTime::now();
        let not_after = (now + ttl).min(self.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.extended_key_usages = ekus;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(CaError::Issue)?;
        Ok((cert.pem(), not_after))
    }
}

fn workload_ekus() -> Vec<ExtendedKeyUsagePurpose> {
    vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ]
}

fn spiffe_san(identity: &WorkloadIdentity) -> Result<SanType, CaError> {
    let uri = identity.spiffe_uri();
    let ia5 = uri
        .clone()
        .try_into()
        .map_err(|_| CaError::InvalidName(uri))?;
    Ok(SanType::URI(ia5))
}

/// The workload identity of a certificate (DER): its one `spiffe://` URI
/// SAN. Call it on a client certificate the TLS handshake already verified.
pub fn spiffe_identity_of(cert_der: &[u8]) -> Result<WorkloadIdentity, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CaError::NoIdentity(format!("cannot parse the certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::NoIdentity(format!("malformed subjectAltName: {e}")))?
        .ok_or_else(|| CaError::NoIdentity("it has no subjectAltName".to_string()))?;
    let mut spiffe = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        });
    let uri = spiffe
        .next()
        .ok_or_else(|| CaError::NoIdentity("it has no spiffe:// URI SAN".to_string()))?;
    if spiffe.next().is_some() {
        return Err(CaError::NoIdentity(
            "it has more than one spiffe:// URI SAN".to_string(),
        ));
    }
    WorkloadIdentity::parse_spiffe(uri).map_err(|e| CaError::NoIdentity(e.to_string()))
}

/// The certificates of a PEM text, each as its own PEM block and as DER.
/// Other blocks (keys, parameters) are skipped.
pub(crate) fn pem_certificates(
    text: &str,
) -> Result<Vec<(String, CertificateDer<'static>)>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let end = after
            .find(END)
            .ok_or_else(|| "a certificate's PEM block is not terminated".to_string())?;
        let block = &after[..end + END.len()];
        let der = CertificateDer::from_pem_slice(block.as_bytes())
            .map_err(|e| format!("malformed PEM certificate: {e}"))?;
        certs.push((format!("{block}\n"), der));
        rest = &after[end + END.len()..];
    }
    Ok(certs)
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional_file(path: &Path) -> Result<Option<String>, CaError> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `path` whole or not at all: a temporary file in the same
/// directory, created with `mode` (so a key is never readable by others,
/// not even briefly), synced, then renamed over `path`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fills `buf` from the system's secure random source (ring's).
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), CaError> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| CaError::Random)
}

/// A random positive 128-bit serial (rcgen's default derives it from the
/// public key, which would repeat when a key is renewed).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;

    const TD: &str = "cluster.local";

    fn ders(chain_pem: &str) -> Vec<CertificateDer<'static>> {
        pem_certificates(chain_pem)
            .expect("valid PEM")
            .into_iter()
            .map(|(_, der)| der)
            .collect()
    }

    fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for der in ders(ca.root_pem()) {
            roots.add(der).expect("root accepted");
        }
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn client_verifier(ca: &CertificateAuthority) -> Arc<dyn ClientCertVerifier> {
        WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("verifier")
    }

    fn leaf_and_rest<'c>(
        chain: &'c [CertificateDer<'static>],
    ) -> (&'c CertificateDer<'static>, &'c [CertificateDer<'static>]) {
        // The root is a trust anchor, not an intermediate to present.
        (&chain[0], &chain[1..chain.len() - 1])
    }

    #[test]
    fn generated_root_is_a_p256_ca_for_the_trust_domain() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let der = ders(ca.root_pem()).remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.subject(), cert.issuer());
        let subject = cert.subject().to_string();
        assert!(subject.contains("O=cluster.local"), "{subject}");
        assert!(subject.contains("CN=Pilotfish mesh CA"), "{subject}");
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!(lifetime > 9 * 365 * 24 * 3600, "{lifetime}");
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
    }

    #[test]
    fn workload_certificates_with_only_a_spiffe_uri_are_accepted_as_client_certificates() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let id = WorkloadIdentity::new(TD, "shop", "cart");
        let issued = ca.issue_workload(&id, Duration::from_secs(3600)).unwrap();
        let chain = ders(&issued.chain_pem);
        assert_eq!(chain.len(), 2, "leaf then root");
        let (leaf, intermediates) = leaf_and_rest(&chain);
        client_verifier(&ca)
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .expect("WebPkiClientVerifier accepts a URI-only SAN client certificate");
        assert_eq!(spiffe_identity_of(leaf).unwrap(), id);

        // The key is the certificate's, and the certificate is not a CA.
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
    }

    #[test]
    fn certificates_of_another_ca_are_refused() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let other = CertificateAuthority::generate(TD).unwrap();
        let issued = other
            .issue_workload(
                &WorkloadIdentity::new(TD, "a", "b"),
                Duration::from_secs(60),
            )
            .unwrap();
        let chain = ders(&issued.chain_pem);
        let (leaf, intermediates) = leaf_and_rest(&chain);
        assert!(
            client_verifier(&ca)
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn server_certificates_verify_for_their_names_only() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let issued = ca
            .issue_server(
                &["istiod.istio-system.svc".to_string()],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let chain = ders(&issued.chain_pem);
        let (leaf, intermediates) = leaf_and_rest(&chain);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        for name in ["istiod.istio-system.svc", "127.0.0.1"] {
            verifier
                .verify_server_cert(
                    leaf,
                    intermediates,
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            verifier
                .verify_server_cert(
                    leaf,
                    intermediates,
                    &ServerName::try_from("evil.example").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_err()
        );
        assert!(
            spiffe_identity_of(leaf).is_err(),
            "a server cert has no SPIFFE id"
        );
    }

    fn csr_asking_for(names: &[&str]) -> (String, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| SanType::URI(n.to_string().try_into().unwrap()))
            .collect();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (csr, key)
    }

    #[test]
    fn sign_csr_uses_the_callers_identity_and_only_the_csrs_key() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let (csr, key) = csr_asking_for(&["spiffe://cluster.local/ns/kube-system/sa/admin"]);
        let caller = WorkloadIdentity::new(TD, "shop", "cart");
        let chain = ca
            .sign_csr(&csr, &caller, Duration::from_secs(600))
            .unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca.root_pem());
        let leaf = ders(&chain[0]).remove(0);
        assert_eq!(spiffe_identity_of(&leaf).unwrap(), caller);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let uris: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(uris.len(), 1, "{uris:?}");
        // Backdated by a minute; lasts the requested time from now.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        assert!(
            (now - 62..=now - 58).contains(&not_before),
            "{not_before} vs {now}"
        );
        assert!(
            (now + 598..=now + 601).contains(&not_after),
            "{not_after} vs {now}"
        );
        client_verifier(&ca)
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .unwrap();
    }

    #[test]
    fn sign_csr_refuses_garbage_and_forged_requests() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let id = WorkloadIdentity::new(TD, "a", "b");
        assert!(matches!(
            ca.sign_csr("not pem", &id, Duration::from_secs(60)),
            Err(CaError::Csr(_))
        ));
        // Flip a byte of the signature (the end of the DER): the
        // self-signature no longer verifies.
        let (csr, _) = csr_asking_for(&[]);
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let forged = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_for_test(&der)
        );
        let err = ca
            .sign_csr(&forged, &id, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, CaError::Csr(_)), "{err}");
    }

    /// Minimal base64 (standard alphabet) so the test can re-encode a DER.
    fn base64_for_test(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn directory_ca_is_generated_once_then_loaded_with_a_private_key_file() {
        let dir = std::env::temp_dir().join(format!("pilotfish-ca-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = CertificateAuthority::load_or_generate_dir(&dir, TD).unwrap();
        let mode = fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = CertificateAuthority::load_or_generate_dir(&dir, TD).unwrap();
        assert_eq!(first.root_pem(), second.root_pem());
        // What the second issues verifies against the first's root.
        let issued = second
            .issue_workload(
                &WorkloadIdentity::new(TD, "a", "b"),
                Duration::from_secs(60),
            )
            .unwrap();
        let chain = ders(&issued.chain_pem);
        client_verifier(&first)
            .verify_client_cert(&chain[0], &[], UnixTime::now())
            .unwrap();
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Half a CA is refused, naming what is missing.
        fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
        let err = CertificateAuthority::load_or_generate_dir(&dir, TD).unwrap_err();
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_pem_refuses_a_key_of_another_certificate_without_showing_it() {
        let a = CertificateAuthority::generate(TD).unwrap();
        let other_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let err = CertificateAuthority::from_pem(a.root_pem(), &other_key, TD).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"));
        // A leaf is not a CA.
        let leaf = a
            .issue_workload(
                &WorkloadIdentity::new(TD, "a", "b"),
                Duration::from_secs(60),
            )
            .unwrap();
        let err = CertificateAuthority::from_pem(&leaf.chain_pem, &leaf.key_pem, TD).unwrap_err();
        assert!(matches!(err, CaError::NotCa { .. }), "{err}");
    }

    #[test]
    fn an_intermediate_ca_puts_itself_and_the_root_in_every_chain() {
        let root = CertificateAuthority::generate(TD).unwrap();
        // Make an intermediate signed by `root`.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.serial_number = Some(random_serial().unwrap());
        let inter_pem = params.signed_by(&key, &root.issuer).unwrap().pem();
        let dir = std::env::temp_dir().join(format!("pilotfish-ca-inter-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(CA_CERT_FILE), &inter_pem).unwrap();
        fs::write(dir.join(CA_KEY_FILE), key.serialize_pem()).unwrap();
        fs::write(dir.join(ROOT_CERT_FILE), root.root_pem()).unwrap();
        let ca = CertificateAuthority::load_or_generate_dir(&dir, TD).unwrap();
        assert_eq!(ca.root_pem(), root.root_pem());
        let (csr, _) = csr_asking_for(&[]);
        let chain = ca
            .sign_csr(
                &csr,
                &WorkloadIdentity::new(TD, "a", "b"),
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        let ders: Vec<_> = chain.iter().flat_map(|p| ders(p)).collect();
        let (leaf, intermediates) = leaf_and_rest(&ders);
        client_verifier(&root)
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in API server holding at most one Secret. With `rival` set,
    /// the first create answers 409 after storing the rival's Secret, as
    /// when another replica wins the race.
    #[derive(Clone, Default)]
    struct FakeSecrets {
        state: Arc<std::sync::Mutex<FakeState>>,
    }

    #[derive(Default)]
    struct FakeState {
        stored: Option<serde_json::Value>,
        rival: Option<serde_json::Value>,
        creates: usize,
    }

    fn json_response(code: u16, body: &serde_json::Value) -> http::Response<kube::client::Body> {
        http::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(body.to_string().into_bytes()))
            .expect("valid response")
    }

    async fn body_bytes(mut body: kube::client::Body) -> Vec<u8> {
        use tonic::codegen::Body as _;
        let mut bytes = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.expect("body frame").into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        bytes
    }

    impl tonic::codegen::Service<http::Request<kube::client::Body>> for FakeSecrets {
        type Response = http::Response<kube::client::Body>;
        type Error = std::convert::Infallible;
        type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
            let state = self.state.clone();
            Box::pin(async move {
                let not_found = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": "secrets \"istio-ca-secret\" not found"
                });
                let conflict = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "AlreadyExists", "code": 409,
                    "message": "secrets \"istio-ca-secret\" already exists"
                });
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let body = body_bytes(request.into_body()).await;
                let mut state = state.lock().expect("state");
                let response = match method.as_str() {
                    "GET" if path == "/api/v1/namespaces/istio-system/secrets/istio-ca-secret" => {
                        match &state.stored {
                            Some(secret) => json_response(200, secret),
                            None => json_response(404, &not_found),
                        }
                    }
                    "POST" if path == "/api/v1/namespaces/istio-system/secrets" => {
                        state.creates += 1;
                        if let Some(rival) = state.rival.take() {
                            state.stored = Some(rival);
                            json_response(409, &conflict)
                        } else {
                            let secret: serde_json::Value =
                                serde_json::from_slice(&body).expect("JSON Secret");
                            state.stored = Some(secret.clone());
                            json_response(201, &secret)
                        }
                    }
                    _ => json_response(404, &not_found),
                };
                Ok(response)
            })
        }
    }

    fn secret_json(ca_cert: &str, ca_key: Option<&str>) -> serde_json::Value {
        let mut data = BTreeMap::from([(
            CA_CERT_FILE.to_string(),
            ByteString(ca_cert.as_bytes().to_vec()),
        )]);
        if let Some(key) = ca_key {
            data.insert(CA_KEY_FILE.to_string(), ByteString(key.as_bytes().to_vec()));
        }
        serde_json::to_value(Secret {
            metadata: ObjectMeta {
                name: Some("istio-ca-secret".to_string()),
                namespace: Some("istio-system".to_string()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        })
        .expect("Secret JSON")
    }

    async fn from_fake(fake: &FakeSecrets) -> Result<CertificateAuthority, CaError> {
        let client = kube::Client::new(fake.clone(), "default");
        CertificateAuthority::load_or_create_secret(client, "istio-system", "istio-ca-secret", TD)
            .await
    }

    #[tokio::test]
    async fn secret_ca_is_created_once_then_read_back() {
        let fake = FakeSecrets::default();
        let first = from_fake(&fake).await.unwrap();
        {
            let state = fake.state.lock().unwrap();
            assert_eq!(state.creates, 1);
            let stored = state.stored.as_ref().unwrap();
            assert_eq!(stored["type"], CA_SECRET_TYPE);
            let secret: Secret = serde_json::from_value(stored.clone()).unwrap();
            let data = secret.data.unwrap();
            assert_eq!(data[CA_CERT_FILE].0, first.root_pem().as_bytes());
            assert!(data.contains_key(CA_KEY_FILE));
        }
        let second = from_fake(&fake).await.unwrap();
        assert_eq!(second.root_pem(), first.root_pem());
        assert_eq!(fake.state.lock().unwrap().creates, 1);
    }

    #[tokio::test]
    async fn losing_the_create_race_uses_the_winners_ca() {
        let (rival, rival_key) = CertificateAuthority::generate_with_key(TD).unwrap();
        let fake = FakeSecrets::default();
        fake.state.lock().unwrap().rival = Some(secret_json(rival.root_pem(), Some(&rival_key)));
        let ca = from_fake(&fake).await.unwrap();
        assert_eq!(ca.root_pem(), rival.root_pem());
        assert_eq!(fake.state.lock().unwrap().creates, 1);
    }

    #[tokio::test]
    async fn a_secret_without_its_key_is_reported_by_name() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let fake = FakeSecrets::default();
        fake.state.lock().unwrap().stored = Some(secret_json(ca.root_pem(), None));
        let err = from_fake(&fake).await.unwrap_err();
        assert!(matches!(err, CaError::SecretMissingKey { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("Secret istio-system/istio-ca-secret"),
            "{message}"
        );
        assert!(message.contains(CA_KEY_FILE), "{message}");
    }

    /// An RSA-2048 CSR as istio-agent sends by default (made with openssl,
    /// asking for default/default, with key usages in its extensions).
    const RSA_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\n\
MIIC0zCCAbsCAQAwGDEWMBQGA1UECgwNY2x1c3Rlci5sb2NhbDCCASIwDQYJKoZI\n\
hvcNAQEBBQADggEPADCCAQoCggEBALJ+JzOR3dhxuA7GzlEOCKBWZNXJzwym4oR+\n\
j7SVQcMhG5X25x4HcyYjb/qt74yXtKUhWf4egmVb4h00QuOtEMzgas/06AEJV14x\n\
vHWM6pXiWYqPvdsjDnockkBwQettS8QRDl4g5f7n6xh+rRVM0HfpZcqHcoXi+xHZ\n\
s9Q2gW+hfBghluf8EP9wzdXIWBMl1gPv77K2Wa+5P0a69TPVkwePmkQ7Rn8bw3xh\n\
kWa2/hGKAxF/3p/IMNqOJar4HWA3x7IPlXBnTIeEa/KzyQNUpZxgVyMKUhb3OlmO\n\
tKZ8W+DMe25CVzakP0jQ38T7amMTSO4deKrU2HwSfaMiCpWHqWsCAwEAAaB2MHQG\n\
CSqGSIb3DQEJDjFnMGUwNwYDVR0RBDAwLoYsc3BpZmZlOi8vY2x1c3Rlci5sb2Nh\n\
bC9ucy9kZWZhdWx0L3NhL2RlZmF1bHQwCwYDVR0PBAQDAgWgMB0GA1UdJQQWMBQG\n\
CCsGAQUFBwMBBggrBgEFBQcDAjANBgkqhkiG9w0BAQsFAAOCAQEAsT3kFCpMdxV9\n\
WbUUjAsA1uBOR4c7VsPtmHYLRyPCTSbzCbro8iQUlNu2Z/MZ6m1bvyckHQr3v/G4\n\
Jv36awPHRypYnH+xO/j8bXaZ40FVKbhy78X44Rp0pWl2Bal0nugSKm+Hv6T9IQxG\n\
7aCi8WSl5C8fVuTJWNZUsI4Ylx0B1VZwtqxIRqqlvVKlXuJ97vNVI3TArPT3tCcQ\n\
VReG0u7WUu898CDFgJh8PU1hUtZur5RWGWH+wwHrJ/qyj2tOhv2VaZr6FHmtWhtv\n\
nUZK/BntSamjEAze6SAuefiyZgoO82lzm7L7y8lZkwTx8+zwWB67eA+RaIzC5o0y\n\
O2b4k5vKTg==\n\
-----END CERTIFICATE REQUEST-----";

    #[test]
    fn sign_csr_accepts_an_rsa_request_with_extensions() {
        let ca = CertificateAuthority::generate(TD).unwrap();
        let caller = WorkloadIdentity::new(TD, "shop", "cart");
        let chain = ca
            .sign_csr(RSA_CSR, &caller, Duration::from_secs(600))
            .unwrap();
        let leaf = ders(&chain[0]).remove(0);
        assert_eq!(spiffe_identity_of(&leaf).unwrap(), caller);
        let csr_der = CertificateSigningRequestDer::from_pem_slice(RSA_CSR.as_bytes()).unwrap();
        let (_, csr) = X509CertificationRequest::from_der(&csr_der).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(
            cert.public_key().raw,
            csr.certification_request_info.subject_pki.raw
        );
        client_verifier(&ca)
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .unwrap();
    }
}
