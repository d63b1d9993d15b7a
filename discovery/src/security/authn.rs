//! Authentication of xDS and certificate clients: a connection's verified
//! client certificate (SPIFFE id issued by the mesh CA), or, on TLS only, a
//! Kubernetes ServiceAccount token checked with the API server's TokenReview
//! (audience `istio-ca`, as Istio's proxies present it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
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

/// Istio's audience for tokens presented to the control plane.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "istio-ca";
/// A real ServiceAccount token is a few kB; refuse to hash or forward more.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Reviews are remembered briefly, so reconnect storms do not become
/// TokenReview storms; a revoked token stops working within this time.
const REVIEW_TTL: Duration = Duration::from_secs(60);
const FAILED_REVIEW_TTL: Duration = Duration::from_secs(5);
const MAX_CACHED_REVIEWS: usize = 10_000;

/// Checks ServiceAccount tokens with the Kubernetes API server.
pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        TokenReviewer { client, audiences }
    }

    async fn review(&self, token: &str, trust_domain: &str) -> Result<WorkloadIdentity, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(format!(
                "token not authenticated: {}",
                status.error.unwrap_or_else(|| "no reason given".into())
            ));
        }
        // An API server that cannot check audiences answers without them;
        // accept only an explicit match.
        let audiences = status.audiences.unwrap_or_default();
        if !self.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(format!(
                "token is not for audience {:?} (it is for {audiences:?})",
                self.audiences
            ));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        WorkloadIdentity::from_service_account_user(trust_domain, &username)
            .map_err(|e| e.to_string())
    }
}

type ReviewCache = HashMap<[u8; 32], (Result<WorkloadIdentity, String>, Instant)>;

/// Turns a request into the verified identity of its caller.
pub struct Authenticator {
    trust_domain: String,
    tokens: Option<TokenReviewer>,
    reviews: Mutex<ReviewCache>,
}

impl Authenticator {
    pub fn new(trust_domain: &str, tokens: Option<TokenReviewer>) -> Self {
        Authenticator {
            trust_domain: trust_domain.to_string(),
            tokens,
            reviews: Mutex::default(),
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
        let peer = PeerInfo::of(request);
        if let Some(identity) = peer.and_then(|p| p.certificate_identity.as_ref()) {
            if identity.trust_domain != self.trust_domain {
                return Err(Status::unauthenticated(format!(
                    "client certificate {identity} is not of trust domain {}",
                    self.trust_domain
                )));
            }
            return Ok(Some(identity.clone()));
        }
        let Some(token) = bearer_token(request)? else {
            return Ok(None);
        };
        if !peer.is_some_and(|p| p.secure) {
            // A token sent in the clear could be replayed by whoever saw it.
            return Err(Status::unauthenticated(
                "tokens are accepted only on the TLS xDS port (15012)",
            ));
        }
        let Some(reviewer) = &self.tokens else {
            return Err(Status::unauthenticated(
                "this server reviews no tokens (no Kubernetes API server configured); use a client certificate",
            ));
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.cached(&key) {
            return known.map(Some).map_err(Status::unauthenticated);
        }
        let outcome = reviewer.review(token, &self.trust_domain).await;
        self.remember(key, outcome.clone());
        outcome.map(Some).map_err(Status::unauthenticated)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Result<WorkloadIdentity, String>> {
        let reviews = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
        let (outcome, at) = reviews.get(key)?;
        let ttl = if outcome.is_ok() {
            REVIEW_TTL
        } else {
            FAILED_REVIEW_TTL
        };
        (at.elapsed() < ttl).then(|| outcome.clone())
    }

    fn remember(&self, key: [u8; 32], outcome: Result<WorkloadIdentity, String>) {
        let mut reviews = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
        if reviews.len() >= MAX_CACHED_REVIEWS {
            reviews.retain(|_, (_, at)| at.elapsed() < FAILED_REVIEW_TTL);
            if reviews.len() >= MAX_CACHED_REVIEWS {
                reviews.clear();
            }
        }
        reviews.insert(key, (outcome, Instant::now()));
    }
}

/// The token of an `authorization: Bearer <token>` header, if any.
fn bearer_token<T>(request: &tonic::Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("authorization header is not `Bearer <token>`"))?
        .trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Status::unauthenticated("bearer token is empty or too long"));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: Option<PeerInfo>, authorization: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        request
    }

    fn peer(secure: bool, identity: Option<WorkloadIdentity>) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            secure,
            certificate_identity: identity,
        }
    }

    #[tokio::test]
    async fn a_verified_certificate_is_the_identity_if_of_our_trust_domain() {
        let auth = Authenticator::new("cluster.local", None);
        let ours = WorkloadIdentity::new("cluster.local", "shop", "gw");
        let got = auth
            .authenticate(&request(Some(peer(true, Some(ours.clone()))), None))
            .await;
        assert_eq!(got.ok().flatten(), Some(ours));
        let theirs = WorkloadIdentity::new("evil.example", "shop", "gw");
        let refused = auth
            .authenticate(&request(Some(peer(true, Some(theirs))), None))
            .await;
        assert_eq!(
            refused.err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[tokio::test]
    async fn no_credential_is_no_identity_and_tokens_need_tls_and_a_reviewer() {
        let auth = Authenticator::new("cluster.local", None);
        assert_eq!(
            auth.authenticate(&request(Some(peer(false, None)), None))
                .await
                .ok(),
            Some(None)
        );
        for (secure, header, expect) in [
            (false, "Bearer abc", "only on the TLS"),
            (true, "Bearer abc", "reviews no tokens"),
            (true, "Basic abc", "Bearer"),
            (true, "Bearer ", "empty"),
        ] {
            let status = auth
                .authenticate(&request(Some(peer(secure, None)), Some(header)))
                .await
                .expect_err(header);
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header}");
            assert!(status.message().contains(expect), "{header}: {status:?}");
        }
    }
}
