//! Who is on the other end of an xDS connection, and what it may receive:
//! workload identities (SPIFFE), Pilotfish's certificate authority, the TLS
//! listener that verifies client certificates, and the authenticator that
//! turns a connection (client certificate or ServiceAccount token) into a
//! verified identity; and the workload certificates served to proxies over
//! SDS.

pub mod authn;
pub mod ca;
pub mod csr;
pub mod identity;
pub mod metrics;
pub mod server_tls;
pub mod workload_certificates;

pub use authn::{Authenticator, PeerInfo};
pub use identity::WorkloadIdentity;
pub use workload_certificates::WorkloadCertificates;
