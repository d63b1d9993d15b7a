//! Pilotfish's discovery server: config sources → one versioned mesh state →
//! translation once per distinct proxy view → snapshot cache → ADS streams.

pub mod ads;
pub mod bootstrap;
pub mod cache;
pub mod certificate_client;
pub mod cli;
pub mod cluster_parts;
pub mod config_dump;
pub mod debug;
pub mod explain_endpoint;
pub mod incoming;
pub mod memory;
pub mod mesh_config_file;
pub mod mesh_store;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod pilot_flags;
pub mod problems;
pub mod proxy_view;
pub mod push;
pub mod quarantine;
pub mod readiness;
pub mod resource;
pub mod route_blocks;
pub mod security;
pub mod serve;
pub mod snapshot;
pub mod sources;
pub mod status;
pub mod xds_server;
pub mod xds_types;
