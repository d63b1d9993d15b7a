//! The operator's commands (`validate`, `proxy-status`, `proxy-config`,
//! `explain`, `diff`): each reads either files, through the same loading
//! and translation as the server ([`offline`]), or a running server's
//! debug port ([`debug_client`]), and prints tables or JSON/YAML.

pub mod debug_client;
pub mod diff;
pub mod explain;
pub mod offline;
pub mod proxy_config;
pub mod proxy_status;
pub mod table;
pub mod unknown_hosts;
pub mod validate;

use clap::ValueEnum;

/// `-o`: how a command prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables or text for people.
    #[default]
    Text,
    Json,
    Yaml,
}

impl Output {
    /// Prints `value` as JSON or YAML; `false` for text output, which each
    /// command renders itself.
    pub fn print_structured(self, value: &serde_json::Value) -> anyhow::Result<bool> {
        match self {
            Output::Text => Ok(false),
            Output::Json => {
                println!("{}", serde_json::to_string_pretty(value)?);
                Ok(true)
            }
            Output::Yaml => {
                print!("{}", serde_saphyr::to_string(value)?);
                Ok(true)
            }
        }
    }
}
