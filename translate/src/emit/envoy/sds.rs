//! References to secrets over SDS: the names Istio gives a credential's
//! secrets (`kubernetes://<credentialName>` and its `-cacert`), and the
//! reference to one fetched over ADS. A leaf shared by gateway servers and
//! upstream TLS, which otherwise do not import each other.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;

use crate::protobuf;

/// SDS name of a credential's certificate and key.
pub fn certificate_secret_name(credential: &str) -> String {
    format!("kubernetes://{credential}")
}

/// SDS name of a credential's CA certificate.
pub fn ca_secret_name(credential: &str) -> String {
    format!("kubernetes://{credential}-cacert")
}

/// A reference to secret `name`, fetched over ADS.
pub fn secret_config(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(protobuf::ads_config_source()),
    }
}
