//! A loaded Istio config object, independent of where it came from
//! (a YAML file or the Kubernetes API).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::CreationTime;

use crate::{
    AuthorizationPolicySpec, DestinationRuleSpec, GatewaySpec, PeerAuthenticationSpec,
    ServiceEntrySpec, VirtualServiceSpec,
};

pub const GROUP: &str = "networking.istio.io";
/// API versions of `networking.istio.io` that carry the same schema.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
pub const SECURITY_GROUP: &str = "security.istio.io";
/// API versions of `security.istio.io` that carry the same schema.
pub const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// Every API group Pilotfish reads config from.
pub const GROUPS: [&str; 2] = [GROUP, SECURITY_GROUP];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    PeerAuthentication,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
    ];

    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind called `kind` in API group `group`.
    pub fn in_group(group: &str, kind: &str) -> Option<Kind> {
        Kind::from_name(kind).filter(|k| k.group() == group)
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::VirtualService | Kind::DestinationRule | Kind::Gateway | Kind::ServiceEntry => {
                GROUP
            }
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => SECURITY_GROUP,
        }
    }

    /// The API versions served for this kind, newest first.
    pub fn versions(self) -> &'static [&'static str] {
        versions_of(self.group())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }
}

/// The versions served in `group` (none for a group that is not ours).
pub fn versions_of(group: &str) -> &'static [&'static str] {
    match group {
        GROUP => &VERSIONS,
        SECURITY_GROUP => &SECURITY_VERSIONS,
        _ => &[],
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a config object: kind plus namespace/name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConfigKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The metadata Pilotfish uses; the rest of Kubernetes' ObjectMeta is ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConfigMeta {
    pub name: String,
    pub namespace: String,
    /// RFC 3339 creation time; Istio breaks ties between objects by age.
    pub creation_timestamp: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

// Boxing the large spec would change every match on it across the
// workspace for no gain: objects are few and long-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConfigSpec {
    VirtualService(VirtualServiceSpec),
    DestinationRule(DestinationRuleSpec),
    Gateway(GatewaySpec),
    ServiceEntry(ServiceEntrySpec),
    PeerAuthentication(PeerAuthenticationSpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
}

impl ConfigSpec {
    pub fn kind(&self) -> Kind {
        match self {
            ConfigSpec::VirtualService(_) => Kind::VirtualService,
            ConfigSpec::DestinationRule(_) => Kind::DestinationRule,
            ConfigSpec::Gateway(_) => Kind::Gateway,
            ConfigSpec::ServiceEntry(_) => Kind::ServiceEntry,
            ConfigSpec::PeerAuthentication(_) => Kind::PeerAuthentication,
            ConfigSpec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }
}

/// Where an object was read from, for error messages and debug output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// File path or `kubernetes`.
    pub source: String,
    /// Index of the YAML document within the file (0-based), when from a file.
    pub document: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(doc) => write!(f, "{} (document {})", self.source, doc),
            None => f.write_str(&self.source),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigObject {
    pub api_version: String,
    pub meta: ConfigMeta,
    pub spec: ConfigSpec,
    pub origin: Origin,
}

impl ConfigObject {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn key(&self) -> ConfigKey {
        ConfigKey {
            kind: self.kind(),
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// Istio's precedence order: older objects first (by creation time as a
    /// time; undated objects after dated ones, see [`CreationTime`]), then
    /// by namespace/name.
    pub fn precedence(&self) -> (CreationTime, &str, &str) {
        (
            CreationTime::of(self.meta.creation_timestamp.as_deref()),
            &self.meta.namespace,
            &self.meta.name,
        )
    }
}
