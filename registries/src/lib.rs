//! Service registries, each producing the one service model in [`model`].

pub mod consul;
pub mod error;
pub mod file;
pub mod kubernetes;
pub mod service_entry;

pub use error::RegistryError;
pub use model::*;
/// The service model lives in `pilotfish-model`; kept here under its old path.
pub use pilotfish_model::service as model;
