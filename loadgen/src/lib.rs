//! A load generator for Pilotfish's ADS: it writes a synthetic Istio mesh,
//! starts (or attaches to) a Pilotfish on loopback, connects many
//! Envoy-like streams (state of the world or delta), changes the mesh, and
//! reports sync times, change fan-out, bytes per proxy and the server's
//! memory and CPU. See docs/benchmarks.md for how it is used.

pub mod change;
pub mod client;
pub mod inspect;
pub mod mesh;
pub mod node;
pub mod proc_stats;
pub mod report;
pub mod rss_sampler;
pub mod run;
pub mod server;
