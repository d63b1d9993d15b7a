//! Istio `networking.istio.io` API types (VirtualService, DestinationRule,
//! Gateway, ServiceEntry), YAML loading with precise errors, semantic
//! validation, and the CustomResourceDefinition manifests.

pub mod common;
pub mod creation_time;
pub mod destination_rule;
pub mod duration;
pub mod error;
pub mod gateway;
pub mod load;
pub mod manifests;
pub mod object;
mod schema_rules;
pub mod service_entry;
pub mod structural;
pub mod validate;
pub mod virtual_service;

pub use common::*;
pub use creation_time::CreationTime;
pub use destination_rule::*;
pub use error::ConfigError;
pub use gateway::*;
pub use load::{LoadOutcome, load_yaml};
pub use object::{ConfigKey, ConfigMeta, ConfigObject, ConfigSpec, Kind, Origin};
pub use service_entry::*;
pub use virtual_service::*;
