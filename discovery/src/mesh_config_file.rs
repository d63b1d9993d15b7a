//! Istio's MeshConfig YAML (`--mesh-config`, pilot-discovery's
//! `--meshConfig`): the fields Pilotfish honours are read; every other
//! field present is listed so the operator hears once, at start, that it
//! changes nothing.

use std::path::{Path, PathBuf};

use pilotfish_translate::OutboundTrafficPolicy;
use serde_json::Value;

/// What a mesh config file asks for; `None` where it says nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MeshConfigFile {
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Dotted paths of fields present but not honoured, by name.
    pub ignored_fields: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshConfigFileError {
    #[error("--mesh-config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--mesh-config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Reads and parses the mesh config file at `path`.
pub fn load(path: &Path) -> Result<MeshConfigFile, MeshConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| MeshConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| MeshConfigFileError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses MeshConfig YAML; the error names the field at fault.
pub fn parse(text: &str) -> Result<MeshConfigFile, String> {
    let document: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut file = MeshConfigFile::default();
    let fields = match document {
        // An empty file is every default, as for Istio.
        Value::Null => return Ok(file),
        Value::Object(fields) => fields,
        _ => return Err("expected a mapping of MeshConfig fields".to_string()),
    };
    for (name, value) in &fields {
        match name.as_str() {
            "outboundTrafficPolicy" => {
                file.outbound_traffic_policy = Some(outbound_traffic_policy(value)?);
            }
            _ => file.ignored_fields.push(name.clone()),
        }
    }
    Ok(file)
}

fn outbound_traffic_policy(value: &Value) -> Result<OutboundTrafficPolicy, String> {
    let mode = value.get("mode").unwrap_or(&Value::Null);
    match mode.as_str() {
        // Istio's default when the mode is left out.
        None if mode.is_null() => Ok(OutboundTrafficPolicy::AllowAny),
        Some("ALLOW_ANY") => Ok(OutboundTrafficPolicy::AllowAny),
        Some("REGISTRY_ONLY") => Ok(OutboundTrafficPolicy::RegistryOnly),
        _ => Err(format!(
            "outboundTrafficPolicy.mode: {mode} is not ALLOW_ANY or REGISTRY_ONLY"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_traffic_policy_mode_is_read() {
        let file = parse("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n").expect("parses");
        assert_eq!(
            file.outbound_traffic_policy,
            Some(OutboundTrafficPolicy::RegistryOnly)
        );
        let file = parse("outboundTrafficPolicy: {}\n").expect("parses");
        assert_eq!(
            file.outbound_traffic_policy,
            Some(OutboundTrafficPolicy::AllowAny)
        );
    }

    #[test]
    fn an_empty_file_says_nothing() {
        assert_eq!(parse("").expect("parses"), MeshConfigFile::default());
    }

    #[test]
    fn fields_not_honoured_are_listed_not_refused() {
        let file = parse("connectTimeout: 10s\nmixerCheckServer: x\n").expect("parses");
        assert_eq!(file.ignored_fields, ["connectTimeout", "mixerCheckServer"]);
    }

    #[test]
    fn an_unknown_outbound_mode_is_refused_naming_the_field() {
        let error = parse("outboundTrafficPolicy:\n  mode: DENY\n").expect_err("refused");
        assert!(error.contains("outboundTrafficPolicy.mode"), "{error}");
        assert!(error.contains("DENY"), "{error}");
    }
}
