//! Where config and services come from. Each source keeps its last good
//! content, so a broken edit never takes away what was already served.

pub mod config_dir;
pub mod consul;
pub mod kubernetes_config;
pub mod kubernetes_registry;
pub mod kubernetes_secrets;
pub mod kubernetes_source;
pub mod registry_files;
pub mod watch;
