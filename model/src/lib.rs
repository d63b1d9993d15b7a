//! The data Pilotfish's stages exchange: the one service model every
//! registry produces ([`service`]: `Service`, `Endpoint`, ...) and the
//! mesh state the translator consumes ([`mesh`]: `MeshState`,
//! `MeshConfig`, ...).
//!
//! A crate of its own, with pure dependencies only, so that `translate`
//! does not depend on `registries` and through it on the Consul and
//! Kubernetes clients (tokio, reqwest, kube): translation stays pure in its
//! dependencies as well as in its code.

pub mod mesh;
pub mod service;

pub use mesh::*;
pub use service::*;
