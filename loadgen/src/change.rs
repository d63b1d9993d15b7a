//! The changes the driver makes to the mesh between measurements, and how
//! each shows in the responses proxies receive.

use crate::inspect::Probe;
use crate::mesh::{self, MeshDir, MeshError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Move one endpoint of one ServiceEntry to a new address (EDS).
    Endpoint,
    /// Shift one VirtualService's v1/v2 weights (RDS).
    VirtualService,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Endpoint => "endpoint",
            ChangeKind::VirtualService => "virtual-service",
        }
    }

    /// Checks the mesh has something this change can edit.
    pub fn check(self, shape: mesh::MeshShape) -> Result<(), MeshError> {
        if self == ChangeKind::VirtualService && shape.virtual_services == 0 {
            return Err(MeshError::Invalid(
                "--change virtual-service needs --virtual-services of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The change of round `number` (1-based): which object it edits and
    /// what a proxy will see. Nothing is written yet.
    pub fn plan(self, shape: mesh::MeshShape, number: usize) -> Change {
        match self {
            ChangeKind::Endpoint => {
                // Spread over the mesh, so rounds do not edit the same file.
                let service = (number * 7919) % shape.services;
                let address = mesh::changed_address(number);
                Change {
                    kind: self,
                    service,
                    probe: Probe::EndpointAddress(address.clone()),
                    edit: Edit::EndpointAddress(address),
                }
            }
            ChangeKind::VirtualService => {
                let service = number % shape.virtual_services;
                let weights = mesh::changed_weights(number);
                let subset = if service < shape.destination_rules {
                    "v2"
                } else {
                    ""
                };
                Change {
                    kind: self,
                    service,
                    probe: Probe::RouteWeight {
                        cluster: mesh::subset_cluster(service, subset),
                        weight: weights.1,
                    },
                    edit: Edit::Weights(weights),
                }
            }
        }
    }
}

#[derive(Debug)]
enum Edit {
    EndpointAddress(String),
    Weights((u32, u32)),
}

/// One planned edit of the config directory.
#[derive(Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub service: usize,
    pub probe: Probe,
    edit: Edit,
}

impl Change {
    /// Writes the edit (an atomic rename in the config directory).
    pub fn apply(&self, mesh: &MeshDir) -> Result<(), MeshError> {
        match &self.edit {
            Edit::EndpointAddress(address) => mesh.write_service_entry(self.service, Some(address)),
            Edit::Weights(weights) => mesh.write_virtual_service(self.service, *weights),
        }
    }
}
