//! Istio `networking.istio.io` API types (VirtualService, DestinationRule,
//! Gateway, ServiceEntry) and `security.istio.io` ones (PeerAuthentication,
//! AuthorizationPolicy), YAML loading with precise errors, semantic
//! validation, and the CustomResourceDefinition manifests.

pub mod authorization_policy;
pub mod common;
pub mod creation_time;
pub mod destination_rule;
pub mod duration;
pub mod error;
pub mod gateway;
pub mod load;
pub mod manifests;
pub mod object;
pub mod peer_authentication;
mod schema_rules;
pub mod service_entry;
pub mod structural;
pub mod validate;
pub mod virtual_service;

pub use authorization_policy::*;
pub use common::*;
pub use creation_time::CreationTime;
pub use destination_rule::*;
pub use error::ConfigError;
pub use gateway::*;
pub use load::{LoadOutcome, load_yaml};
pub use object::{ConfigKey, ConfigMeta, ConfigObject, ConfigSpec, Kind, Origin};
pub use peer_authentication::*;
pub use service_entry::*;
pub use virtual_service::*;
