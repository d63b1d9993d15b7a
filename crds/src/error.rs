//! Errors about config objects. Every error names where the object came from,
//! which object it is (kind, namespace/name) when known, and the field.

use std::fmt;

use serde::Serialize;

use crate::object::{ConfigKey, Origin};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ConfigError {
    pub origin: Origin,
    /// The object, when its kind and name could be read.
    pub object: Option<ConfigKey>,
    /// Dotted field path such as `spec.http[0].route[1].weight`.
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: Origin, message: impl Into<String>) -> Self {
        ConfigError {
            origin,
            object: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn for_object(mut self, key: ConfigKey) -> Self {
        self.object = Some(key);
        self
    }

    pub fn at_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(key) = &self.object {
            write!(f, ": {key}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
