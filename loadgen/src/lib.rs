//! A load generator for Pilotfish's ADS: it writes a synthetic Istio mesh,
//! starts (or attaches to) a Pilotfish on loopback, or several replicas,
//! connects many Envoy-like streams (state of the world or delta), changes
//! the mesh, restarts the server or kills a replica if asked, and reports
//! sync times, change fan-out, resync after losing a server, bytes per
//! proxy and the servers' memory and CPU. See docs/benchmarks.md for how it
//! is used.

pub mod change;
pub mod client;
pub mod inspect;
pub mod memory_watch;
pub mod mesh;
pub mod node;
pub mod proc_stats;
pub mod report;
pub mod rss_sampler;
pub mod run;
pub mod server;
