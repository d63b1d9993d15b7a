//! Services from registry files (the no-cluster default registry).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pilotfish_registries::RegistrySnapshot;
use pilotfish_registries::file::parse_registry_file;

use crate::problems::InputProblem;

#[derive(Debug)]
pub struct RegistryFiles {
    files: Vec<PathBuf>,
    last_good: BTreeMap<PathBuf, RegistrySnapshot>,
    /// Files never loaded yet, each with why, naming the file (and the
    /// document and field of a parse error).
    unloaded: BTreeMap<PathBuf, String>,
}

impl RegistryFiles {
    pub fn new(files: Vec<PathBuf>) -> Self {
        let unloaded = files
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    format!("registry file {}: not read yet", f.display()),
                )
            })
            .collect();
        RegistryFiles {
            files,
            last_good: BTreeMap::new(),
            unloaded,
        }
    }

    /// Why each file that has never loaded has not: until a file parses
    /// once, there is no good state of it to serve.
    pub fn unloaded(&self) -> impl Iterator<Item = &String> {
        self.unloaded.values()
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// One snapshot per file, in the order the files were given. Each
    /// error is a problem to report, and, for a file never loaded, the
    /// reason pilotfish is not ready.
    pub fn load(&mut self, problems: &mut Vec<InputProblem>) -> Vec<(String, RegistrySnapshot)> {
        let mut out = Vec::new();
        for path in &self.files {
            let source = path.display().to_string();
            let parsed = match std::fs::read_to_string(path) {
                // A parse error names the file, document and field.
                Ok(text) => parse_registry_file(&source, &text)
                    .map_err(|e| (e.to_string(), format!("registry file {e}"))),
                Err(e) => Err((
                    format!("cannot read registry file: {e}"),
                    format!("registry file {source}: cannot read it: {e}"),
                )),
            };
            match parsed {
                Ok(outcome) => {
                    problems.extend(
                        outcome
                            .warnings
                            .into_iter()
                            .map(|w| InputProblem::plain(&source, w)),
                    );
                    self.last_good.insert(path.clone(), outcome.snapshot);
                    self.unloaded.remove(path);
                }
                Err((message, _)) if self.last_good.contains_key(path) => {
                    let message = format!("{message}; the last good version is still served");
                    problems.push(InputProblem::plain(&source, message));
                }
                Err((message, reason)) => {
                    problems.push(InputProblem::plain(&source, message));
                    self.unloaded.insert(path.clone(), reason);
                }
            }
            if let Some(snapshot) = self.last_good.get(path) {
                out.push((source, snapshot.clone()));
            }
        }
        out
    }
}
