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
}

impl RegistryFiles {
    pub fn new(files: Vec<PathBuf>) -> Self {
        RegistryFiles {
            files,
            last_good: BTreeMap::new(),
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// One snapshot per file, in the order the files were given.
    pub fn load(&mut self, problems: &mut Vec<InputProblem>) -> Vec<(String, RegistrySnapshot)> {
        let mut out = Vec::new();
        for path in &self.files {
            let source = path.display().to_string();
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read registry file: {e}"))
                .and_then(|text| parse_registry_file(&source, &text).map_err(|e| e.to_string()));
            match parsed {
                Ok(outcome) => {
                    problems.extend(
                        outcome
                            .warnings
                            .into_iter()
                            .map(|w| InputProblem::plain(&source, w)),
                    );
                    self.last_good.insert(path.clone(), outcome.snapshot);
                }
                Err(message) => {
                    let kept = if self.last_good.contains_key(path) {
                        "; the last good version is still served"
                    } else {
                        ""
                    };
                    problems.push(InputProblem::plain(&source, format!("{message}{kept}")));
                }
            }
            if let Some(snapshot) = self.last_good.get(path) {
                out.push((source, snapshot.clone()));
            }
        }
        out
    }
}
