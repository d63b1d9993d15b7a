//! `pilotfish proxy-status`: every proxy connected to a running server,
//! one row each, with the sync state of each xDS type as istioctl shows it
//! (read from the server's `/debug/syncz`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Output;
use super::debug_client::{self, DEFAULT_ADDRESS};
use super::table::Table;
use crate::status::unix_millis;

#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// Only this proxy (node id, or pod name as `name` or `name.namespace`).
    pub proxy: Option<String>,
    /// The server's debug address (`serve --http-address`).
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub server: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

/// The parts of `/debug/syncz` this command reads.
#[derive(Debug, Deserialize)]
pub struct Syncz {
    pub mesh_version: u64,
    pub proxies: Vec<ProxyEntry>,
}

#[derive(Debug, Deserialize)]
pub struct ProxyEntry {
    pub identity: Identity,
    pub protocol: String,
    #[serde(default)]
    pub verified_identity: Option<String>,
    pub mesh_version: u64,
    #[serde(default)]
    pub types: BTreeMap<String, TypeEntry>,
}

#[derive(Debug, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub kind: String,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub id_namespace: Option<String>,
    pub view: ViewEntry,
}

#[derive(Debug, Deserialize)]
pub struct ViewEntry {
    pub namespace: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TypeEntry {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<String>,
    #[serde(default)]
    pub last_response_rejected: bool,
    pub last_push_unix_ms: Option<u64>,
}

/// Where a proxy stands with one type, as istioctl names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// The last response was accepted.
    Synced,
    /// Sent, not answered yet.
    Stale,
    /// Nothing of this type was sent (the proxy did not ask, or there is
    /// nothing for it).
    NotSent,
    /// The last response was rejected.
    Nacked,
}

impl SyncState {
    fn of(entry: Option<&TypeEntry>) -> SyncState {
        let Some(entry) = entry else {
            return SyncState::NotSent;
        };
        match (&entry.sent_version, &entry.acked_version) {
            (None, _) => SyncState::NotSent,
            _ if entry.last_response_rejected => SyncState::Nacked,
            (Some(sent), Some(acked)) if sent == acked => SyncState::Synced,
            _ => SyncState::Stale,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT SENT",
            SyncState::Nacked => "NACKED",
        }
    }
}

/// The xDS types in istioctl's column order, by their syncz key.
const TYPES: [(&str, &str); 5] = [
    ("CDS", "Cluster"),
    ("LDS", "Listener"),
    ("EDS", "Endpoint"),
    ("RDS", "Route"),
    ("SDS", "Secret"),
];

/// One proxy's row.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub node_id: String,
    pub kind: String,
    pub namespace: String,
    pub protocol: String,
    pub verified_identity: Option<String>,
    pub mesh_version: u64,
    pub types: BTreeMap<String, TypeRow>,
    /// Milliseconds since the last response of any type.
    pub last_push_age_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct TypeRow {
    pub state: SyncState,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    /// Envoy's message, while the last response stands rejected.
    pub error: Option<String>,
}

impl ProxyEntry {
    /// `productpage-v1.default`, as istioctl names a proxy; the node id
    /// when it carries no pod name.
    pub fn name(&self) -> String {
        match &self.identity.pod {
            Some(pod) => format!(
                "{pod}.{}",
                self.identity
                    .id_namespace
                    .as_deref()
                    .unwrap_or(&self.identity.view.namespace)
            ),
            None => self.identity.node_id.clone(),
        }
    }

    /// Named by node id, pod name, or `pod.namespace`.
    pub fn is(&self, wanted: &str) -> bool {
        self.identity.node_id == wanted
            || self.identity.pod.as_deref() == Some(wanted)
            || self.name() == wanted
    }

    fn row(&self, now_ms: u64) -> StatusRow {
        let types = TYPES
            .iter()
            .map(|(column, key)| {
                let entry = self.types.get(*key);
                let state = SyncState::of(entry);
                let row = TypeRow {
                    state,
                    sent_version: entry.and_then(|e| e.sent_version.clone()),
                    acked_version: entry.and_then(|e| e.acked_version.clone()),
                    error: match state {
                        SyncState::Nacked => entry.and_then(|e| e.last_nack.clone()),
                        _ => None,
                    },
                };
                (column.to_string(), row)
            })
            .collect();
        let last_push = self
            .types
            .values()
            .filter_map(|t| t.last_push_unix_ms)
            .max();
        StatusRow {
            name: self.name(),
            node_id: self.identity.node_id.clone(),
            kind: self.identity.kind.to_lowercase(),
            namespace: self.identity.view.namespace.clone(),
            protocol: self.protocol.clone(),
            verified_identity: self.verified_identity.clone(),
            mesh_version: self.mesh_version,
            types,
            last_push_age_ms: last_push.map(|t| now_ms.saturating_sub(t)),
        }
    }
}

/// The rows for `syncz`, only `proxy` if given.
pub fn rows(syncz: &Syncz, proxy: Option<&str>) -> Vec<StatusRow> {
    let now = unix_millis();
    syncz
        .proxies
        .iter()
        .filter(|p| proxy.is_none_or(|wanted| p.is(wanted)))
        .map(|p| p.row(now))
        .collect()
}

/// istioctl's table, then every rejection in full.
pub fn render(rows: &[StatusRow], mesh_version: u64) -> String {
    let mut table = Table::new([
        "NAME",
        "KIND",
        "PROTOCOL",
        "CDS",
        "LDS",
        "EDS",
        "RDS",
        "SDS",
        "VERSION",
        "LAST PUSH",
    ]);
    for row in rows {
        let mut cells = vec![row.name.clone(), row.kind.clone(), row.protocol.clone()];
        cells.extend(TYPES.iter().map(|(column, _)| {
            row.types
                .get(*column)
                .map(|t| t.state.label().to_string())
                .unwrap_or_default()
        }));
        cells.push(row.mesh_version.to_string());
        cells.push(row.last_push_age_ms.map(age).unwrap_or_else(|| "-".into()));
        table.row(cells);
    }
    let mut out = format!("mesh version {mesh_version}\n");
    out.push_str(&table.render());
    for row in rows {
        for (column, t) in &row.types {
            if let Some(error) = &t.error {
                out.push_str(&format!("\n{} {column} NACKED: {error}", row.name));
            }
        }
    }
    if out.contains(" NACKED: ") {
        out.push('\n');
    }
    out
}

/// `850ms`, `12s`, `3m4s`, `2h5m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn run(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let syncz = parse(debug_client::get_json(&args.server, "/debug/syncz")?)?;
    let rows = rows(&syncz, args.proxy.as_deref());
    if let Some(proxy) = &args.proxy
        && rows.is_empty()
    {
        anyhow::bail!("no connected proxy {proxy:?}");
    }
    let structured = serde_json::json!({"mesh_version": syncz.mesh_version, "proxies": rows});
    if !args.output.print_structured(&structured)? {
        print!("{}", render(&rows, syncz.mesh_version));
    }
    Ok(ExitCode::SUCCESS)
}

/// A `/debug/syncz` page.
pub fn parse(value: Value) -> anyhow::Result<Syncz> {
    serde_json::from_value(value).context("/debug/syncz: unexpected shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn syncz() -> Syncz {
        parse(json!({
            "mesh_version": 7,
            "proxies": [{
                "identity": {
                    "node_id": "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local",
                    "kind": "Sidecar", "pod": "productpage-v1", "id_namespace": "default",
                    "view": {"namespace": "default"}
                },
                "protocol": "delta", "mesh_version": 7,
                "types": {
                    "Cluster": {"sent_version": "a", "acked_version": "a", "last_push_unix_ms": 1},
                    "Listener": {"sent_version": "b", "acked_version": "a", "last_nack": "bad port",
                                 "last_response_rejected": true},
                    "Endpoint": {"sent_version": "c", "acked_version": null},
                }
            }]
        }))
        .expect("parses")
    }

    #[test]
    fn each_type_is_synced_stale_not_sent_or_nacked_with_envoys_message() {
        let rows = rows(&syncz(), None);
        let states: Vec<SyncState> = ["CDS", "LDS", "EDS", "RDS", "SDS"]
            .iter()
            .map(|c| rows[0].types[*c].state)
            .collect();
        assert_eq!(
            states,
            [
                SyncState::Synced,
                SyncState::Nacked,
                SyncState::Stale,
                SyncState::NotSent,
                SyncState::NotSent
            ]
        );
        let text = render(&rows, 7);
        assert!(text.contains("productpage-v1.default"), "{text}");
        assert!(
            text.contains("productpage-v1.default LDS NACKED: bad port"),
            "{text}"
        );
    }

    #[test]
    fn a_proxy_is_found_by_node_id_pod_or_pod_dot_namespace() {
        let s = syncz();
        for name in [
            "productpage-v1",
            "productpage-v1.default",
            "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local",
        ] {
            assert_eq!(rows(&s, Some(name)).len(), 1, "{name}");
        }
        assert!(rows(&s, Some("reviews-v1")).is_empty());
    }

    #[test]
    fn ages_read_like_istioctls() {
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(184_000), "3m4s");
        assert_eq!(age(7_500_000), "2h5m");
    }
}
