//! `pilotfish discovery`: the flags Istio 1.1's `pilot-discovery discovery`
//! was started with (its docker-compose files), translated into
//! `pilotfish serve` arguments, so those files work with only the image
//! changed. Only the flags such files used are known; any other is refused
//! by name rather than silently ignored, since a flag that changed nothing
//! would hide a mesh that differs from what its operator asked for.
//!
//! pilot-discovery parsed with Go's pflag: `--flag value` and
//! `--flag=value`; Go's own `flag` package also takes one dash, so
//! `-flag value` and `-flag=value` are accepted too. A flag given twice
//! keeps its last value, as pflag does.

/// pilot-discovery's defaults where they differ from `serve`'s.
const DEFAULT_HTTP_ADDR: &str = ":8080";
const DEFAULT_GRPC_ADDR: &str = ":15010";
const DEFAULT_SECURE_GRPC_ADDR: &str = ":15012";
const DEFAULT_MONITORING_ADDR: &str = ":15014";

/// The flags `pilotfish discovery` knows, as pilot-discovery spelled them.
pub const KNOWN_FLAGS: [&str; 12] = [
    "registries",
    "consulserverURL",
    "kubeconfig",
    "configDir",
    "meshConfig",
    "httpAddr",
    "grpcAddr",
    "secureGrpcAddr",
    "monitoringAddr",
    "domain",
    "keepaliveMaxServerConnectionAge",
    "keepaliveMaxServerConnectionAgeGrace",
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PilotFlagError {
    #[error(
        "unknown flag {0}: `pilotfish discovery` accepts only pilot-discovery's --{flags} (use `pilotfish serve` for anything else)",
        flags = KNOWN_FLAGS.join(", --")
    )]
    UnknownFlag(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("unexpected argument {0:?}: `pilotfish discovery` takes only flags")]
    Positional(String),
    #[error("--registries: unknown registry {0:?} (expected Consul or Kubernetes)")]
    UnknownRegistry(String),
}

/// The pilot-discovery flags given, by name; absent ones take
/// pilot-discovery's defaults in [`serve_args`].
#[derive(Debug, Default, PartialEq, Eq)]
struct Given {
    values: Vec<(&'static str, String)>,
}

impl Given {
    fn get(&self, flag: &str) -> Option<&str> {
        // Last one wins, as in pflag.
        self.values
            .iter()
            .rev()
            .find(|(name, _)| *name == flag)
            .map(|(_, value)| value.as_str())
    }
}

fn parse(args: &[String]) -> Result<Given, PilotFlagError> {
    let mut given = Given::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|body| !body.is_empty())
        else {
            return Err(PilotFlagError::Positional(arg.clone()));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let dashes = &arg[..arg.len() - body.len()];
        let Some(known) = KNOWN_FLAGS.iter().find(|known| **known == name) else {
            return Err(PilotFlagError::UnknownFlag(format!("{dashes}{name}")));
        };
        let value = match inline_value {
            Some(value) => value,
            None => rest
                .next()
                .cloned()
                .ok_or_else(|| PilotFlagError::MissingValue(format!("{dashes}{name}")))?,
        };
        given.values.push((known, value));
    }
    Ok(given)
}

/// Go's listen address: `:PORT` is every interface; empty turns the
/// listener off.
fn listen_address(go: &str) -> String {
    match go {
        "" => "off".to_string(),
        _ if go.starts_with(':') => format!("0.0.0.0{go}"),
        _ => go.to_string(),
    }
}

/// `pilotfish serve` arguments for pilot-discovery's `args` (the words after
/// `discovery`).
///
/// - `--registries Consul,Kubernetes` becomes `--registry consul --registry
///   kubernetes` in that order; an empty value means no registry at all
///   (pilot-discovery refused it; here it serves a config directory alone).
///   Absent, pilot-discovery's default applies: Kubernetes.
/// - Without `--configDir`, Istio config comes from the Kubernetes API
///   server (`--config-source kubernetes`), as pilot-discovery read its CRDs
///   there; `--kubeconfig` says which (default: in-cluster, as for `serve`).
/// - Addresses keep pilot-discovery's defaults (HTTP `:8080`, gRPC `:15010`,
///   secure gRPC `:15012`, monitoring `:15014`); an empty one is off.
pub fn serve_args(args: &[String]) -> Result<Vec<String>, PilotFlagError> {
    let given = parse(args)?;
    let mut serve: Vec<String> = Vec::new();
    let mut push = |flag: &str, value: &str| {
        serve.push(flag.to_string());
        serve.push(value.to_string());
    };
    for registry in given
        .get("registries")
        .unwrap_or("Kubernetes")
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        match registry {
            "Consul" => push("--registry", "consul"),
            "Kubernetes" => push("--registry", "kubernetes"),
            other => return Err(PilotFlagError::UnknownRegistry(other.to_string())),
        }
    }
    if let Some(url) = given.get("consulserverURL") {
        push("--consul-address", url);
    }
    if let Some(dir) = given.get("configDir") {
        push("--config-dir", dir);
    }
    if let Some(kubeconfig) = given.get("kubeconfig") {
        push("--kubeconfig", kubeconfig);
    }
    if given.get("configDir").is_none() {
        push("--config-source", "kubernetes");
    }
    if let Some(file) = given.get("meshConfig") {
        push("--mesh-config", file);
    }
    if let Some(domain) = given.get("domain") {
        push("--domain-suffix", domain);
    }
    // Go durations ("30m", "1h30m"), which `serve` reads as they are.
    if let Some(age) = given.get("keepaliveMaxServerConnectionAge") {
        push("--max-connection-age", age);
    }
    if let Some(grace) = given.get("keepaliveMaxServerConnectionAgeGrace") {
        push("--max-connection-age-grace", grace);
    }
    let address = |flag: &str, default: &str| listen_address(given.get(flag).unwrap_or(default));
    push("--http-address", &address("httpAddr", DEFAULT_HTTP_ADDR));
    push("--xds-address", &address("grpcAddr", DEFAULT_GRPC_ADDR));
    push(
        "--secure-xds-address",
        &address("secureGrpcAddr", DEFAULT_SECURE_GRPC_ADDR),
    );
    // Off is no monitoring listener: serve has none unless asked.
    let monitoring = address("monitoringAddr", DEFAULT_MONITORING_ADDR);
    if monitoring != "off" {
        push("--monitoring-address", &monitoring);
    }
    Ok(serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &[&str]) -> Vec<String> {
        text.iter().map(|w| w.to_string()).collect()
    }

    fn translated(args: &[&str]) -> Vec<String> {
        serve_args(&words(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The value following `flag` in serve arguments, each occurrence.
    fn values_of(serve: &[String], flag: &str) -> Vec<String> {
        serve
            .windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
            .collect()
    }

    #[test]
    fn the_istio_1_1_consul_compose_invocation_maps_onto_serve() {
        let serve = translated(&[
            "--httpAddr",
            ":15007",
            "--registries",
            "Consul",
            "--consulserverURL",
            "http://consul:8500",
            "--kubeconfig",
            "/etc/istio/config/kubeconfig",
            "--secureGrpcAddr",
            "",
        ]);
        assert_eq!(
            serve,
            words(&[
                "--registry",
                "consul",
                "--consul-address",
                "http://consul:8500",
                "--kubeconfig",
                "/etc/istio/config/kubeconfig",
                "--config-source",
                "kubernetes",
                "--http-address",
                "0.0.0.0:15007",
                "--xds-address",
                "0.0.0.0:15010",
                "--secure-xds-address",
                "off",
                "--monitoring-address",
                "0.0.0.0:15014",
            ])
        );
    }

    #[test]
    fn every_known_flag_maps_to_its_serve_option_in_both_dash_and_equals_forms() {
        let serve = translated(&[
            "-registries=Consul,Kubernetes",
            "--configDir=/config",
            "-meshConfig",
            "/etc/istio/mesh",
            "--grpcAddr=127.0.0.1:16010",
            "-monitoringAddr",
            "127.0.0.1:9093",
            "--domain",
            "example.local",
            "--kubeconfig",
            "/kube",
        ]);
        assert_eq!(values_of(&serve, "--registry"), ["consul", "kubernetes"]);
        assert_eq!(values_of(&serve, "--config-dir"), ["/config"]);
        assert_eq!(values_of(&serve, "--mesh-config"), ["/etc/istio/mesh"]);
        assert_eq!(values_of(&serve, "--xds-address"), ["127.0.0.1:16010"]);
        assert_eq!(
            values_of(&serve, "--monitoring-address"),
            ["127.0.0.1:9093"]
        );
        assert_eq!(values_of(&serve, "--domain-suffix"), ["example.local"]);
        assert_eq!(values_of(&serve, "--kubeconfig"), ["/kube"]);
        // A config directory replaces the API server as the config source.
        assert!(values_of(&serve, "--config-source").is_empty());
    }

    #[test]
    fn absent_flags_take_pilot_discovery_defaults() {
        let serve = translated(&[]);
        assert_eq!(values_of(&serve, "--registry"), ["kubernetes"]);
        assert_eq!(values_of(&serve, "--config-source"), ["kubernetes"]);
        assert_eq!(values_of(&serve, "--http-address"), ["0.0.0.0:8080"]);
        assert_eq!(values_of(&serve, "--xds-address"), ["0.0.0.0:15010"]);
        assert_eq!(values_of(&serve, "--secure-xds-address"), ["0.0.0.0:15012"]);
        assert_eq!(values_of(&serve, "--monitoring-address"), ["0.0.0.0:15014"]);
    }

    #[test]
    fn empty_registries_and_addresses_turn_them_off() {
        let serve = translated(&["--registries", "", "--grpcAddr=", "--monitoringAddr", ""]);
        assert!(values_of(&serve, "--registry").is_empty());
        assert_eq!(values_of(&serve, "--xds-address"), ["off"]);
        assert!(values_of(&serve, "--monitoring-address").is_empty());
    }

    #[test]
    fn a_flag_given_twice_keeps_its_last_value() {
        let serve = translated(&["--domain", "a.local", "--domain=b.local"]);
        assert_eq!(values_of(&serve, "--domain-suffix"), ["b.local"]);
    }

    #[test]
    fn the_maximum_connection_age_and_its_grace_pass_through_as_go_durations() {
        let serve = translated(&[
            "--keepaliveMaxServerConnectionAge",
            "30m",
            "-keepaliveMaxServerConnectionAgeGrace=10s",
        ]);
        assert_eq!(values_of(&serve, "--max-connection-age"), ["30m"]);
        assert_eq!(values_of(&serve, "--max-connection-age-grace"), ["10s"]);
        let absent = translated(&[]);
        assert!(values_of(&absent, "--max-connection-age").is_empty());
    }

    #[test]
    fn an_unknown_flag_is_refused_by_name_as_given() {
        for (arg, named) in [
            ("--bogus", "--bogus"),
            ("-bogus=1", "-bogus"),
            ("--config-dir", "--config-dir"),
        ] {
            let error = serve_args(&words(&["--registries", "Consul", arg, "x"]))
                .expect_err("unknown flag accepted");
            assert_eq!(error, PilotFlagError::UnknownFlag(named.to_string()));
            assert!(error.to_string().contains(named), "{error}");
        }
    }

    #[test]
    fn a_flag_without_its_value_a_positional_word_and_an_unknown_registry_are_refused() {
        assert_eq!(
            serve_args(&words(&["--configDir"])),
            Err(PilotFlagError::MissingValue("--configDir".into()))
        );
        assert_eq!(
            serve_args(&words(&["discovery"])),
            Err(PilotFlagError::Positional("discovery".into()))
        );
        assert_eq!(
            serve_args(&words(&["--registries", "Consul,MCP"])),
            Err(PilotFlagError::UnknownRegistry("MCP".into()))
        );
    }
}
