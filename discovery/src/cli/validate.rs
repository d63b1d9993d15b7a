//! `pilotfish validate FILE|DIR...`: reads Istio config offline with the
//! server's own loader and translation, and reports what the server would:
//! objects it cannot read (with file and line), invalid fields, and the
//! cross-object problems of every proxy the mesh implies (a route to a
//! subset no DestinationRule defines, a Gateway that does not exist, a host
//! no registry knows, listener conflicts). Exit code 1 on any error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use pilotfish_crds::ConfigObject;
use pilotfish_translate::{Diagnostic, ProxyKind, Severity, emit};
use serde::Serialize;

use super::Output;
use super::offline::{MeshFiles, NamedView, implied_views};
use super::unknown_hosts::unknown_hosts;
use crate::mesh_store::MeshGeneration;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Files or directories of Istio YAML.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub mesh: MeshFiles,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

/// One finding, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: &'static str,
    /// `file:line` of the object's document, or the source's name.
    pub location: String,
    /// `VirtualService default/reviews`.
    pub object: Option<String>,
    pub field: Option<String>,
    pub kind: String,
    pub message: String,
    /// The proxies whose view shows it (for cross-object findings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<String>,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let generation = args.mesh.load(&args.paths)?;
    let findings = findings(&generation);
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    let structured = serde_json::json!({
        "objects": generation.mesh.config.len(),
        "services": generation.mesh.services.len(),
        "errors": errors,
        "warnings": findings.len() - errors,
        "findings": findings,
    });
    if !args.output.print_structured(&structured)? {
        print!("{}", render(&findings, &generation));
    }
    Ok(match errors {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Everything the server would report for these inputs: problems reading
/// them, problems of single objects, and per-proxy cross-object ones
/// (merged across the proxies that see them).
pub fn findings(generation: &MeshGeneration) -> Vec<Finding> {
    let locate = Locator::new(&generation.mesh.config);
    let mut out: BTreeSet<Finding> = BTreeSet::new();
    for p in &generation.problems {
        out.insert(Finding {
            severity: "error",
            // The problem's own document first: a duplicate's object key
            // names the copy that is used, elsewhere.
            location: locate
                .document(&p.source)
                .unwrap_or_else(|| locate.source(&p.source, p.object.as_deref())),
            object: p.object.clone(),
            field: p.field.clone(),
            kind: "InvalidInput".into(),
            message: p.message.clone(),
            proxies: Vec::new(),
        });
    }
    let resolved = generation.resolved();
    for d in resolved.diagnostics() {
        out.insert(locate.diagnostic(d, Vec::new()));
    }
    let mut seen_by: BTreeMap<Diagnostic, Vec<String>> = BTreeMap::new();
    for NamedView { name, view } in views(generation) {
        let translation = emit(resolved, &view);
        for d in translation.diagnostics {
            seen_by.entry(d).or_default().push(name.clone());
        }
    }
    for (d, proxies) in seen_by {
        out.insert(locate.diagnostic(&d, proxies));
    }
    for unknown in unknown_hosts(&generation.mesh) {
        let reported = out.iter().any(|f| {
            f.object.as_deref() == Some(&unknown.object)
                && f.field.as_deref() == Some(&unknown.field)
        });
        if reported {
            continue;
        }
        let (severity, consequence) = match unknown.routed {
            true => ("error", "requests routed there fail"),
            false => ("warning", "this rule applies to nothing"),
        };
        out.insert(Finding {
            severity,
            location: locate.source("", Some(&unknown.object)),
            object: Some(unknown.object),
            field: Some(unknown.field),
            kind: "UnknownHost".into(),
            message: format!(
                "host {} is not a service of any registry or ServiceEntry; {consequence}",
                unknown.host
            ),
            proxies: Vec::new(),
        });
    }
    // A finding the resolve stage made needs no per-proxy twin.
    let mut findings: Vec<Finding> = out.into_iter().collect();
    findings.dedup_by(|b, a| {
        a.object == b.object && a.field == b.field && a.message == b.message && a.kind == b.kind
    });
    findings
}

/// The implied proxies, plus a gateway when the config has none, so that
/// references to Gateways that do not exist are checked too.
fn views(generation: &MeshGeneration) -> Vec<NamedView> {
    let mut views = implied_views(generation);
    if !views.iter().any(|v| v.view.kind == ProxyKind::Router) {
        let mut router = pilotfish_translate::ProxyView {
            kind: ProxyKind::Router,
            namespace: "istio-system".into(),
            ..Default::default()
        };
        router
            .labels
            .insert("istio".into(), "ingressgateway".into());
        views.push(NamedView {
            name: super::offline::name_of(&router),
            view: router,
        });
    }
    views
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// Maps objects to where they were read: `file:line` of their YAML
/// document.
struct Locator {
    by_object: BTreeMap<String, String>,
}

impl Locator {
    fn new(objects: &[ConfigObject]) -> Self {
        let mut lines_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut by_object = BTreeMap::new();
        for o in objects {
            let origin = &o.origin;
            let location = match origin.document {
                Some(doc) => {
                    let starts = lines_of
                        .entry(origin.source.clone())
                        .or_insert_with(|| document_lines(&origin.source));
                    match starts.get(doc) {
                        Some(line) => format!("{}:{line}", origin.source),
                        None => origin.to_string(),
                    }
                }
                None => origin.source.clone(),
            };
            by_object.insert(o.key().to_string(), location);
        }
        Locator { by_object }
    }

    /// The object's location when known, else `source` (as `file:line`
    /// when it names a document).
    fn source(&self, source: &str, object: Option<&str>) -> String {
        if let Some(location) = object.and_then(|o| self.by_object.get(o)) {
            return location.clone();
        }
        self.document(source).unwrap_or_else(|| source.to_string())
    }

    /// `PATH:LINE` for a source `PATH (document N)`.
    fn document(&self, source: &str) -> Option<String> {
        let (path, n) = source.strip_suffix(')')?.rsplit_once(" (document ")?;
        let line = document_lines(path)
            .get(n.parse::<usize>().ok()?)
            .copied()?;
        Some(format!("{path}:{line}"))
    }

    fn diagnostic(&self, d: &Diagnostic, proxies: Vec<String>) -> Finding {
        Finding {
            severity: severity(d.severity),
            location: self.source("", Some(&d.object)),
            object: Some(d.object.clone()),
            field: d.field.clone(),
            kind: format!("{:?}", d.kind),
            message: d.message.clone(),
            proxies,
        }
    }
}

/// The 1-based line each YAML document of `path` starts on (the line after
/// a `---` separator, or line 1).
fn document_lines(path: &str) -> Vec<usize> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let mut current: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.starts_with("---") {
            if let Some(start) = current.take() {
                starts.push(start);
            }
            continue;
        }
        let content = line.trim();
        if current.is_none() && !content.is_empty() && !content.starts_with('#') {
            current = Some(number);
        }
    }
    starts.extend(current);
    starts
}

/// `file:line: error: VirtualService default/reviews: spec...: message`.
pub fn render(findings: &[Finding], generation: &MeshGeneration) -> String {
    let mut out = String::new();
    for f in findings {
        let mut line = String::new();
        if !f.location.is_empty() {
            line.push_str(&format!("{}: ", f.location));
        }
        line.push_str(&format!("{}: ", f.severity));
        if let Some(o) = &f.object {
            line.push_str(&format!("{o}: "));
        }
        if let Some(field) = &f.field {
            line.push_str(&format!("{field}: "));
        }
        line.push_str(&f.message);
        line.push_str(&format!(" [{}]", f.kind));
        match f.proxies.len() {
            0 => {}
            1..=2 => line.push_str(&format!(" (seen by {})", f.proxies.join("; "))),
            n => line.push_str(&format!(" (seen by {n} proxies: {}; ...)", f.proxies[0])),
        }
        out.push_str(&line);
        out.push('\n');
    }
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    out.push_str(&format!(
        "{} objects, {} services: {errors} errors, {} warnings\n",
        generation.mesh.config.len(),
        generation.mesh.services.len(),
        findings.len() - errors
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_start_after_separators_and_comments() {
        let dir = std::env::temp_dir().join(format!("pilotfish-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.yaml");
        std::fs::write(&file, "# c\nkind: A\n---\n\nkind: B\n---\nkind: C\n").expect("write");
        assert_eq!(document_lines(file.to_str().expect("utf-8")), [2, 5, 7]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
