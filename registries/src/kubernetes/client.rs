//! Connecting to a Kubernetes API server: an explicit kubeconfig, or the
//! usual inference (`KUBECONFIG`, `~/.kube/config`, then the in-cluster
//! service account).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::consul::error::error_chain;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KubernetesError {
    #[error("cannot load kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error(
        "no Kubernetes configuration found (give --kubeconfig, set KUBECONFIG, or run in a pod): {0}"
    )]
    Infer(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// A client and the address it talks to.
#[derive(Clone)]
pub struct ApiServer {
    pub client: Client,
    /// The API server URL, for logs and status.
    pub url: String,
}

impl ApiServer {
    /// Loads the configuration and builds a client; does not contact the
    /// server (an unreachable server is retried by the watches). Must be
    /// called inside a Tokio runtime.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<ApiServer, KubernetesError> {
        install_crypto_provider();
        let config = match kubeconfig {
            Some(path) => {
                let error = |e: &dyn std::error::Error| KubernetesError::Kubeconfig {
                    path: path.display().to_string(),
                    message: error_chain(e),
                };
                let file = Kubeconfig::read_from(path).map_err(|e| error(&e))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| error(&e))?
            }
            None => Config::infer()
                .await
                .map_err(|e| KubernetesError::Infer(error_chain(&e)))?,
        };
        let url = config.cluster_url.to_string();
        let client =
            Client::try_from(config).map_err(|e| KubernetesError::Client(error_chain(&e)))?;
        Ok(ApiServer { client, url })
    }
}

/// kube's rustls needs one process-wide provider; ring is the one every
/// crate here is built with.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
