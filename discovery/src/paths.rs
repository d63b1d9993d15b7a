//! Paths given on the command line, checked before anything starts. A path
//! that names nothing, that cannot be read, or that is a file where a
//! directory is expected (or the reverse) is a start-up error naming the
//! flag and the path, wherever it is: whether its parent directory exists
//! does not matter. Kubernetes mounts ConfigMap and Secret volumes before
//! the container starts, so a path missing at start is a wrong flag or a
//! wrong mount, which waiting would not fix. Files that change or break
//! later, while serving, keep their last good content instead.

use std::io;
use std::path::{Path, PathBuf};

/// What a path flag must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Directory,
    File,
}

/// A path flag that cannot be used, as one line: flag, path, problem.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {problem}", path.display())]
pub struct PathError {
    pub flag: String,
    pub path: PathBuf,
    pub problem: PathProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum PathProblem {
    #[error("does not exist")]
    Missing,
    #[error("is not a directory")]
    NotADirectory,
    #[error("is a directory, not a file")]
    ADirectory,
    #[error("cannot be read: {0}")]
    Unreadable(io::Error),
}

impl From<io::Error> for PathProblem {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            // A missing component, or a file where a directory should be on
            // the way: either way the path names nothing.
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => PathProblem::Missing,
            _ => PathProblem::Unreadable(error),
        }
    }
}

/// Checks that `path`, given with `flag`, exists, is what `expected` says
/// (symbolic links followed, as a mounted ConfigMap's are) and can be read.
pub fn check(flag: &str, path: &Path, expected: Expected) -> Result<(), PathError> {
    problem(path, expected).map_err(|problem| PathError {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        problem,
    })
}

fn problem(path: &Path, expected: Expected) -> Result<(), PathProblem> {
    let is_dir = std::fs::metadata(path)?.is_dir();
    match (expected, is_dir) {
        (Expected::Directory, false) => Err(PathProblem::NotADirectory),
        (Expected::File, true) => Err(PathProblem::ADirectory),
        (Expected::Directory, true) => Ok(std::fs::read_dir(path).map(drop)?),
        (Expected::File, false) => Ok(std::fs::File::open(path).map(drop)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wrong_path_is_named_with_its_flag() {
        let dir = std::env::temp_dir().join(format!("pf-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("registry.yaml");
        std::fs::write(&file, "services: []\n").expect("write");
        let message = |r: Result<(), PathError>| r.map_err(|e| e.to_string()).err();

        assert!(check("--config-dir", &dir, Expected::Directory).is_ok());
        assert!(check("--registry-file", &file, Expected::File).is_ok());
        let missing = [
            dir.join("absent"),
            dir.join("absent/deeper"),
            file.join("x"),
        ];
        for path in missing {
            let got = message(check("--config-dir", &path, Expected::Directory));
            let want = format!("--config-dir {}: does not exist", path.display());
            assert_eq!(got.as_deref(), Some(want.as_str()));
        }
        let got = message(check("--config-dir", &file, Expected::Directory));
        assert!(got.is_some_and(|m| m.ends_with("registry.yaml: is not a directory")));
        let got = message(check("--registry-file", &dir, Expected::File));
        assert!(got.is_some_and(|m| m.ends_with(": is a directory, not a file")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
