//! A workload's identity, as Istio names it: the SPIFFE id
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct WorkloadIdentity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "{0:?} is not a SPIFFE id of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotSpiffe(String),
    #[error("{0:?} is not a ServiceAccount user name (system:serviceaccount:<namespace>:<name>)")]
    NotServiceAccount(String),
}

impl WorkloadIdentity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        WorkloadIdentity {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    pub fn spiffe_uri(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    pub fn parse_spiffe(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::NotSpiffe(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa]
                if [td, ns, sa]
                    .iter()
                    .all(|p| !p.is_empty() && !p.contains(':')) =>
            {
                Ok(WorkloadIdentity::new(td, ns, sa))
            }
            _ => Err(bad()),
        }
    }

    /// The identity of a Kubernetes ServiceAccount user name, as TokenReview
    /// reports it.
    pub fn from_service_account_user(
        trust_domain: &str,
        username: &str,
    ) -> Result<Self, IdentityError> {
        let bad = || IdentityError::NotServiceAccount(username.to_string());
        let rest = username
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(bad)?;
        let (ns, sa) = rest.split_once(':').ok_or_else(bad)?;
        if ns.is_empty() || sa.is_empty() || sa.contains(':') {
            return Err(bad());
        }
        Ok(WorkloadIdentity::new(trust_domain, ns, sa))
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_malformed_ones_are_refused() {
        let id = WorkloadIdentity::new("cluster.local", "shop", "gateway");
        assert_eq!(id.spiffe_uri(), "spiffe://cluster.local/ns/shop/sa/gateway");
        assert_eq!(WorkloadIdentity::parse_spiffe(&id.spiffe_uri()), Ok(id));
        for bad in [
            "",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/a/ns/b",
        ] {
            assert!(WorkloadIdentity::parse_spiffe(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_account_users_become_identities() {
        assert_eq!(
            WorkloadIdentity::from_service_account_user(
                "cluster.local",
                "system:serviceaccount:shop:gw"
            ),
            Ok(WorkloadIdentity::new("cluster.local", "shop", "gw"))
        );
        for bad in [
            "admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::gw",
        ] {
            assert!(
                WorkloadIdentity::from_service_account_user("cluster.local", bad).is_err(),
                "{bad}"
            );
        }
    }
}
