//! Istio config from directories of YAML files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pilotfish_crds::{ConfigKey, ConfigObject, load_yaml};

use crate::problems::InputProblem;

/// The objects read from one file, and the problems found in it.
#[derive(Debug, Default, Clone)]
struct FileState {
    objects: Vec<ConfigObject>,
}

/// All config directories; re-read as a whole on every change (config files
/// are small), keeping per-file last-good objects.
#[derive(Debug)]
pub struct ConfigDirs {
    dirs: Vec<PathBuf>,
    default_namespace: String,
    files: BTreeMap<PathBuf, FileState>,
}

/// The outcome of one load: the objects to serve and the problems to report.
#[derive(Debug, Default)]
pub struct ConfigLoad {
    pub objects: Vec<ConfigObject>,
    pub problems: Vec<InputProblem>,
}

impl ConfigDirs {
    pub fn new(dirs: Vec<PathBuf>, default_namespace: &str) -> Self {
        ConfigDirs {
            dirs,
            default_namespace: default_namespace.to_string(),
            files: BTreeMap::new(),
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn load(&mut self) -> ConfigLoad {
        let mut out = ConfigLoad::default();
        let mut seen_files = BTreeMap::new();
        for dir in &self.dirs {
            match yaml_files(dir) {
                Ok(files) => {
                    for file in files {
                        let state = self.load_file(&file, &mut out.problems);
                        seen_files.insert(file, state);
                    }
                }
                Err(e) => out.problems.push(InputProblem::plain(
                    dir.display().to_string(),
                    format!("cannot read config directory: {e}"),
                )),
            }
        }
        // Files that disappeared are dropped: deleting a file deletes its config.
        self.files = seen_files;
        let mut seen: BTreeMap<ConfigKey, String> = BTreeMap::new();
        for (path, state) in &self.files {
            for obj in &state.objects {
                match seen.get(&obj.key()) {
                    Some(first) => out.problems.push(InputProblem {
                        source: obj.origin.to_string(),
                        object: Some(obj.key().to_string()),
                        field: Some("metadata.name".into()),
                        message: format!("duplicate object; the one in {first} is used"),
                    }),
                    None => {
                        seen.insert(obj.key(), path.display().to_string());
                        out.objects.push(obj.clone());
                    }
                }
            }
        }
        out
    }

    fn load_file(&self, path: &Path, problems: &mut Vec<InputProblem>) -> FileState {
        let source = path.display().to_string();
        let previous = self.files.get(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(InputProblem::plain(
                    &source,
                    format!("cannot read file: {e}"),
                ));
                return previous.cloned().unwrap_or_default();
            }
        };
        let loaded = load_yaml(&source, &text, &self.default_namespace);
        let mut objects = Vec::new();
        let mut had_errors = !loaded.errors.is_empty();
        problems.extend(loaded.errors.iter().map(InputProblem::from_config_error));
        for obj in loaded.objects {
            let errors = pilotfish_crds::validate::validate(&obj);
            if errors.is_empty() {
                objects.push(obj);
            } else {
                had_errors = true;
                problems.extend(errors.iter().map(InputProblem::from_config_error));
            }
        }
        if had_errors && let Some(previous) = previous {
            // Keep serving the last good version of objects this edit broke.
            let fresh: BTreeSet<ConfigKey> = objects.iter().map(ConfigObject::key).collect();
            for old in previous
                .objects
                .iter()
                .filter(|o| !fresh.contains(&o.key()))
            {
                problems.push(InputProblem {
                    source: source.clone(),
                    object: Some(old.key().to_string()),
                    field: None,
                    message:
                        "the file has errors; the last good version of this object is still served"
                            .into(),
                });
                objects.push(old.clone());
            }
        }
        FileState { objects }
    }
}

/// `*.yaml`/`*.yml` files directly in `dir`, sorted for determinism.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
