//! File watching: any change under the watched paths becomes one "reload"
//! signal; the push scheduler debounces them.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches `dirs` and the directories holding `files` (editors replace files
/// by renaming, which a watch on the file itself would miss).
pub fn watch_paths(dirs: &[PathBuf], files: &[PathBuf], tx: mpsc::UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !event.kind.is_access() => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })?;
    let mut targets: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    targets.extend(files.iter().filter_map(|f| f.parent()).map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }));
    targets.sort();
    targets.dedup();
    for target in targets {
        watcher.watch(target, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
