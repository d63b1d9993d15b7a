//! Service registries, each producing the one service model in [`model`].

pub mod consul;
pub mod error;
pub mod file;
pub mod kubernetes;
pub mod model;
pub mod service_entry;

pub use error::RegistryError;
pub use model::*;
