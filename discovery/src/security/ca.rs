//! Pilotfish's certificate authority (stub until the real one lands).
#![allow(dead_code, unused_variables)]
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::identity::WorkloadIdentity;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaError(String);

pub struct IssuedCertificate {
    pub chain_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

pub struct CertificateAuthority;

impl CertificateAuthority {
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        todo!()
    }
    pub fn load_or_generate_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        todo!()
    }
    pub async fn load_or_create_secret(
        client: kube::Client,
        namespace: &str,
        name: &str,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        todo!()
    }
    pub fn root_pem(&self) -> &str {
        todo!()
    }
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        todo!()
    }
    pub fn issue_workload(
        &self,
        identity: &WorkloadIdentity,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        todo!()
    }
}

pub fn spiffe_identity_of(cert_der: &[u8]) -> Result<WorkloadIdentity, CaError> {
    todo!()
}
