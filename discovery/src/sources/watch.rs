//! File watching: a change to a watched YAML file becomes one "reload"
//! signal; the push scheduler debounces them.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::push::Change;

/// What counts as a relevant change: YAML files directly in a config
/// directory, and the registry files themselves.
#[derive(Clone, Debug)]
struct Relevant {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Relevant {
    fn matches(&self, path: &Path) -> bool {
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        let in_dir = path
            .parent()
            .is_some_and(|p| self.dirs.iter().any(|d| same_path(d, p)));
        // A mounted ConfigMap is updated by swapping its `..data` link.
        let atomic_writer = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".."));
        ((is_yaml || atomic_writer) && in_dir)
            || self.dirs.iter().any(|d| same_path(d, path))
            || self.files.iter().any(|f| same_path(f, path))
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || absolute(a) == absolute(b)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Watches `dirs` and the directories holding `files` (editors replace files
/// by renaming, which a watch on the file itself would miss); other files in
/// those directories are ignored.
pub fn watch_paths(
    dirs: &[PathBuf],
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<Change>,
) -> notify::Result<RecommendedWatcher> {
    let relevant = Relevant {
        dirs: dirs.to_vec(),
        files: files.to_vec(),
    };
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event)
                if event.need_rescan()
                    || (!event.kind.is_access()
                        && event.paths.iter().any(|p| relevant.matches(p))) =>
            {
                let _ = tx.send(Change::Files);
            }
            Ok(_) => {}
            Err(e) => {
                // Files are read only after an event: after a lost one,
                // read them all again rather than miss a change.
                tracing::warn!(error = %e, "file watch error; reading the files again");
                let _ = tx.send(Change::Files);
            }
        })?;
    let mut targets: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    targets.extend(files.iter().filter_map(|f| f.parent()).map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    }));
    targets.sort();
    targets.dedup();
    for target in targets {
        watcher.watch(target, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yaml_in_config_dirs_and_the_registry_files_are_relevant() {
        let r = Relevant {
            dirs: vec![PathBuf::from("/cfg")],
            files: vec![PathBuf::from("/reg/registry.yaml")],
        };
        assert!(r.matches(Path::new("/cfg/vs.yaml")));
        assert!(r.matches(Path::new("/cfg/dr.yml")));
        assert!(r.matches(Path::new("/reg/registry.yaml")));
        assert!(!r.matches(Path::new("/cfg/notes.txt")));
        assert!(!r.matches(Path::new("/reg/pilotfish.log")));
        assert!(!r.matches(Path::new("/reg/other.yaml")));
        assert!(!r.matches(Path::new("/cfg/sub/vs.yaml")));
        assert!(r.matches(Path::new("/cfg/..data")), "a ConfigMap update");
    }
}
