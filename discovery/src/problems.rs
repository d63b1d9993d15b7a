//! Problems with the inputs (config files, registry files) that the server
//! reports through logs, metrics and `/debug/diagnostics`.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InputProblem {
    /// File path (with document index when known) or source name.
    pub source: String,
    /// `VirtualService default/reviews`, when the object could be identified.
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl InputProblem {
    pub fn from_config_error(err: &pilotfish_crds::ConfigError) -> Self {
        InputProblem {
            source: err.origin.to_string(),
            object: err.object.as_ref().map(ToString::to_string),
            field: err.field.clone(),
            message: err.message.clone(),
        }
    }

    pub fn plain(source: impl Into<String>, message: impl Into<String>) -> Self {
        InputProblem {
            source: source.into(),
            object: None,
            field: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
