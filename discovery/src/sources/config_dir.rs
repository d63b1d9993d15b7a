//! Istio config from directories of YAML files.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pilotfish_crds::{ConfigKey, ConfigObject, load_yaml};

use crate::problems::InputProblem;

/// The objects read from one file, and the problems found in it.
#[derive(Debug, Default, Clone)]
struct FileState {
    objects: Vec<ConfigObject>,
    problems: Vec<InputProblem>,
    /// What the file looked like when read; `None` when it may change
    /// again unseen (read too soon after its last write), so it is re-read.
    stamp: Option<FileStamp>,
}

/// A file's identity and last change, as the file system reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    changed: (i64, i64),
    len: u64,
    inode: u64,
}

/// A file written this recently may be written again within the same
/// timestamp tick; it is read again next time instead of trusted.
const SETTLE: Duration = Duration::from_secs(2);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok()?,
        changed: (meta.ctime(), meta.ctime_nsec()),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// All config directories, listed on every change; a file is parsed again
/// only when its stamp changed (a registry event re-reads nothing), and
/// each file keeps its last-good objects.
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
        // Unchanged files' states move over as they are, not copied.
        let mut previous = std::mem::take(&mut self.files);
        for dir in &self.dirs {
            match yaml_files(dir) {
                Ok(files) => {
                    for file in files {
                        let before = previous.remove(&file);
                        let state = self.load_file(&file, before, &mut out.problems);
                        seen_files.insert(file, state);
                    }
                }
                Err(e) => {
                    // Unreadable is not empty: its files keep their last
                    // good objects (deleting a file, not losing its
                    // directory, deletes its config).
                    let kept: Vec<PathBuf> = previous
                        .keys()
                        .filter(|file| file.parent() == Some(dir.as_path()))
                        .cloned()
                        .collect();
                    let note = match kept.is_empty() {
                        true => "",
                        false => "; the last good config of its files is still served",
                    };
                    out.problems.push(InputProblem::plain(
                        dir.display().to_string(),
                        format!("cannot read config directory: {e}{note}"),
                    ));
                    for file in kept {
                        if let Some(state) = previous.remove(&file) {
                            out.problems.extend(state.problems.iter().cloned());
                            seen_files.insert(file, state);
                        }
                    }
                }
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

    fn load_file(
        &self,
        path: &Path,
        previous: Option<FileState>,
        problems: &mut Vec<InputProblem>,
    ) -> FileState {
        let before = stamp(path);
        let previous = match previous {
            Some(unchanged) if unchanged.stamp.is_some() && unchanged.stamp == before => {
                problems.extend(unchanged.problems.iter().cloned());
                return unchanged;
            }
            other => other,
        };
        let mut found = Vec::new();
        let mut state = self.parse_file(path, previous.as_ref(), &mut found);
        let settled = before.is_some_and(|s| s.modified.elapsed().is_ok_and(|age| age >= SETTLE));
        state.stamp = before.filter(|_| settled && stamp(path) == before);
        state.problems = found.clone();
        problems.extend(found);
        state
    }

    fn parse_file(
        &self,
        path: &Path,
        previous: Option<&FileState>,
        problems: &mut Vec<InputProblem>,
    ) -> FileState {
        let source = path.display().to_string();
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
        FileState {
            objects,
            ..FileState::default()
        }
    }
}

/// `*.yaml`/`*.yml` files directly in `dir`, sorted for determinism.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    // A file given in place of a directory (`pilotfish validate FILE`) is
    // read whatever its name.
    if std::fs::metadata(dir)?.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        // The entry's type needs no stat; a symlink (a mounted ConfigMap's
        // files are) is followed.
        let file_type = entry.file_type()?;
        if is_yaml && (file_type.is_file() || (file_type.is_symlink() && path.is_file())) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: NAME}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n";

    fn settle(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
    }

    fn names(load: &ConfigLoad) -> Vec<String> {
        load.objects.iter().map(|o| o.key().to_string()).collect()
    }

    #[test]
    fn settled_files_are_not_parsed_again_and_keep_reporting_their_problems() {
        let dir = std::env::temp_dir().join(format!("pf-config-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("a.yaml");
        let bad = dir.join("b.yaml");
        std::fs::write(&good, VS.replace("NAME", "one")).expect("write");
        std::fs::write(&bad, "kind: [unclosed").expect("write");
        settle(&good);
        settle(&bad);
        let mut dirs = ConfigDirs::new(vec![dir.clone()], "default");
        let first = dirs.load();
        assert_eq!(names(&first), ["VirtualService default/one"]);
        assert_eq!(first.problems.len(), 1, "{:?}", first.problems);
        let stamped = |dirs: &ConfigDirs, p: &Path| dirs.files[p].stamp.is_some();
        assert!(stamped(&dirs, &good) && stamped(&dirs, &bad));

        let again = dirs.load();
        assert_eq!(names(&again), names(&first));
        assert_eq!(
            again.problems, first.problems,
            "a cached file still reports"
        );

        // An edit changes the stamp (ctime at least), so the file is read.
        std::fs::write(&good, VS.replace("NAME", "two")).expect("rewrite");
        let edited = dirs.load();
        assert_eq!(names(&edited), ["VirtualService default/two"]);
        assert!(!stamped(&dirs, &good), "just written: read again next time");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_that_cannot_be_read_keeps_the_last_good_config_of_its_files() {
        let dir = std::env::temp_dir().join(format!("pf-config-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.yaml"), VS.replace("NAME", "one")).expect("write");
        let mut dirs = ConfigDirs::new(vec![dir.clone()], "default");
        assert_eq!(names(&dirs.load()), ["VirtualService default/one"]);

        std::fs::remove_dir_all(&dir).expect("remove");
        let gone = dirs.load();
        assert_eq!(names(&gone), ["VirtualService default/one"]);
        let problem = gone.problems.first().map(|p| p.message.as_str());
        assert!(
            problem.is_some_and(|m| m.contains("last good config")),
            "{problem:?}"
        );
    }
}
