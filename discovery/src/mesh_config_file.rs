//! Istio's MeshConfig YAML (`--mesh-config`, pilot-discovery's
//! `--meshConfig`): `outboundTrafficPolicy.mode`, `accessLogFile`,
//! `enableTracing` and `defaultConfig.tracing.zipkin.address` are read;
//! every other field present is listed so the operator hears once, at
//! start, that it changes nothing.

use std::path::{Path, PathBuf};

use pilotfish_translate::{OutboundTrafficPolicy, ZipkinCollector};
use serde_json::{Map, Value};

/// What a mesh config file asks for; `None` where it says nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MeshConfigFile {
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// `accessLogFile`, when not empty.
    pub access_log_file: Option<String>,
    /// `defaultConfig.tracing.zipkin.address`, unless `enableTracing` is
    /// false (Istio's default is true).
    pub zipkin: Option<ZipkinCollector>,
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
    let mut zipkin = None;
    let mut enable_tracing = true;
    for (name, value) in &fields {
        match name.as_str() {
            "outboundTrafficPolicy" => {
                file.outbound_traffic_policy = Some(outbound_traffic_policy(value)?);
            }
            "accessLogFile" => {
                let path = value
                    .as_str()
                    .ok_or_else(|| format!("accessLogFile: {value} is not a string"))?;
                file.access_log_file = Some(path.to_string()).filter(|p| !p.is_empty());
            }
            "enableTracing" => {
                enable_tracing = value
                    .as_bool()
                    .ok_or_else(|| format!("enableTracing: {value} is not true or false"))?;
            }
            "defaultConfig" => {
                zipkin = default_config(value, &mut file.ignored_fields)?;
            }
            _ => file.ignored_fields.push(name.clone()),
        }
    }
    file.zipkin = zipkin.filter(|_| enable_tracing);
    Ok(file)
}

/// `defaultConfig`: only `tracing.zipkin.address` is read; the rest is
/// listed in `ignored`.
fn default_config(
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<Option<ZipkinCollector>, String> {
    let mut zipkin = None;
    for (name, value) in mapping(value, "defaultConfig")? {
        if name != "tracing" {
            ignored.push(format!("defaultConfig.{name}"));
            continue;
        }
        for (name, value) in mapping(value, "defaultConfig.tracing")? {
            match (name.as_str(), value.get("address")) {
                ("zipkin", Some(address)) => zipkin = Some(zipkin_address(address)?),
                _ => ignored.push(format!("defaultConfig.tracing.{name}")),
            }
        }
    }
    Ok(zipkin)
}

fn mapping<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{field}: {value} is not a mapping"))
}

/// `HOST:PORT`, as Istio writes the collector address.
fn zipkin_address(value: &Value) -> Result<ZipkinCollector, String> {
    const FIELD: &str = "defaultConfig.tracing.zipkin.address";
    let text = value.as_str().unwrap_or_default();
    let (host, port) = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| format!("{FIELD}: {value} is not HOST:PORT"))?;
    let port = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{FIELD}: {value} has no valid port"))?;
    Ok(ZipkinCollector {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    })
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

    const OBSERVED: &str = "accessLogFile: /dev/stdout
defaultConfig:
  discoveryAddress: pilot:15010
  tracing:
    zipkin:
      address: zipkin:9411
";

    #[test]
    fn access_log_file_and_zipkin_address_are_read_and_tracing_is_on_by_default() {
        let file = parse(OBSERVED).expect("parses");
        assert_eq!(file.access_log_file.as_deref(), Some("/dev/stdout"));
        assert_eq!(
            file.zipkin,
            Some(ZipkinCollector {
                host: "zipkin".into(),
                port: 9411
            })
        );
        assert_eq!(file.ignored_fields, ["defaultConfig.discoveryAddress"]);
    }

    #[test]
    fn enable_tracing_false_turns_the_zipkin_address_off() {
        let file = parse(&format!("enableTracing: false\n{OBSERVED}")).expect("parses");
        assert_eq!(file.zipkin, None);
        assert_eq!(file.access_log_file.as_deref(), Some("/dev/stdout"));
    }

    #[test]
    fn a_zipkin_address_without_a_port_is_refused_naming_the_field() {
        let error = parse("defaultConfig:\n  tracing:\n    zipkin:\n      address: zipkin\n")
            .expect_err("refused");
        assert!(
            error.contains("defaultConfig.tracing.zipkin.address"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_outbound_mode_is_refused_naming_the_field() {
        let error = parse("outboundTrafficPolicy:\n  mode: DENY\n").expect_err("refused");
        assert!(error.contains("outboundTrafficPolicy.mode"), "{error}");
        assert!(error.contains("DENY"), "{error}");
    }
}
