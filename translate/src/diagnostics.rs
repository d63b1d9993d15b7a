//! Problems found while translating. Each names the object (kind and
//! namespace/name, or the service hostname) and, where there is one, the field.

use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum DiagnosticKind {
    /// Two services claim the same listener match; the loser is not routed.
    ListenerConflict,
    /// A route names a subset no DestinationRule defines (routes answer 503).
    MissingSubset,
    /// A route names a host or port that is not in the registry.
    UnknownDestination,
    /// A VirtualService is shadowed by an older one for the same host.
    ShadowedVirtualService,
    /// A field Pilotfish does not implement yet; it is ignored.
    Unsupported,
    /// A value that cannot be translated (bad duration, bad regex...).
    InvalidField,
    /// A service that cannot be reached (e.g. a VIP-less TCP service with no endpoints).
    Unreachable,
    /// A gateway server names a credential (Secret) that does not exist or
    /// lacks what the server needs; the server is not served.
    MissingCredential,
    /// A VirtualService bound to a gateway none of whose servers takes its
    /// hosts (or to a Gateway that does not exist).
    UnboundVirtualService,
    /// A security policy ignored because another one of the same scope
    /// takes precedence (an older PeerAuthentication for the workload).
    ShadowedPolicy,
    /// A security policy that cannot be enforced as written on this proxy:
    /// the traffic it governs is refused rather than let through.
    PolicyFailedClosed,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub kind: DiagnosticKind,
    /// `VirtualService default/reviews`, or `service db.service.consul`.
    pub object: String,
    /// `spec.http[0].route[1].destination.subset`, when it is about a field.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.object)?;
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl DiagnosticKind {
    /// Problems that break traffic are errors; the rest are warnings.
    pub fn default_severity(self) -> Severity {
        match self {
            DiagnosticKind::ListenerConflict
            | DiagnosticKind::MissingSubset
            | DiagnosticKind::UnknownDestination
            | DiagnosticKind::InvalidField
            | DiagnosticKind::MissingCredential
            | DiagnosticKind::PolicyFailedClosed => Severity::Error,
            DiagnosticKind::ShadowedVirtualService
            | DiagnosticKind::Unsupported
            | DiagnosticKind::Unreachable
            | DiagnosticKind::UnboundVirtualService
            | DiagnosticKind::ShadowedPolicy => Severity::Warning,
        }
    }
}

impl Diagnostic {
    /// A diagnostic with the kind's default severity and no field.
    pub fn new(
        kind: DiagnosticKind,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: kind.default_severity(),
            kind,
            object: object.into(),
            field: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unsupported(object: impl Into<String>, field: impl Into<String>) -> Self {
        Diagnostic::new(
            DiagnosticKind::Unsupported,
            object,
            "not implemented by Pilotfish yet; ignored",
        )
        .at(field)
    }

    pub fn invalid(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic::new(DiagnosticKind::InvalidField, object, message).at(field)
    }
}

/// How diagnostics name a service: `service reviews.default.svc.cluster.local`.
pub fn service_object(hostname: &str) -> String {
    format!("service {hostname}")
}

/// Sorts and removes duplicates (the same problem is often found once per
/// cluster or route that inherits it).
pub fn normalize(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort();
    diagnostics.dedup();
}
