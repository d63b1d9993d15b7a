//! Istio's certificate-signing API, `istio.v1.auth.IstioCertificateService`
//! (`CreateCertificate`, unary), which istio-agent and our own
//! `pilotfish certificate request` call with a CSR: the caller is
//! authenticated (client certificate or ServiceAccount token) and gets back a
//! certificate for its own SPIFFE id, whatever the CSR asked for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::google::protobuf::Struct;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::metadata::MetadataValue;
use tonic_prost::ProstCodec;

use super::authn::Authenticator;
use super::ca::{CaError, CertificateAuthority};

/// The gRPC service name, as Istio's proto declares it.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
const METHOD: &str = "CreateCertificate";
const PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

// The two messages mirror Istio's security/proto/pki `ca.proto`
// (package `istio.v1.auth`); the field numbers are the wire contract.

/// A certificate signing request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 or less asks for the default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Free-form options (Istio sends e.g. the cluster id); not used here.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<Struct>,
}

/// The issued chain: leaf first, root last, each PEM.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// The `CreateCertificate` server. Cheap to clone (shared state).
#[derive(Clone)]
pub struct CertificateService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<Authenticator>,
    default_ttl: Duration,
    max_ttl: Duration,
    issued: AtomicU64,
    refused: AtomicU64,
}

impl CertificateService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: Arc<Authenticator>,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Self {
        CertificateService {
            inner: Arc::new(Inner {
                ca,
                authenticator,
                default_ttl,
                max_ttl,
                issued: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Certificates issued since start.
    pub fn issued_count(&self) -> u64 {
        self.inner.issued.load(Ordering::Relaxed)
    }

    /// Requests refused since start (unauthenticated or invalid).
    pub fn refused_count(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// The lifetime granted for a requested one (seconds): the default when
    /// none is asked, never more than the maximum.
    pub fn granted_ttl(&self, requested_seconds: i64) -> Duration {
        let requested = u64::try_from(requested_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.inner.default_ttl);
        requested.min(self.inner.max_ttl)
    }

    /// Handles one `CreateCertificate` call.
    pub async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, Status> {
        let remote = request.remote_addr();
        let identity = match self.inner.authenticator.authenticate(&request).await {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                return Err(self.refuse(
                    remote,
                    Status::unauthenticated(
                        "CreateCertificate needs a client certificate or a ServiceAccount token",
                    ),
                ));
            }
            Err(status) => return Err(self.refuse(remote, status)),
        };
        if identity.trust_domain != self.inner.ca.trust_domain() {
            // The mesh CA vouches only for its own trust domain.
            return Err(self.refuse(
                remote,
                Status::permission_denied(format!(
                    "{identity} is not in trust domain {}",
                    self.inner.ca.trust_domain()
                )),
            ));
        }
        let ttl = self.granted_ttl(request.get_ref().validity_duration);
        match self
            .inner
            .ca
            .sign_csr(&request.get_ref().csr, &identity, ttl)
        {
            Ok(chain) => {
                let issued = self.inner.issued.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(%identity, ttl_seconds = ttl.as_secs(), issued, "issued a workload certificate");
                Ok(tonic::Response::new(IstioCertificateResponse {
                    cert_chain: chain,
                }))
            }
            Err(CaError::Csr(reason)) => Err(self.refuse(
                remote,
                Status::invalid_argument(format!("invalid certificate signing request: {reason}")),
            )),
            Err(e) => {
                tracing::error!(%identity, error = %e, "cannot sign a certificate");
                Err(self.refuse(remote, Status::internal("cannot sign the certificate")))
            }
        }
    }

    fn refuse(&self, remote: Option<std::net::SocketAddr>, status: Status) -> Status {
        let refused = self.inner.refused.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            remote = ?remote,
            code = ?status.code(),
            reason = status.message(),
            refused,
            "refused a certificate request"
        );
        status
    }
}

/// Adapts the handler to tonic's unary plumbing.
struct CreateCertificateCall(CertificateService);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificateCall {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.create_certificate(request).await })
    }
}

impl<B> Service<http::Request<B>> for CertificateService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != PATH {
            return Box::pin(async move { Ok(Status::unimplemented("").into_http()) });
        }
        let call = CreateCertificateCall(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(call, request).await)
        })
    }
}

impl tonic::server::NamedService for CertificateService {
    const NAME: &'static str = SERVICE_NAME;
}

/// Calls `CreateCertificate` on `channel` and returns the chain (leaf
/// first). `token` goes as `authorization: Bearer <token>`, as istio-agent
/// sends its ServiceAccount token.
pub async fn request_certificate(
    channel: tonic::transport::Channel,
    token: Option<&str>,
    csr_pem: &str,
    ttl: Duration,
) -> Result<Vec<String>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("certificate service not reachable: {e}")))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr_pem.to_string(),
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        metadata: None,
    });
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new(SERVICE_NAME, METHOD));
    let response: tonic::Response<IstioCertificateResponse> = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static(PATH),
            ProstCodec::default(),
        )
        .await?;
    let chain = response.into_inner().cert_chain;
    if chain.is_empty() {
        return Err(Status::internal(
            "the certificate service returned no certificate",
        ));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::security::ca::spiffe_identity_of;
    use crate::security::{PeerInfo, WorkloadIdentity};

    const TD: &str = "cluster.local";

    fn csr_for(uri: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.to_string().try_into().unwrap())];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn service() -> CertificateService {
        CertificateService::new(
            Arc::new(CertificateAuthority::generate(TD).unwrap()),
            Arc::new(Authenticator::new(TD, None)),
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
    }

    /// Stands in for the TLS listener: a request carrying `x-test-identity`
    /// gets a `PeerInfo` with that verified identity.
    fn peer_from_test_header(
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, Status> {
        let identity = request
            .metadata()
            .get("x-test-identity")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| WorkloadIdentity::parse_spiffe(v).ok());
        request.extensions_mut().insert(PeerInfo {
            remote_addr: None,
            secure: true,
            certificate_identity: identity,
        });
        Ok(request)
    }

    #[test]
    fn ttl_is_defaulted_and_capped() {
        let s = service();
        assert_eq!(s.granted_ttl(0), Duration::from_secs(3600));
        assert_eq!(s.granted_ttl(-5), Duration::from_secs(3600));
        assert_eq!(s.granted_ttl(60), Duration::from_secs(60));
        assert_eq!(s.granted_ttl(1_000_000), Duration::from_secs(7200));
    }

    #[tokio::test]
    async fn a_csr_gets_the_callers_identity_over_grpc_and_anonymous_callers_are_refused() {
        let service = service();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                service.clone(),
                peer_from_test_header,
            ))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let server = tokio::spawn(server);

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let csr = csr_for("spiffe://cluster.local/ns/istio-system/sa/istiod");

        // Anonymous: refused.
        let err = request_certificate(channel.clone(), None, &csr, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

        // Authenticated as shop/cart: the leaf says shop/cart, not what the CSR asked.
        let caller = WorkloadIdentity::new(TD, "shop", "cart");
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 600,
            metadata: None,
        });
        request.metadata_mut().insert(
            "x-test-identity",
            MetadataValue::try_from(caller.spiffe_uri()).unwrap(),
        );
        let response: tonic::Response<IstioCertificateResponse> = grpc
            .unary(
                request,
                http::uri::PathAndQuery::from_static(PATH),
                ProstCodec::default(),
            )
            .await
            .unwrap();
        let chain = response.into_inner().cert_chain;
        assert_eq!(chain.len(), 2);
        let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
        assert_eq!(spiffe_identity_of(&leaf).unwrap(), caller);

        // A garbage CSR from an authenticated caller is an invalid argument.
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: "garbage".to_string(),
            validity_duration: 0,
            metadata: None,
        });
        request.metadata_mut().insert(
            "x-test-identity",
            MetadataValue::try_from(caller.spiffe_uri()).unwrap(),
        );
        grpc.ready().await.unwrap();
        let err = grpc
            .unary::<_, IstioCertificateResponse, _>(
                request,
                http::uri::PathAndQuery::from_static(PATH),
                ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

        // An identity of another trust domain: not ours to vouch for.
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 0,
            metadata: None,
        });
        request.metadata_mut().insert(
            "x-test-identity",
            MetadataValue::try_from("spiffe://other.domain/ns/shop/sa/cart").unwrap(),
        );
        grpc.ready().await.unwrap();
        let err = grpc
            .unary::<_, IstioCertificateResponse, _>(
                request,
                http::uri::PathAndQuery::from_static(PATH),
                ProstCodec::default(),
            )
            .await
            .unwrap_err();
        // The authenticator already refuses a foreign trust domain; the
        // service's own check stays as a second line.
        assert!(
            matches!(
                err.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            "{err}"
        );

        assert_eq!(service.issued_count(), 1);
        assert_eq!(service.refused_count(), 3);
        server.abort();
    }
}
