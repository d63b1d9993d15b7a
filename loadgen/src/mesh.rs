//! The synthetic mesh: Istio YAML written to a config directory that
//! `pilotfish serve --config-dir` loads (ServiceEntries register the
//! services, so no registry file is needed), and the edits the change driver
//! makes to it. One object per file, so a change rewrites one small file as
//! a GitOps tool would.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The service port every generated service listens on.
pub const SERVICE_PORT: u16 = 8080;

/// Weights of the v1/v2 split every generated VirtualService starts with.
pub const INITIAL_WEIGHTS: (u32, u32) = (90, 10);

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

/// How big the generated mesh is.
#[derive(Clone, Copy, Debug)]
pub struct MeshShape {
    pub services: usize,
    pub endpoints: usize,
    pub virtual_services: usize,
    pub destination_rules: usize,
}

impl MeshShape {
    pub fn validate(&self) -> Result<(), MeshError> {
        if self.services == 0 || self.endpoints == 0 {
            return Err(MeshError::Invalid(
                "--services and --endpoints must be at least 1".into(),
            ));
        }
        // Endpoint addresses are 10.0.0.1 upwards; 10.254/16 is kept for changes.
        if self.services.saturating_mul(self.endpoints) >= 254 * 65536 {
            return Err(MeshError::Invalid(
                "services × endpoints must stay below 16,646,144".into(),
            ));
        }
        if self.virtual_services > self.services || self.destination_rules > self.services {
            return Err(MeshError::Invalid(
                "--virtual-services and --destination-rules cannot exceed --services".into(),
            ));
        }
        Ok(())
    }
}

/// The hostname of service `index`.
pub fn host(index: usize) -> String {
    format!("svc-{index}.mesh.local")
}

/// Envoy's cluster name for a subset of service `index` (Istio's form).
pub fn subset_cluster(index: usize, subset: &str) -> String {
    format!("outbound|{SERVICE_PORT}|{subset}|{}", host(index))
}

/// The address of endpoint `endpoint` of service `service` in the generated mesh.
fn endpoint_address(shape: &MeshShape, service: usize, endpoint: usize) -> String {
    let n = service * shape.endpoints + endpoint + 1;
    format!("10.{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff)
}

/// A fresh address for change round `round`, outside the generated range.
pub fn changed_address(round: usize) -> String {
    format!("10.254.{}.{}", (round >> 8) & 0xff, (round & 0xff).max(1))
}

/// Weights of the v1/v2 split for change round `round` (1-based): never the
/// initial split, and different in every round.
pub fn changed_weights(round: usize) -> (u32, u32) {
    let shift = (round % 80) as u32 + 1;
    (INITIAL_WEIGHTS.0 - shift, INITIAL_WEIGHTS.1 + shift)
}

/// The config directory of one mesh.
pub struct MeshDir {
    dir: PathBuf,
    shape: MeshShape,
}

impl MeshDir {
    /// Writes every object of `shape` into `dir` (created if missing).
    pub fn generate(dir: &Path, shape: MeshShape) -> Result<MeshDir, MeshError> {
        shape.validate()?;
        fs::create_dir_all(dir).map_err(|source| MeshError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mesh = MeshDir {
            dir: dir.to_path_buf(),
            shape,
        };
        for i in 0..shape.services {
            mesh.write_service_entry(i, None)?;
        }
        for i in 0..shape.virtual_services {
            mesh.write_virtual_service(i, INITIAL_WEIGHTS)?;
        }
        for i in 0..shape.destination_rules {
            mesh.write(&format!("dr-{i}.yaml"), &destination_rule(i))?;
        }
        Ok(mesh)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn shape(&self) -> MeshShape {
        self.shape
    }

    /// Rewrites service `index`'s ServiceEntry with its first endpoint at
    /// `first_endpoint` (or as generated when `None`).
    pub fn write_service_entry(
        &self,
        index: usize,
        first_endpoint: Option<&str>,
    ) -> Result<(), MeshError> {
        let addresses: Vec<String> = (0..self.shape.endpoints)
            .map(|e| match (e, first_endpoint) {
                (0, Some(address)) => address.to_string(),
                _ => endpoint_address(&self.shape, index, e),
            })
            .collect();
        self.write(
            &format!("se-{index}.yaml"),
            &service_entry(index, &addresses),
        )
    }

    /// Rewrites service `index`'s VirtualService with a v1/v2 split.
    pub fn write_virtual_service(
        &self,
        index: usize,
        (v1, v2): (u32, u32),
    ) -> Result<(), MeshError> {
        let has_subsets = index < self.shape.destination_rules;
        self.write(
            &format!("vs-{index}.yaml"),
            &virtual_service(index, v1, v2, has_subsets),
        )
    }

    /// Writes `name` atomically: a temporary file (not `*.yaml`, so the
    /// watcher ignores it) renamed over the old one, so Pilotfish never reads
    /// half a file.
    fn write(&self, name: &str, text: &str) -> Result<(), MeshError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| MeshError::Io {
            path: path.clone(),
            source,
        };
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }
}

fn service_entry(index: usize, addresses: &[String]) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1\n\
         kind: ServiceEntry\n\
         metadata:\n  name: svc-{index}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports:\n  - {{name: http, number: {SERVICE_PORT}, protocol: HTTP}}\n  endpoints:\n",
        host = host(index)
    );
    for (e, address) in addresses.iter().enumerate() {
        let version = if e % 2 == 0 { "v1" } else { "v2" };
        let _ = writeln!(
            yaml,
            "  - {{address: {address}, labels: {{app: svc-{index}, version: {version}}}}}"
        );
    }
    yaml
}

fn virtual_service(index: usize, v1: u32, v2: u32, has_subsets: bool) -> String {
    let host = host(index);
    let destination = |subset: &str| {
        if has_subsets {
            format!("{{host: {host}, subset: {subset}}}")
        } else {
            format!("{{host: {host}}}")
        }
    };
    format!(
        "apiVersion: networking.istio.io/v1\n\
         kind: VirtualService\n\
         metadata:\n  name: svc-{index}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route:\n    \
         - {{destination: {d1}, weight: {v1}}}\n    \
         - {{destination: {d2}, weight: {v2}}}\n",
        d1 = destination("v1"),
        d2 = destination("v2"),
    )
}

fn destination_rule(index: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\n\
         kind: DestinationRule\n\
         metadata:\n  name: svc-{index}\n\
         spec:\n  host: {host}\n  subsets:\n  \
         - {{name: v1, labels: {{version: v1}}}}\n  \
         - {{name: v2, labels: {{version: v2}}}}\n",
        host = host(index)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_changes_stay_outside_them() {
        let shape = MeshShape {
            services: 300,
            endpoints: 4,
            virtual_services: 0,
            destination_rules: 0,
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..shape.services {
            for e in 0..shape.endpoints {
                assert!(seen.insert(endpoint_address(&shape, s, e)));
            }
        }
        assert!(!seen.contains(&changed_address(1)));
        assert_ne!(changed_address(1), changed_address(2));
        assert_ne!(changed_weights(1), INITIAL_WEIGHTS);
        assert_ne!(changed_weights(1), changed_weights(2));
    }

    #[test]
    fn virtual_service_without_a_destination_rule_names_no_subset() {
        assert!(virtual_service(3, 90, 10, true).contains("subset: v2"));
        assert!(!virtual_service(3, 90, 10, false).contains("subset"));
    }
}
